"""Message schemas: frames into the workers, events and results out of them.

A frame message is a flat Redis stream entry (binary JPEG in one field); events and
results are JSON documents. Every message carries a schema version ``v``; a reader
rejects versions it does not know instead of guessing.

Parsing never trusts the writer: anyone with access to Redis can XADD. A message that
fails validation raises :class:`MessageError`, and the worker moves it to the
dead-letter stream with that reason.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import math
import re
import struct
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field, fields
from enum import StrEnum
from typing import TYPE_CHECKING, Any, cast

from . import keys
from .labels import EMOTIONS

if TYPE_CHECKING:
    from redis.typing import EncodableT, FieldT

SCHEMA_VERSION = 1

_CAMERA_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,127}$")
_MAX_NAME = 255
_MAX_DIMENSION = 1 << 16


class MessageError(ValueError):
    """A message that cannot be processed; its text is the dead-letter reason."""


class FrameKind(StrEnum):
    LIVE = "live"  # camera frame: may be skipped when stale, no whole-image fallback
    # A recorded video's frame, read as fast as the workers take them (``ingest --pace
    # workers``): never stale; ``captured_at`` is on the video's clock (when ingest
    # started + ``position_s``), so tracking times people as the video shows them.
    RECORDED = "recorded"
    STILL = "still"  # still image (batch): never stale, whole image classified if no face
    END = "end"  # end-of-stream marker from a finite source

    @property
    def is_video(self) -> bool:
        """A frame of a camera or video: described, tracked and counted per camera."""
        return self in (FrameKind.LIVE, FrameKind.RECORDED)


def validate_camera_id(camera: str) -> str:
    if not _CAMERA_ID.match(camera):
        raise ValueError(
            f"invalid camera id {camera!r}: use 1-128 letters, digits, '_', '.', ':' or '-'"
        )
    return camera


def validate_image_name(name: str) -> str:
    """A still image's name must be a bare file name: consumers may use it as one."""
    if "/" in name or "\\" in name or name in (".", "..") or "\x00" in name or len(name.encode()) > _MAX_NAME:
        raise ValueError(f"invalid image name {name!r}: must be a bare file name")
    return name


@dataclass(frozen=True, slots=True)
class FrameMessage:
    """One frame (or still image) on a camera's frame stream."""

    camera: str
    seq: int
    captured_at: float  # unix seconds at capture (live) or enqueue (still); see RECORDED
    kind: FrameKind = FrameKind.LIVE
    image: bytes = b""  # encoded JPEG/PNG
    width: int = 0
    height: int = 0
    name: str = ""  # file name of a still image
    reply_to: str = ""  # results stream of a batch job
    position_s: float | None = None  # a recorded video's frame (and end marker): its time in the video

    def to_fields(self) -> dict[FieldT, EncodableT]:
        fields: dict[FieldT, EncodableT] = {
            "v": SCHEMA_VERSION,
            "camera": self.camera,
            "seq": self.seq,
            "captured_at": repr(self.captured_at),
            "kind": self.kind.value,
        }
        if self.kind is not FrameKind.END:
            fields.update(image=self.image, width=self.width, height=self.height)
        if self.name:
            fields["name"] = self.name
        if self.reply_to:
            fields["reply_to"] = self.reply_to
        if self.position_s is not None:
            fields["position_s"] = repr(self.position_s)
        return fields

    @classmethod
    def from_fields(cls, raw: Mapping[bytes, bytes], *, max_image_bytes: int) -> FrameMessage:
        """Validate a stream entry. Raises :class:`MessageError` with a one-line reason."""
        f = _Fields(raw)
        version = f.integer("v")
        if version != SCHEMA_VERSION:
            raise MessageError(f"unknown message version {version} (this worker reads {SCHEMA_VERSION})")
        try:
            camera = validate_camera_id(f.text("camera", 128))
        except ValueError as exc:
            raise MessageError(str(exc)) from None
        try:
            kind = FrameKind(f.text("kind", 16))
        except ValueError:
            raise MessageError(f"unknown frame kind {f.text('kind', 16)!r}") from None
        seq = f.integer("seq")
        if seq < 0:
            raise MessageError(f"negative seq {seq}")
        captured_at = f.number("captured_at")
        name = f.text("name", _MAX_NAME, default="")
        try:
            validate_image_name(name) if name else None
        except ValueError as exc:
            raise MessageError(str(exc)) from None
        reply_to = f.text("reply_to", 512, default="")
        if reply_to and reply_to != keys.results(camera):
            # A hostile writer must not make workers write to arbitrary keys; and the
            # results share the frames' slot, so one script writes both on a cluster.
            raise MessageError(f"reply_to {reply_to!r} is not the results stream of camera {camera!r}")
        # A recorded video's frames and end marker: their time in the video.
        recorded = kind is FrameKind.RECORDED or (kind is FrameKind.END and f.has("position_s"))
        position = f.number("position_s") if recorded else None
        if position is not None and position < 0:
            raise MessageError(f"negative position_s {position}")
        if kind is FrameKind.END:
            return cls(camera, seq, captured_at, kind, name=name, reply_to=reply_to, position_s=position)
        image = f.blob("image", max_image_bytes)
        width, height = f.integer("width"), f.integer("height")
        if not (0 <= width <= _MAX_DIMENSION and 0 <= height <= _MAX_DIMENSION):
            raise MessageError(f"implausible frame size {width}x{height}")
        return cls(camera, seq, captured_at, kind, image, width, height, name, reply_to, position)


