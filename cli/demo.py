"""``emotion-stream demo``: the whole pipeline on one machine, printing live events."""

from __future__ import annotations

import argparse
import asyncio
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
    format_event,
    load_analyzer,
    number,
    serve_metrics,
)

if TYPE_CHECKING:
    from model import FaceAnalyzer


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
    p.add_argument("--camera", default="demo", help="camera id (default %(default)s)")
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
    serve_metrics(settings.metrics_port, settings.metrics_host)
    with tempfile.TemporaryDirectory(prefix="emotion-demo-") as tmp, redis_url_or_embedded(settings.redis_url) as url:
        source = args.source or str(_sample_clip(Path(tmp)))
        return run_service(lambda stop: _demo(args, settings, url, source, analyzer, stop), args.duration)


def _sample_clip(folder: Path) -> Path:
    from ingest.samples import write_clip

    return write_clip(folder / "sample.avi", seconds=8.0, fps=15, faces=2)


async def _demo(args: argparse.Namespace, settings: Settings, url: str, source: str, analyzer: FaceAnalyzer,
                stop: asyncio.Event) -> int:
    from emotion_stream.events import live_events
    from emotion_stream.redis_conn import connect
    from ingest.camera import IngestOptions, run_camera
    from ingest.publisher import FramePublisher
    from ingest.sources import SourceSpec
    from worker import start_in_process

    client = connect(url, name="emotion-stream-demo")

    async def printer() -> None:
        async for event in live_events(client, args.camera, stop):
            print(format_event(event), flush=True)

    spec = SourceSpec.parse(source)
    camera = asyncio.create_task(
        run_camera(spec, FramePublisher(client, args.camera, settings), IngestOptions(fps=args.fps, loop=True), stop)
    )
    workers = start_in_process(settings, url, stop, 1, analyzer.model, f"demo-{os.getpid()}")
    tasks = [*workers, asyncio.create_task(printer()), camera]
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
