"""Events as the API serves them: one id per event, one order over every camera's streams.

Each camera has two streams the API reads: ``events:{camera}`` (face and end-of-stream
events) and ``tracks:{camera}`` (track lifecycle events). An event's id is its Redis
entry id with its stream: ``<ms>-<seq>:<events|tracks>:<camera>``. Ids are ordered by
(ms, seq, stream, camera); the entry id's milliseconds are Redis' clock at the write,
and the hub hands events out only once every node's clock has passed them (a
*watermark*), so no event can later appear before one already handed out. A client's
last id is therefore a complete cursor over every stream it reads: resuming from it
misses nothing and repeats nothing.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Literal

from emotion_stream import keys
from emotion_stream.schema import validate_camera_id

Kind = Literal["events", "tracks"]
KINDS: tuple[Kind, ...] = ("events", "tracks")
# The event types a client may ask for, and the stream each lives in.
TYPES: dict[str, Kind] = {"face": "events", "end": "events", "track_started": "tracks",
                          "emotion_changed": "tracks", "track_ended": "tracks"}
_ENTRY = re.compile(r"^(\d{1,15})-(\d{1,19})$")
# A camera withdrawn from the cameras set (a browser's WebRTC session closed, a batch job
# done, `cameras --forget`) still gets events for a while: its people's track_ended come
# after the tracker's timeout (and reorder window, 30 s for a recorded video). Its streams
# are read on this long, then dropped.
WITHDRAWN_GRACE_S = 60.0


@dataclass(frozen=True, order=True, slots=True)
class EventId:
    ms: int
    seq: int
    kind: str
    camera: str

    def __str__(self) -> str:
        return f"{self.ms}-{self.seq}:{self.kind}:{self.camera}"

    @property
    def entry(self) -> str:
        return f"{self.ms}-{self.seq}"

    @property
    def stream(self) -> str:
        return stream_of(self.kind, self.camera)

    @classmethod
    def parse(cls, text: str) -> EventId:
        """An id the API handed out; ValueError with a one-line reason for anything else."""
        entry, _, rest = text.partition(":")
        kind, _, camera = rest.partition(":")
        match = _ENTRY.match(entry)
        if not match or kind not in KINDS or not camera:
            raise ValueError(f"not an event id (<ms>-<seq>:<events|tracks>:<camera>): {text[:80]!r}")
        validate_camera_id(camera)
        return cls(int(match[1]), int(match[2]), kind, camera)

    @classmethod
    def of(cls, entry: str, kind: str, camera: str) -> EventId:
        ms, _, seq = entry.partition("-")
        return cls(int(ms), int(seq), kind, camera)


def entry_id(text: str) -> str:
    """A Redis entry id ``<ms>-<seq>`` (history paging cursors); ValueError otherwise."""
    if not _ENTRY.match(text):
        raise ValueError(f"not a stream entry id (<ms>-<seq>): {text[:80]!r}")
    return text


def stream_of(kind: str, camera: str) -> str:
    return keys.events(camera) if kind == "events" else keys.tracks(camera)


@dataclass(frozen=True, slots=True)
class Event:
    """One event from a stream: its id, type and JSON document, as the API sends it."""

    id: EventId
    type: str
    data: str  # the event's JSON, as written
    message: bytes = field(init=False, repr=False, compare=False)  # as one SSE message, encoded once for all clients

    def __post_init__(self) -> None:
        object.__setattr__(self, "message", f"id: {self.id}\ndata: {self.data}\n\n".encode())


class Withdrawals:
    """When each read stream's camera left the cameras set; which to stop reading now."""

    def __init__(self) -> None:
        self._since: dict[str, float] = {}

    def expired(self, cameras: dict[str, str], announced: set[str], now: float) -> list[str]:
        """Of ``cameras`` (stream -> camera), the streams whose camera has not been
        announced for WITHDRAWN_GRACE_S (monotonic ``now``)."""
        done = []
        for stream, camera in cameras.items():
            if camera in announced:
                self._since.pop(stream, None)
            elif now - self._since.setdefault(stream, now) >= WITHDRAWN_GRACE_S:
                done.append(stream)
                del self._since[stream]
        return done
