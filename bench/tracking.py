"""(e) tracks: people on live cameras, raw per-frame labels against tracked ones.

K cameras play a clip built from labelled photos (``people_clip``) in real time through
ingest -> Redis -> workers (which also own the tracking). Events are matched to the
planted faces by overlap; the figures compare, on the same events, the raw per-frame
label with the track's smoothed label and the track's dominant emotion.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter, defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import cv2
import numpy as np
import redis.asyncio as aioredis

from emotion_stream import keys
from emotion_stream.embedded_redis import EmbeddedRedis
from emotion_stream.redis_conn import connect, stream_range
from emotion_stream.schema import (
    EndOfStream,
    Event,
    FaceEvent,
    TrackEvent,
    TrackEventType,
    parse_event,
)
from tracks.association import iou

from . import people_clip
from .config import BenchConfig, settings_for, start_workers, workers_ready
from .measure import Figures, percentiles

if TYPE_CHECKING:
    from model import EmotionModel


def run_tracking(config: BenchConfig, model: EmotionModel, photos: Sequence[tuple[Path, str]],
                 seconds: float) -> Figures:
    from model import create_detector


    settings = settings_for(config)
    faces = people_clip.load_photos(photos, create_detector("blazeface"))
    if len(faces) < 4:
        raise ValueError(f"only {len(faces)} usable face photos; the clip needs at least 4")
    rng = np.random.default_rng(0)
    clips = []
    for cam in range(config.cameras):
        plan = people_clip.schedule(faces, seconds, seed=cam)
        frames, truth = [], []
        for i in range(int(seconds * people_clip.FPS)):
            image, visible = people_clip.render(plan, i, rng)
            frames.append(cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, settings.jpeg_quality])[1].tobytes())
            truth.append(visible)
        clips.append((f"people{cam}", frames, truth))
    latencies: list[tuple[float, float, float]] = []  # (received, capture -> received, capture -> analysed)

    async def main(url: str) -> dict[str, tuple[list[Event], list[TrackEvent]]]:
        from emotion_stream.events import live_events
        from ingest.publisher import FramePublisher

        stop = asyncio.Event()
        client = connect(url, "bench-tracks")
        workers = start_workers(config, settings, model, url, stop, "tracks")
        await workers_ready(client, config.workers)

        async def subscriber() -> None:
            async for event in live_events(client, None, stop):
                if isinstance(event, FaceEvent) and event.track is not None:
                    now = time.time()
                    latencies.append((now, now - event.captured_at, event.processed_at - event.captured_at))

        async def camera(name: str, frames: list[bytes]) -> None:
            publisher = FramePublisher(client, name, settings)
            shape = np.empty((people_clip.SIZE[1], people_clip.SIZE[0], 0), np.uint8)
            start = time.time()
            for i, data in enumerate(frames):
                await asyncio.sleep(max(0.0, start + i / people_clip.FPS - time.time()))
                await publisher.publish(shape, time.time(), encoded=data)
            await publisher.end()

        listening = asyncio.create_task(subscriber())
        await asyncio.sleep(0.5)
        await asyncio.gather(*(camera(name, frames) for name, frames, _ in clips))
        deadline = time.time() + 60
        while time.time() < deadline:
            done = [any(isinstance(parse_event(doc), EndOfStream) for doc in await _documents(client, keys.events(name), last=5))
                    for name, _, _ in clips]
            if all(done):
                break
            await asyncio.sleep(0.2)
        out = {}
        for name, _, _ in clips:
            out[name] = (
                [parse_event(doc) for doc in await _documents(client, keys.events(name))],
                [TrackEvent.from_json(doc) for doc in await _documents(client, keys.tracks(name))],
            )
        stop.set()
        await asyncio.gather(listening, *workers, return_exceptions=True)
        await client.aclose()
        return out

    with EmbeddedRedis() as redis:
        streams = asyncio.run(main(redis.url))
    start = min((t for t, _, _ in latencies), default=0.0)
    steady = [(lat, worker) for t, lat, worker in latencies if t - start > 5.0]  # first 5 s: warm-up
    result = score([(truth, *streams[name]) for name, _, truth in clips])
    result.update(
        cameras=config.cameras, fps=people_clip.FPS, seconds=seconds, workers=config.workers,
        photos=len(faces),
        capture_to_tracked_event_ms={k: 1000 * v for k, v in percentiles([lat for lat, _ in steady]).items()},
        # Of which: up to the worker's analysis (queue, decode, detect, classify), and
        # from there through the frame record, the reorder window and tracking to the event.
        capture_to_analysed_ms={k: 1000 * v for k, v in percentiles([w for _, w in steady]).items()},
        analysed_to_tracked_event_ms={k: 1000 * v for k, v in percentiles([lat - w for lat, w in steady]).items()},
    )
    return result


async def _documents(client: aioredis.Redis, stream: str, last: int | None = None) -> list[bytes]:
    """The ``event`` field of a stream's entries: all, or the ``last`` few."""
    return [fields[b"event"] for _id, fields in await stream_range(client, stream, count=last, newest_first=bool(last))]