class _Fields:
    """Typed access to a raw stream entry, raising MessageError on anything off."""

    def __init__(self, raw: Mapping[bytes, bytes]) -> None:
        # Decoded clients (decode_responses) give str keys and values.
        self._raw = cast(Mapping[bytes | str, bytes | str], raw)

    def _get(self, name: str) -> bytes | None:
        value = self._raw.get(name.encode())
        if value is None:
            value = self._raw.get(name)
        if isinstance(value, str):
            value = value.encode()
        return value

    def has(self, name: str) -> bool:
        return self._get(name) is not None

    def _required(self, name: str) -> bytes:
        value = self._get(name)
        if value is None:
            raise MessageError(f"missing field {name!r}")
        return value

    def text(self, name: str, max_len: int, default: str | None = None) -> str:
        value = self._get(name)
        if value is None:
            if default is None:
                raise MessageError(f"missing field {name!r}")
            return default
        if len(value) > max_len:
            raise MessageError(f"field {name!r} is {len(value)} bytes, over the limit {max_len}")
        try:
            return value.decode("utf-8")
        except UnicodeDecodeError:
            raise MessageError(f"field {name!r} is not UTF-8 text") from None

    def integer(self, name: str) -> int:
        value = self._required(name)
        if len(value) > 20:
            raise MessageError(f"field {name!r} is not an integer")
        try:
            return int(value)
        except ValueError:
            raise MessageError(f"field {name!r} is not an integer: {value[:20]!r}") from None

    def number(self, name: str) -> float:
        value = self._required(name)
        try:
            number = float(value[:40])
        except ValueError:
            raise MessageError(f"field {name!r} is not a number: {value[:20]!r}") from None
        if not math.isfinite(number):
            raise MessageError(f"field {name!r} is not finite")
        return number

    def blob(self, name: str, max_len: int) -> bytes:
        value = self._required(name)
        if not value:
            raise MessageError(f"field {name!r} is empty")
        if len(value) > max_len:
            raise MessageError(f"field {name!r} is {len(value)} bytes, over the limit {max_len}")
        return value


# --------------------------------------------------------------------------- events


