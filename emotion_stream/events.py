"""Reading events: live over pub/sub (subscribe CLI, demo, WebRTC overlay)."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator

import redis.asyncio as aioredis

from . import keys
from .logs import Throttled
from .redis_conn import ACCESS_ERRORS, TRANSIENT_ERRORS, Backoff
from .schema import EndOfStream, Event, FaceEvent, MessageError, parse_event

log = logging.getLogger(__name__)


async def live_events(client: aioredis.Redis, camera: str | None = None, stop: asyncio.Event | None = None) -> AsyncIterator[Event]:
    """Events as they are published, for one camera or all; resubscribes after outages.

    Pub/sub is fire-and-forget: events published while disconnected are not replayed
    here (they remain in the durable per-camera events stream).
    """
    backoff = Backoff(0.2, 5.0)
    throttled = Throttled(log)
    while stop is None or not stop.is_set():
        pubsub = client.pubsub(ignore_subscribe_messages=True)
        try:
            if camera:
                await pubsub.subscribe(keys.events(camera))
            else:
                await pubsub.psubscribe(keys.EVENTS_PATTERN)
            backoff.reset()
            while stop is None or not stop.is_set():
                message = await pubsub.get_message(timeout=0.5)
                if message is None:
                    continue
                try:
                    yield parse_event(message["data"])
                except MessageError as exc:
                    throttled.warning("bad-event", "ignored malformed event: %s", exc)
        except ACCESS_ERRORS:
            raise
        except TRANSIENT_ERRORS as exc:
            delay = backoff.next_delay()
            throttled.warning("events-down", "event subscription lost (%s); retrying in %.1f s", exc, delay)
            await asyncio.sleep(delay)
        finally:
            try:
                await pubsub.aclose()  # type: ignore[no-untyped-call]  # unannotated in redis-py
            except TRANSIENT_ERRORS:
                pass


def format_event(event: Event) -> str:
    """One human-readable line per event."""
    if isinstance(event, EndOfStream):
        return f"{event.camera:<12} end of stream after seq {event.seq}"
    assert isinstance(event, FaceEvent)
    clock = time.strftime("%H:%M:%S", time.localtime(event.captured_at))
    x, y, w, h = event.box
    note = " (whole image)" if event.whole_image else ""
    name = f" {event.name}" if event.name else ""
    return (
        f"{clock} {event.camera:<12} #{event.seq:<6} face {event.face_index}/{event.faces_in_frame} "
        f"{event.emotion:<9} {event.confidence:4.2f}  box {x},{y},{w},{h}  "
        f"{event.latency_s * 1000:6.1f} ms{name}{note}"
    )