Truth = list[list[tuple[people_clip.Appearance, tuple[int, int, int, int]]]]  # per frame: who is where


def score(cameras: list[tuple[Truth, list[Event], list[TrackEvent]]]) -> Figures:
    """Figures over all cameras: each event is matched to the planted face it overlaps."""
    matched = total_truth = right_raw = right_smoothed = 0
    raw_flips = smoothed_flips = switches = 0
    vote_right = vote_total = soft_right = track_right = track_total = 0
    for truth, events, lifecycle in cameras:
        seen: dict[int, list[FaceEvent]] = defaultdict(list)  # person -> their events, in seq order
        person_label: dict[int, str] = {}
        for event in events:
            if not isinstance(event, FaceEvent) or event.seq >= len(truth):
                continue
            best = max(truth[event.seq], key=lambda v: iou(v[1], event.box), default=None)
            if best is not None and iou(best[1], event.box) >= 0.3:
                seen[best[0].person].append(event)
                person_label[best[0].person] = best[0].photo.label
        total_truth += sum(len(v) for v in truth)
        track_people: dict[int | None, Counter[int]] = defaultdict(Counter)
        for person, evs in seen.items():
            evs.sort(key=lambda e: e.seq)
            label = person_label[person]
            matched += len(evs)
            right_raw += sum(e.emotion == label for e in evs)
            right_smoothed += sum(e.track_emotion == label for e in evs)
            raw_flips += sum(a.emotion != b.emotion for a, b in zip(evs, evs[1:]))
            smoothed_flips += sum(a.track_emotion != b.track_emotion for a, b in zip(evs, evs[1:]))
            switches += sum(a.track != b.track for a, b in zip(evs, evs[1:]))
            vote_right += Counter(e.emotion for e in evs).most_common(1)[0][0] == label
            mean: Counter[str] = Counter()
            for e in evs:
                mean.update(e.probabilities)
            soft_right += mean.most_common(1)[0][0] == label
            vote_total += 1
            for e in evs:
                track_people[e.track][person] += 1
        for ended in (e for e in lifecycle if e.type is TrackEventType.ENDED):
            people = track_people.get(ended.track)
            if not people:
                continue  # a track of no planted face (a false detection)
            track_total += 1
            track_right += ended.emotion == person_label[people.most_common(1)[0][0]]
    face_seconds = matched / people_clip.FPS
    return {
        "faces_found": matched / max(1, total_truth),
        "face_seconds": face_seconds,
        "raw": {
            "flips_per_face_second": raw_flips / max(1e-9, face_seconds),
            "per_frame_accuracy": right_raw / max(1, matched),
            "person_majority_vote_accuracy": vote_right / max(1, vote_total),
            "person_mean_probability_accuracy": soft_right / max(1, vote_total),
        },
        "tracked": {
            "flips_per_face_second": smoothed_flips / max(1e-9, face_seconds),
            "per_frame_accuracy": right_smoothed / max(1, matched),
            "track_dominant_accuracy": track_right / max(1, track_total),
            "id_switches_per_100_face_seconds": 100 * switches / max(1e-9, face_seconds),
            "tracks": track_total,
            "people": vote_total,
        },
    }
