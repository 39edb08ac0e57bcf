"""The worker's view of Redis: camera discovery, consumer-group reads, reclaiming.

Cameras announce themselves in the ``cameras`` set; every worker joins the shared
consumer group on each camera's frame stream, so N workers split the frames between
them and a new camera is picked up within a refresh interval, without restarts. Ids that
are not valid camera ids are ignored and counted.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Collection, Iterator
from dataclasses import dataclass
from typing import cast

import redis
import redis.asyncio as aioredis

from emotion_stream import keys, metrics
from emotion_stream.logs import Throttled
from emotion_stream.redis_conn import (
    FRAMES_FROM_LUA,
    TRANSIENT_RESPONSE_ERRORS,
    LuaScript,
    StreamEntries,
    StreamReader,
    as_text,
)
from emotion_stream.schema import validate_camera_id

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


# Reading thousands of mostly idle streams: only "hot" streams (an entry in the last
# HOT_IDLE_S, or just announced) are in the blocking XREADGROUP; the others are swept
# with non-blocking reads of SWEEP_CHUNK streams a call, every SWEEP_S or, with many
# cold streams, at SWEEP_STREAMS_PER_S. A camera's first frame after a quiet spell waits
# for the next sweep (1 s; 5 s with 10,000 idle cameras), then its stream is hot again.
HOT_IDLE_S = 60.0
SWEEP_S = 1.0
SWEEP_STREAMS_PER_S = 2000
SWEEP_CHUNK = 500
# Newly announced streams start hot (read at once) unless many arrive together.
HOT_ON_JOIN_MAX = 64
# Pending entries of a dead worker sit in streams it read, which are hot for HOT_IDLE_S:
# those are checked every claim round, every stream (XPENDING first, pipelined) only
# every FULL_CLAIM_ROUNDS-th.
FULL_CLAIM_ROUNDS = 10
# SMEMBERS of a large set costs the worker more than Redis: re-read it when SCARD changes,
# and at least this often (a removal and an addition in one interval keep the count).
FULL_REFRESH_S = 5.0
_INVALID_IDS_KEPT = 10_000  # distinct invalid ids remembered (each counted once)


def _chunks(items: list[str], size: int = SWEEP_CHUNK) -> Iterator[list[str]]:
    for i in range(0, len(items), size):
        yield items[i : i + size]


class ConsumerGroup:
    """This worker's membership of the shared consumer group on every camera stream.

    Keys may vanish under a worker at any time (a batch job deletes its stream when it
    ends, an operator runs FLUSHDB, Redis restarts empty): every Redis error a read gets
    back makes it re-read the cameras set and rejoin what is still announced.
    """

    def __init__(self, client: aioredis.Redis, consumer: str, group: str = keys.WORKER_GROUP,
                 only: Collection[str] | None = None) -> None:
        self.redis = client
        self.group = group
        self.consumer = consumer
        self.only = None if only is None else frozenset(only)  # these cameras alone (a batch job's workers)
        self.reader = StreamReader(client)
        self.streams: list[str] = []
        self._hot: dict[str, float] = {}  # stream -> monotonic time of its last entry
        self._swept = 0.0
        self._members: frozenset[bytes | str] | None = None
        self._refreshed = 0.0
        self._failed: set[str] = set()
        self._claim_round = 0
        self._turn = 0  # rotation of the hot streams' order between reads
        self._invalid: set[bytes] = set()
        self._claim_cursor: dict[str, str] = {}
        self._throttled = Throttled(log)
        self._frames_from = LuaScript(client, FRAMES_FROM_LUA)  # the lag on Redis < 7

    async def refresh(self, rejoin: bool = False) -> list[str]:
        """Join the group on every announced camera stream; returns the new ones.
        ``rejoin`` creates the group again on every stream (keys vanished under us)."""
        if not rejoin and self._members is not None and time.monotonic() - self._refreshed < FULL_REFRESH_S:
            if await self.redis.scard(keys.CAMERAS) == len(self._members):
                return []
        members = frozenset(await self.redis.smembers(keys.CAMERAS))
        self._refreshed = time.monotonic()
        if members == self._members and not rejoin and not self._failed:
            return []
        self._members = members
        wanted = sorted(keys.frames(c) for c in self._valid_cameras(members) if self.only is None or c in self.only)
        joined = set() if rejoin else set(self.streams)
        # Streams that could not be joined are tried again at the next full refresh.
        self._failed = await self._ensure_groups([s for s in wanted if s not in joined])
        previous = set(self.streams)
        self.streams = [s for s in wanted if s not in self._failed]
        current = set(self.streams)
        added = [s for s in self.streams if s not in previous]
        for stream in previous - current - set(self._failed):
            metrics.forget_camera(keys.camera_of(stream))  # withdrawn: its series and label go
            self._claim_cursor.pop(stream, None)
        now = time.monotonic()
        self._hot = {s: t for s, t in self._hot.items() if s in current}
        if len(added) <= HOT_ON_JOIN_MAX:
            self._hot.update({s: now for s in added})
        return added

    def _valid_cameras(self, members: frozenset[bytes | str]) -> list[str]:
        cameras = []
        for member in members:
            raw = member.encode() if isinstance(member, str) else member
            try:
                cameras.append(validate_camera_id(raw.decode("utf-8")))
                continue
            except (UnicodeDecodeError, ValueError):
                pass
            if raw not in self._invalid and len(self._invalid) < _INVALID_IDS_KEPT:
                self._invalid.add(raw)
                metrics.INVALID_CAMERA_IDS.inc()
            self._throttled.warning(
                "invalid-camera", "ignoring invalid camera id %r (%d bytes) in %s",
                raw[:40], len(raw), keys.CAMERAS,
            )
        return cameras

    async def _ensure_groups(self, streams: list[str]) -> set[str]:
        """Create the group on each stream (pipelined); returns the streams that failed."""
        failed: set[str] = set()
        for chunk in _chunks(streams):
            pipe = self.redis.pipeline(transaction=False)
            for stream in chunk:
                # From the start of the stream: frames written before the first worker
                # came up are still processed (or skipped as stale, and counted).
                pipe.xgroup_create(stream, self.group, id="0", mkstream=True)
            for stream, reply in zip(chunk, await pipe.execute(raise_on_error=False)):
                if isinstance(reply, redis.ResponseError) and "BUSYGROUP" not in str(reply):
                    failed.add(stream)  # e.g. WRONGTYPE: someone wrote another type there
                    self._throttled.warning(f"join:{stream}", "cannot consume %s: %s", stream, reply)
        return failed

    async def read(self, count: int, block_ms: int) -> list[Entry]:
        """New entries for this consumer: hot streams with a blocking read of up to
        ``block_ms``, the others swept every SWEEP_S."""
        try:
            cold = len(self.streams) - len(self._hot)
            if time.monotonic() - self._swept >= max(SWEEP_S, cold / SWEEP_STREAMS_PER_S):
                self._swept = time.monotonic()
                entries = await self._sweep(count)
                if entries:
                    return entries
            hot = list(self._hot)
            if not hot:
                await asyncio.sleep(block_ms / 1000)
                return []
            # A different camera first on every read: under overload the first stream of a
            # read is served while the last ones' frames go stale, so no camera may always
            # be first. (Not enough on its own: a camera whose undelivered backlog is older
            # than the frame age limit is delivered only stale frames, oldest first.)
            self._turn = (self._turn + 1) % len(hot)
            hot = hot[self._turn:] + hot[: self._turn]
            reply = await self._read_group(hot, count, block_ms)
        except TRANSIENT_RESPONSE_ERRORS:
            raise  # a cluster failing over, Redis out of memory: the caller's retry loop waits
        except redis.ResponseError as exc:
            # UNBLOCKED (a stream deleted while we waited on it), NOGROUP (group destroyed,
            # FLUSHDB, Redis restarted empty), WRONGTYPE...: start again from the cameras set.
            reading = set(self.streams)
            await self.refresh(rejoin=True)
            withdrawn = sorted(reading - set(self.streams))
            if withdrawn and str(exc).startswith(("UNBLOCKED", "NOGROUP")):
                # Its camera was withdrawn with its stream (a batch job done, `cameras
                # --forget`): nothing failed, and no Redis-errors alert may fire for it.
                more = f" and {len(withdrawn) - 5} more" if len(withdrawn) > 5 else ""  # a FLUSHDB: all
                log.info("no longer reading %s%s: withdrawn", ", ".join(withdrawn[:5]), more)
                return []
            metrics.REDIS_ERRORS.labels("worker").inc()
            self._throttled.warning("read-error", "consumer group read failed (%s); rejoined", exc)
            return []
        entries = self._entries(reply)
        self._cool_down()
        return entries

    async def _sweep(self, count: int) -> list[Entry]:
        cold = [s for s in self.streams if s not in self._hot]
        for chunk in _chunks(cold):
            reply = await self._read_group(chunk, count, None)
            if reply:
                return self._entries(reply)
        return []

    async def _read_group(self, streams: list[str], count: int, block_ms: int | None) -> list[tuple[str, StreamEntries]]:
        return await self.reader.read({s: ">" for s in streams}, count=count, block_ms=block_ms,
                                      group=self.group, consumer=self.consumer)

    def _entries(self, reply: list[tuple[str, StreamEntries]]) -> list[Entry]:
        """Entries of an XREADGROUP reply, marking their streams hot. A camera's frames
        stay together (not interleaved with other cameras'): consecutive frames then tend
        to finish together, which is what the tracking stage's in-order emission wants."""
        now = time.monotonic()
        entries = []
        for name, items in reply:
            self._hot[name] = now
            entries += [Entry(name, as_text(entry_id), fields) for entry_id, fields in items]
        return entries

    def _cool_down(self) -> None:
        cutoff = time.monotonic() - HOT_IDLE_S
        for stream in [s for s, t in self._hot.items() if t < cutoff]:
            del self._hot[stream]

    async def claim_idle(self, min_idle_ms: int, count: int) -> list[Entry]:
        """Take over entries other consumers left pending for ``min_idle_ms`` (dead workers):
        in hot streams every call, in all streams every FULL_CLAIM_ROUNDS-th call."""
        self._claim_round += 1
        if self._claim_round % FULL_CLAIM_ROUNDS == 1:
            streams = await self._with_pending(self.streams)
        else:
            streams = list(self._hot)
        claimed: list[Entry] = []
        for chunk in _chunks(streams):
            pipe = self.redis.pipeline(transaction=False)
            for stream in chunk:
                start = self._claim_cursor.get(stream, "0-0")
                pipe.xautoclaim(stream, self.group, self.consumer, min_idle_ms, start_id=start, count=count)
            for stream, reply in zip(chunk, await pipe.execute(raise_on_error=False)):
                if isinstance(reply, redis.ResponseError):
                    continue  # NOGROUP or the key vanished: the reader rejoins
                if isinstance(reply, Exception):
                    raise reply  # a node lost mid-pipeline (a failover): the caller retries
                cursor, entries = reply[0], reply[1]
                self._claim_cursor[stream] = as_text(cursor)
                for entry in entries:
                    # Redis 6.2 returns trimmed entries as (id, None); 7.x drops them and
                    # lists their ids in a third element.
                    entry_id, fields = (entry[0], entry[1]) if entry else (None, None)
                    if entry_id is not None:
                        claimed.append(Entry(stream, as_text(entry_id), fields or None))
                for entry_id in reply[2] if len(reply) > 2 else []:
                    claimed.append(Entry(stream, as_text(entry_id), None))
        return await self._with_deliveries(claimed)

    async def _with_pending(self, streams: list[str]) -> list[str]:
        """The streams whose group has pending entries (XPENDING summaries, pipelined)."""
        found: list[str] = []
        for chunk in _chunks(streams):
            pipe = self.redis.pipeline(transaction=False)
            for stream in chunk:
                pipe.xpending(stream, self.group)
            for stream, summary in zip(chunk, await pipe.execute(raise_on_error=False)):
                if not isinstance(summary, Exception) and summary["pending"]:
                    found.append(stream)
        return found

    async def _with_deliveries(self, entries: list[Entry]) -> list[Entry]:
        """Attach each claimed entry's delivery count (one XPENDING call per stream)."""
        counted: list[Entry] = []
        for stream in {e.stream for e in entries}:
            mine = [e for e in entries if e.stream == stream]
            ids = sorted(mine, key=lambda e: tuple(int(p) for p in e.id.split("-")))
            try:
                pending = await self.redis.xpending_range(
                    stream, self.group, ids[0].id, ids[-1].id, len(mine) + 2 * 1024, consumername=self.consumer
                )
            except redis.ResponseError:
                pending = []  # the stream vanished since the claim: count them once
            times = {as_text(cast(bytes, p["message_id"])): int(p["times_delivered"]) for p in pending}
            counted += [Entry(e.stream, e.id, e.fields, times.get(e.id, 1)) for e in mine]
        return counted

    async def backlog(self) -> dict[str, tuple[int, int]]:
        """stream -> (lag: not yet delivered, pending: delivered, not acked), for the hot
        streams: the others have nothing waiting longer than a sweep."""
        result: dict[str, tuple[int, int]] = {}
        for chunk in _chunks(list(self._hot)):
            pipe = self.redis.pipeline(transaction=False)
            for stream in chunk:
                pipe.xinfo_groups(stream)
            for stream, groups in zip(chunk, await pipe.execute(raise_on_error=False)):
                if isinstance(groups, redis.ResponseError):
                    continue
                for info in groups:
                    if as_text(cast(bytes, info["name"])) != self.group:
                        continue
                    lag = info.get("lag")
                    if lag is None:  # Redis < 7: the entries after the last delivered id
                        last = as_text(cast(bytes, info["last-delivered-id"]))
                        _id, lag = await self._frames_from(keys=[stream], args=[f"({last}"])
                    if lag is not None:
                        result[stream] = (int(lag), int(info["pending"]))
        return result

    async def leave(self) -> None:
        """Remove this consumer from every group where it holds no pending entries."""
        await self.remove_consumer(self.consumer)
        await self.reader.aclose()

    async def remove_consumer(self, consumer: str) -> bool:
        """Remove ``consumer`` (this one leaving, or a worker long dead) from every group
        where it holds no pending entries: those wait to be reclaimed, never deleted.
        True when it is in none now."""
        kept = 0
        for chunk in _chunks(self.streams):
            pipe = self.redis.pipeline(transaction=False)
            for stream in chunk:
                pipe.xpending_range(stream, self.group, "-", "+", 1, consumername=consumer)
            replies = await pipe.execute(raise_on_error=False)
            pipe = self.redis.pipeline(transaction=False)
            for stream, pending in zip(chunk, replies):
                if not isinstance(pending, Exception) and not pending:
                    pipe.xgroup_delconsumer(stream, self.group, consumer)
                else:
                    kept += 1
            await pipe.execute(raise_on_error=False)
        return kept == 0