@dataclass(frozen=True, slots=True)
class FaceEvent:
    """One face in one frame: what subscribers, dashboards and batch mode consume."""

    camera: str
    seq: int
    captured_at: float
    processed_at: float
    face_index: int  # 0..faces_in_frame-1; weak detections (``weak``) are numbered after them
    faces_in_frame: int  # the faces found in the frame, weak detections not counted
    box: tuple[int, int, int, int]  # x, y, width, height in frame pixels
    emotion: str
    confidence: float
    probabilities: dict[str, float]  # all nine labels, in EMOTIONS order
    whole_image: bool  # no face found: the whole still image was classified
    detector: str
    model: str
    worker: str
    name: str = ""
    # Six (x, y) frame-pixel points when the detector gives them (BlazeFace): eye, eye,
    # nose tip, mouth, ear, ear. Optional: consumers that predate it ignore it.
    landmarks: list[list[float]] | None = None
    # Set by the tracking stage on live frames (None on stills, or with tracking off):
    # the person's id, stable within the camera, and their smoothed emotion.
    track: int | None = None
    track_emotion: str | None = None
    # A detection under the face threshold that continues a tracked person (ByteTrack's
    # low-score boxes): classified and published, never starting a track.
    weak: bool = False
    # A recorded video's frame (``ingest --pace workers``): its time in the video, in
    # seconds; ``captured_at`` is then on the video's clock, not when it was read.
    position_s: float | None = None
    type: str = field(default="face", init=False)
    v: int = field(default=SCHEMA_VERSION, init=False)

    @property
    def latency_s(self) -> float:
        return self.processed_at - self.captured_at

    def to_json(self) -> str:
        # Shallow, not asdict(): every field is a JSON type already, and asdict's deep copy
        # of the probabilities and landmarks was most of tracking's CPU for a face.
        return json.dumps({name: getattr(self, name) for name in _FACE_FIELDS}, separators=(",", ":"))


_FACE_FIELDS = tuple(f.name for f in fields(FaceEvent))


@dataclass(frozen=True, slots=True)
class EndOfStream:
    """A finite source (video file, batch job) has no more frames."""

    camera: str
    seq: int
    type: str = field(default="end", init=False)
    v: int = field(default=SCHEMA_VERSION, init=False)

    def to_json(self) -> str:
        return json.dumps(asdict(self), separators=(",", ":"))


Event = FaceEvent | EndOfStream


def face_event_from_doc(doc: dict[str, Any]) -> FaceEvent:
    """A FaceEvent from its decoded JSON document (fields a newer producer added are ignored)."""
    doc = {k: v for k, v in doc.items() if k not in ("type", "v")}
    doc["box"] = tuple(doc["box"])
    return FaceEvent(**_known(FaceEvent, doc))


def _known(cls: type, doc: dict[str, Any]) -> dict[str, Any]:
    """The fields ``cls`` takes: optional fields added by a newer producer are ignored,
    so adding one never breaks an older consumer of the same schema version."""
    names = {f.name for f in fields(cls) if f.init}
    return {k: v for k, v in doc.items() if k in names}


def parse_event(data: str | bytes) -> Event:
    """Parse an event document; raises MessageError on unknown versions or types."""
    try:
        doc: dict[str, Any] = json.loads(data)
        if doc.pop("v", None) != SCHEMA_VERSION:
            raise MessageError("unknown event version")
        kind = doc.pop("type", None)
        if kind == "face":
            return face_event_from_doc(doc)
        if kind == "end":
            return EndOfStream(**_known(EndOfStream, doc))
    except (ValueError, TypeError, KeyError) as exc:
        raise MessageError(f"malformed event: {exc}") from None
    raise MessageError(f"unknown event type {kind!r}")


# --------------------------------------------------------------------------- tracking


class FrameStatus(StrEnum):
    ANALYSED = "analysed"
    SKIPPED = "skipped"  # stale, or dead-lettered: the frame will not come, do not wait for it
    END = "end"  # end-of-stream marker


