"""Expiring leases: one live process holds a name (a worker's consumer name, a camera's
ingest) at a time. The holder renews its lease; a dead holder's lease expires, and the
name is free again. Tokens are random per holder, so only the holder renews or frees it.
"""

from __future__ import annotations

import asyncio
import uuid

import redis.asyncio as aioredis

from .lifecycle import sleep_or_stop
from .redis_conn import TRANSIENT_ERRORS, LuaScript

# KEYS: lease key; ARGV: token, lease ms. 1 = held (taken or renewed), 0 = someone else has it.
_HOLD = """
local holder = redis.call('GET', KEYS[1])
if holder == ARGV[1] then return redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
if holder then return 0 end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
return 1
"""
_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""


class LeaseLost(RuntimeError):
    """Another process holds the lease now (this one stalled past it): two holders would
    each do what only one may."""


class Lease:
    """The lease on ``key``, held for ``ms`` milliseconds from each :meth:`hold`."""

    def __init__(self, client: aioredis.Redis, key: str, ms: int) -> None:
        self.key = key
        self.ms = ms
        self.token = uuid.uuid4().hex
        self._hold = LuaScript(client, _HOLD)
        self._release = LuaScript(client, _RELEASE)

    async def hold(self) -> bool:
        """Take the lease, or renew it if held: False while another holder has it."""
        return bool(await self._hold(keys=[self.key], args=[self.token, self.ms]))

    async def release(self) -> None:
        await self._release(keys=[self.key], args=[self.token])

    async def keep(self, stop: asyncio.Event) -> None:
        """Renew every third of the lease until ``stop``; LeaseLost if another took it.
        Outages are waited out: nobody else can take a lease Redis cannot hand out."""
        while not stop.is_set():
            await sleep_or_stop(stop, self.ms / 3000)
            if stop.is_set():
                return
            try:
                held = await self.hold()
            except TRANSIENT_ERRORS:
                continue
            if not held:
                raise LeaseLost(f"{self.key} is held by another process now")
