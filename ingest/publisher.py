"""FramePublisher: encode frames and append them to a camera's bounded frame stream."""

from __future__ import annotations

import asyncio
import logging
import math
import time
import uuid
from collections import Counter, deque

import cv2
import numpy as np
import redis.asyncio as aioredis
from redis.typing import EncodableT

from emotion_stream import keys, metrics
from emotion_stream.lifecycle import sleep_or_stop
from emotion_stream.logs import Throttled
from emotion_stream.redis_conn import ACCESS_ERRORS, TRANSIENT_ERRORS, LuaScript, as_text, write_confirmed
from emotion_stream.schema import FrameKind, FrameMessage, SkipReason
from emotion_stream.settings import Settings

log = logging.getLogger(__name__)

ROOM_POLL_S = 0.02  # a recorded video waiting for the workers looks again this often
NO_WORKER_WARN_S = 10.0  # ...and says so when they have taken none of its frames for this long
REDIS_RETRY_S = 0.5  # ...or asks Redis again this often while it does not answer
# The camera is announced again this often: a Redis restarted empty, or a FLUSHDB, loses
# the cameras set, and workers read only the streams it names.
ANNOUNCE_EVERY_S = 5.0

# XADD, then trim to exactly MAXLEN. Trimmed entries the consumer group never received
# are frames lost to the bound: counted in the camera's stats hash and returned, never
# silent. A write whose id is the last one made is a retry of it (its reply was lost and
# redis-py sent it again): not appended twice. KEYS: stream, stats hash, last-write key.
# ARGV: maxlen, group, stats field to count this frame under ('' for none), stats field
# for trimmed frames, write id, fields...
_ADD_BOUNDED = """
local function after(a, b)
  local ams, aseq = string.match(a, '(%d+)-(%d+)')
  local bms, bseq = string.match(b, '(%d+)-(%d+)')
  ams, aseq, bms, bseq = tonumber(ams), tonumber(aseq), tonumber(bms), tonumber(bseq)
  return ams > bms or (ams == bms and aseq > bseq)
end
if redis.call('GET', KEYS[3]) == ARGV[5] then return {'', 0} end
local id = redis.call('XADD', KEYS[1], '*', unpack(ARGV, 6))
redis.call('SET', KEYS[3], ARGV[5], 'PX', 600000)  -- 10 minutes: retries come within seconds
if ARGV[3] ~= '' then redis.call('HINCRBY', KEYS[2], ARGV[3], 1) end
local excess = redis.call('XLEN', KEYS[1]) - tonumber(ARGV[1])
local lost = 0
if excess > 0 then
  local delivered = '0-0'
  local ok, groups = pcall(redis.call, 'XINFO', 'GROUPS', KEYS[1])
  if ok then
    for _, g in ipairs(groups) do
      local info = {}
      for i = 1, #g, 2 do info[g[i]] = g[i + 1] end
      if info['name'] == ARGV[2] then delivered = info['last-delivered-id'] end
    end
  end
  for _, entry in ipairs(redis.call('XRANGE', KEYS[1], '-', '+', 'COUNT', excess)) do
    if after(entry[1], delivered) then lost = lost + 1 end
  end
  redis.call('XTRIM', KEYS[1], 'MAXLEN', ARGV[1])
  if lost > 0 then redis.call('HINCRBY', KEYS[2], ARGV[4], lost) end
end
return {id, lost}
"""