@dataclass(frozen=True, slots=True)
class FrameRecord:
    """What the tracking owner learns of every live frame a worker finished, in whatever
    order the workers finish: its faces (event documents without track fields, each
    with its appearance ``descriptor``), or that it was skipped, or the end of the stream."""

    camera: str
    seq: int
    captured_at: float
    status: FrameStatus
    faces: list[dict[str, Any]] = field(default_factory=list)
    # Weak detections: below the face threshold, able only to continue a tracked person
    # (ByteTrack's second association). Face documents (classified, with a descriptor);
    # workers before descriptors wrote bare boxes (x, y, w, h), read as {"box": ...}.
    weak: list[dict[str, Any]] = field(default_factory=list)
    scene: str = ""  # the frame's scene signature (encode_vector, SCENE_SIZE; current_scene): cut detection
    # A recorded video's frame (FrameKind.RECORDED) or end: its time in the video. Every
    # frame of such a video comes, and its track events say where in the video they are.
    position_s: float | None = None
    v: int = field(default=SCHEMA_VERSION, init=False)

    def to_json(self) -> str:
        # By hand, not asdict(): the face documents are JSON already, and asdict's deep
        # copy of them was most of the tracking owner's per-step state write.
        doc: dict[str, Any] = {"camera": self.camera, "seq": self.seq, "captured_at": self.captured_at,
                               "status": self.status.value, "faces": self.faces}
        if self.weak:
            doc["weak"] = self.weak
        if self.scene:
            doc["scene"] = self.scene
        if self.position_s is not None:
            doc["position_s"] = self.position_s
        doc["v"] = self.v
        return json.dumps(doc, separators=(",", ":"))

    @classmethod
    def from_json(cls, data: str | bytes) -> FrameRecord:
        try:
            doc = json.loads(data)
            if doc.pop("v", None) != SCHEMA_VERSION:
                raise MessageError("unknown frame record version")
            weak = [_weak_doc(w) for w in doc.get("weak", [])[:MAX_WEAK_BOXES]]
            record = cls(doc["camera"], int(doc["seq"]), float(doc["captured_at"]), FrameStatus(doc["status"]),
                         list(doc.get("faces", [])), weak, current_scene(str(doc.get("scene", ""))),
                         _optional_number(doc.get("position_s")))
            # Validate now, not halfway through a flush: faces, descriptors (the scene above).
            for face in record.faces:
                face_event_from_doc(face)
                _check_descriptor(face)
            for face in record.weak:
                if "probabilities" in face:
                    face_event_from_doc(face)
                _check_descriptor(face)
            return record
        except (ValueError, TypeError, KeyError, AttributeError) as exc:
            raise MessageError(f"malformed frame record: {exc}") from None


