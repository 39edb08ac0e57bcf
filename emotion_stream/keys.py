"""Every Redis key, stream, group and channel name used by the system, in one place.

Streams (all bounded with MAXLEN ~):
  {prefix}:frames:{camera}   frames (or batch images) waiting for a worker
  {prefix}:events:{camera}   per-face events, durable; also the pub/sub channel name
  {prefix}:results:{job}     one result per image of a batch job (request/reply)
  {prefix}:dead-letter       messages that could not be processed, with the reason
  {prefix}:analysed:{camera} one record per finished live frame (any order), for tracking
  {prefix}:tracks:{camera}   track lifecycle events; also the pub/sub channel name
Other keys:
  {prefix}:cameras           set of camera ids whose frame streams workers consume
  {prefix}:workers           hash worker-name -> last heartbeat (unix seconds)
  {prefix}:worker-lease:{name}  the live worker holding a consumer name (expiring lease)
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
DEAD_LETTER = f"{PREFIX}:dead-letter"
EVENTS_PATTERN = f"{PREFIX}:events:*"  # pub/sub pattern for every camera
TRACKS_PATTERN = f"{PREFIX}:tracks:*"
TRACKED_CAMERAS = f"{PREFIX}:tracked-cameras"
TRACK_OWNERS = f"{PREFIX}:track-owners"  # hash owner name -> heartbeat (unix seconds)


def worker_lease(name: str) -> str:
    return f"{PREFIX}:worker-lease:{name}"


def frames(camera: str) -> str:
    return f"{PREFIX}:frames:{camera}"


def events(camera: str) -> str:
    """Durable events stream of a camera; the pub/sub channel has the same name."""
    return f"{PREFIX}:events:{camera}"


def analysed(camera: str) -> str:
    return f"{PREFIX}:analysed:{camera}"


def tracks(camera: str) -> str:
    """Track lifecycle stream of a camera; the pub/sub channel has the same name."""
    return f"{PREFIX}:tracks:{camera}"


def track_lease(camera: str) -> str:
    return f"{PREFIX}:track-lease:{camera}"


def track_state(camera: str) -> str:
    return f"{PREFIX}:track-state:{camera}"


class Stat(StrEnum):
    """Fields of a camera's stats hash. Lua scripts get them as arguments, never typed again."""

    INGESTED = "ingested"
    TRIMMED = "trimmed"
    PROCESSED = "processed"
    STALE = "stale"
    DEAD_LETTERED = "dead_lettered"


STAT_FIELDS = tuple(Stat)


def stats(camera: str) -> str:
    return f"{PREFIX}:stats:{camera}"


def results(job: str) -> str:
    return f"{PREFIX}:results:{job}"


def camera_of_frames_key(key: str | bytes) -> str:
    if isinstance(key, bytes):
        key = key.decode()
    return key.removeprefix(f"{PREFIX}:frames:")
