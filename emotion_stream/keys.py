"""Every Redis key, stream, group and channel name used by the system, in one place.

Redis Cluster: every key of one camera carries the camera id as its hash tag
(``emotion-stream:frames:{cam-1}``), so a camera's frames, events, stats, frame records,
tracks, lease and state share one slot and each Lua script touches one slot. A batch job
is a camera (``batch-<id>``) whose results stream carries the same tag. The global keys
(cameras, workers, tracking owners) are plain keys read with one-key commands.

Streams (all bounded with MAXLEN ~), {camera} being the hash tag:
  {prefix}:frames:{camera}   frames (or batch images) waiting for a worker
  {prefix}:events:{camera}   per-face events, durable; also the pub/sub channel name
  {prefix}:results:{camera}  one result per image of a batch job (request/reply)
  {prefix}:dead-letter:{camera}  that camera's messages that could not be processed, with the reason
  {prefix}:analysed:{camera} one record per finished live frame (any order), for tracking
  {prefix}:tracks:{camera}   track lifecycle events; also the pub/sub channel name
Other keys:
  {prefix}:cameras           set of camera ids whose frame streams workers consume
  {prefix}:workers           hash worker-name -> last heartbeat (unix seconds)
  {prefix}:worker-lease:{name}  the live worker holding a consumer name (expiring lease)
  {prefix}:ingest-lease:{camera}  the live ingest process writing a camera (expiring lease)
  {prefix}:webhook-cursor:{webhook}  hash stream -> the last entry delivered to a webhook
  {prefix}:webhook-dead-letter:{webhook}  events a webhook refused for its whole retry window
  {prefix}:stats:{camera}    hash of frame counts, updated atomically with each add/ack:
                             ingested, trimmed, processed, stale, dead_lettered
                             (ingested = processed + stale + trimmed + dead_lettered
                             once the stream is drained)
  {prefix}:tracked-cameras   set of cameras with frame records (what tracking owners share out)
  {prefix}:track-owners      hash tracking owner -> last heartbeat (unix seconds)
  {prefix}:track-lease:{camera}  the tracking owner of a camera (expiring lease, fencing)
  {prefix}:track-state:{camera}  that camera's tracker state (JSON, expiring), written
                             atomically with the events it produced
"""

from __future__ import annotations

from enum import StrEnum

PREFIX = "emotion-stream"
WORKER_GROUP = "workers"

CAMERAS = f"{PREFIX}:cameras"
WORKERS = f"{PREFIX}:workers"
EVENTS_PATTERN = f"{PREFIX}:events:*"  # pub/sub pattern for every camera
TRACKS_PATTERN = f"{PREFIX}:tracks:*"
TRACKED_CAMERAS = f"{PREFIX}:tracked-cameras"
TRACK_OWNERS = f"{PREFIX}:track-owners"  # hash owner name -> heartbeat (unix seconds)


def worker_lease(name: str) -> str:
    return f"{PREFIX}:worker-lease:{name}"


def webhook_cursor(webhook: str) -> str:
    """Hash stream -> last entry id delivered (or given up on) to one webhook (``webhook``:
    its id, a hash of its URL): a restarted ``api`` resumes from it."""
    return f"{PREFIX}:webhook-cursor:{webhook}"


def webhook_dead_letter(webhook: str) -> str:
    """Events one webhook refused for its whole retry window, with the last error."""
    return f"{PREFIX}:webhook-dead-letter:{webhook}"


def ingest_lease(camera: str) -> str:
    """The one ingest process writing a camera's frames (two would interleave their frame numbers)."""
    return _tagged("ingest-lease", camera)


def ingest_last_write(camera: str) -> str:
    """The id of the last frame write ingest made to the camera's stream (expiring): a
    write retried after its reply was lost is recognised and not appended twice."""
    return _tagged("ingest-last", camera)


def frames(camera: str) -> str:
    return _tagged("frames", camera)


def events(camera: str) -> str:
    """Durable events stream of a camera; the pub/sub channel has the same name."""
    return _tagged("events", camera)


def analysed(camera: str) -> str:
    return _tagged("analysed", camera)


def tracks(camera: str) -> str:
    """Track lifecycle stream of a camera; the pub/sub channel has the same name."""
    return _tagged("tracks", camera)


def track_lease(camera: str) -> str:
    return _tagged("track-lease", camera)


def track_state(camera: str) -> str:
    return _tagged("track-state", camera)


class Stat(StrEnum):
    """Fields of a camera's stats hash. Lua scripts get them as arguments, never typed again."""

    INGESTED = "ingested"
    TRIMMED = "trimmed"
    PROCESSED = "processed"
    STALE = "stale"
    DEAD_LETTERED = "dead_lettered"


STAT_FIELDS = tuple(Stat)


def stats(camera: str) -> str:
    return _tagged("stats", camera)


def results(camera: str) -> str:
    """Results stream of the batch job whose frames are camera ``camera``'s (same slot)."""
    return _tagged("results", camera)


def dead_letter(camera: str) -> str:
    """Dead letters of one camera's frame stream: written with the ACK, in its slot."""
    return _tagged("dead-letter", camera)


def camera_keys(camera: str) -> tuple[str, ...]:
    """Every key of one camera (all in its slot): what forgetting a camera deletes."""
    return (frames(camera), events(camera), analysed(camera), tracks(camera), results(camera), dead_letter(camera),
            stats(camera), ingest_lease(camera), ingest_last_write(camera), track_lease(camera), track_state(camera))


def camera_of(key: str | bytes) -> str:
    """The camera a per-camera key belongs to (its hash tag)."""
    if isinstance(key, bytes):
        key = key.decode()
    start = key.find("{")
    end = key.find("}", start + 1)
    if start < 0 or end < 0:
        raise ValueError(f"{key!r} is not a per-camera key")
    return key[start + 1 : end]


def _tagged(kind: str, camera: str) -> str:
    # Camera ids cannot contain braces (schema.validate_camera_id), so the tag is the id.
    return f"{PREFIX}:{kind}:{{{camera}}}"