def _optional_number(value: object) -> float | None:
    """A finite number, or None for an absent field (ValueError for anything else)."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ValueError(f"not a number: {value!r}")
    return float(value)


MAX_WEAK_BOXES = 32  # weak detections kept per frame record
DESCRIPTOR_SIZE = 240  # a face's appearance descriptor (model.appearance)
# A frame's scene signature (model.appearance): a grid of cells over the frame, each cell
# SCENE_CELL_VALUES values (its mean colour L, a, b, and 1 where a face is near, else 0).
SCENE_COLUMNS, SCENE_ROWS, SCENE_CELL_VALUES = 8, 6, 4
SCENE_SIZE = SCENE_COLUMNS * SCENE_ROWS * SCENE_CELL_VALUES
OLD_SCENE_SIZE = 48  # workers before the grid of cells: a brightness grid and a histogram


def encode_vector(values: Sequence[float]) -> str:
    """A vector as base64 float16 (compact in JSON: 2 bytes a value)."""
    return base64.b64encode(struct.pack(f"<{len(values)}e", *values)).decode()


def decode_vector(text: str, size: int, what: str = "vector") -> tuple[float, ...]:
    """The vector ``encode_vector`` wrote; ValueError unless it has ``size`` finite values."""
    try:
        raw = base64.b64decode(text, validate=True)
    except (binascii.Error, TypeError) as exc:
        raise ValueError(f"{what}: not base64 ({exc})") from None
    if len(raw) != 2 * size:
        raise ValueError(f"{what}: {len(raw) // 2} values, expected {size}")
    values = struct.unpack(f"<{size}e", raw)
    # One sum, not a test a value: NaN or infinity anywhere makes it NaN or infinite, and
    # finite float16 values cannot add up to an overflow.
    if not math.isfinite(sum(values)):
        raise ValueError(f"{what}: not a finite number (NaN or infinity)")
    return values


def current_scene(text: str) -> str:
    """A scene signature as tracking reads it: ``text``, or "" for none and for one an
    older worker wrote (OLD_SCENE_SIZE values: no cut is called on that frame, during a
    rolling upgrade); ValueError for anything else that is not SCENE_SIZE finite values."""
    if not text:
        return ""
    old = len(text) == 4 * -(-2 * OLD_SCENE_SIZE // 3)  # its base64 length
    decode_vector(text, OLD_SCENE_SIZE if old else SCENE_SIZE, "scene signature")
    return "" if old else text


def _check_descriptor(face: dict[str, Any]) -> None:
    if "descriptor" in face:
        decode_vector(face["descriptor"], DESCRIPTOR_SIZE, "descriptor")


def _weak_doc(value: Any) -> dict[str, Any]:
    """A weak detection: a face document, or the bare box of an older worker."""
    if isinstance(value, dict):
        doc = dict(value)
        doc["box"] = list(_box(doc["box"]))
        return doc
    return {"box": list(_box(value))}


def _box(value: Any) -> tuple[int, int, int, int]:
    x, y, w, h = (int(v) for v in value)
    if w <= 0 or h <= 0:
        raise ValueError(f"empty box {value!r}")
    return x, y, w, h


class TrackEventType(StrEnum):
    STARTED = "track_started"
    EMOTION_CHANGED = "emotion_changed"
    ENDED = "track_ended"


class TrackEndReason(StrEnum):
    TIMEOUT = "timeout"  # unseen for track_timeout_s of capture time
    END_OF_STREAM = "end_of_stream"
    CAMERA_SILENT = "camera_silent"  # no frame at all for a while, and no end marker
    CAMERA_RESTARTED = "camera_restarted"  # frame numbers started again from the beginning
    SCENE_CUT = "scene_cut"  # the picture cut to another scene (a video's edit, a switched camera)
    REPLACED = "replaced"  # another face started a track where this one was


@dataclass(frozen=True, slots=True)
class TrackEvent:
    """A person's lifecycle on one camera's tracks stream. JSON by type:
    track_started {emotion}; emotion_changed {from, to}; track_ended {started_at,
    duration_s, emotion_seconds, dominant, reason}. ``at`` is the capture time of the
    frame that caused it; on a recorded video, ``position_s`` says where that is in it."""

    type: TrackEventType
    camera: str
    track: int
    at: float
    seq: int
    emotion: str = ""  # started: the first label; changed: the new one; ended: the dominant one
    previous: str = ""  # emotion_changed: the label it replaced
    started_at: float = 0.0
    duration_s: float = 0.0
    emotion_seconds: dict[str, float] = field(default_factory=dict)
    reason: str = ""
    position_s: float | None = None  # a recorded video's: ``at``'s time in the video

    def to_doc(self) -> dict[str, Any]:
        doc: dict[str, Any] = {"type": self.type.value, "camera": self.camera, "track": self.track,
                               "at": self.at, "seq": self.seq}
        if self.type is TrackEventType.STARTED:
            doc["emotion"] = self.emotion
        elif self.type is TrackEventType.EMOTION_CHANGED:
            doc.update({"from": self.previous, "to": self.emotion})
        else:
            doc.update(started_at=self.started_at, duration_s=self.duration_s,
                       emotion_seconds=self.emotion_seconds, dominant=self.emotion, reason=self.reason)
        if self.position_s is not None:
            doc["position_s"] = self.position_s
        doc["v"] = SCHEMA_VERSION
        return doc

    def to_json(self) -> str:
        return json.dumps(self.to_doc(), separators=(",", ":"))

    @classmethod
    def from_json(cls, data: str | bytes) -> TrackEvent:
        try:
            doc = json.loads(data)
            if doc.get("v") != SCHEMA_VERSION:
                raise MessageError("unknown track event version")
            kind = TrackEventType(doc["type"])
            common = (kind, doc["camera"], int(doc["track"]), float(doc["at"]), int(doc["seq"]))
            position = _optional_number(doc.get("position_s"))
            if kind is TrackEventType.STARTED:
                return cls(*common, emotion=doc["emotion"], position_s=position)
            if kind is TrackEventType.EMOTION_CHANGED:
                return cls(*common, emotion=doc["to"], previous=doc["from"], position_s=position)
            return cls(*common, emotion=doc["dominant"], started_at=float(doc["started_at"]),
                       duration_s=float(doc["duration_s"]), emotion_seconds=dict(doc["emotion_seconds"]),
                       reason=doc["reason"], position_s=position)
        except (ValueError, TypeError, KeyError) as exc:
            raise MessageError(f"malformed track event: {exc}") from None


# -------------------------------------------------------------------------- results


@dataclass(frozen=True, slots=True)
class FrameResult:
    """One result per still image of a batch job, written to the job's results stream."""

    camera: str
    seq: int
    name: str
    ok: bool
    emotion: str = ""
    confidence: float = 0.0
    faces: int = 0
    whole_image: bool = False
    error: str = ""

    def to_json(self) -> str:
        return json.dumps(asdict(self), separators=(",", ":"))

    @classmethod
    def from_json(cls, data: str | bytes) -> FrameResult:
        try:
            result = cls(**json.loads(data))
        except (ValueError, TypeError) as exc:
            raise MessageError(f"malformed result: {exc}") from None
        if result.ok and result.emotion not in EMOTIONS:
            raise MessageError(f"result with unknown emotion {result.emotion!r}")
        return result


