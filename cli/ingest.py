"""``emotion-stream ingest SOURCE --camera ID`` (or ``--cameras FILE``): push cameras'
frames into Redis."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING

from emotion_stream.settings import Settings

from .common import (
    CommandError,
    Subcommands,
    UsageError,
    add_command,
    add_service_options,
    add_settings,
    camera_id,
    number,
    serve_metrics,
)

if TYPE_CHECKING:
    from ingest.sources import SourceSpec

INGEST_LEASE_MS = 6000  # a camera's ingest lease: free this long after its process died


def register(sub: Subcommands) -> None:
    p = add_command(
        sub, "ingest", run, "stream a webcam, video file or RTSP/HTTP URL into Redis",
        description=(
            "Read frames from SOURCE (webcam index like 0, a video file, an rtsp:// or "
            "http(s):// URL, or sample[:N]: a synthetic camera of N moving portraits), "
            "JPEG-encode them and append them to the camera's bounded frame stream. Lost "
            "live sources are reopened with backoff. --cameras FILE ingests many cameras "
            "in one process: one 'ID SOURCE' a line, # for comments."
        ),
    )
    p.add_argument("source", metavar="SOURCE", nargs="?", help="0, video.mp4, rtsp://..., http(s)://... or sample[:N]")
    p.add_argument("--camera", type=camera_id, help="camera id of SOURCE (letters, digits, _ . : -)")
    p.add_argument("--cameras", type=_camera_list, metavar="FILE",
                   help="many cameras in this process instead of SOURCE: one 'ID SOURCE' a line")
    p.add_argument("--fps", type=number(float, 0, 1000), default=0.0,
                   help="frames per second to send: a video file plays at its own rate and is thinned to this "
                   "on its own clock, a live source is thinned to this (default: every frame)")
    p.add_argument("--loop", action="store_true", help="restart a video file at its end")
    p.add_argument("--pace", choices=("real-time", "workers"), default="real-time",
                   help="a video file: real-time plays it at its own rate, as a camera; workers reads it as fast "
                   "as the workers analyse it, losing no frame, each event saying where in the video it is "
                   "(default %(default)s)")
    add_settings(p, "frames_max_len", "jpeg_quality", "write_replicas")
    add_service_options(p)


def _camera_list(text: str) -> list[tuple[str, SourceSpec]]:
    """An argparse ``type`` for ``--cameras``: the file read now, so a mistake in it is a
    usage error naming its line."""
    from ingest.camera_list import read_camera_list

    try:
        return read_camera_list(Path(text))
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _cameras(args: argparse.Namespace) -> list[tuple[str, SourceSpec]]:
    """The cameras this process ingests: SOURCE --camera ID, or every line of --cameras."""
    from ingest.sources import SourceSpec

    if args.cameras is not None:
        if args.source is not None or args.camera is not None:
            raise UsageError("--cameras FILE names every camera and its source: give it without SOURCE and --camera")
        return list(args.cameras)
    if args.source is None:
        raise UsageError("give SOURCE and --camera ID, or --cameras FILE")
    if args.camera is None:
        raise UsageError("--camera ID is required with SOURCE")
    return [(args.camera, SourceSpec.parse(args.source))]


def run(args: argparse.Namespace, settings: Settings) -> int:
    from emotion_stream import keys
    from emotion_stream.embedded_redis import redis_url_or_embedded
    from emotion_stream.leases import Lease
    from emotion_stream.lifecycle import Supervisor, TaskFailed, cancel_and_wait, run_service
    from emotion_stream.redis_conn import TRANSIENT_ERRORS, connect, retrying
    from ingest.camera import IngestOptions, Pace, run_camera
    from ingest.publisher import FramePublisher
    from ingest.sources import SourceError, file_problem

    cameras = _cameras(args)
    options = IngestOptions(fps=args.fps, loop=args.loop, pace=Pace(args.pace))
    for camera, spec in cameras:
        named = f"camera {camera}: " if args.cameras else ""
        if options.pace is Pace.WORKERS and not spec.is_file:
            raise CommandError(f"{named}--pace workers reads a video file; {spec.describe()} is a live source")
        problem = file_problem(spec)
        if problem:
            raise CommandError(f"{named}{spec.target}: {problem}")
    serve_metrics(settings.metrics_port, settings.metrics_host)
    log = logging.getLogger("ingest")

    async def main(stop: asyncio.Event) -> int:
        # Each camera's blocking reads and encodes run in threads: enough for all at once.
        asyncio.get_running_loop().set_default_executor(ThreadPoolExecutor(2 * len(cameras) + 4, "ingest"))
        name = f"emotion-stream-ingest-{cameras[0][0]}" if len(cameras) == 1 else "emotion-stream-ingest"
        client = connect(url, name=name)
        publishers = [FramePublisher(client, camera, settings) for camera, _ in cameras]
        leases = [Lease(client, keys.ingest_lease(camera), INGEST_LEASE_MS) for camera, _ in cameras]
        supervisor = Supervisor("ingest", stop)
        held: list[Lease] = []
        try:
            for (camera, _), lease in zip(cameras, leases):
                got = await retrying(lease.hold, what="connect", component="ingest", stop=stop)
                if got is None:
                    return 0  # stopped while waiting for Redis
                if not got:
                    raise CommandError(f"camera {camera!r} is being ingested by another process (free "
                                       f"{INGEST_LEASE_MS / 1000:.0f} s after it stops); give this one its own --camera")
                held.append(lease)
            keepers = [supervisor.start(lease.keep(stop), f"ingest-lease-{camera}")
                       for (camera, _), lease in zip(cameras, leases)]
            try:
                # A camera's source ending (a file) ends that camera; the others go on. One
                # that cannot be read at all stops them all, said in one line.
                readers = {asyncio.create_task(run_camera(spec, publisher, options, stop), name=f"camera-{camera}"):
                           camera for (camera, spec), publisher in zip(cameras, publishers)}
                done, _ = await asyncio.wait(readers, return_when=asyncio.FIRST_EXCEPTION)
                failures = [(readers[task], error) for task in done if (error := task.exception()) is not None]
                if failures:
                    stop.set()
                    await asyncio.wait(readers)
            finally:
                for task in keepers:
                    await cancel_and_wait(task)
            supervisor.check()
            for camera, error in failures:
                if isinstance(error, (SourceError, RuntimeError)) and not isinstance(error, TaskFailed):
                    raise CommandError(f"camera {camera}: {error}" if args.cameras else str(error))
                raise error
            return 0
        finally:
            for lease in held:
                with contextlib.suppress(*TRANSIENT_ERRORS):  # Redis gone: the lease expires on its own
                    await lease.release()
            for publisher in publishers:
                log.info("%s", publisher.summary())
            await client.aclose()

    with redis_url_or_embedded(settings.redis_url) as url:
        return run_service(main, args.duration)
