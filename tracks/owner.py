"""TrackOwner: holds cameras' tracking by fenced Redis leases and runs their trackers.

Exactly-once across owners: a camera's lease holds a token unique to one acquisition,
and every write (face events with track fields, lifecycle events, the tracker state and
the stream cursor) is one Lua script that first checks the token. An owner that lost
its lease (paused, partitioned, SIGKILLed) can no longer write; the next owner loads the
state saved with the last accepted write and reads the frame records from its cursor,
so nothing is emitted twice and nothing is skipped.

Cameras are shared out fairly: each owner holds at most ceil(cameras / live owners)
and hands the excess back (state saved first), so they scale out like the workers.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
import uuid
from collections.abc import Collection, Mapping
from typing import Any, cast

import redis.asyncio as aioredis

from emotion_stream import keys, metrics
from emotion_stream.lifecycle import Supervisor, cancel_and_wait
from emotion_stream.logs import Throttled
from emotion_stream.redis_conn import (
    TRANSIENT_ERRORS,
    LuaScript,
    StreamReader,
    as_text,
    retrying,
    stream_range,
)
from emotion_stream.schema import (
    FrameRecord,
    MessageError,
    TrackEventType,
    dead_letter_fields,
    face_event_from_doc,
)
from emotion_stream.settings import Settings

from .camera import CameraTracker, TrackerConfig, TrackerOutput

log = logging.getLogger(__name__)

READ_BLOCK_MS = 50  # also the longest wait before a due reorder timeout is noticed
READ_COUNT = 1000
ALIVE_LEASES = 1.5  # an owner is alive while its heartbeat (every lease/3) is younger than this many leases
HAND_BACK_AFTER = 5  # lease rounds (lease/3 each) over the fair share before handing a camera back

_RENEW = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
return 0
"""
_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""
# KEYS: lease, state, events stream, tracks stream, frame-record stream
# ARGV: lease token, state json, state ttl ms, stream maxlen, cursor, number of face events,
#       face events..., lifecycle...
# Records before the cursor are consumed (the state remembers the cursor), so they are
# trimmed away: the record stream holds only what tracking has not read yet.
_WRITE = """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
redis.call('SET', KEYS[2], ARGV[2], 'PX', ARGV[3])
redis.call('XTRIM', KEYS[5], 'MINID', ARGV[5])
local n = tonumber(ARGV[6])
for i = 7, 6 + n do
  redis.call('XADD', KEYS[3], 'MAXLEN', '~', ARGV[4], '*', 'event', ARGV[i])
  redis.call('PUBLISH', KEYS[3], ARGV[i])
end
for i = 7 + n, #ARGV do
  redis.call('XADD', KEYS[4], 'MAXLEN', '~', ARGV[4], '*', 'event', ARGV[i])
  redis.call('PUBLISH', KEYS[4], ARGV[i])
end
return 1
"""


