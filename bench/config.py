"""What every scenario of ``emotion-stream bench`` shares: the run's configuration, the
worker settings it implies, in-process workers, and readings of our own metrics."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import redis.asyncio as aioredis
from prometheus_client import Counter

from emotion_stream import keys, metrics
from emotion_stream.settings import Settings

if TYPE_CHECKING:
    from model import EmotionModel


@dataclass(frozen=True)
class BenchConfig:
    images: list[Path]
    detector: str = "opencv"
    workers: int = 2
    batch_size: int = Settings.model_fields["batch_size"].default  # the worker's defaults
    max_wait_ms: int = Settings.model_fields["max_wait_ms"].default
    cameras: int = 4
    fps: float = 15.0
    live_seconds: float = 60.0
    original_limit: int = 60
    detect_max_side: int | None = None  # None: the detector's default


def settings_for(config: BenchConfig) -> Settings:
    return Settings(detector=config.detector, detect_max_side=config.detect_max_side,
                    batch_size=config.batch_size, max_wait_ms=config.max_wait_ms)


def stage_busy() -> dict[str, float]:
    return {
        stage: float(metrics.STAGE_BUSY_SECONDS.labels(stage)._value.get())  # noqa: SLF001 - own registry
        for stage in metrics.STAGES
    }


def processed_total() -> float:
    return sum(
        sample.value
        for metric in metrics.FRAMES_PROCESSED.collect()
        for sample in metric.samples
        if sample.name.endswith("_total")
    )


def counter_sum(counter: Counter, **labels: str) -> float:
    total = 0.0
    for metric in counter.collect():
        for sample in metric.samples:
            if sample.name.endswith("_total") and all(sample.labels.get(k) == v for k, v in labels.items()):
                total += sample.value
    return total


def start_workers(config: BenchConfig, settings: Settings, model: EmotionModel, url: str, stop: asyncio.Event,
                  prefix: str) -> list[asyncio.Task[None]]:
    """In-process workers sharing one model, each with its own detector (as batch mode)."""
    from worker import start_in_process

    return start_in_process(settings, url, stop, config.workers, model, prefix)


async def workers_ready(client: aioredis.Redis, n: int, timeout: float = 120.0) -> None:
    """Wait until n workers have a heartbeat: loaded, warmed up and connected."""
    deadline = time.monotonic() + timeout
    while len(await client.hgetall(keys.WORKERS)) < n:
        if time.monotonic() > deadline:
            raise RuntimeError(f"only {len(await client.hgetall(keys.WORKERS))} of {n} workers came up")
        await asyncio.sleep(0.1)
