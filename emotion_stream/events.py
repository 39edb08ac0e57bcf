"""Reading events: live over pub/sub (subscribe CLI, demo, WebRTC overlay)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from functools import partial

import redis.asyncio as aioredis
from redis.asyncio.client import PubSub

from . import keys
from .logs import Throttled
from .redis_conn import TRANSIENT_ERRORS, retrying
from .schema import Event, MessageError, parse_event

log = logging.getLogger(__name__)


async def live_events(client: aioredis.Redis, camera: str | None = None, stop: asyncio.Event | None = None) -> AsyncIterator[Event]:
    """Events as they are published, for one camera or all; resubscribes after outages
    (through the one retry policy, ``redis_conn.retrying``).

    Pub/sub is fire-and-forget: events published while disconnected are not replayed
    here (they remain in the durable per-camera events stream).
    """
    throttled = Throttled(log)
    while stop is None or not stop.is_set():
        pubsub = await retrying(partial(_subscribe, client, camera), what="subscribe", component="events", stop=stop)
        if pubsub is None:
            return  # stopped while Redis was away
        try:
            while stop is None or not stop.is_set():
                message = await pubsub.get_message(timeout=0.5)
                if message is None:
                    continue
                try:
                    yield parse_event(message["data"])
                except MessageError as exc:
                    throttled.warning("bad-event", "ignored malformed event: %s", exc)
        except TRANSIENT_ERRORS as exc:
            throttled.warning("events-down", "event subscription lost (%s); resubscribing", exc)
        finally:
            await _close(pubsub)


async def _subscribe(client: aioredis.Redis, camera: str | None) -> PubSub:
    pubsub = client.pubsub(ignore_subscribe_messages=True)
    try:
        if camera:
            await pubsub.subscribe(keys.events(camera))
        else:
            await pubsub.psubscribe(keys.EVENTS_PATTERN)
    except BaseException:
        await _close(pubsub)
        raise
    return pubsub


async def _close(pubsub: PubSub) -> None:
    try:
        await pubsub.aclose()  # type: ignore[no-untyped-call]  # unannotated in redis-py
    except TRANSIENT_ERRORS:
        pass
