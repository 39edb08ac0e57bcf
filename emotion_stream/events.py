"""Reading events: live over pub/sub (subscribe CLI, demo, WebRTC overlay)."""

from __future__ import annotations

import asyncio
import json
import logging
import random
from collections.abc import AsyncIterator, Awaitable, Callable
from functools import partial
from typing import TypeVar, cast

import redis
import redis.asyncio as aioredis
from redis.asyncio.client import PubSub
from redis.asyncio.cluster import RedisCluster

from . import keys
from .logs import Throttled
from .redis_conn import TRANSIENT_ERRORS, is_cluster, retrying
from .schema import EndOfStream, Event, MessageError, TrackEvent, parse_event

log = logging.getLogger(__name__)
T = TypeVar("T")


def live_events(client: aioredis.Redis, camera: str | None = None, stop: asyncio.Event | None = None) -> AsyncIterator[Event]:
    """Face and end-of-stream events as they are published, for one camera or all;
    resubscribes after outages (through the one retry policy, ``redis_conn.retrying``).

    Pub/sub is fire-and-forget: events published while disconnected are not replayed
    here (they remain in the durable per-camera events stream).
    """
    channel = keys.events(camera) if camera else keys.EVENTS_PATTERN
    return _live(client, (channel,), camera is None, parse_event, stop)


def live_track_events(client: aioredis.Redis, camera: str | None = None, stop: asyncio.Event | None = None) -> AsyncIterator[TrackEvent]:
    """Track lifecycle events (started, emotion changed, ended) as they are published."""
    channel = keys.tracks(camera) if camera else keys.TRACKS_PATTERN
    return _live(client, (channel,), camera is None, TrackEvent.from_json, stop)


def live_track_events_and_ends(client: aioredis.Redis, camera: str | None = None,
                               stop: asyncio.Event | None = None) -> AsyncIterator[TrackEvent | EndOfStream]:
    """Track lifecycle events and the end-of-stream markers, in the order they were
    published (one subscription to both channels): how a reader of people learns that a
    finite source has ended. A camera's end marker comes just before the ``track_ended``
    events it causes (the tracking owner publishes both in one script, faces first)."""
    if camera:
        channels = (keys.tracks(camera), keys.events(camera))
    else:
        channels = (keys.TRACKS_PATTERN, keys.EVENTS_PATTERN)
    return _live(client, channels, camera is None, _track_event_or_end, stop)


def _track_event_or_end(data: bytes) -> TrackEvent | EndOfStream | None:
    try:
        kind = json.loads(data).get("type")
    except (ValueError, AttributeError):
        raise MessageError("malformed event: not a JSON object") from None
    if kind == "face":
        return None  # the events channel's face events: not wanted here
    if kind == "end":
        event = parse_event(data)
        return event if isinstance(event, EndOfStream) else None
    return TrackEvent.from_json(data)


async def _live(client: aioredis.Redis, channels: tuple[str, ...], pattern: bool,
                parse: Callable[[bytes], T | None], stop: asyncio.Event | None) -> AsyncIterator[T]:
    throttled = Throttled(log)
    while stop is None or not stop.is_set():
        pubsub = await retrying(partial(_subscribe, client, channels, pattern), what="subscribe",
                                component="events", stop=stop)
        if pubsub is None:
            return  # stopped while Redis was away
        try:
            while stop is None or not stop.is_set():
                message = await pubsub.get_message(timeout=0.5)
                if message is None:
                    continue
                try:
                    item = parse(message["data"])
                except MessageError as exc:
                    throttled.warning("bad-event", "ignored malformed event: %s", exc)
                    continue
                if item is not None:
                    yield item
        except TRANSIENT_ERRORS as exc:
            throttled.warning("events-down", "event subscription lost (%s); resubscribing", exc)
        finally:
            await _close(pubsub)


async def _subscribe(client: aioredis.Redis, channels: tuple[str, ...], pattern: bool) -> PubSub:
    if is_cluster(client):
        return await _subscribe_on_any_node(client, channels, pattern)
    return await _subscribe_with(client.pubsub(ignore_subscribe_messages=True), channels, pattern)


async def _subscribe_on_any_node(client: aioredis.Redis, channels: tuple[str, ...], pattern: bool) -> PubSub:
    """Redis Cluster: a PUBLISH reaches subscribers on every node, so any live node will
    do. Tried in random order (subscribers spread out; a dead node is passed over before
    the client has noticed the failover)."""
    cluster = cast(RedisCluster, client)
    await cluster.initialize()
    nodes = cluster.get_nodes()
    random.shuffle(nodes)
    failure: Exception = redis.ConnectionError("no Redis Cluster node to subscribe on")
    for node in nodes:
        try:
            return await _subscribe_with(cluster.pubsub(node=node, ignore_subscribe_messages=True), channels, pattern)
        except TRANSIENT_ERRORS as exc:
            failure = exc
    raise failure


async def _subscribe_with(pubsub: PubSub, channels: tuple[str, ...], pattern: bool) -> PubSub:
    try:
        if pattern:
            await pubsub.psubscribe(*channels)
        else:
            await pubsub.subscribe(*channels)
    except BaseException:
        await _close(pubsub)
        raise
    return pubsub


async def _close(pubsub: PubSub) -> None:
    # Through a typed name: redis-py annotates aclose only from 8.2 on.
    aclose: Callable[[], Awaitable[object]] = pubsub.aclose
    try:
        await aclose()
    except TRANSIENT_ERRORS:
        pass
