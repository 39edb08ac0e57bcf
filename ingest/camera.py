"""The ingest loop of one camera: source -> rate limit -> publisher, with reconnects."""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass
from enum import StrEnum

from emotion_stream import metrics
from emotion_stream.lifecycle import sleep_or_stop
from emotion_stream.logs import Throttled
from emotion_stream.redis_conn import Backoff

from .live_sender import LiveSender
from .publisher import FramePublisher
from .sources import RateLimiter, SampleSource, SourceSpec, VideoClock, VideoSource, open_source, valid_frame

log = logging.getLogger(__name__)

SNAPSHOT_FPS = 2.0  # a URL that serves one image a request is polled this often, unless --fps


class Pace(StrEnum):
    """How fast a video file is read."""

    REAL_TIME = "real-time"  # at its own frame rate, as a camera would deliver it
    # As fast as the workers take its frames, none lost: the frames are stamped with
    # their time in the video (FrameKind.RECORDED).
    WORKERS = "workers"


@dataclass(frozen=True)
class IngestOptions:
    fps: float = 0.0  # 0 = native rate for files, every frame for live sources
    loop: bool = False  # restart a file at its end instead of ending the stream
    pace: Pace = Pace.REAL_TIME  # video files only
    stall_timeout: float = 10.0  # a live read taking longer than this means the source is lost
    max_backoff: float = 30.0


async def run_camera(spec: SourceSpec, publisher: FramePublisher, options: IngestOptions, stop: asyncio.Event) -> None:
    """Pull frames until the file ends (end marker written) or ``stop`` is set."""
    source: VideoSource | SampleSource | None = open_source(spec)  # SourceError: missing file
    camera = publisher.camera
    label = metrics.camera_label(camera)
    throttled = Throttled(log)
    backoff = Backoff(0.5, options.max_backoff)
    snapshots = False  # the source is a URL serving one still image a request (snapshot.jpg)

    while not stop.is_set():
        if source is None:
            source = open_source(spec)
        opened_at = time.monotonic()
        if not await asyncio.to_thread(source.open):
            metrics.SOURCE_UP.labels(label).set(0)
            if spec.is_file:
                raise RuntimeError(f"{spec.describe()}: cannot be opened as video")
            delay = backoff.next_delay()
            metrics.SOURCE_RECONNECTS.labels(label).inc()
            log.warning("camera %s: cannot open %s; retrying in %.1f s", camera, spec.describe(), delay)
            await sleep_or_stop(stop, delay)
            continue
        if not snapshots:
            log.info("camera %s: reading %s (native %.1f fps)", camera, spec.describe(), source.native_fps)
        metrics.SOURCE_UP.labels(label).set(1)
        ended, stalled, frames = await _pump(source, spec, publisher, options, stop, backoff, throttled)
        if frames == 1 and not ended and not stalled and spec.is_http:
            # One image, then the end: a snapshot URL. Not a lost source: poll it.
            if not snapshots:
                snapshots = True
                log.info("camera %s: %s serves one image a request; polling it at %.1f fps",
                         camera, spec.describe(), options.fps or SNAPSHOT_FPS)
            await sleep_or_stop(stop, opened_at + 1.0 / (options.fps or SNAPSHOT_FPS) - time.monotonic())
            continue
        snapshots = False
        metrics.SOURCE_UP.labels(label).set(0)
        if stalled:
            source = None  # its reader thread is still blocked; it closes the capture itself
        if ended:
            # Before the end marker takes a number of its own.
            log.info("camera %s: end of %s: %d frames read, %d sent", camera, spec.describe(), frames,
                     publisher.seq)
            await publisher.end()
            # A finished file is no source down (--cameras keeps the process, and its
            # metrics, for the other cameras): its series goes, and no alert fires.
            metrics.SOURCE_UP.remove(label)
            break
        if not stop.is_set():
            delay = backoff.next_delay()
            metrics.SOURCE_RECONNECTS.labels(label).inc()
            log.warning("camera %s: source lost; reconnecting in %.1f s", camera, delay)
            await sleep_or_stop(stop, delay)
    if source is not None:
        source.close()


