"""Forgetting a camera: what the system keeps of it (frames, events, tracks, stats, dead
letters, leases, tracking state) deleted, and its announcement withdrawn, so a retired
camera costs Redis nothing and no longer shows in listings. Every key of a camera shares
its slot, so one DEL takes them all, on a Redis Cluster too."""

from __future__ import annotations

import redis.asyncio as aioredis

from . import keys


async def forget_camera(client: aioredis.Redis, camera: str) -> int:
    """Withdraw ``camera`` from the cameras and tracked-cameras sets and delete every key
    of it; the number of keys deleted. A worker reading it lets it go (its stream is
    gone and it is no longer announced); a tracking owner holding it loses its lease."""
    await client.srem(keys.CAMERAS, camera)
    await client.srem(keys.TRACKED_CAMERAS, camera)
    return int(await client.delete(*keys.camera_keys(camera)))
