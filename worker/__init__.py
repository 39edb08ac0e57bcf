"""Workers: consume frames from Redis, analyse them in micro-batches, publish events."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Collection

from emotion_stream.redis_conn import connect
from emotion_stream.settings import Settings
from model import EmotionModel, FaceAnalyzer

from .service import NameInUse, Worker


async def serve(settings: Settings, redis_url: str, stop: asyncio.Event, analyzer: FaceAnalyzer | None = None,
                only_cameras: Collection[str] | None = None) -> None:
    """Run one worker until ``stop`` is set (then drain and return); it consumes
    ``only_cameras`` if given, else every camera."""
    if analyzer is None:
        analyzer = await asyncio.to_thread(FaceAnalyzer.from_settings, settings)
    client = connect(redis_url, name="emotion-stream-worker")
    try:
        await Worker(client, analyzer, settings, only_cameras).run(stop)
    finally:
        await client.aclose()


def start_in_process(
    settings: Settings, redis_url: str, stop: asyncio.Event, count: int, model: EmotionModel, name: str,
    only_cameras: Collection[str] | None = None,
) -> list[asyncio.Task[None]]:
    """``count`` workers in this process (batch mode, the demo, the benchmark), named
    ``{name}-{i}``: they share one model (its compiled function is thread-safe) and each
    has its own detectors and CPU threads (detectors are not thread-safe); the cores are
    shared among them unless ``cpu_threads`` says otherwise."""
    threads = settings.cpu_threads or max(1, (os.cpu_count() or 1) // max(1, count))
    return [
        asyncio.create_task(serve(
            settings.model_copy(update={"worker_name": f"{name}-{i}", "cpu_threads": threads}), redis_url, stop,
            FaceAnalyzer.from_settings(settings, model), only_cameras,
        ))
        for i in range(count)
    ]


__all__ = ["NameInUse", "Worker", "serve", "start_in_process"]
