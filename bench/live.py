"""(d) live: K synthetic 640x480 cameras at F fps through ingest -> Redis -> workers, on
the embedded Redis, one redis-server, or a local 3+3 Redis Cluster."""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import time
from collections.abc import Iterator
from typing import TYPE_CHECKING

import redis.asyncio as aioredis

from emotion_stream import keys, metrics
from emotion_stream.embedded_redis import EmbeddedRedis, free_port
from emotion_stream.redis_conn import FRAMES_FROM_LUA, LuaScript, as_text, connect
from emotion_stream.schema import SkipReason

from .config import (
    BenchConfig,
    counter_sum,
    processed_total,
    settings_for,
    stage_busy,
    start_workers,
    workers_ready,
)
from .measure import Figures, UsageSampler, percentiles

if TYPE_CHECKING:
    from model import EmotionModel


@contextlib.contextmanager
def _engine(kind: str) -> Iterator[tuple[str, dict[str, int]]]:
    """(Redis URL, {name: pid} of its server processes) for a live run.
    ``embedded``: the default embedded server on a unix socket. ``single``: one Debian
    redis-server on loopback TCP. ``cluster``: 3 masters + 3 replicas of the same binary
    on loopback (``single`` and ``cluster`` differ only in being a cluster)."""
    if kind == "cluster":
        from emotion_stream.local_cluster import LocalCluster

        with LocalCluster(masters=3, replicas=1) as cluster:
            masters = {n.port for n in cluster.master_nodes()}
            yield cluster.url, {f"redis {'master' if n.port in masters else 'replica'} :{n.port}": n.process.pid
                                for n in cluster.nodes}
        return
    binary = shutil.which("redis-server") if kind == "single" else None
    if kind == "single" and binary is None:
        raise RuntimeError("no redis-server on PATH (scripts/install-system-deps.sh)")
    with EmbeddedRedis(port=free_port() if kind == "single" else None, binary=binary) as redis:
        yield redis.url, {"redis-server": redis.pid}


def run_live(config: BenchConfig, model: EmotionModel, idle_cameras: int = 0, engine: str = "embedded") -> Figures:
    """K sample cameras through ingest -> Redis -> workers; ``idle_cameras`` more ids are
    announced first that never send a frame (what many registered cameras cost).
    ``engine``: which Redis (``_engine``)."""
    from emotion_stream.events import live_events
    from emotion_stream.schema import FaceEvent
    from ingest.camera import IngestOptions, run_camera
    from ingest.publisher import FramePublisher
    from ingest.sources import SourceSpec

    settings = settings_for(config)
    latencies: list[float] = []
    frames_seen: set[tuple[str, int]] = set()
    backlog: list[int] = []

    async def main(url: str) -> Figures:
        stop = asyncio.Event()
        client = connect(url, "bench-live")
        for first in range(0, idle_cameras, 1000):
            await client.sadd(keys.CAMERAS, *(f"idle-{i:05d}" for i in range(first, min(idle_cameras, first + 1000))))
        tasks = start_workers(config, settings, model, url, stop, "live")
        await workers_ready(client, config.workers)

        async def subscriber() -> None:
            async for event in live_events(client, None, stop):
                if isinstance(event, FaceEvent) and event.face_index == 0:
                    latencies.append(time.time() - event.captured_at)
                    frames_seen.add((event.camera, event.seq))

        async def watch_backlog() -> None:
            while not stop.is_set():
                total = 0
                for cam in range(config.cameras):
                    with contextlib.suppress(Exception):
                        for info in await client.xinfo_groups(keys.frames(f"cam{cam}")):
                            total += int(info["pending"])
                        total += await _lag(client, keys.frames(f"cam{cam}"))
                backlog.append(total)
                await asyncio.sleep(1.0)

        tasks.append(asyncio.create_task(subscriber()))
        tasks.append(asyncio.create_task(watch_backlog()))
        ingested0 = counter_sum(metrics.FRAMES_INGESTED)
        stale0 = counter_sum(metrics.FRAMES_SKIPPED, reason=SkipReason.STALE)
        trimmed0 = counter_sum(metrics.FRAMES_SKIPPED, reason=SkipReason.TRIMMED)
        busy0, processed0 = stage_busy(), processed_total()
        cameras = [
            asyncio.create_task(run_camera(SourceSpec.parse("sample:1"), FramePublisher(client, f"cam{c}", settings),
                                           IngestOptions(fps=config.fps), stop))
            for c in range(config.cameras)
        ]
        start = time.perf_counter()
        await asyncio.sleep(config.live_seconds)
        stop.set()
        await asyncio.gather(*cameras, *tasks, return_exceptions=True)
        wall = time.perf_counter() - start
        processed = processed_total() - processed0
        busy1 = stage_busy()
        await client.aclose()
        return {
            "ingested_fps": (counter_sum(metrics.FRAMES_INGESTED) - ingested0) / wall,
            "processed_fps": processed / wall,
            "stale_skipped": counter_sum(metrics.FRAMES_SKIPPED, reason=SkipReason.STALE) - stale0,
            "trimmed": counter_sum(metrics.FRAMES_SKIPPED, reason=SkipReason.TRIMMED) - trimmed0,
            "stage_ms_per_frame": {s: 1000 * (busy1[s] - busy0[s]) / max(1.0, processed) for s in busy1},
        }

    with _engine(engine) as (url, servers):
        with UsageSampler({"bench (ingest + workers)": os.getpid(), **servers}) as usage:
            result = asyncio.run(main(url))
    # Skip the first 5 s of latencies: workers warming up their compiled functions.
    steady = latencies[int(len(latencies) * 5 / max(1.0, config.live_seconds)):]
    tenth = max(1, len(backlog) // 10)
    result.update(
        engine=engine,
        cameras=config.cameras,
        idle_cameras=idle_cameras,
        offered_fps=config.cameras * config.fps,
        seconds=config.live_seconds,
        workers=config.workers,
        capture_to_event_ms={k: 1000 * v for k, v in percentiles(steady).items()},
        frames_with_events=len(frames_seen),
        backlog_first_tenth=sum(backlog[:tenth]) / tenth if backlog else None,
        backlog_last_tenth=sum(backlog[-tenth:]) / tenth if backlog else None,
        processes=usage.summaries(),
    )
    return result


async def _lag(client: aioredis.Redis, stream: str) -> int:
    """Frames not yet delivered; on Redis < 7 counted as the workers count them (reading
    them copied every waiting JPEG into this process, beside the workers it measures)."""
    for info in await client.xinfo_groups(stream):
        if info.get("lag") is not None:
            return int(info["lag"])
        _id, lag = await LuaScript(client, FRAMES_FROM_LUA)(keys=[stream], args=[f"({as_text(info['last-delivered-id'])}"])
        return int(lag or 0)
    return 0
