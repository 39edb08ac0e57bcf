"""(i) recorded: a video file read at the workers' pace (``ingest --pace workers``)
through an embedded Redis and N in-process workers, tracking on: how many seconds of
video a second of wall time analyses, and that every frame was analysed."""

from __future__ import annotations

import asyncio
import os
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING

import redis.asyncio as aioredis

from emotion_stream import keys
from emotion_stream.embedded_redis import EmbeddedRedis
from emotion_stream.redis_conn import as_text, connect, stream_range
from emotion_stream.schema import EndOfStream, FaceEvent, parse_event
from model.runtime import cores_shared

from .config import BenchConfig, settings_for, start_workers, workers_ready
from .measure import Figures, UsageSampler

if TYPE_CHECKING:
    from model import EmotionModel

CAMERA = "recording"
FACES = 2  # the sample clip's portraits in every frame


def run_recorded(config: BenchConfig, model: EmotionModel) -> Figures:
    from ingest.camera import IngestOptions, Pace, run_camera
    from ingest.publisher import FramePublisher
    from ingest.samples import write_clip
    from ingest.sources import SourceSpec

    settings = settings_for(config)

    async def main(url: str, clip: Path) -> Figures:
        stop = asyncio.Event()
        workers = start_workers(config, settings, model, url, stop, "bench")
        client = connect(url, "bench-recorded")
        await workers_ready(client, config.workers)
        start = time.perf_counter()
        await run_camera(SourceSpec(str(clip)), FramePublisher(client, CAMERA, settings),
                         IngestOptions(pace=Pace.WORKERS), asyncio.Event())
        read = time.perf_counter() - start
        while not await _ended(client):  # the end marker comes through tracking, after the last faces
            await asyncio.sleep(0.02)
        wall = time.perf_counter() - start
        events = [parse_event(f[b"event"]) for _id, f in await stream_range(client, keys.events(CAMERA))]
        faces = [e for e in events if isinstance(e, FaceEvent)]
        stats = {as_text(k): int(v) for k, v in (await client.hgetall(keys.stats(CAMERA))).items()}
        stop.set()
        await asyncio.gather(*workers)
        await client.aclose()
        frames = stats.get("ingested", 0)
        return {
            "video_seconds": config.live_seconds,
            "frames": frames,
            "faces_per_frame": FACES,
            "wall_seconds": round(wall, 2),
            "read_seconds": round(read, 2),
            "video_seconds_per_second": round(config.live_seconds / wall, 2),
            "frames_per_s": round(frames / wall, 1),
            "face_events": len(faces),
            "face_events_without_a_track": sum(e.track is None for e in faces),
            "frame_outcomes": stats,
        }

    with tempfile.TemporaryDirectory(prefix="bench-recorded-") as tmp:
        clip = write_clip(Path(tmp) / "clip.avi", seconds=config.live_seconds, fps=round(config.fps), faces=FACES)
        with cores_shared(config.workers), EmbeddedRedis() as redis:
            with UsageSampler({"bench (workers + ingest)": os.getpid(), "redis-server": redis.pid}) as usage:
                result = asyncio.run(main(redis.url, clip))
    result["workers"] = config.workers
    result["processes"] = usage.summaries()
    return result


async def _ended(client: aioredis.Redis) -> bool:
    last = await stream_range(client, keys.events(CAMERA), newest_first=True, count=1)
    return bool(last) and isinstance(parse_event(last[0][1][b"event"]), EndOfStream)
