"""``emotion-stream demo``: the whole pipeline on one machine, printing live events."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

from emotion_stream.settings import Settings

from .common import (
    CommandError,
    Subcommands,
    add_command,
    add_model_options,
    add_service_options,
    camera_id,
    format_event,
    load_analyzer,
    number,
    serve_metrics,
)

if TYPE_CHECKING:
    from redis.asyncio import Redis

    from model import FaceAnalyzer

log = logging.getLogger(__name__)

QUIET_S = 10.0  # frames analysed this long without a face: say so, rather than print nothing


def register(sub: Subcommands) -> None:
    p = add_command(
        sub, "demo", run, "run ingest + worker on a sample clip (or --source) and print events",
        description=(
            "Start an embedded Redis (unless REDIS_URL is set), a worker and an ingest of a "
            "generated clip with real faces, and print the per-face events as they arrive. "
            "Ctrl-C stops everything."
        ),
    )
    p.add_argument("--source", default=None, help="webcam index, video file or URL instead of the sample clip")
    p.add_argument("--camera", type=camera_id, default="demo", help="camera id (default %(default)s)")
    p.add_argument("--fps", type=number(float, 0, 1000, above=True), default=10.0, help="frames per second to ingest (default %(default)s)")
    add_model_options(p)
    add_service_options(p)


def run(args: argparse.Namespace, settings: Settings) -> int:
    from emotion_stream.embedded_redis import redis_url_or_embedded
    from emotion_stream.lifecycle import run_service
    from ingest.sources import SourceSpec, file_problem

    problem = file_problem(SourceSpec.parse(args.source)) if args.source else None
    if problem:
        raise CommandError(f"{args.source}: {problem}")
    analyzer = load_analyzer(settings)
    serve_metrics(settings)
    with tempfile.TemporaryDirectory(prefix="emotion-demo-") as tmp, redis_url_or_embedded(settings.redis_url) as url:
        source = args.source or str(_sample_clip(Path(tmp)))
        return run_service(lambda stop: _demo(args, settings, url, source, analyzer, stop), args.duration)


def _sample_clip(folder: Path) -> Path:
    from ingest.samples import write_clip

    return write_clip(folder / "sample.avi", seconds=8.0, fps=15, faces=2)


async def _demo(args: argparse.Namespace, settings: Settings, url: str, source: str, analyzer: FaceAnalyzer,
                stop: asyncio.Event) -> int:
    from emotion_stream.events import live_events
    from emotion_stream.lifecycle import sleep_or_stop
    from emotion_stream.redis_conn import connect
    from ingest.camera import IngestOptions, run_camera
    from ingest.publisher import FramePublisher
    from ingest.sources import SourceSpec
    from worker import start_in_process

    client = connect(url, name="emotion-stream-demo")
    printed = 0

    async def printer() -> None:
        nonlocal printed
        async for event in live_events(client, args.camera, stop):
            print(format_event(event), flush=True)
            printed += 1

    async def quiet() -> None:
        seen, told = (0, await _processed(client, args.camera)), False
        while not stop.is_set():
            await sleep_or_stop(stop, QUIET_S)
            processed = await _processed(client, args.camera)
            if stop.is_set() or processed is None or seen[1] is None:
                seen = (printed, processed)
                continue
            if printed > seen[0]:
                told = False
            elif processed > seen[1] and not told:  # once a quiet spell
                told = True
                log.warning("camera %s: %d frames analysed in %.0f s, no face found: faces must be upright, "
                            "facing the camera and at least 1/16 of the frame's longer side (--detect-size)",
                            args.camera, processed - seen[1], QUIET_S)
            seen = (printed, processed)

    spec = SourceSpec.parse(source)
    camera = asyncio.create_task(
        run_camera(spec, FramePublisher(client, args.camera, settings), IngestOptions(fps=args.fps, loop=True), stop)
    )
    # Its camera alone: a REDIS_URL may be shared with cameras that have their own workers.
    workers = start_in_process(settings, url, stop, 1, analyzer.model, f"demo-{os.getpid()}",
                               only_cameras={args.camera})
    tasks = [*workers, asyncio.create_task(printer()), asyncio.create_task(quiet()), camera]
    stopped = asyncio.create_task(stop.wait())
    try:
        # Any part failing ends the demo with its error, instead of a silent idle run.
        done, _ = await asyncio.wait([*tasks, stopped], return_when=asyncio.FIRST_COMPLETED)
        failed = next((t for t in done if t is not stopped and not t.cancelled() and t.exception()), None)
        if failed is not None:
            raise CommandError(str(failed.exception()))
    finally:
        stop.set()
        await asyncio.gather(*tasks, stopped, return_exceptions=True)
        await client.aclose()
    return 0


async def _processed(client: Redis, camera: str) -> int | None:
    """Frames the camera's workers analysed so far; None while Redis cannot say (the parts
    that need Redis report the outage)."""
    from emotion_stream import keys
    from emotion_stream.redis_conn import TRANSIENT_ERRORS

    try:
        return int(await client.hget(keys.stats(camera), keys.Stat.PROCESSED) or 0)
    except TRANSIENT_ERRORS:
        return None