class DeadLetterKind(StrEnum):
    """Why a message went to the dead-letter stream (the metric's ``reason`` label)."""

    MALFORMED_MESSAGE = "malformed_message"
    UNDECODABLE_IMAGE = "undecodable_image"
    ANALYSIS_FAILED = "analysis_failed"
    POISON = "poison"


class SkipReason(StrEnum):
    """Why a frame was not analysed although nothing was wrong with it."""

    STALE = "stale"  # a live frame older than max_frame_age_s
    TRIMMED = "trimmed"  # dropped by the stream bound before any worker read it


# A dead-letter entry copies the original message within this budget, so the stream's
# memory is bounded by dead_letter_max_len x budget (500 x 16 KiB = 8 MiB a camera by default)
# whatever arrives. Values over DEAD_LETTER_VALUE_BYTES keep only a prefix, their size
# and SHA-256: enough to recognise a payload, never a 50 MB copy of one.
DEAD_LETTER_ENTRY_BYTES = 16 * 1024
DEAD_LETTER_VALUE_BYTES = 1024
DEAD_LETTER_PREFIX_BYTES = 128
_NAME_BYTES = 64


def dead_letter_fields(
    raw: Mapping[bytes, bytes], *, stream: str, entry_id: str, reason: str, worker: str, at: float
) -> dict[bytes | str, bytes | str]:
    """A dead-letter entry: the reason, then the original fields (``msg.<name>``) within
    ``DEAD_LETTER_ENTRY_BYTES``. A value too large to copy is stored as ``msg.<name>``
    (its first bytes), ``size.<name>`` and ``sha256.<name>``; fields past the budget are
    only counted (``fields_dropped``). Small messages stay whole, ready to replay."""
    fields: dict[bytes | str, bytes | str] = {
        "reason": reason[:1000],
        "stream": stream,
        "id": entry_id,
        "worker": worker,
        "at": repr(at),
    }
    budget = DEAD_LETTER_ENTRY_BYTES
    dropped = 0
    for name, value in raw.items():
        key = (name if isinstance(name, bytes) else name.encode())[:_NAME_BYTES]
        whole = len(b"msg.") + len(key) + len(value)
        # prefix + "size."/"sha256." entries: names, up to 20 digits and 64 hex digits
        digest = len(b"msg.size.sha256.") + 3 * len(key) + DEAD_LETTER_PREFIX_BYTES + 20 + 64
        if len(value) <= DEAD_LETTER_VALUE_BYTES and whole <= budget:
            fields[b"msg." + key] = value
            budget -= whole
        elif digest <= budget:
            fields[b"msg." + key] = value[:DEAD_LETTER_PREFIX_BYTES]
            fields[b"size." + key] = str(len(value))
            fields[b"sha256." + key] = hashlib.sha256(value).hexdigest()
            budget -= digest
        else:
            dropped += 1
    if dropped:
        fields["fields_dropped"] = str(dropped)
    return fields
