"""``emotion-stream cameras``: the cameras Redis knows, and ``--forget`` for retired ones."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from typing import TYPE_CHECKING

from emotion_stream.settings import Settings

from .common import CommandError, Subcommands, add_command, add_settings, camera_id

if TYPE_CHECKING:
    from redis.asyncio import Redis

BATCH_IDLE_S = 60  # a batch job's camera with no result for this long is no running job


def register(sub: Subcommands) -> None:
    p = add_command(
        sub, "cameras", run, "list the cameras Redis knows, or forget retired ones",
        description=(
            "List every announced camera: whether an ingest is writing it, its last frame, "
            "frame rate over 10 s, people in view and frame counts. --forget ID deletes "
            "everything kept of a retired camera (frames, events, tracks, stats, dead "
            "letters, tracking state) and withdraws it; stop its ingest first."
        ),
    )
    p.add_argument("--json", action="store_true", help="one JSON object a camera")
    p.add_argument("--forget", type=camera_id, nargs="+", metavar="ID", default=[],
                   help="delete everything kept of these cameras (their ingest must be stopped)")
    add_settings(p, "redis_url")


def run(args: argparse.Namespace, settings: Settings) -> int:
    from emotion_stream.redis_conn import ACCESS_ERRORS, TRANSIENT_ERRORS, connect

    if not settings.redis_url:
        raise CommandError("cameras needs the Redis to look at: set REDIS_URL or --redis")
    url = settings.redis_url

    async def main() -> int:
        client = connect(url, name="emotion-stream-cameras")
        try:
            return await (_forget(client, args.forget) if args.forget else _list(client, args.json))
        finally:
            await client.aclose()

    try:
        return asyncio.run(main())
    except ACCESS_ERRORS:
        raise  # said as refused access (redis-py derives it from ConnectionError)
    except TRANSIENT_ERRORS as exc:  # a one-shot look: said, not retried as services do
        raise CommandError(f"Redis does not answer: {exc}") from None


async def _list(client: Redis, as_json: bool) -> int:
    from api.history import cameras

    listed = await cameras(client)
    if as_json:
        for camera in listed:
            print(json.dumps(camera), flush=True)
        return 0
    print(f"{'camera':<20} {'ingest':<7} {'last frame':>10} {'fps':>6} {'people':>6} "
          f"{'ingested':>9} {'processed':>9} {'stale':>7} {'trimmed':>7} {'dead':>5}")
    now = time.time()
    for camera in listed:
        last = camera["last_frame_at"]
        ago = "-" if last is None else f"{max(0.0, now - last):.0f} s ago" if now - last < 100_000 else "days ago"
        fps = "-" if camera["fps"] is None else f"{camera['fps']:.1f}"
        stats = camera["stats"]
        print(f"{camera['camera']:<20} {'yes' if camera['ingesting'] else 'no':<7} {ago:>10} {fps:>6} "
              f"{camera['active_tracks']:>6} {stats['ingested']:>9} {stats['processed']:>9} {stats['stale']:>7} "
              f"{stats['trimmed']:>7} {stats['dead_lettered']:>5}")
    return 0


async def _forget(client: Redis, forget: list[str]) -> int:
    from api.history import known
    from emotion_stream import keys
    from emotion_stream.cameras import forget_camera

    failed = 0
    for camera in dict.fromkeys(forget):
        if await client.exists(keys.ingest_lease(camera)):
            print(f"emotion-stream cameras: camera {camera} is being ingested now; stop its ingest first",
                  file=sys.stderr)
            failed += 1
        elif await _batch_running(client, camera):
            print(f"emotion-stream cameras: camera {camera} is a batch job's, with a result in the last "
                  f"{BATCH_IDLE_S} s; let it finish (it forgets its camera itself)", file=sys.stderr)
            failed += 1
        elif not await known(client, camera) and not await client.exists(*keys.camera_keys(camera)):
            print(f"emotion-stream cameras: no camera {camera} in this Redis", file=sys.stderr)
            failed += 1
        else:
            deleted = await forget_camera(client, camera)
            print(f"forgot camera {camera}: {deleted} keys deleted", flush=True)
    return 1 if failed else 0


async def _batch_running(client: Redis, camera: str) -> bool:
    """Whether a batch job works on ``camera`` now: a result written in the last
    BATCH_IDLE_S (a job killed long ago left its streams: those may go)."""
    from emotion_stream import keys
    from emotion_stream.redis_conn import stream_range

    last = await stream_range(client, keys.results(camera), count=1, newest_first=True)
    if not last:
        return False
    seconds, _ = await client.time()
    written_ms = int(last[0][0].split("-")[0])
    return int(seconds) - written_ms / 1000 < BATCH_IDLE_S
