"""The worker service: consume frames, micro-batch, analyse off the loop, publish, ack.

Tasks of one worker process:
  reader      XREADGROUP across all camera streams into a small bounded queue
  processor   gathers up to ``batch_size`` frames or ``max_wait_ms``, runs the CPU stage
              in an executor thread, writes outcomes (events/results/dead letters + ACK)
  reclaimer   XAUTOCLAIM entries left idle by dead workers
  housekeeper heartbeat, backlog gauges (the reader discovers new cameras)

Shutdown (SIGTERM/SIGINT): the reader stops after its current read, the processor drains
the queue, so no entry is left pending for others to wait out.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import time
from collections.abc import Collection
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import redis
import redis.asyncio as aioredis

from emotion_stream import keys, metrics
from emotion_stream.images import ImageLimits
from emotion_stream.keys import Stat
from emotion_stream.leases import Lease
from emotion_stream.lifecycle import HANG_S, Supervisor, cancel_and_wait, failpoint, sleep_or_stop
from emotion_stream.liveness import LIVENESS
from emotion_stream.logs import Throttled
from emotion_stream.redis_conn import TRANSIENT_ERRORS, Backoff, as_text, evicting_nodes, retrying
from emotion_stream.schema import (
    DeadLetterKind,
    FrameKind,
    FrameMessage,
    MessageError,
    SkipReason,
)
from emotion_stream.settings import Settings
from model import FaceAnalyzer
from tracks import TrackOwner

from .outcomes import Origin, analyzed_outcome, dead_letter_outcome, end_outcome, skipped_record
from .processing import FrameAnalysis, FrameProcessor
from .publishing import ANNOUNCE_S, Outcome, OutcomeWriter
from .streams import ConsumerGroup, Entry

log = logging.getLogger(__name__)

HEARTBEAT_S = 2.0
DISCOVERY_S = 0.2  # how soon a new camera or batch job is picked up (SMEMBERS: cheap)
MAX_DELIVERIES = 3  # an entry handed out this often without completing is poison
ALIVE_WINDOW_S = 10.0
GONE_AFTER_S = 3600.0  # a worker with no heartbeat this long is dead, and its consumers are removed
MAX_CLOCK_SKEW_S = 30.0  # captured_at may be this far past the XADD time (Redis' clock)
READ_BLOCK_MS = 100  # bounds discovery latency and how long shutdown waits for the reader
EVICTION_CHECK_S = 60.0  # how often Redis' maxmemory policy is read


LEASE_MS = int(3 * HEARTBEAT_S * 1000)  # a worker's name is free this long after it died
BACKGROUND_GRACE_S = 5.0  # at shutdown, for the background tasks to end by themselves

class NameInUse(RuntimeError):
    """Another running worker has this consumer name: the two would share one consumer
    and its pending entries, each acking and reclaiming the other's work."""


def _hang(_messages: object) -> Any:
    """The CPU stage of the failpoint ``hang-cpu-stage``: one micro-batch that never ends."""
    time.sleep(HANG_S)


def default_worker_name() -> str:
    return f"{socket.gethostname()}-{os.getpid()}"


