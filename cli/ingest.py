"""``emotion-stream ingest SOURCE --camera ID`` (or ``--cameras FILE``): push cameras'
frames into Redis."""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple

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


class CamerasFile(NamedTuple):
    path: Path
    cameras: list[tuple[str, SourceSpec]]  # as read at start-up


def register(sub: Subcommands) -> None:
    p = add_command(
        sub, "ingest", run, "stream a webcam, video file or RTSP/HTTP URL into Redis",
        description=(
            "Read frames from SOURCE (webcam index like 0, a video file, an rtsp:// or "
            "http(s):// URL, or sample[:N]: a synthetic camera of N moving portraits), "
            "JPEG-encode them and append them to the camera's bounded frame stream. Lost "
            "live sources are reopened with backoff. --cameras FILE ingests many cameras "
            "in one process: one 'ID SOURCE' a line, # for comments; kill -HUP applies the "
            "file again without stopping the cameras that did not change."
        ),
    )
    p.add_argument("source", metavar="SOURCE", nargs="?", help="0, video.mp4, rtsp://..., http(s)://... or sample[:N]")
    p.add_argument("--camera", type=camera_id, help="camera id of SOURCE (letters, digits, _ . : -)")
    p.add_argument("--cameras", type=_camera_list, metavar="FILE",
                   help="many cameras in this process instead of SOURCE: one 'ID SOURCE' a line; SIGHUP applies "
                   "the file again (cameras added start, removed stop, the others go on)")
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


def _camera_list(text: str) -> CamerasFile:
    """An argparse ``type`` for ``--cameras``: the file read now, so a mistake in it is a
    usage error naming its line."""
    from ingest.camera_list import read_camera_list

    try:
        return CamerasFile(Path(text), read_camera_list(Path(text)))
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _cameras(args: argparse.Namespace) -> list[tuple[str, SourceSpec]]:
    """The cameras this process ingests: SOURCE --camera ID, or every line of --cameras."""
    from ingest.sources import SourceSpec

    if args.cameras is not None:
        if args.source is not None or args.camera is not None:
            raise UsageError("--cameras FILE names every camera and its source: give it without SOURCE and --camera")
        return list(args.cameras.cameras)
    if args.source is None:
        raise UsageError("give SOURCE and --camera ID, or --cameras FILE")
    if args.camera is None:
        raise UsageError("--camera ID is required with SOURCE")
    return [(args.camera, SourceSpec.parse(args.source))]


def run(args: argparse.Namespace, settings: Settings) -> int:
    from emotion_stream import metrics
    from emotion_stream.embedded_redis import redis_url_or_embedded
    from emotion_stream.lifecycle import Supervisor, TaskFailed, run_service
    from emotion_stream.redis_conn import connect
    from ingest.camera import IngestOptions, Pace
    from ingest.camera_list import MAX_CAMERAS
    from ingest.camera_set import CameraBusy, CameraSet, camera_problem

    cameras = _cameras(args)
    options = IngestOptions(fps=args.fps, loop=args.loop, pace=Pace(args.pace))
    for camera, spec in cameras:
        if problem := camera_problem(spec, options):
            raise CommandError(f"camera {camera}: {problem}" if args.cameras else problem)
    serve_metrics(settings)
    log = logging.getLogger("ingest")

    async def main(stop: asyncio.Event) -> int:
        loop = asyncio.get_running_loop()
        # Each camera's blocking reads and encodes run in threads: enough for all at once
        # (threads start as they are needed).
        loop.set_default_executor(ThreadPoolExecutor(2 * (MAX_CAMERAS if args.cameras else 1) + 4, "ingest"))
        reload = asyncio.Event()
        if args.cameras:
            loop.add_signal_handler(signal.SIGHUP, _reload_on_hup, reload, log)
            metrics.CAMERAS_FILE_APPLIED.set(1)  # read at start (a mistake in it stopped the start)
        name = f"emotion-stream-ingest-{cameras[0][0]}" if len(cameras) == 1 else "emotion-stream-ingest"
        client = connect(url, name=name)
        supervisor = Supervisor("ingest", stop)
        running = CameraSet(client, settings, options, supervisor)
        try:
            try:
                if not await running.start(cameras):
                    return 0  # stopped while waiting for Redis
            except CameraBusy as exc:
                raise CommandError(str(exc)) from None
            # A camera's source ending (a file) ends that camera; the others go on. One
            # that cannot be read at all stops them all, said in one line.
            failures = await running.run(reload, args.cameras.path if args.cameras else None)
            supervisor.check()
            for camera, error in failures:
                if isinstance(error, RuntimeError) and not isinstance(error, TaskFailed):
                    raise CommandError(f"camera {camera}: {error}" if args.cameras else str(error))
                raise error
            return 0
        finally:
            await running.stop_all()
            await client.aclose()

    with redis_url_or_embedded(settings.redis_url) as url:
        return run_service(main, args.duration)


def _reload_on_hup(reload: asyncio.Event, log: logging.Logger) -> None:
    log.info("received SIGHUP; applying the cameras file again")
    reload.set()
