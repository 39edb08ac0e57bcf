"""Workers: consume frames from Redis, analyse them in micro-batches, publish events."""

from __future__ import annotations

import asyncio

from emotion_stream.redis_conn import connect
from emotion_stream.settings import Settings
from model import FaceAnalyzer

from .service import NameInUse, Worker


async def serve(settings: Settings, redis_url: str, stop: asyncio.Event, analyzer: FaceAnalyzer | None = None) -> None:
    """Run one worker until ``stop`` is set (then drain and return)."""
    if analyzer is None:
        analyzer = await asyncio.to_thread(
            FaceAnalyzer.create, settings.detector,
            str(settings.model_path) if settings.model_path else None,
            detect_max_side=settings.detect_max_side,
        )
    client = connect(redis_url, name="emotion-stream-worker")
    try:
        await Worker(client, analyzer, settings).run(stop)
    finally:
        await client.aclose()


__all__ = ["NameInUse", "Worker", "serve"]