class TrackOwner:
    """Runs beside a worker's tasks (``Worker``) or alone (``emotion-stream tracks``)."""

    def __init__(self, client: aioredis.Redis, settings: Settings, name: str,
                 class_prior: Mapping[str, float] | None = None, only: Collection[str] | None = None) -> None:
        """``class_prior``: the served model's (see ``TrackerConfig.from_settings``);
        ``only``: the cameras it may track (a demo's), else any."""
        self.redis = client
        self.settings = settings
        self.name = name
        self.only = None if only is None else frozenset(only)
        self.config = TrackerConfig.from_settings(settings, class_prior)
        self.lease_ms = int(settings.track_lease_s * 1000)
        self.trackers: dict[str, CameraTracker] = {}
        self.tokens: dict[str, str] = {}
        self.reader = StreamReader(client)
        self._renew = LuaScript(client, _RENEW)
        self._release = LuaScript(client, _RELEASE)
        self._write = LuaScript(client, _WRITE)
        self._throttled = Throttled(log)
        self._unowned_since: dict[str, float] = {}  # free cameras this owner is over its share for
        self._over_share = 0  # lease rounds in a row above the fair share
        self._unsaved: set[str] = set()  # cameras whose last write may not have reached Redis
        self._rounds = 0  # lease rounds done
        metrics.init_tracking_series()

    async def run(self, stop: asyncio.Event) -> None:
        """Track until ``stop``; a failure of the lease loop or of tracking itself is
        logged at once and stops the service (``Supervisor``): raises TaskFailed."""
        supervisor = Supervisor(f"tracks {self.name}", stop)
        leases = supervisor.start(self._lease_loop(stop), "track-leases")
        try:
            while not stop.is_set():
                await retrying(self._step, what="tracking", component="tracks", stop=stop)
            supervisor.check()
        finally:
            await cancel_and_wait(leases)  # its failure is the supervisor's
            with contextlib.suppress(*TRANSIENT_ERRORS):
                await self._release_all()
            await self.reader.aclose()
            metrics.TRACKED_CAMERAS.set(0)
            metrics.TRACKS_ACTIVE.set(0)

    # ------------------------------------------------------------------ leases
    async def _lease_loop(self, stop: asyncio.Event) -> None:
        interval = self.settings.track_lease_s / 3
        while not stop.is_set():
            await retrying(self._balance, what="tracking leases", component="tracks", stop=stop)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), interval)

    async def _balance(self) -> None:
        """Renew held leases; take free cameras up to a fair share (any free camera when
        nobody else does: an unowned camera is worse than an unbalanced one); hand one
        back when over the share for a while (not at once: a just-dead owner still looks
        alive for a moment, and handing back then would only bounce the camera)."""
        now = time.time()
        await self.redis.hset(keys.TRACK_OWNERS, self.name, now)
        held = list(self.tokens.items())
        pipe = self.redis.pipeline(transaction=False)
        for camera, token in held:
            await self._renew(keys=[keys.track_lease(camera)], args=[token, self.lease_ms], client=pipe)
        for (camera, _), renewed in zip(held, await pipe.execute()):
            if not renewed:
                # Its lease deleted with the camera (`cameras --forget`) is no lost lease.
                withdrawn = not await self.redis.sismember(keys.TRACKED_CAMERAS, camera)
                self._drop(camera, "withdrawn" if withdrawn else "lease lost")
        await self._retire_silent(now)
        self._rounds += 1
        if self._rounds == 1:
            return  # first round: only say we are here, so owners started together share at once
        beats = await self.redis.hgetall(keys.TRACK_OWNERS)
        owners = {as_text(k): float(v) for k, v in beats.items()}
        alive = [k for k, beat in owners.items() if now - beat < ALIVE_LEASES * self.settings.track_lease_s]
        gone = [k for k, beat in owners.items() if now - beat > 100 * self.settings.track_lease_s]
        if gone:
            await self.redis.hdel(keys.TRACK_OWNERS, *gone)
        members = await self.redis.smembers(keys.TRACKED_CAMERAS)
        cameras = sorted(c for c in map(as_text, members) if self.only is None or c in self.only)
        share = math.ceil(len(cameras) / max(1, len(alive)))
        free = [c for c in cameras if c not in self.tokens]
        self._unowned_since = {c: t for c, t in self._unowned_since.items() if c in free}  # not the withdrawn
        holders = await self._leases(free)
        for camera, holder in zip(free, holders):
            if holder is not None:
                self._unowned_since.pop(camera, None)
            elif len(self.tokens) < share or self._unowned_since.setdefault(camera, now) < now - self.settings.track_lease_s:
                await self._try_acquire(camera)
        self._over_share = self._over_share + 1 if len(self.tokens) > share else 0
        if self._over_share >= HAND_BACK_AFTER:
            self._over_share = 0
            camera = sorted(self.tokens)[-1]
            token = self.tokens[camera]
            self._drop(camera, "handed over (fair share)")
            await self._release(keys=[keys.track_lease(camera)], args=[token])
        metrics.TRACKED_CAMERAS.set(len(self.tokens))

    async def _leases(self, cameras: list[str]) -> list[bytes | None]:
        """Each camera's lease holder (one GET each: the leases live in their cameras' slots)."""
        pipe = self.redis.pipeline(transaction=False)
        for camera in cameras:
            pipe.get(keys.track_lease(camera))
        return cast(list[bytes | None], await pipe.execute()) if cameras else []

    async def _retire_silent(self, now: float) -> None:
        """Stop holding cameras with nothing in flight that sent nothing for the state's
        lifetime (their state expires too): the tracked-cameras set and the leases stay
        as small as the cameras actually in use. A worker re-announces a camera with its
        next frame record."""
        ttl = self.settings.track_state_ttl_s
        for camera, tracker in list(self.trackers.items()):
            token = self.tokens.get(camera)  # None: tracking let it go while this loop awaited
            if token is not None and not tracker.tracks and not tracker.buffer and now - tracker.last_arrival > ttl:
                self._drop(camera, f"silent for {ttl} s")
                await self.redis.srem(keys.TRACKED_CAMERAS, camera)
                await self._release(keys=[keys.track_lease(camera)], args=[token])

    async def _try_acquire(self, camera: str) -> None:
        token = f"{self.name}:{uuid.uuid4().hex}"
        if not await self.redis.set(keys.track_lease(camera), token, nx=True, px=self.lease_ms):
            return
        self._unowned_since.pop(camera, None)
        tracker, resumed = await self._load(camera)
        metrics.TRACK_HANDOVERS.labels("resumed" if resumed else "started").inc()
        self.tokens[camera], self.trackers[camera] = token, tracker
        log.info("tracks %s: now tracking camera %s (%s)", self.name, camera, "resumed" if resumed else "new state")

    async def _load(self, camera: str) -> tuple[CameraTracker, bool]:
        """The camera's tracker as last written to Redis (True), or a new one (False)."""
        state = await self.redis.get(keys.track_state(camera))
        tracker = None
        if state is not None:
            try:
                tracker = CameraTracker.from_state(state, self.config)
            except (ValueError, KeyError, TypeError, MessageError) as exc:
                log.error("camera %s: unusable tracking state (%s); starting afresh", camera, exc)
        resumed = tracker is not None
        if tracker is None:
            tracker = CameraTracker(camera, self.config)
            # No state (new camera, or expired): track what was analysed in the look-back
            # (frames recorded just before this lease was taken); what is older waited
            # with nobody to track it, and is published untracked, never dropped.
            seconds, micros = await self.redis.time()
            since = max(0, seconds * 1000 + micros // 1000 - int(self.settings.track_lookback_s * 1000))
            tracker.cursor = f"{since}-0"
            await self._publish_untracked(camera, tracker.cursor)
        # Silence is judged from here on: records may be waiting in the stream.
        tracker.last_arrival = time.time()
        return tracker, resumed

    async def _publish_untracked(self, camera: str, cursor: str) -> None:
        """Records before ``cursor`` (older than the look-back): their faces go out without
        a track, counted and logged. Not fenced by the lease write: the next write trims
        them, and a second owner after a crash would at worst publish them twice."""
        old = await stream_range(self.redis, keys.analysed(camera), before=f"({cursor}", count=READ_COUNT * 10)
        if not old:
            return
        events: list[str] = []
        for _, fields in old:
            try:
                record = FrameRecord.from_json(fields.get(b"frame") or b"")
            except MessageError:
                continue
            events += [face_event_from_doc(doc).to_json() for doc in record.faces]
        pipe = self.redis.pipeline(transaction=False)
        for event in events:
            pipe.xadd(keys.events(camera), {"event": event}, maxlen=self.settings.events_max_len, approximate=True)
            pipe.publish(keys.events(camera), event)
        pipe.xtrim(keys.analysed(camera), minid=cursor)
        await pipe.execute()
        metrics.TRACK_FRAMES_SKIPPED.labels("before_lookback").inc(len(old))
        log.warning("camera %s: %d frame(s) were analysed more than %g s before tracking took the camera "
                    "(no tracking owner ran); their %d face event(s) are published without a track",
                    camera, len(old), self.settings.track_lookback_s, len(events))

    def _drop(self, camera: str, why: str) -> None:
        self.tokens.pop(camera, None)
        self.trackers.pop(camera, None)
        metrics.TRACK_HANDOVERS.labels("lost" if why == "lease lost" else "released").inc()
        log.info("tracks %s: stopped tracking camera %s: %s", self.name, camera, why)

    async def _release_all(self) -> None:
        for camera, token in list(self.tokens.items()):
            await self._release(keys=[keys.track_lease(camera)], args=[token])
            self._drop(camera, "shutting down")
        await self.redis.hdel(keys.TRACK_OWNERS, self.name)

    # ------------------------------------------------------------------ tracking
    async def _step(self) -> None:
        """Read new frame records of every held camera, flush what is due, write."""
        for camera in list(self._unsaved):
            # A write that did not reach Redis: go back to what Redis has, so the
            # events of that step are produced again rather than lost.
            if camera in self.trackers:
                reloaded, _ = await self._load(camera)
                if camera in self.trackers:  # the lease loop may have let it go meanwhile
                    self.trackers[camera] = reloaded
            self._unsaved.discard(camera)
        if not self.trackers:
            await asyncio.sleep(READ_BLOCK_MS / 1000)
            return
        cursors = {keys.analysed(c): t.cursor for c, t in self.trackers.items()}
        reply = await self.reader.read(cursors, count=READ_COUNT, block_ms=READ_BLOCK_MS)
        now = time.time()
        outputs: dict[str, TrackerOutput] = {}
        moved: set[str] = set()
        dead: list[tuple[str, dict[Any, Any]]] = []  # (dead-letter stream, entry)
        for stream, entries in reply:
            camera = keys.camera_of(stream)
            tracker = self.trackers.get(camera)
            if tracker is None:
                continue  # handed over while reading
            out = outputs.setdefault(camera, TrackerOutput())
            for entry_id, fields in entries:
                fields = fields or {}
                tracker.cursor = as_text(entry_id)
                moved.add(camera)
                raw = fields.get(b"frame")
                try:
                    record = FrameRecord.from_json(raw or b"")
                    if record.camera != camera:
                        raise MessageError(f"record of camera {record.camera!r} in {stream}")
                except MessageError as exc:
                    # Into the camera's dead letters with the reason; the tracker state is
                    # untouched (the record never reaches it).
                    metrics.TRACK_FRAMES_SKIPPED.labels("malformed").inc()
                    self._throttled.warning(f"record:{camera}", "camera %s: dead-lettered frame record %s: %s",
                                            camera, tracker.cursor, exc)
                    dead.append((keys.dead_letter(camera), dead_letter_fields(
                        {b"frame": raw or b""}, stream=stream, entry_id=tracker.cursor, reason=str(exc),
                        worker=self.name, at=now)))
                    continue
                late, duplicates = tracker.late, tracker.duplicates
                tracker.add(record, now, out)
                if tracker.late > late:
                    metrics.TRACK_FRAMES_SKIPPED.labels("late").inc()
                    self._throttled.warning(f"late:{camera}", "camera %s: frame %d arrived after tracking passed "
                                            "it; its faces are published without a track", camera, record.seq)
                elif tracker.duplicates > duplicates:
                    metrics.TRACK_FRAMES_SKIPPED.labels("duplicate").inc()
                    self._throttled.warning(f"dup:{camera}", "camera %s: a second record of frame %d; dropped",
                                            camera, record.seq)
        pipe = self.redis.pipeline(transaction=False)
        for key, letter in dead:  # before the state write that moves the cursor past them
            pipe.xadd(key, dict(letter), maxlen=self.settings.dead_letter_max_len, approximate=True)
        pending: list[tuple[str, TrackerOutput]] = []
        for camera, tracker in list(self.trackers.items()):
            if keys.analysed(camera) not in cursors:
                continue  # acquired during the read: its records come next round
            out = outputs.get(camera, TrackerOutput())
            out.merge(tracker.flush(now))
            if not out and camera not in moved:
                continue
            lifecycle = [e.to_json() for e in out.lifecycle]
            await self._write(
                keys=[keys.track_lease(camera), keys.track_state(camera), keys.events(camera), keys.tracks(camera),
                      keys.analysed(camera)],
                args=[self.tokens[camera], tracker.to_state(), self.settings.track_state_ttl_s * 1000,
                      self.settings.events_max_len, tracker.cursor, len(out.events), *out.events, *lifecycle],
                client=pipe,
            )
            pending.append((camera, out))
        if not pending and not dead:
            return
        self._unsaved.update(camera for camera, _ in pending)
        replies = await pipe.execute(raise_on_error=False)
        replies = replies[len(dead):]
        published = time.time()
        if any(isinstance(reply, TRANSIENT_ERRORS) for reply in replies):
            raise next(reply for reply in replies if isinstance(reply, TRANSIENT_ERRORS))
        self._unsaved.clear()
        for (camera, out), reply in zip(pending, replies):
            if isinstance(reply, Exception) or not reply:
                # Lease gone: whoever holds it now resumes from the last accepted state.
                self._drop(camera, "lease lost" if not isinstance(reply, Exception) else f"write refused: {reply}")
                continue
            self._account(camera, out, published)
        metrics.TRACKS_ACTIVE.set(sum(len(t.tracks) for t in self.trackers.values()))

    def _account(self, camera: str, out: TrackerOutput, published: float) -> None:
        for captured_at in out.captured:
            metrics.TRACKED_EVENT_SECONDS.observe(max(0.0, published - captured_at))
        if out.gaps:
            metrics.TRACK_FRAMES_SKIPPED.labels("gap").inc(out.gaps)
            self._throttled.warning(f"gap:{camera}", "camera %s: %d frame(s) never arrived within the reorder "
                                    "window (trimmed or lost before a worker read them); tracking went on",
                                    camera, out.gaps)
        for emotion, seconds in out.emotion_seconds.items():
            metrics.EMOTION_SECONDS.labels(emotion).inc(seconds)
        for event in out.lifecycle:
            if event.type is TrackEventType.ENDED:
                metrics.TRACK_DURATION_SECONDS.observe(event.duration_s)

