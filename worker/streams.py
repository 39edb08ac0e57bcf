"""The worker's view of Redis: camera discovery, consumer-group reads, reclaiming.

Cameras announce themselves in the ``cameras`` set; every worker joins the shared
consumer group on each camera's frame stream, so N workers split the frames between
them and a new camera is picked up within a refresh interval, without restarts.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import redis
import redis.asyncio as aioredis

from emotion_stream import keys

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Entry:
    stream: str
    id: str
    fields: dict[bytes, bytes] | None  # None: the entry was trimmed while pending
    deliveries: int = 1  # times Redis has handed this entry to a consumer

    @property
    def enqueued_at(self) -> float:
        """XADD time in unix seconds, from the entry id."""
        return int(self.id.split("-", 1)[0]) / 1000.0


def _decode(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


class ConsumerGroup:
    def __init__(self, client: aioredis.Redis, consumer: str, group: str = keys.WORKER_GROUP) -> None:
        self.redis = client
        self.group = group
        self.consumer = consumer
        self.streams: list[str] = []
        self._claim_cursor: dict[str, str] = {}

    async def refresh(self) -> list[str]:
        """Join the group on every announced camera stream; returns the new ones."""
        cameras = sorted(_decode(c) for c in await self.redis.smembers(keys.CAMERAS))
        wanted = [keys.frames(c) for c in cameras]
        added = [s for s in wanted if s not in self.streams]
        for stream in added:
            await self.ensure_group(stream)
        self.streams = wanted
        return added

    async def ensure_group(self, stream: str) -> None:
        try:
            # From the start of the stream: frames written before the first worker came
            # up are still processed (or skipped as stale, and counted).
            await self.redis.xgroup_create(stream, self.group, id="0", mkstream=True)
        except redis.ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise

    async def read(self, count: int, block_ms: int) -> list[Entry]:
        """New entries for this consumer across all streams (blocks up to ``block_ms``)."""
        if not self.streams:
            return []
        try:
            reply = await self.redis.xreadgroup(
                self.group, self.consumer, {s: ">" for s in self.streams}, count=count, block=block_ms
            )
        except redis.ResponseError as exc:
            if "NOGROUP" in str(exc):
                # Redis lost its data (restart without persistence): rejoin and carry on.
                log.warning("consumer group missing (Redis restarted empty?); recreating")
                for stream in self.streams:
                    await self.ensure_group(stream)
                return []
            raise
        return [
            Entry(_decode(stream), _decode(entry_id), fields)
            for stream, entries in reply or []
            for entry_id, fields in entries
        ]

    async def claim_idle(self, min_idle_ms: int, count: int) -> list[Entry]:
        """Take over entries other consumers left pending for ``min_idle_ms`` (dead workers)."""
        claimed: list[Entry] = []
        for stream in self.streams:
            start = self._claim_cursor.get(stream, "0-0")
            try:
                reply = await self.redis.xautoclaim(
                    stream, self.group, self.consumer, min_idle_ms, start_id=start, count=count
                )
            except redis.ResponseError as exc:
                if "NOGROUP" in str(exc):
                    continue
                raise
            cursor, entries = reply[0], reply[1]
            self._claim_cursor[stream] = _decode(cursor)
            for entry in entries:
                # Redis 6.2 returns trimmed entries as (id, None); 7.x drops them and
                # lists their ids in a third element.
                entry_id, fields = (entry[0], entry[1]) if entry else (None, None)
                if entry_id is not None:
                    claimed.append(Entry(stream, _decode(entry_id), fields or None))
            for entry_id in reply[2] if len(reply) > 2 else []:
                claimed.append(Entry(stream, _decode(entry_id), None))
        return await self._with_deliveries(claimed)

    async def _with_deliveries(self, entries: list[Entry]) -> list[Entry]:
        """Attach each claimed entry's delivery count (one XPENDING call per stream)."""
        counted: list[Entry] = []
        for stream in {e.stream for e in entries}:
            mine = [e for e in entries if e.stream == stream]
            ids = sorted(mine, key=lambda e: tuple(int(p) for p in e.id.split("-")))
            pending = await self.redis.xpending_range(
                stream, self.group, ids[0].id, ids[-1].id, len(mine) + 2 * 1024, consumername=self.consumer
            )
            times = {_decode(p["message_id"]): int(p["times_delivered"]) for p in pending}
            counted += [Entry(e.stream, e.id, e.fields, times.get(e.id, 1)) for e in mine]
        return counted

    async def backlog(self) -> dict[str, tuple[int, int]]:
        """stream -> (lag: not yet delivered, pending: delivered, not acked)."""
        result: dict[str, tuple[int, int]] = {}
        for stream in self.streams:
            try:
                groups = await self.redis.xinfo_groups(stream)
            except redis.ResponseError:
                continue
            for info in groups:
                if _decode(info["name"]) != self.group:
                    continue
                lag = info.get("lag")
                if lag is None:  # Redis < 7: count entries after the last delivered id
                    last = _decode(info["last-delivered-id"])
                    lag = len(await self.redis.xrange(stream, min=f"({last}", max="+", count=100_000))
                result[stream] = (int(lag), int(info["pending"]))
        return result

    async def leave(self) -> None:
        """Remove this consumer from every group if it holds no pending entries."""
        for stream in self.streams:
            try:
                pending = await self.redis.xpending_range(stream, self.group, "-", "+", 1, consumername=self.consumer)
                if not pending:
                    await self.redis.xgroup_delconsumer(stream, self.group, self.consumer)
            except redis.ResponseError:
                pass
