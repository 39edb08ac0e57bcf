"""What the streams still hold: a client's missed events, pages of events and ended
tracks, the cameras, and per-camera summaries. Everything comes from the bounded
streams (``events_max_len`` entries each), so history reaches back as far as they do."""

from __future__ import annotations

import heapq
import json
from collections.abc import Iterable
from typing import Any

import redis.asyncio as aioredis

from emotion_stream import keys
from emotion_stream.keys import STAT_FIELDS
from emotion_stream.redis_conn import FRAMES_FROM_LUA, LuaScript, as_text, stream_range

from .hub import MAX_SEQ, parse_entry
from .streams import KINDS, TYPES, Event, EventId, stream_of

FPS_WINDOW_S = 10.0
REPLAY_CHUNK = 1000


async def missed(client: aioredis.Redis, cameras: Iterable[str], types: frozenset[str], after: EventId,
                 before_ms: int) -> list[Event]:
    """Every event after ``after`` and below millisecond ``before_ms`` (in id order) that
    the streams of ``cameras`` still hold. Entries of ``after``'s millisecond are read
    again and filtered by id: ids order by (ms, seq, stream, camera) across streams."""
    per_stream: list[list[Event]] = []
    kinds = [kind for kind in KINDS if kind in {TYPES[t] for t in types}]
    for camera in cameras:
        for kind in kinds:
            events: list[Event] = []
            start = f"{after.ms}-0"
            while True:
                page = await stream_range(client, stream_of(kind, camera), after=start, before=f"{before_ms - 1}-{MAX_SEQ}",
                                          count=REPLAY_CHUNK)
                for entry, fields in page:
                    event = parse_entry(entry, fields, kind, camera)
                    if event is not None and event.id > after and event.type in types:
                        events.append(event)
                if len(page) < REPLAY_CHUNK:
                    break
                start = f"({page[-1][0]}"
            per_stream.append(events)
    return list(heapq.merge(*per_stream, key=lambda e: e.id))


async def camera_names(client: aioredis.Redis) -> list[str]:
    """The announced cameras."""
    return sorted(as_text(m) for m in await client.smembers(keys.CAMERAS))


async def known(client: aioredis.Redis, camera: str) -> bool:
    """Whether ``camera`` is one the system knows (announced, or with events left)."""
    if await client.sismember(keys.CAMERAS, camera):
        return True
    return bool(await client.exists(keys.events(camera)) or await client.exists(keys.tracks(camera)))


async def events_page(client: aioredis.Redis, camera: str, after: str, limit: int) -> dict[str, Any]:
    """Events (face and end of stream) after entry id ``after``, oldest first."""
    entries = await stream_range(client, keys.events(camera), after=f"({after}" if after != "0" else "-", count=limit)
    items = [{"id": entry, "event": doc} for entry, fields in entries if (doc := _document(fields)) is not None]
    return {"items": items, "next": entries[-1][0] if len(entries) == limit else None}


async def tracks_page(client: aioredis.Redis, camera: str, after: str, limit: int) -> dict[str, Any]:
    """Ended tracks (duration, dominant emotion, seconds per emotion) after entry id
    ``after``, oldest first. ``next`` is where the scan stopped: the page may be short."""
    items: list[dict[str, Any]] = []
    start = f"({after}" if after != "0" else "-"
    scanned: str | None = None
    while len(items) < limit:
        entries = await stream_range(client, keys.tracks(camera), after=start, count=REPLAY_CHUNK)
        for entry, fields in entries:
            scanned = entry
            doc = _document(fields) or {}
            if doc.get("type") == "track_ended":
                items.append({"id": entry, "track": doc})
                if len(items) == limit:
                    break
        if len(entries) < REPLAY_CHUNK or len(items) == limit:
            break
        start = f"({entries[-1][0]}"
    return {"items": items, "next": scanned if len(items) == limit else None}