class Worker:
    """One consumer of the shared group: reads every camera's frames, analyses them in
    micro-batches off the event loop, and writes each frame's outcome atomically with its
    ACK. Tasks: reader, processor, reclaimer, housekeeper (module docstring). ``run``
    returns after SIGTERM/SIGINT once in-flight work is written."""

    def __init__(self, client: aioredis.Redis, analyzer: FaceAnalyzer, settings: Settings,
                 only_cameras: Collection[str] | None = None) -> None:
        self.redis = client
        self.analyzer = analyzer
        self.settings = settings
        self.name = settings.worker_name or default_worker_name()
        self.group = ConsumerGroup(client, self.name, only=only_cameras)
        self.only_cameras = only_cameras
        self.writer = OutcomeWriter(client, keys.WORKER_GROUP, settings.events_max_len, settings.dead_letter_max_len)
        self.processor = FrameProcessor(analyzer, ImageLimits(settings.max_image_bytes, settings.max_image_pixels),
                                        threads=settings.cpu_threads or os.cpu_count() or 1, describe=settings.tracking,
                                        still_views=settings.still_views)
        self._process = _hang if failpoint("hang-cpu-stage") else self.processor.process
        self.queue: asyncio.Queue[Entry] = asyncio.Queue(maxsize=2 * settings.batch_size)
        # One CPU thread per worker; OpenCV and TensorFlow release the GIL, so several
        # workers (processes, or in-process for batch mode) use several cores.
        self.executor = ThreadPoolExecutor(1, thread_name_prefix="cpu")
        self.detector = analyzer.detector.name
        self.model_id = analyzer.model.id
        self.origin = Origin(self.name, self.detector, self.model_id)
        self._throttled = Throttled(log)
        self._reading_done = asyncio.Event()
        self._discovered = 0.0
        self._name_lease = Lease(client, keys.worker_lease(self.name), LEASE_MS)
        self._unowned_since: dict[str, float] = {}  # cameras seen without a tracking owner, since when
        self._evicting: dict[str, str] = {}  # Redis masters that may evict keys, and their policy
        self._eviction_checked = 0.0
        # Redis' clock minus ours: a frame's age is measured on Redis' clock alone (its
        # XADD time is in the entry id), never against an ingest machine's clock.
        self._clock_offset = 0.0
        metrics.init_worker_series(self.detector, self.model_id, analyzer.model.backend, analyzer.model.device)

    # ------------------------------------------------------------------ lifecycle
    async def run(self, stop: asyncio.Event) -> None:
        log.info("worker %s: detector=%s model=%s on %s/%s batch=%d wait=%dms", self.name, self.detector,
                 self.model_id, self.analyzer.model.backend, self.analyzer.model.device, self.settings.batch_size,
                 self.settings.max_wait_ms)
        await asyncio.get_running_loop().run_in_executor(
            self.executor, self.analyzer.model.warm_up, 2 * self.settings.batch_size  # ~2 faces a frame
        )
        try:
            await self._until_connected(stop)
        except BaseException:
            self.executor.shutdown(wait=False)
            raise
        # A task that fails stops this worker (and the others sharing ``stop``): logged at
        # once, then an orderly shutdown, then TaskFailed (exit 1). Never half alive.
        supervisor = Supervisor(f"worker {self.name}", stop)
        background = [supervisor.start(self._reclaimer(stop), "reclaimer"),
                      supervisor.start(self._housekeeper(stop), "housekeeper")]
        if self.settings.tracking and self.settings.track_owner:
            owner = TrackOwner(self.redis, self.settings, self.name, self.analyzer.model.metadata.class_prior(),
                               self.only_cameras)
            background.append(supervisor.start(owner.run(stop), "tracks"))
        reader = supervisor.start(self._reader(stop), "reader")
        processor = supervisor.start(self._processor(), "processor")
        try:
            await asyncio.wait([reader])
            await asyncio.wait([processor])  # drains what the reader queued
        finally:
            try:
                if stop.is_set():
                    # The background loops end on their own once ``stop`` is set; the tracks
                    # owner then releases its cameras, which a cancellation could cut short.
                    await asyncio.wait(background, timeout=BACKGROUND_GRACE_S)
            finally:  # also when this task is cancelled during that wait
                await cancel_and_wait(*background)
            await self._leave()
            self.executor.shutdown(wait=True)
            self.processor.close()
        supervisor.check()
        log.info("worker %s: stopped", self.name)

    async def _until_connected(self, stop: asyncio.Event) -> None:
        await retrying(self._connect, what="connect", component="worker", stop=stop, backoff=Backoff(0.2, 5.0))

    async def _connect(self) -> None:
        await self.redis.ping()
        await self._sync_clock()
        if not await self._name_lease.hold():
            raise NameInUse(
                f"worker name {self.name!r} is in use by a running worker (free {LEASE_MS / 1000:.0f} s "
                "after that one stops); give each worker its own --name"
            )
        await self.group.refresh()

    async def _sync_clock(self) -> None:
        sent = time.time()
        seconds, micros = await self.redis.time()
        self._clock_offset = seconds + micros / 1e6 - (sent + time.time()) / 2

    def _redis_now(self) -> float:
        return time.time() + self._clock_offset

    async def _leave(self) -> None:
        try:
            await self.group.leave()
            await self.redis.hdel(keys.WORKERS, self.name)
            await self._name_lease.release()
        except TRANSIENT_ERRORS:
            pass

    # ------------------------------------------------------------------ tasks
    async def _reader(self, stop: asyncio.Event) -> None:
        refused = Backoff(0.1, 5.0)
        try:
            while not stop.is_set():
                # Only ask for what the queue can take: the rest stays in Redis for others.
                room = self.queue.maxsize - self.queue.qsize()
                if room <= 0:
                    await asyncio.sleep(0.005)
                    continue
                try:
                    entries = await retrying(lambda: self._read(room), what="read", component="worker", stop=stop)
                    refused.reset()
                except redis.ResponseError as exc:
                    # Not an outage but a refusal (the cameras set replaced by another
                    # type, say): a worker outlives whatever is done to its keys.
                    metrics.REDIS_ERRORS.labels("worker").inc()
                    self._throttled.warning("reader", "worker %s: Redis refused a read: %s", self.name, exc)
                    await sleep_or_stop(stop, refused.next_delay())
                    continue
                for entry in entries or []:
                    await self.queue.put(entry)
        finally:
            self._reading_done.set()

    async def _read(self, room: int) -> list[Entry]:
        if time.monotonic() - self._discovered > DISCOVERY_S:
            self._discovered = time.monotonic()
            await self._discover()
        return await self.group.read(min(room, self.settings.batch_size), READ_BLOCK_MS)

    async def _processor(self) -> None:
        batch_size = self.settings.batch_size
        max_wait = self.settings.max_wait_ms / 1000
        while (first := await self._get(None)) is not None:
            batch = [first]
            deadline = time.monotonic() + max_wait
            while len(batch) < batch_size and (item := await self._get(deadline - time.monotonic())) is not None:
                batch.append(item)
            await self._handle(batch)

    async def _get(self, timeout: float | None) -> Entry | None:
        """Next queued entry, waiting up to ``timeout`` (None: until reading has stopped
        and the queue is empty). Never loses an item to a timeout."""
        if not self.queue.empty():
            return self.queue.get_nowait()
        if timeout is not None and timeout <= 0:
            return None
        if timeout is None and self._reading_done.is_set():
            return None
        getter = asyncio.ensure_future(self.queue.get())
        waiters: set[asyncio.Future[Any]] = {getter}
        if timeout is None:
            waiters.add(asyncio.ensure_future(self._reading_done.wait()))
        await asyncio.wait(waiters, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
        for waiter in waiters - {getter}:
            waiter.cancel()
        if getter.done():
            return getter.result()
        getter.cancel()  # an item not yet taken stays in the queue
        return self.queue.get_nowait() if not self.queue.empty() else None

    async def _reclaimer(self, stop: asyncio.Event) -> None:
        interval = max(0.2, self.settings.claim_idle_ms / 2000)
        while not stop.is_set():
            await sleep_or_stop(stop, interval)
            if stop.is_set():
                return
            try:
                claimed = await self.group.claim_idle(self.settings.claim_idle_ms, self.settings.batch_size)
            except TRANSIENT_ERRORS:
                continue  # the reader logs outages
            if claimed:
                metrics.FRAMES_RECLAIMED.inc(len(claimed))
                log.info("worker %s: reclaimed %d idle entries", self.name, len(claimed))
            for entry in claimed:
                await self.queue.put(entry)

    async def _housekeeper(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            try:
                now = time.time()
                if not await self._name_lease.hold():
                    # Only if this worker stalled past its lease and another took the name.
                    self._throttled.warning("lease", "worker %s: another worker holds this name now", self.name)
                await self.redis.hset(keys.WORKERS, self.name, repr(now))
                await self._sync_clock()
                beats = await self.redis.hgetall(keys.WORKERS)
                alive = sum(1 for t in beats.values() if now - float(t) < ALIVE_WINDOW_S)
                await self._bury(now, {as_text(name): float(t) for name, t in beats.items()})
                metrics.WORKERS_ALIVE.set(alive)
                for stream, (lag, pending) in (await self.group.backlog()).items():
                    camera = metrics.camera_label(keys.camera_of(stream))
                    metrics.BACKLOG.labels(camera, "lag").set(lag)
                    metrics.BACKLOG.labels(camera, "pending").set(pending)
                if self.settings.tracking:
                    await self._watch_tracking(now)
                if now - self._eviction_checked >= EVICTION_CHECK_S:
                    first, self._eviction_checked = not self._eviction_checked, now  # an outage: next minute
                    await self._check_eviction(first)
            except TRANSIENT_ERRORS:
                pass  # the reader logs outages and backs off
            except Exception:  # housekeeping must never kill the worker
                log.exception("housekeeping failed")
            await sleep_or_stop(stop, HEARTBEAT_S)

    async def _bury(self, now: float, beats: dict[str, float]) -> None:
        """Workers silent for GONE_AFTER_S (killed, or a pod replaced: a name is host and
        pid) leave the workers hash and every consumer group they hold nothing in; else
        each one ever started stayed in both for good."""
        for name in [name for name, beat in beats.items() if now - beat > GONE_AFTER_S]:
            if await self.group.remove_consumer(name):  # else pending entries wait to be reclaimed first
                await self.redis.hdel(keys.WORKERS, name)
                log.info("worker %s: worker %s silent for %.0f s; removed from the consumer groups", self.name,
                         name, now - beats[name])

    async def _check_eviction(self, first: bool) -> None:
        """Warn (and gauge) when Redis may evict keys when full: frames, consumer groups,
        leases and tracking state would vanish with nothing counted. Read every
        EVICTION_CHECK_S (CONFIG SET changes it live); said again when it changes."""
        evicting = await evicting_nodes(self.redis)
        if evicting is None:
            if first:
                log.info("worker %s: cannot read Redis' maxmemory policy (INFO refused); make sure it is "
                         "noeviction", self.name)
            return
        metrics.REDIS_EVICTING_NODES.set(len(evicting))
        if evicting and evicting != self._evicting:
            log.warning("Redis may evict keys when full (maxmemory-policy %s): frames, consumer groups, leases "
                        "and people would vanish uncounted; set maxmemory-policy noeviction (a full Redis then "
                        "refuses writes, which every part waits out and counts)",
                        ", ".join(f"{policy} on {node}" if node != "redis" else policy
                                  for node, policy in sorted(evicting.items())))
        self._evicting = evicting

    async def _watch_tracking(self, now: float) -> None:
        """Frame records of this worker's cameras with no tracking owner for more than two
        leases (owners take a free camera within one): nothing turns them into events.
        Warned and gauged; the records wait, and a later owner publishes them (untracked
        past its look-back)."""
        cameras = self.writer.recent_cameras(ANNOUNCE_S * 2)
        self._unowned_since = {c: t for c, t in self._unowned_since.items() if c in cameras}  # not the withdrawn
        pipe = self.redis.pipeline(transaction=False)
        for camera in cameras:
            pipe.exists(keys.track_lease(camera))
            pipe.xlen(keys.analysed(camera))
        replies = await pipe.execute() if cameras else []
        grace = 2 * self.settings.track_lease_s
        unowned = []
        for camera, owned, waiting in zip(cameras, replies[::2], replies[1::2]):
            if owned or not waiting:
                self._unowned_since.pop(camera, None)
            elif now - self._unowned_since.setdefault(camera, now) > grace:
                unowned.append(camera)
                self._throttled.warning(f"unowned:{camera}", "camera %s: %d analysed frame(s) waiting and no "
                                        "tracking owner (start `emotion-stream tracks`, or a worker without "
                                        "--no-track-owner)", camera, waiting)
        metrics.CAMERAS_WITHOUT_OWNER.set(len(unowned))

    async def _discover(self) -> None:
        added = await self.group.refresh()
        for stream in added:
            metrics.init_camera_series(keys.camera_of(stream))
        if added:
            log.info("worker %s: consuming %s", self.name, ", ".join(keys.camera_of(s) for s in added))

    # ------------------------------------------------------------------ batch handling
    async def _handle(self, batch: list[Entry]) -> None:
        started = time.monotonic()
        now = self._redis_now()  # Redis' clock, as the entry ids
        outcomes: list[Outcome] = []
        work: list[tuple[Entry, FrameMessage]] = []
        labels = (self.detector, self.model_id)
        for entry in batch:
            queue_wait = max(0.0, now - entry.enqueued_at)
            camera = keys.camera_of(entry.stream)
            if entry.fields is None:
                metrics.FRAMES_SKIPPED.labels(metrics.camera_label(camera), SkipReason.TRIMMED).inc()
                outcomes.append(Outcome(entry.stream, entry.id, stat=Stat.TRIMMED))
                continue
            try:
                message = FrameMessage.from_fields(entry.fields, max_image_bytes=self.settings.max_image_bytes)
            except MessageError as exc:
                outcomes.append(self._dead_letter(entry, str(exc), None, DeadLetterKind.MALFORMED_MESSAGE))
                continue
            if message.camera != camera:
                # The stream is the truth: a frame claiming another camera would publish
                # into that camera's events while being counted under this one.
                reason = f"camera field {message.camera!r} does not match its stream {entry.stream!r}"
                outcomes.append(self._dead_letter(entry, reason, None, DeadLetterKind.MALFORMED_MESSAGE))
                continue
            ahead = message.captured_at - entry.enqueued_at
            if ahead > MAX_CLOCK_SKEW_S and message.position_s is None:
                # A capture time after the frame reached Redis would never count as stale
                # (a recorded video's frames are on its own clock, and never stale).
                reason = f"captured_at is {ahead:.0f} s after the frame reached Redis (clock skew?)"
                outcomes.append(self._dead_letter(entry, reason, message, DeadLetterKind.MALFORMED_MESSAGE))
                continue
            if entry.deliveries > MAX_DELIVERIES:
                # Workers died on it repeatedly (e.g. a crash in a codec): stop the cycle.
                reason = f"delivered {entry.deliveries} times without completing (poison message?)"
                outcomes.append(self._dead_letter(entry, reason, message, DeadLetterKind.POISON))
                continue
            if message.kind is FrameKind.END:
                outcomes.append(end_outcome(entry, message, self.settings.tracking))
                continue
            if message.kind is FrameKind.LIVE and now - entry.enqueued_at > self.settings.max_frame_age_s:
                metrics.FRAMES_SKIPPED.labels(metrics.camera_label(message.camera), SkipReason.STALE).inc()
                self._throttled.warning(
                    f"stale:{message.camera}", "camera %s: skipped stale frame %d (%.2f s in Redis)",
                    message.camera, message.seq, now - entry.enqueued_at,
                )
                outcomes.append(Outcome(entry.stream, entry.id, stat=Stat.STALE,
                                        frame_record=skipped_record(message, self.settings.tracking)))
                continue
            metrics.STAGE_SECONDS.labels("queue_wait", *labels).observe(queue_wait)
            work.append((entry, message))

        if work:
            loop = asyncio.get_running_loop()
            with LIVENESS.busy("worker cpu stage"):
                analyses, times = await loop.run_in_executor(self.executor, self._process, [m for _, m in work])
            metrics.BATCH_FRAMES.observe(len(work))
            processed_at = time.time()
            for (entry, message), analysis in zip(work, analyses):
                outcomes.append(self._outcome(entry, message, analysis, processed_at))
        else:
            times = None

        publish_start = time.monotonic()
        accepted = await self._write(outcomes)
        published_at = time.time()
        publish_s = time.monotonic() - publish_start
        stages = {"publish": publish_s}
        if times is not None:
            stages.update(decode=times.decode, detect=times.detect, classify=times.classify)
        for stage, seconds in stages.items():
            metrics.STAGE_BUSY_SECONDS.labels(stage).inc(seconds)
        for outcome, won in zip(outcomes, accepted):
            if not won or outcome.captured_at is None:
                continue  # another worker's ACK won, or not an analysed frame
            for stage, seconds in stages.items():
                metrics.STAGE_SECONDS.labels(stage, *labels).observe(seconds)
            if not outcome.recorded:  # a recorded frame's capture time is the video's clock
                metrics.END_TO_END_SECONDS.labels(*labels).observe(max(0.0, published_at - outcome.captured_at))
            metrics.FRAMES_PROCESSED.labels(metrics.camera_label(outcome.camera)).inc()
        lost = accepted.count(False)
        if lost:
            log.info("worker %s: %d entries were already handled by another worker", self.name, lost)
        log.debug("batch of %d handled in %.1f ms", len(batch), (time.monotonic() - started) * 1000)

    def _outcome(self, entry: Entry, message: FrameMessage, analysis: FrameAnalysis, processed_at: float) -> Outcome:
        if analysis.error:
            return self._dead_letter(entry, analysis.error, message, analysis.error_kind or DeadLetterKind.ANALYSIS_FAILED)
        outcome = analyzed_outcome(entry, message, analysis.faces, processed_at, self.origin,
                                   tracking=self.settings.tracking, weak=analysis.weak, scene=analysis.scene)
        detected = sum(1 for face in analysis.faces if not face.whole_image)
        metrics.FACES_DETECTED.labels(self.detector).inc(detected)
        if analysis.faces and analysis.faces[0].whole_image:
            metrics.WHOLE_IMAGE_FALLBACKS.inc()
        for face in analysis.faces:
            metrics.EVENTS_PUBLISHED.labels(face.emotion).inc()
        return outcome

    def _dead_letter(self, entry: Entry, reason: str, message: FrameMessage | None, kind: DeadLetterKind) -> Outcome:
        metrics.FRAMES_DEAD_LETTERED.labels(kind).inc()
        self._throttled.warning(f"dlq:{kind}", "dead-lettered %s %s: %s", entry.stream, entry.id, reason)
        return dead_letter_outcome(entry, reason, message, self.name, tracking=self.settings.tracking)

    async def _write(self, outcomes: list[Outcome]) -> list[bool]:
        """Write outcomes, retrying through Redis outages: the work is already done. At
        shutdown with Redis gone, give up after a few tries and leave the entries pending
        for other workers to reclaim."""
        accepted = await retrying(
            lambda: self.writer.write(outcomes), what="write", component="worker",
            give_up=lambda attempts: self._reading_done.is_set() and attempts > 5,
        )
        if accepted is None:
            log.error("worker %s: giving up on %d outcomes (Redis down at shutdown)", self.name, len(outcomes))
            return [False] * len(outcomes)
        return accepted

