"""Webhooks: track lifecycle events (and, if asked, face events at a bounded rate per
person) POSTed to each configured URL, signed, in order per camera, at least once.

Each webhook is its own task with its own reader, so one slow or dead receiver never
delays another. A delivery is retried with capped exponential backoff; one still
failing ``webhook_retry_s`` after its first try goes to the webhook's dead-letter stream
(counted, logged) and delivery moves on. The cursor (stream -> last entry delivered or
given up on) lives in Redis, written after each outcome: a restarted ``api`` resumes
where it stopped. An event whose outcome was not yet written when the process died is
sent again with the same ``X-Emotion-Stream-Event-Id``: receivers de-duplicate on it.

Body: the event's JSON exactly as in its stream. ``X-Emotion-Stream-Signature:
sha256=<hex>`` is HMAC-SHA256 of the body under ``webhook_secret``.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import logging
import time
from dataclasses import dataclass

import aiohttp
import redis.asyncio as aioredis
from redis.typing import EncodableT, FieldT

from emotion_stream import keys, metrics
from emotion_stream.lifecycle import sleep_or_stop
from emotion_stream.redis_conn import TRANSIENT_ERRORS, Backoff, StreamReader, as_text
from emotion_stream.settings import Settings

from .hub import parse_entry
from .streams import WITHDRAWN_GRACE_S, Event, Withdrawals, stream_of

log = logging.getLogger(__name__)

SIGNATURE_HEADER = "X-Emotion-Stream-Signature"
EVENT_ID_HEADER = "X-Emotion-Stream-Event-Id"
TRACK_TYPES = frozenset({"track_started", "emotion_changed", "track_ended"})
REQUEST_TIMEOUT_S = 10.0
RETRY_FIRST_S = 0.5
RETRY_CAP_S = 30.0
DISCOVER_S = 2.0
READ_COUNT = 100
READ_BLOCK_MS = 1000
SINCE_FIELD = "_since"  # in the cursor hash (stream names never start with "_")


def webhook_id(url: str) -> str:
    """A webhook's name in keys and metrics: a short hash of its URL (which may carry credentials)."""
    return hashlib.sha256(url.encode()).hexdigest()[:12]


def signature(secret: str, body: bytes) -> str:
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def parse_urls(text: str) -> tuple[str, ...]:
    return tuple(u for u in (part.strip() for part in text.split(",")) if u)


@dataclass
class Receiver:
    url: str
    id: str
    secret: str


