"""Reading events: live over pub/sub (subscribe CLI, demo, WebRTC overlay)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator

import redis.asyncio as aioredis

from . import keys
from .logs import Throttled
from .redis_conn import ACCESS_ERRORS, TRANSIENT_ERRORS, Backoff
from .schema import Event, MessageError, parse_event

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
