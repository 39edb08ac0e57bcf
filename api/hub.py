"""The live side of the API: one reader of every camera's event streams, fanned out to
every connected client, in event-id order (``streams``).

One reader, whatever the number of clients: 200 browsers cost the API 200 queues, not
200 Redis readers. A client that is caught up and whose connection takes writes gets
each event written by the hub itself, in one pass over the clients (``Subscription.direct``):
waking one task a client and event cost about 35 us each, so the 200th client waited
7 ms for an event the first had. Any other client gets its events through its bounded
queue and its own task; a client that falls further behind than the queue holds is
dropped (counted), never allowed to grow memory; it can resume from its last id.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import redis.asyncio as aioredis

from emotion_stream import keys, metrics
from emotion_stream.lifecycle import sleep_or_stop
from emotion_stream.redis_conn import TRANSIENT_ERRORS, Backoff, StreamReader, as_text, clock_ms

from .streams import KINDS, Event, EventId, Withdrawals, stream_of

log = logging.getLogger(__name__)

DISCOVER_S = 1.0  # how often new cameras are looked for
READ_BLOCK_MS = 50  # also the longest wait before a read's events pass the watermark
READ_COUNT = 1000
KEEPALIVE_S = 15.0  # idle clients get a comment this often (proxies close silent connections)
MAX_SEQ = 2**64 - 1


@dataclass(eq=False)
class Subscription:
    """One client: which cameras and types it wants, and its queue of events."""

    cameras: frozenset[str] | None  # None: all
    types: frozenset[str]
    queue: asyncio.Queue[Event | None]  # None: nothing happened for KEEPALIVE_S (say so to the client)
    dropped: asyncio.Event = field(default_factory=asyncio.Event)
    closing: asyncio.Event = field(default_factory=asyncio.Event)  # the API stops: end the stream cleanly
    # The connection's own write, where the server offers one: False when the connection
    # cannot take a write now (its buffer is full, or it closed).
    write_now: Callable[[bytes], bool] | None = None
    direct: bool = False  # caught up (replayed): the hub may write to the connection itself
    floor: EventId | None = None  # events at or below it were replayed
    busy: bool = False  # the client's task holds events it has not written yet

    def wants(self, event: Event) -> bool:
        return event.type in self.types and (self.cameras is None or event.id.camera in self.cameras)

    def live(self, events: list[Event]) -> list[Event]:
        """Those of ``events`` the client wants and has not had in its replay."""
        floor = self.floor
        return [e for e in events if self.wants(e) and (floor is None or e.id > floor)]

    def written_now(self, events: list[Event]) -> bool:
        """Write ``events`` straight to the connection if nothing is ahead of them (in
        the queue or in the client's task) and the connection takes them now."""
        if not self.direct or self.busy or not self.queue.empty() or self.write_now is None:
            return False
        return self.write_now(events[0].message if len(events) == 1 else b"".join(e.message for e in events))


def parse_entry(entry_id: str, fields: dict[bytes, bytes] | None, kind: str, camera: str) -> Event | None:
    """A stream entry as an Event; None for an entry without a readable event."""
    raw = (fields or {}).get(b"event")
    if raw is None:
        return None
    try:
        kind_of = json.loads(raw).get("type")
    except (ValueError, AttributeError):
        return None
    if not isinstance(kind_of, str):
        return None
    return Event(EventId.of(entry_id, kind, camera), kind_of, raw.decode(errors="replace"))


class EventHub:
    def __init__(self, client: aioredis.Redis, buffer: int) -> None:
        self.redis = client
        self.buffer = buffer
        self.reader = StreamReader(client)
        self.subscriptions: set[Subscription] = set()
        self.cursors: dict[str, str] = {}  # stream -> last entry id read
        self.cameras: dict[str, str] = {}  # stream -> camera
        self.kinds: dict[str, str] = {}  # stream -> events | tracks
        self.pending: list[Event] = []  # read, not yet past the watermark
        self.healthy = False
        self._discovered = 0.0
        self._withdrawals = Withdrawals()  # cameras left the set: read a while longer
        self._watermark = 0  # events below it were handed out
        self._offset_ms = 0.0  # Redis' clock minus this host's, at the last reading

    def subscribe(self, cameras: frozenset[str] | None, types: frozenset[str]) -> Subscription:
        subscription = Subscription(cameras, types, asyncio.Queue(maxsize=self.buffer))
        self.subscriptions.add(subscription)
        metrics.API_SSE_CLIENTS.set(len(self.subscriptions))
        return subscription

    def close_clients(self) -> int:
        """The API stops: every event stream ends, telling its client to come back (to
        this API restarted, or another) with its last id. The number of streams."""
        for subscription in self.subscriptions:
            subscription.closing.set()
        return len(self.subscriptions)

    def unsubscribe(self, subscription: Subscription) -> None:
        self.subscriptions.discard(subscription)
        metrics.API_SSE_CLIENTS.set(len(self.subscriptions))

    async def run(self, stop: asyncio.Event) -> None:
        backoff = Backoff(0.1, 5.0)
        keepalive = time.monotonic()
        while not stop.is_set():
            if time.monotonic() - keepalive > KEEPALIVE_S:
                keepalive = time.monotonic()
                self._keepalive()
            try:
                await self._round()
                self.healthy = True
                backoff.reset()
            except TRANSIENT_ERRORS as exc:
                if self.healthy:
                    log.warning("Redis unavailable (%s); live events resume when it is back", exc)
                self.healthy = False
                metrics.REDIS_ERRORS.labels("api").inc()
                await sleep_or_stop(stop, backoff.next_delay())

    async def _round(self) -> None:
        now = time.monotonic()
        if now - self._discovered > DISCOVER_S:
            self._discovered = now
            await self._discover()
        # The watermark is read before the streams: an entry below it was written before
        # this read began, so the read returns it (unless a stream's reply was cut at
        # READ_COUNT: then that stream's last id bounds the watermark too).
        watermark = await clock_ms(self.redis)
        self._offset_ms = watermark - time.time() * 1000
        if not self.cursors:
            self._watermark = watermark
            await asyncio.sleep(READ_BLOCK_MS / 1000)
            return
        # While events wait for the watermark, do not block: the next clock reading releases them.
        reply = await self.reader.read(self.cursors, count=READ_COUNT,
                                       block_ms=None if self.pending else READ_BLOCK_MS)
        for stream, entries in reply:
            kind, camera = self.kinds[stream], self.cameras[stream]
            for raw_id, fields in entries:
                entry = as_text(raw_id)
                self.cursors[stream] = entry
                event = parse_entry(entry, fields, kind, camera)
                if event is not None:
                    self.pending.append(event)
            if len(entries) >= READ_COUNT:
                watermark = min(watermark, EventId.of(self.cursors[stream], kind, camera).ms)
        self._watermark = watermark
        ready = sorted((e for e in self.pending if e.id.ms < watermark), key=lambda e: e.id)
        if ready:
            self.pending = [e for e in self.pending if e.id.ms >= watermark]
            self._hand_out(ready)

    def _keepalive(self) -> None:
        # One timer for all clients, not one per client and event.
        for subscription in self.subscriptions:
            if subscription.queue.empty():
                subscription.queue.put_nowait(None)

    def redis_now_ms(self) -> float:
        """Redis' clock, from this host's and the offset at the last reading."""
        return time.time() * 1000 + self._offset_ms

    def _hand_out(self, events: list[Event]) -> None:
        for subscription in list(self.subscriptions):
            if subscription.dropped.is_set():
                continue
            wanted = subscription.live(events)
            if not wanted:
                continue
            if subscription.written_now(wanted):
                metrics.API_SSE_DELAY_SECONDS.observe(max(0.0, (self.redis_now_ms() - wanted[0].id.ms) / 1000))
                continue
            for event in wanted:
                try:
                    subscription.queue.put_nowait(event)
                except asyncio.QueueFull:
                    subscription.dropped.set()
                    metrics.API_SSE_DROPPED.inc()
                    log.warning("an SSE client fell %d events behind; dropped (it may resume from its "
                                "last id)", self.buffer)
                    break

    async def _discover(self) -> None:
        """Start reading the streams of cameras not read yet, from the watermark on (no
        history is replayed as live; a camera is announced before its first frame, so
        its events come after); stop reading those withdrawn WITHDRAWN_GRACE_S ago."""
        members = {as_text(m) for m in await self.redis.smembers(keys.CAMERAS)}
        watermark = self._watermark or await clock_ms(self.redis)
        start = f"{watermark - 1}-{MAX_SEQ}"  # from the watermark on: earlier events were handed out
        for camera in sorted(members):
            for kind in KINDS:
                stream = stream_of(kind, camera)
                if stream not in self.cursors:
                    self.cursors[stream], self.cameras[stream], self.kinds[stream] = start, camera, kind
        for stream in self._withdrawals.expired(self.cameras, members, time.monotonic()):
            del self.cursors[stream], self.cameras[stream], self.kinds[stream]

    async def aclose(self) -> None:
        await self.reader.aclose()