class Webhook:
    """Delivers one URL's events, stream by stream from its cursor in Redis."""

    def __init__(self, client: aioredis.Redis, session: aiohttp.ClientSession, receiver: Receiver,
                 settings: Settings) -> None:
        self.redis = client
        self.session = session
        self.receiver = receiver
        self.retry_s = settings.webhook_retry_s
        self.face_every_s = settings.webhook_face_events_s
        self.max_len = settings.events_max_len
        self.reader = StreamReader(client)
        self.cursors: dict[str, str] = {}
        self.streams: dict[str, tuple[str, str]] = {}  # stream -> (kind, camera)
        self.last_face: dict[tuple[str, int | None], float] = {}  # (camera, track) -> capture time sent
        metrics.WEBHOOK_BACKLOG.labels(receiver.id).set(0)
        self.since = ""  # when this webhook was first configured: cameras it meets later start there
        self._discovered = 0.0
        self._withdrawals = Withdrawals()  # cameras left the set: read a while longer

    @property
    def name(self) -> str:
        return self.receiver.id

    async def run(self, stop: asyncio.Event) -> None:
        backoff = Backoff(0.1, 5.0)
        while not stop.is_set():
            try:
                await self._round(stop)
                backoff.reset()
            except TRANSIENT_ERRORS as exc:
                metrics.REDIS_ERRORS.labels("api").inc()
                log.warning("webhook %s: Redis unavailable (%s); delivery resumes when it is back", self.name, exc)
                await sleep_or_stop(stop, backoff.next_delay())

    async def _round(self, stop: asyncio.Event) -> None:
        if not self.since:
            await self._load()
        if time.monotonic() - self._discovered > DISCOVER_S:
            self._discovered = time.monotonic()
            await self._discover()
        reading = {s: self.cursors[s] for s in self.streams}
        if not reading:
            await sleep_or_stop(stop, READ_BLOCK_MS / 1000)
            return
        reply = await self.reader.read(reading, count=READ_COUNT, block_ms=READ_BLOCK_MS)
        backlog = sum(len(entries) for _, entries in reply)
        skipped: dict[FieldT, EncodableT] = {}  # streams whose cursor moved past events not for this receiver
        for stream, entries in reply:
            kind, camera = self.streams[stream]
            for raw_id, fields in entries:
                entry = as_text(raw_id)
                event = parse_entry(entry, fields, kind, camera)
                metrics.WEBHOOK_BACKLOG.labels(self.name).set(backlog)
                if event is not None and self._wanted(event):
                    if not await self._deliver(event, stop):
                        return  # stopping: the cursor stays before this event
                    # Saved at once after a delivery: a restart must not deliver it again.
                    await self.redis.hset(keys.webhook_cursor(self.name), stream, entry)
                    skipped.pop(stream, None)
                else:
                    skipped[stream] = entry  # one write for the round (re-read and skipped again after a crash)
                self.cursors[stream] = entry
                backlog -= 1
        if skipped:
            await self.redis.hset(keys.webhook_cursor(self.name), mapping=skipped)
        metrics.WEBHOOK_BACKLOG.labels(self.name).set(0)

    def _wanted(self, event: Event) -> bool:
        if event.type in TRACK_TYPES:
            return True
        if event.type != "face" or self.face_every_s is None:
            return False
        doc = json.loads(event.data)
        key = (event.id.camera, doc.get("track"))
        at = float(doc.get("captured_at", 0.0))
        last = self.last_face.get(key)
        if last is not None and 0 <= at - last < self.face_every_s:
            return False
        self.last_face[key] = at
        return True

    async def _deliver(self, event: Event, stop: asyncio.Event) -> bool:
        """POST until accepted or the retry window closes (then dead-lettered); False
        when stopped first."""
        body = event.data.encode()
        headers = {"Content-Type": "application/json", EVENT_ID_HEADER: str(event.id),
                   SIGNATURE_HEADER: signature(self.receiver.secret, body)}
        first = time.monotonic()
        delay = RETRY_FIRST_S
        while not stop.is_set():
            started = time.perf_counter()
            error = await self._post(body, headers)
            metrics.WEBHOOK_SECONDS.labels(self.name).observe(time.perf_counter() - started)
            if error is None:
                metrics.WEBHOOK_DELIVERIES.labels(self.name, "delivered").inc()
                return True
            metrics.WEBHOOK_DELIVERIES.labels(self.name, "failed").inc()
            if time.monotonic() - first + delay > self.retry_s:
                await self.redis.xadd(keys.webhook_dead_letter(self.name),
                                      {"id": str(event.id), "event": body, "error": error},
                                      maxlen=self.max_len, approximate=True)
                metrics.WEBHOOK_DELIVERIES.labels(self.name, "dead_lettered").inc()
                log.warning("webhook %s: event %s refused for %.0f s (%s); dead-lettered to %s", self.name,
                            event.id, self.retry_s, error, keys.webhook_dead_letter(self.name))
                return True
            log.warning("webhook %s: event %s not delivered (%s); retrying in %.1f s", self.name, event.id,
                        error, delay)
            await sleep_or_stop(stop, delay)
            delay = min(RETRY_CAP_S, delay * 2)
        return False

    async def _post(self, body: bytes, headers: dict[str, str]) -> str | None:
        """None when the receiver accepted (2xx); else the reason, one line."""
        try:
            async with self.session.post(self.receiver.url, data=body, headers=headers,
                                         timeout=aiohttp.ClientTimeout(total=REQUEST_TIMEOUT_S)) as response:
                await response.read()
                return None if 200 <= response.status < 300 else f"HTTP {response.status}"
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            return f"{type(exc).__name__}: {exc}".splitlines()[0]

    async def _load(self) -> None:
        """The cursors kept in Redis; the first time this webhook runs, ``since`` = now."""
        key = keys.webhook_cursor(self.name)
        seconds, micros = await self.redis.time()
        await self.redis.hsetnx(key, SINCE_FIELD, f"{int(seconds) * 1000 + int(micros) // 1000}-0")
        self.cursors = {as_text(k): as_text(v) for k, v in (await self.redis.hgetall(key)).items()}
        self.since = self.cursors.pop(SINCE_FIELD)

    async def _discover(self) -> None:
        """Follow the streams of announced cameras: from the cursor kept in Redis, or (a
        camera new to this webhook) from when the webhook was first configured."""
        members = sorted(as_text(m) for m in await self.redis.smembers(keys.CAMERAS))
        kinds = ("tracks", "events") if self.face_every_s is not None else ("tracks",)
        for camera in members:
            for kind in kinds:
                stream = stream_of(kind, camera)
                self.streams.setdefault(stream, (kind, camera))
                self.cursors.setdefault(stream, self.since)
        # Withdrawn cameras (a WebRTC session, a batch job): read on for the events that
        # end their people, then dropped with their cursors, or every batch job and every
        # browser session would be read, and kept in the cursor hash, for good.
        cameras = {stream: camera for stream, (_, camera) in self.streams.items()}
        gone = self._withdrawals.expired(cameras, set(members), time.monotonic())
        for stream in gone:
            del self.streams[stream], self.cursors[stream]
        if gone:
            await self.redis.hdel(keys.webhook_cursor(self.name), *gone)
        # Face events are thinned per person; people long gone need no entry.
        recent = time.time() - max(WITHDRAWN_GRACE_S, 2 * (self.face_every_s or 0.0))
        self.last_face = {key: at for key, at in self.last_face.items() if at >= recent}

    async def aclose(self) -> None:
        await self.reader.aclose()
