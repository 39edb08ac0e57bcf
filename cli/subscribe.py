"""``emotion-stream subscribe``: print live per-face events."""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
from dataclasses import asdict
from typing import TYPE_CHECKING

from emotion_stream.settings import Settings

from .common import (
    CommandError,
    Subcommands,
    add_command,
    add_service_options,
    camera_id,
    format_event,
    format_track_event,
    number,
)

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

    from redis.asyncio import Redis

log = logging.getLogger(__name__)

END_DRAIN_S = 1.0  # after an end marker, how long to wait for the track_ended events it causes


def register(sub: Subcommands) -> None:
    p = add_command(sub, "subscribe", run, "print live events (all cameras or one)")
    p.add_argument("--camera", type=camera_id, default=None, help="only this camera")
    p.add_argument("--tracks", action="store_true",
                   help="print people instead of faces: track_started, emotion_changed, track_ended")
    p.add_argument("--json", action="store_true", help="one JSON event per line")
    p.add_argument("--count", type=number(int, 1), default=None, metavar="N", help="exit after N face (or track) events")
    p.add_argument("--until-end", action="store_true",
                   help="exit at the camera's end-of-stream marker (with --tracks: once the people it ended are out)")
    add_service_options(p, metrics=False)


def run(args: argparse.Namespace, settings: Settings) -> int:
    from emotion_stream.events import live_events, live_track_events, live_track_events_and_ends
    from emotion_stream.lifecycle import run_service
    from emotion_stream.redis_conn import connect
    from emotion_stream.schema import EndOfStream, TrackEvent

    if not settings.redis_url:
        raise CommandError("subscribe needs a Redis to listen to: set REDIS_URL or --redis")
    url = settings.redis_url

    async def main(stop: asyncio.Event) -> int:
        client = connect(url, name="emotion-stream-subscribe")
        seen = 0
        try:
            if args.camera is not None:
                await _say_if_unknown(client, args.camera)
            if args.tracks:
                people: AsyncIterator[TrackEvent | EndOfStream] = (
                    live_track_events_and_ends if args.until_end else live_track_events)(client, args.camera, stop)
                ending = False
                while True:
                    try:
                        # The end marker comes just before the track_ended events it causes.
                        item = await (asyncio.wait_for(anext(people), END_DRAIN_S) if ending else anext(people))
                    except (StopAsyncIteration, TimeoutError):
                        break
                    if isinstance(item, EndOfStream):
                        ending = ending or args.camera is None or item.camera == args.camera
                        continue
                    print(item.to_json() if args.json else format_track_event(item), flush=True)
                    seen += 1
                    if args.count is not None and seen >= args.count:
                        break
                return 0
            async for event in live_events(client, args.camera, stop):
                print(json.dumps(asdict(event)) if args.json else format_event(event), flush=True)
                if isinstance(event, EndOfStream):
                    if args.until_end and (args.camera is None or event.camera == args.camera):
                        break
                    continue
                seen += 1
                if args.count is not None and seen >= args.count:
                    break
        finally:
            await client.aclose()
        return 0

    return run_service(main, args.duration)


async def _say_if_unknown(client: Redis, camera: str) -> None:
    """A camera no ingest has announced (a typo, or one not started yet) would otherwise
    print nothing without a word; subscribe waits for it all the same."""
    from emotion_stream import keys
    from emotion_stream.redis_conn import TRANSIENT_ERRORS, as_text

    try:
        known = sorted(as_text(member) for member in await client.smembers(keys.CAMERAS))
    except TRANSIENT_ERRORS:
        return  # the event reader reports the outage
    if camera not in known:
        shown = ", ".join(known[:10]) + (f" and {len(known) - 10} more" if len(known) > 10 else "")
        log.warning("camera %s is not announced (cameras now: %s); waiting for it", camera, shown or "none")
