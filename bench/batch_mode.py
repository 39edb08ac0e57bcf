"""(c) batch: batch mode through an embedded Redis with N in-process workers."""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

from emotion_stream.embedded_redis import EmbeddedRedis
from emotion_stream.redis_conn import connect
from model.runtime import cores_shared

from .config import (
    BenchConfig,
    processed_total,
    settings_for,
    stage_busy,
    start_workers,
    workers_ready,
)
from .measure import Figures, UsageSampler

if TYPE_CHECKING:
    from model import EmotionModel


@contextlib.contextmanager
def _folder_of(images: list[Path]) -> Iterator[Path]:
    """The images in one folder (linked), as batch mode reads a folder."""
    folder = Path(tempfile.mkdtemp(prefix="bench-batch-"))
    try:
        for image in images:
            target = folder / image.name
            if not target.exists():
                try:
                    os.link(image, target)
                except OSError:
                    shutil.copy(image, target)
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def run_batch(config: BenchConfig, model: EmotionModel) -> Figures:
    from batch import BatchJob

    settings = settings_for(config)

    async def main(url: str, folder: Path, out: Path) -> Figures:
        stop = asyncio.Event()
        workers = start_workers(config, settings, model, url, stop, "bench")
        client = connect(url, "bench-batch")
        await workers_ready(client, config.workers)
        busy0, processed0 = stage_busy(), processed_total()
        start = time.perf_counter()
        summary = await BatchJob(client, folder, out, settings).run()
        wall = time.perf_counter() - start
        busy1, processed1 = stage_busy(), processed_total()
        stop.set()
        await asyncio.gather(*workers)
        await client.aclose()
        frames = max(1.0, processed1 - processed0)
        return {
            "images": summary.rows,
            "images_per_s": summary.rows / wall,
            "seconds": wall,
            "stage_ms_per_image": {s: 1000 * (busy1[s] - busy0[s]) / frames for s in busy1},
        }

    # OpenCV's threads shared out as `emotion-stream batch` does, for this run only.
    with cores_shared(config.workers), _folder_of(config.images) as folder, EmbeddedRedis() as redis:
        out = folder.parent / f"{folder.name}-submission.csv"
        with UsageSampler({"bench (workers + job)": os.getpid(), "redis-server": redis.pid}) as usage:
            result = asyncio.run(main(redis.url, folder, out))
        out.unlink(missing_ok=True)
    result["workers"] = config.workers
    result["processes"] = usage.summaries()
    return result