async def summary(client: aioredis.Redis, camera: str, window_s: float) -> dict[str, Any]:
    """Seconds shown per emotion and people seen in the last ``window_s`` seconds: tracks
    that ended in the window count whole, tracks still going count so far."""
    seconds, micros = await client.time()
    now = int(seconds) + int(micros) / 1e6
    since_ms = int((now - window_s) * 1000)
    emotions: dict[str, float] = {}
    people: set[int] = set()
    start = f"{since_ms}-0"
    while True:
        entries = await stream_range(client, keys.tracks(camera), after=start, count=REPLAY_CHUNK)
        for _entry, fields in entries:
            doc = _document(fields) or {}
            if isinstance(doc.get("track"), int):
                people.add(doc["track"])
            if doc.get("type") == "track_ended":
                _add_seconds(emotions, doc)
        if len(entries) < REPLAY_CHUNK:
            break
        start = f"({entries[-1][0]}"
    for track in _active_tracks(await client.get(keys.track_state(camera))):
        people.add(track["id"])
        _add_seconds(emotions, track)
    return {"camera": camera, "window_s": window_s, "until": now, "people": len(people),
            "emotion_seconds": {k: round(v, 3) for k, v in sorted(emotions.items(), key=lambda kv: -kv[1])}}


def _add_seconds(emotions: dict[str, float], doc: dict[str, Any]) -> None:
    """Add a track's seconds per emotion (a track_ended event's, or a live track's)."""
    spent = doc.get("emotion_seconds")
    for emotion, seconds in (spent.items() if isinstance(spent, dict) else ()):
        if isinstance(seconds, (int, float)):
            emotions[emotion] = emotions.get(emotion, 0.0) + float(seconds)


def _document(fields: dict[bytes, bytes]) -> dict[str, Any] | None:
    """An entry's event as a JSON object; None for one that is not (skipped, not a 500)."""
    try:
        doc = json.loads(fields.get(b"event", b""))
    except ValueError:
        return None
    return doc if isinstance(doc, dict) else None


def _active_tracks(state: bytes | str | None) -> list[dict[str, Any]]:
    if not state:
        return []
    try:
        tracks = json.loads(state).get("tracks", [])
    except (ValueError, AttributeError):
        return []
    return [t for t in tracks if isinstance(t, dict) and isinstance(t.get("id"), int)]


async def cameras(client: aioredis.Redis) -> list[dict[str, Any]]:
    """Every announced camera: whether an ingest writes it, its last frame, its frame rate
    over the last 10 s, its active tracks and its frame counts."""
    names = await camera_names(client)
    seconds, micros = await client.time()
    now_ms = int(seconds) * 1000 + int(micros) // 1000
    recent_frames = LuaScript(client, FRAMES_FROM_LUA)  # counted in Redis: 150 JPEGs a 15 fps camera
    pipe = client.pipeline(transaction=False)
    for camera in names:
        await recent_frames(keys=[keys.frames(camera)], args=[f"{now_ms - int(FPS_WINDOW_S * 1000)}-0"], client=pipe)
        pipe.get(keys.track_state(camera))
        pipe.hgetall(keys.stats(camera))
        pipe.exists(keys.ingest_lease(camera))
    replies = await pipe.execute(raise_on_error=False) if names else []
    out = []
    for i, camera in enumerate(names):
        recent, state, stats, ingesting = replies[4 * i: 4 * i + 4]
        last, sent = recent if isinstance(recent, list) else (None, None)
        last_ms = int(as_text(last).split("-")[0]) if last else None
        counts = {as_text(k): int(v) for k, v in stats.items()} if isinstance(stats, dict) else {}
        out.append({
            "camera": camera,
            "ingesting": ingesting == 1,  # EXISTS (an error reply is no)
            "last_frame_at": last_ms / 1000 if last_ms else None,
            "fps": round(int(sent) / FPS_WINDOW_S, 2) if sent is not None else None,
            "active_tracks": len(_active_tracks(state if isinstance(state, (bytes, str)) else None)),
            "stats": {field: counts.get(field, 0) for field in STAT_FIELDS},
        })
    return out
