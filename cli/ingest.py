"""``emotion-stream ingest SOURCE --camera ID``: push a camera's frames into Redis."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging

from emotion_stream.settings import Settings

from .common import (
    CommandError,
    Subcommands,
    add_command,
    add_service_options,
    add_settings,
    camera_id,
    number,
    serve_metrics,
)

INGEST_LEASE_MS = 6000  # a camera's ingest lease: free this long after its process died


def register(sub: Subcommands) -> None:
    p = add_command(
        sub, "ingest", run, "stream a webcam, video file or RTSP/HTTP URL into Redis",
        description=(
            "Read frames from SOURCE (webcam index like 0, a video file, an rtsp:// or "
            "http(s):// URL, or sample[:N]: a synthetic camera of N moving portraits), "
            "JPEG-encode them and append them to the camera's bounded frame stream. Lost "
            "live sources are reopened with backoff."
        ),
    )
    p.add_argument("source", metavar="SOURCE", help="0, video.mp4, rtsp://..., http(s)://... or sample[:N]")
    p.add_argument("--camera", type=camera_id, required=True, help="camera id (letters, digits, _ . : -)")
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


def run(args: argparse.Namespace, settings: Settings) -> int:
    from emotion_stream import keys
    from emotion_stream.embedded_redis import redis_url_or_embedded
    from emotion_stream.leases import Lease
    from emotion_stream.lifecycle import Supervisor, TaskFailed, cancel_and_wait, run_service
    from emotion_stream.redis_conn import TRANSIENT_ERRORS, connect, retrying
    from ingest.camera import IngestOptions, Pace, run_camera
    from ingest.publisher import FramePublisher
    from ingest.sources import SourceError, SourceSpec

    camera: str = args.camera
    spec = SourceSpec.parse(args.source)
    options = IngestOptions(fps=args.fps, loop=args.loop, pace=Pace(args.pace))
    if options.pace is Pace.WORKERS and not spec.is_file:
        raise CommandError(f"--pace workers reads a video file; {spec.describe()} is a live source")
    serve_metrics(settings.metrics_port, settings.metrics_host)

    async def main(stop: asyncio.Event) -> int:
        client = connect(url, name=f"emotion-stream-ingest-{camera}")
        publisher = FramePublisher(client, camera, settings)
        lease = Lease(client, keys.ingest_lease(camera), INGEST_LEASE_MS)
        supervisor = Supervisor(f"ingest {camera}", stop)
        try:
            held = await retrying(lease.hold, what="connect", component="ingest", stop=stop)
            if held is None:
                return 0  # stopped while waiting for Redis
            if not held:
                raise CommandError(f"camera {camera!r} is being ingested by another process (free "
                                   f"{INGEST_LEASE_MS / 1000:.0f} s after it stops); give this one its own --camera")
            keeper = supervisor.start(lease.keep(stop), "ingest-lease")
            try:
                await run_camera(spec, publisher, options, stop)
            finally:
                await cancel_and_wait(keeper)
                with contextlib.suppress(*TRANSIENT_ERRORS):  # Redis gone: the lease expires on its own
                    await lease.release()
            supervisor.check()
            return 0
        except (SourceError, RuntimeError) as exc:
            if isinstance(exc, TaskFailed):
                raise
            raise CommandError(str(exc)) from None
        finally:
            logging.getLogger("ingest").info("%s", publisher.summary())
            await client.aclose()

    with redis_url_or_embedded(settings.redis_url) as url:
        return run_service(main, args.duration)