async def _pump(
    source: VideoSource | SampleSource,
    spec: SourceSpec,
    publisher: FramePublisher,
    options: IngestOptions,
    stop: asyncio.Event,
    backoff: Backoff,
    throttled: Throttled,
) -> tuple[bool, bool, int]:
    """Read and publish until a file ends or the source fails: returns (ended, stalled,
    the number of frames read). Live frames (and a file played in real time) are written
    by a ``LiveSender``, so that reading never waits on Redis; a recorded video's, in
    turn, as the workers make room."""
    camera = publisher.camera
    label = metrics.camera_label(camera)
    # A file plays on its own clock (each frame at its timestamp), as a camera would
    # deliver it, and --fps thins it on that clock (a 30 fps file at --fps 10 sends every
    # third frame): its timeline stays true, so people are tracked for as long as they
    # were on screen. A recorded video (--pace workers) is read as fast as the workers
    # take its frames, each stamped with its time in the video. The sample camera draws
    # its frames for any moment and is paced at --fps itself. Live sources are read as
    # fast as they deliver and thinned to --fps, keeping the freshest.
    pace = (source.native_fps or 15.0) if spec.is_file else (options.fps or source.native_fps or 15.0)
    recorded = spec.is_file and options.pace is Pace.WORKERS
    limiter = RateLimiter(0 if spec.is_sample else options.fps)
    started = time.time()
    if recorded:
        # Track events carry times, not positions: this start turns them into positions.
        log.info("camera %s: read as fast as the workers take it; each frame's time is %.3f (%s) + its time in "
                 "the video", camera, started, time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(started)))
    clock = VideoClock(pace)
    zero = next_due = time.monotonic()  # a file's frame at position p is due at zero + p
    frames = 0
    sender = None if recorded else LiveSender(publisher)  # live: reading never waits on Redis
    try:
        while not stop.is_set():
            read = asyncio.ensure_future(asyncio.to_thread(source.read))
            done, _ = await asyncio.wait({read}, timeout=options.stall_timeout)
            if not done:
                # OpenCV cannot interrupt a blocked read, and releasing a capture under a
                # reading thread is unsafe: abandon this capture, close it when read returns.
                read.add_done_callback(lambda _: source.close())
                metrics.FRAMES_DROPPED.labels(label, "source_stalled").inc()
                log.warning("camera %s: no frame for %.0f s; treating the source as lost", camera,
                            options.stall_timeout)
                return False, True, frames
            frame = read.result()
            if frame is None:
                if spec.is_file:
                    if options.loop and await asyncio.to_thread(source.rewind):
                        clock.rewound()
                        continue
                    return True, False, frames
                return False, False, frames
            position = clock.next(source.position_s()) if spec.is_file else 0.0
            if not valid_frame(frame):
                metrics.FRAMES_DROPPED.labels(label, "bad_frame").inc()
                throttled.warning(f"bad:{camera}", "camera %s: unusable frame %s dropped", camera, _describe(frame))
                continue
            backoff.reset()
            frames += 1
            if spec.is_file and not recorded:
                delay = zero + position - time.monotonic()
                if delay > 0:
                    await sleep_or_stop(stop, delay)
                else:
                    zero = time.monotonic() - position  # fell behind: do not burst to catch up
            elif spec.is_sample:
                next_due += 1.0 / pace
                delay = next_due - time.monotonic()
                if delay > 0:
                    await sleep_or_stop(stop, delay)
                else:
                    next_due = time.monotonic()
            if not limiter.ready(position if spec.is_file else None):
                continue
            if sender is not None:
                sender.put(frame, time.time())
            elif await publisher.wait_for_room(stop):
                await publisher.publish(frame, started + position, position_s=round(position, 6))
        return False, False, frames
    finally:
        if sender is not None:
            await sender.close()  # the frame still waiting goes first (before a file's end marker)


def _describe(frame: object) -> str:
    shape = getattr(frame, "shape", None)
    dtype = getattr(frame, "dtype", None)
    return f"(shape {shape}, dtype {dtype})"