class FramePublisher:
    """Writes one camera's frames. ``publish`` never raises for Redis outages: the frame
    is dropped and counted (live frames are worthless late), and the next call retries.

    With ``write_replicas`` set, a frame is accepted only once that many replicas have
    it (WAIT on the connection that wrote it): what ingest counts as ingested survives
    its master's failure. Frames written but not confirmed in time are counted apart."""

    def __init__(self, client: aioredis.Redis, camera: str, settings: Settings) -> None:
        self.redis = client
        self.camera = camera
        self.stream = keys.frames(camera)
        self._last_write = keys.ingest_last_write(camera)
        self._token = uuid.uuid4().hex[:12]  # this publisher's writes' ids: token:seq
        self.settings = settings
        self.seq = 0
        self._label = metrics.init_camera_series(camera, ingest=True)
        metrics.REDIS_ERRORS.labels("ingest")
        self._add = LuaScript(client, _ADD_BOUNDED)
        self._announced = -math.inf  # monotonic time of the last announcement (none yet)
        self._throttled = Throttled(log)
        # This publisher's own tally (the metrics are per process): accepted frames are
        # those Redis acknowledged (and replicas confirmed, with write_replicas).
        self.accepted = 0
        self.unconfirmed = 0
        self._wait_ms = settings.write_replicas_timeout_ms
        self.dropped: Counter[str] = Counter()
        # Ids of the frames written and not yet delivered to a worker, oldest first, as
        # (milliseconds, sequence): a recorded video's backlog without reading the stream.
        self._undelivered: deque[tuple[int, int]] = deque(maxlen=settings.frames_max_len)
        # A recorded video keeps at most this many frames waiting or in the workers' hands:
        # under the stream's bound, so none is ever trimmed.
        self.room = max(1, settings.frames_max_len // 2)
        self._video_clock: tuple[float, float] | None = None  # the last recorded frame's (capture time, position)

    def summary(self) -> str:
        """One line for the log when ingest ends: what became of the camera's frames."""
        dropped = ", ".join(f"{reason} {n}" for reason, n in sorted(self.dropped.items())) or "none"
        return (f"camera {self.camera}: {self.accepted} frames accepted, {self.unconfirmed} unconfirmed, "
                f"dropped: {dropped}")

    async def register(self) -> None:
        """Announce the camera so workers start consuming its stream."""
        await self.redis.sadd(keys.CAMERAS, self.camera)
        self._announced = time.monotonic()

    def encode(self, frame: np.ndarray) -> bytes:
        ok, buf = cv2.imencode(".jpg", frame, [cv2.IMWRITE_JPEG_QUALITY, self.settings.jpeg_quality])
        if not ok:
            raise ValueError("JPEG encoding failed")
        return buf.tobytes()

    async def publish(self, frame: np.ndarray, captured_at: float, position_s: float | None = None) -> bool:
        """Encode (off the event loop) and append one frame: live, or a recorded video's
        at ``position_s`` (see FrameKind.RECORDED). True if it was accepted."""
        try:
            data = await asyncio.to_thread(self.encode, frame)
        except (ValueError, cv2.error) as exc:
            self._drop("encode_error", "camera %s: cannot encode frame: %s", exc)
            return False
        if len(data) > self.settings.max_image_bytes:
            self._drop("too_large", "camera %s: frame of %d bytes over the limit", len(data))
            return False
        kind = FrameKind.LIVE if position_s is None else FrameKind.RECORDED
        if position_s is not None:
            self._video_clock = captured_at, position_s
        message = FrameMessage(self.camera, self.seq, captured_at, kind, data, frame.shape[1], frame.shape[0],
                               position_s=position_s)
        return await self._append(message)

    async def wait_for_room(self, stop: asyncio.Event) -> bool:
        """Wait until fewer than ``room`` of this publisher's frames wait for the workers
        or are in their hands: a recorded video is read as fast as the workers take it,
        and a Redis outage pauses it instead of costing frames. False if stopped first."""
        stalled_since, last_backlog, warned = time.monotonic(), -1, False
        while not stop.is_set():
            try:
                if time.monotonic() - self._announced >= ANNOUNCE_EVERY_S:
                    await self.register()  # waiting on workers that no longer know the camera
                backlog = await self._backlog()
            except TRANSIENT_ERRORS as exc:
                metrics.REDIS_ERRORS.labels("ingest").inc()
                self._throttled.warning(f"room:{self.camera}", "camera %s: Redis unavailable (%s); the video waits",
                                        self.camera, exc)
                await sleep_or_stop(stop, REDIS_RETRY_S)
                continue
            if backlog < self.room:
                if warned:
                    log.info("camera %s: the workers are taking frames again", self.camera)
                return True
            if backlog != last_backlog:
                stalled_since, last_backlog = time.monotonic(), backlog
            elif not warned and time.monotonic() - stalled_since > NO_WORKER_WARN_S:
                warned = True
                log.warning("camera %s: %d frames wait and no worker has finished one for %.0f s; the video "
                            "waits (is a worker running on this Redis?)", self.camera, backlog, NO_WORKER_WARN_S)
            await sleep_or_stop(stop, ROOM_POLL_S)
        return False

    async def _backlog(self) -> int:
        """This publisher's frames not yet finished by the workers: delivered and not
        acknowledged (the group's pending entries), or not yet delivered."""
        try:
            groups = await self.redis.xinfo_groups(self.stream)
        except aioredis.ResponseError:  # the stream is gone (a Redis restarted empty): nothing waits
            self._undelivered.clear()
            return 0
        for info in groups:
            if as_text(info["name"]) == keys.WORKER_GROUP:
                delivered = _entry_id(as_text(info["last-delivered-id"]))
                while self._undelivered and self._undelivered[0] <= delivered:
                    self._undelivered.popleft()
                return int(info["pending"]) + len(self._undelivered)
        return len(self._undelivered)  # no worker has read the stream yet

    async def end(self) -> bool:
        """Write the end-of-stream marker (a finite source is exhausted): after a recorded
        video's last frame on its clock, so its people's tracks end where the video does."""
        if self._video_clock is None:
            return await self._append(FrameMessage(self.camera, self.seq, time.time(), FrameKind.END))
        at, position = self._video_clock
        return await self._append(FrameMessage(self.camera, self.seq, at, FrameKind.END, position_s=position))

    async def _append(self, message: FrameMessage) -> bool:
        counted = keys.Stat.INGESTED if message.kind.is_video else ""
        args: list[EncodableT] = [
            self.settings.frames_max_len, keys.WORKER_GROUP, counted, keys.Stat.TRIMMED, f"{self._token}:{message.seq}"
        ]
        for name, value in message.to_fields().items():
            args += [name, value]
        try:
            if time.monotonic() - self._announced >= ANNOUNCE_EVERY_S:
                await self.register()
            entry_id, lost, confirmed = await self._write(args)
        except ACCESS_ERRORS:
            raise
        except TRANSIENT_ERRORS as exc:
            # The number is spent even so: the write may have landed before its reply was
            # lost, and a frame number must never name two frames (tracking would drop
            # the second as a copy). A dropped frame leaves a gap tracking skips.
            self.seq += 1
            metrics.REDIS_ERRORS.labels("ingest").inc()
            self._drop("redis_unavailable", "camera %s: Redis unavailable, frame dropped: %s", exc)
            self._announced = -math.inf  # re-announce at once after a Redis restart
            return False
        self.seq += 1
        if entry_id:
            self._undelivered.append(_entry_id(entry_id))
        if message.kind.is_video and confirmed:
            self.accepted += 1
            metrics.FRAMES_INGESTED.labels(self._label).inc()
        elif message.kind.is_video:
            self.unconfirmed += 1
            metrics.FRAMES_UNCONFIRMED.labels(self._label).inc()
            self._throttled.warning(f"unconfirmed:{self.camera}", "camera %s: frame %d not confirmed by %d "
                                    "replica(s) in time", self.camera, message.seq, self.settings.write_replicas)
        if lost:
            metrics.FRAMES_SKIPPED.labels(self._label, SkipReason.TRIMMED).inc(lost)
            self._throttled.warning(
                f"trim:{self.camera}",
                "camera %s: %d unread frames trimmed by the stream bound (workers behind)",
                self.camera, lost,
            )
        return True

    async def _write(self, args: list[EncodableT]) -> tuple[str, int, bool]:
        """Append (the script), then WAIT for the replicas on the same connection:
        (the entry's id, '' for a retry already written; frames lost to the bound; confirmed)."""
        script_keys = [self.stream, keys.stats(self.camera), self._last_write]
        replicas = self.settings.write_replicas
        if not replicas:
            entry_id, lost = await self._add(keys=script_keys, args=args)
            return as_text(entry_id), int(lost), True
        (entry_id, lost), confirmed = await write_confirmed(
            self.redis, self.stream, lambda pipe: self._add(keys=script_keys, args=args, client=pipe),
            replicas, self._wait_ms,
        )
        # Replicas missing (one died, or its master was failed over to it): wait 1 ms,
        # not the full timeout, until a frame is confirmed again, so the camera keeps
        # its frame rate; those frames are counted as unconfirmed meanwhile.
        self._wait_ms = self.settings.write_replicas_timeout_ms if confirmed else 1
        return as_text(entry_id), int(lost), confirmed

    def superseded(self, writing_s: float) -> None:
        """A live frame replaced by a newer one before it could be written (LiveSender):
        Redis' round trips are slower than the camera's frames."""
        self._drop("redis_slow", "camera %s: a frame dropped, the newer one kept: the write before it has taken %s "
                   "(Redis round trips slower than the camera; a lower --fps sends every frame)",
                   f"{writing_s * 1000:.0f} ms")

    def _drop(self, reason: str, msg: str, detail: object) -> None:
        self.dropped[reason] += 1
        metrics.FRAMES_DROPPED.labels(self._label, reason).inc()
        self._throttled.warning(f"{reason}:{self.camera}", msg, self.camera, detail)


def _entry_id(text: str) -> tuple[int, int]:
    """A stream entry id ("1700000000000-3") in the order Redis gives ids."""
    ms, _, seq = text.partition("-")
    return int(ms), int(seq or 0)
