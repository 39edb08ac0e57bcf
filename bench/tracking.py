"""(e) tracks: people on live cameras, raw per-frame labels against tracked ones.

K cameras play a clip built from labelled photos (``people_clip``) in real time through
ingest -> Redis -> real ``worker`` processes (which also own the tracking), in two
variants: ``gaps`` (a slot stays empty between two people) and ``queue`` (the next person
takes the same spot 0-0.3 s later, and hard cuts). Events are matched to the planted
faces by overlap; the figures compare, on the same events, the raw per-frame label with
the track's smoothed label and the track's dominant emotion, and count who each track
followed. The workers come from this checkout or, side by side, from a baseline one
(the clip is the same: only the pipeline under test changes).
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from collections import Counter, defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import cv2
import numpy as np
import psutil
import redis.asyncio as aioredis

from emotion_stream import keys
from emotion_stream.embedded_redis import EmbeddedRedis
from emotion_stream.redis_conn import connect, stream_range
from emotion_stream.schema import (
    EndOfStream,
    Event,
    FaceEvent,
    FrameKind,
    FrameMessage,
    TrackEvent,
    TrackEventType,
    parse_event,
)
from tracks.association import iou

from . import people_clip
from .config import BenchConfig, settings_for, workers_ready
from .measure import Figures, percentiles

if TYPE_CHECKING:
    from model import EmotionModel

ROOT = Path(__file__).resolve().parents[1]
VARIANTS = ("gaps", "queue")
Truth = list[list[tuple[people_clip.Appearance, tuple[int, int, int, int]]]]  # per frame: who is where
CUT_CALL_FRAMES = 2  # a cut called this many frames late still counts (its own frames skipped)


def run_tracking(config: BenchConfig, photos: Sequence[tuple[Path, str]], seconds: float,
                 baseline: Path | None = None) -> Figures:
    """Both variants, for this checkout and (first) the baseline's workers."""
    from model import create_detector

    faces = people_clip.load_photos(photos, create_detector("blazeface"))
    if len(faces) < 4:
        raise ValueError(f"only {len(faces)} usable face photos; the clip needs at least 4")
    quality = settings_for(config).jpeg_quality
    clips = {variant: _clips(faces, config.cameras, seconds, variant == "queue", quality) for variant in VARIANTS}
    out: Figures = {"cameras": config.cameras, "fps": people_clip.FPS, "seconds": seconds, "workers": config.workers,
                    "photos": len(faces), "photos_by_emotion": _photos_by_emotion(faces), "cost": _cost(faces)}
    for name, tree in (("baseline", baseline), ("current", ROOT)):
        if tree is None:
            continue
        out[name] = {"tree": str(tree)}
        for variant, cams in clips.items():
            out[name][variant] = _run(config, tree, cams, seconds)
    return out


def run_replay(config: BenchConfig, photos: Sequence[tuple[Path, str]], seconds: float,
               model: EmotionModel | None = None) -> Figures:
    """Both variants' clips through the worker's own analysis offline, every frame in
    order (``FrameProcessor``, then its frame records), and one tracker a camera, scored
    as ``run_tracking``. No load, no skipped frame, no Redis: the same figures at every
    run of one checkout, so tracking changes compare across commits, and more cameras or
    seconds give more people than the live clip can on this machine."""
    from emotion_stream.images import ImageLimits
    from emotion_stream.schema import FrameRecord, parse_event
    from model import FaceAnalyzer, create_detector
    from tracks.camera import CameraTracker, TrackerConfig, TrackerOutput
    from worker.outcomes import Origin, analyzed_outcome
    from worker.processing import FrameProcessor
    from worker.streams import Entry

    faces = people_clip.load_photos(photos, create_detector("blazeface"))
    if len(faces) < 4:
        raise ValueError(f"only {len(faces)} usable face photos; the clip needs at least 4")
    settings = settings_for(config).model_copy(update={"tracking": True})
    analyzer = FaceAnalyzer.from_settings(settings, model)
    processor = FrameProcessor(analyzer, ImageLimits(settings.max_image_bytes, settings.max_image_pixels), describe=True)
    origin = Origin("replay", analyzer.detector.name, analyzer.model.id)
    tracking = TrackerConfig.from_settings(settings, analyzer.model.metadata.class_prior())
    out: Figures = {"cameras": config.cameras, "fps": people_clip.FPS, "seconds": seconds, "workers": 0,
                    "photos": len(faces), "photos_by_emotion": _photos_by_emotion(faces), "replay": True,
                    "current": {"tree": str(ROOT)}}
    try:
        for variant in VARIANTS:
            scored = []
            for name, frames, truth in _clips(faces, config.cameras, seconds, variant == "queue", settings.jpeg_quality):
                tracker, emitted = CameraTracker(name, tracking), TrackerOutput()
                for start in range(0, len(frames), settings.batch_size):
                    messages = [FrameMessage(name, i, i / people_clip.FPS, FrameKind.LIVE, frames[i], *people_clip.SIZE)
                                for i in range(start, min(start + settings.batch_size, len(frames)))]
                    for message, analysis in zip(messages, processor.process(messages)[0]):
                        outcome = analyzed_outcome(Entry(name, "0-0", None), message, analysis.faces, 0.0, origin,
                                                   tracking=True, weak=analysis.weak, scene=analysis.scene)
                        record = FrameRecord.from_json(outcome.frame_record)
                        tracker.add(record, record.captured_at, emitted)
                        emitted.merge(tracker.flush(record.captured_at))
                emitted.merge(tracker.flush(float("inf")))
                scored.append((truth, [parse_event(e) for e in emitted.events], emitted.lifecycle))
            out["current"][variant] = score(scored)
    finally:
        processor.close()
    return out


def _clips(faces: list[people_clip.Photo], cameras: int, seconds: float, queue: bool,
           quality: int) -> list[tuple[str, list[bytes], Truth]]:
    rng = np.random.default_rng(0)
    clips = []
    for cam in range(cameras):
        plan = people_clip.schedule(faces, seconds, seed=cam, queue=queue)
        frames, truth = [], []
        for i in range(int(seconds * people_clip.FPS)):
            image, visible = people_clip.render(plan, i, rng)
            frames.append(cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, quality])[1].tobytes())
            truth.append(visible)
        clips.append((f"people{cam}", frames, truth))
    return clips


def _run(config: BenchConfig, tree: Path, clips: list[tuple[str, list[bytes], Truth]], seconds: float) -> Figures:
    """The clips through ``config.workers`` worker processes of ``tree`` on a fresh Redis."""
    latencies: list[tuple[float, float, float]] = []  # (received, capture -> received, capture -> analysed)
    cpu_s: list[float] = []  # the workers' CPU seconds once ready, and after the clips

    def workers_cpu() -> float:
        return sum(sum(psutil.Process(w.pid).cpu_times()[:2]) for w in workers)

    async def main(url: str) -> dict[str, tuple[list[Event], list[TrackEvent]]]:
        from emotion_stream.events import live_events

        stop = asyncio.Event()
        client = connect(url, "bench-tracks")
        await workers_ready(client, config.workers, timeout=300)
        cpu_s.append(workers_cpu())

        async def subscriber() -> None:
            async for event in live_events(client, None, stop):
                if isinstance(event, FaceEvent) and event.track is not None:
                    now = time.time()
                    latencies.append((now, now - event.captured_at, event.processed_at - event.captured_at))

        async def camera(name: str, frames: list[bytes]) -> None:
            # Frames as any ingest writes them (the same schema for both checkouts).
            await client.sadd(keys.CAMERAS, name)
            start = time.time()
            for i, data in enumerate(frames):
                await asyncio.sleep(max(0.0, start + i / people_clip.FPS - time.time()))
                message = FrameMessage(name, i, time.time(), FrameKind.LIVE, data, *people_clip.SIZE)
                await client.xadd(keys.frames(name), message.to_fields(), maxlen=256, approximate=True)
            await client.xadd(keys.frames(name), FrameMessage(name, len(frames), time.time(), FrameKind.END).to_fields())

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
        await asyncio.gather(listening, return_exceptions=True)
        await client.aclose()
        return out

    threads = str(max(1, (os.cpu_count() or 1) // config.workers))
    with EmbeddedRedis() as redis:
        env = {**os.environ, "REDIS_URL": redis.url, "EMOTION_STREAM_LOG_LEVEL": "WARNING"}
        workers = [subprocess.Popen([sys.executable, "-m", "cli", "worker", "--name", f"bench-tracks-{i}",
                                     "--cpu-threads", threads, "--batch-size", str(config.batch_size),
                                     "--max-wait-ms", str(config.max_wait_ms)],
                                    cwd=tree, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                   for i in range(config.workers)]
        try:
            streams = asyncio.run(main(redis.url))
            cpu_s.append(workers_cpu())
        finally:
            for worker in workers:
                worker.terminate()
            for worker in workers:
                worker.wait(60)
    start = min((t for t, _, _ in latencies), default=0.0)
    steady = [(lat, worker) for t, lat, worker in latencies if t - start > 5.0]  # first 5 s: warm-up
    result = score([(truth, *streams[name]) for name, _, truth in clips])
    result.update(
        capture_to_tracked_event_ms={k: 1000 * v for k, v in percentiles([lat for lat, _ in steady]).items()},
        # Of which: up to the worker's analysis (queue, decode, detect, classify), and
        # from there through the frame record, the reorder window and tracking to the event.
        capture_to_analysed_ms={k: 1000 * v for k, v in percentiles([w for _, w in steady]).items()},
        analysed_to_tracked_event_ms={k: 1000 * v for k, v in percentiles([lat - w for lat, w in steady]).items()},
        workers_cpu_ms_per_frame=1000 * (cpu_s[1] - cpu_s[0]) / max(1, sum(len(frames) for _, frames, _ in clips)),
    )
    return result


async def _documents(client: aioredis.Redis, stream: str, last: int | None = None) -> list[bytes]:
    """The ``event`` field of a stream's entries: all, or the ``last`` few."""
    return [fields[b"event"] for _id, fields in await stream_range(client, stream, count=last, newest_first=bool(last))]


def _cost(faces: list[people_clip.Photo], frames: int = 150) -> Figures:
    """CPU ms a face: the descriptor (worker), and tracking's association (owner), on the
    queue clip's detected faces."""
    from emotion_stream.schema import FrameRecord, FrameStatus, encode_vector
    from model import create_detector
    from model.appearance import face_descriptor, scene_signature
    from tracks.camera import CameraTracker, TrackerConfig, TrackerOutput

    detector = create_detector("blazeface")
    plan = people_clip.schedule(faces, frames / people_clip.FPS, seed=0, queue=True)
    rng = np.random.default_rng(0)
    describe_s, described = 0.0, 0
    records = []
    for i in range(frames):
        image, _ = people_clip.render(plan, i, rng)
        docs: list[dict[str, Any]] = []
        detections = detector.detect(image)
        for d in detections:
            started = time.process_time()
            descriptor = face_descriptor(image, d.box, d.landmarks)
            describe_s += time.process_time() - started
            described += 1
            probabilities = {label: 1 / 9 for label in ("anger", "contempt", "disgust", "fear", "happy", "neutral",
                                                        "sad", "surprise", "uncertain")}
            docs.append({"camera": "c", "seq": i, "captured_at": i / people_clip.FPS, "processed_at": 0.0,
                         "face_index": len(docs), "faces_in_frame": 0, "box": list(d.box), "emotion": "neutral",
                         "confidence": 0.1, "probabilities": probabilities, "whole_image": False, "detector": "b",
                         "model": "m", "worker": "w", "descriptor": encode_vector(descriptor.tolist())})
        records.append(FrameRecord("c", i, i / people_clip.FPS, FrameStatus.ANALYSED, docs,
                                   scene=encode_vector(scene_signature(image, [d.box for d in detections]).tolist())))
    tracker = CameraTracker("c", TrackerConfig())
    started = time.process_time()
    for record in records:
        out = TrackerOutput()
        tracker.add(record, record.captured_at, out)
        tracker.flush(record.captured_at + 1.0)
    track_s = time.process_time() - started
    faces_tracked = sum(len(r.faces) for r in records)
    return {"descriptor_cpu_ms_per_face": 1000 * describe_s / max(1, described),
            "tracking_cpu_ms_per_face": 1000 * track_s / max(1, faces_tracked), "faces": faces_tracked}


def _photos_by_emotion(faces: Sequence[people_clip.Photo]) -> dict[str, int]:
    return dict(sorted(Counter(face.label for face in faces).items()))


def score(cameras: list[tuple[Truth, list[Event], list[TrackEvent]]]) -> Figures:
    """Figures over all cameras: each event is matched to the planted face it overlaps."""
    matched = total_truth = right_raw = right_smoothed = weak = false = 0
    raw_flips = smoothed_flips = switches = 0
    vote_right = vote_total = track_right = track_total = 0
    tracks_total = tracks_mixed = 0
    cuts = cuts_called = cut_calls_elsewhere = 0
    by_emotion: dict[str, list[int]] = defaultdict(lambda: [0, 0])  # true emotion -> [dominant right, people]
    for truth, events, lifecycle in cameras:
        seen: dict[int, list[FaceEvent]] = defaultdict(list)  # person -> their events, in seq order
        person_label: dict[int, str] = {}
        track_people: dict[int | None, Counter[int]] = defaultdict(Counter)
        for event in events:
            if not isinstance(event, FaceEvent) or event.seq >= len(truth):
                continue
            best = max(truth[event.seq], key=lambda v: iou(v[1], event.box), default=None)
            if best is not None and iou(best[1], event.box) >= 0.3:
                seen[best[0].person].append(event)
                person_label[best[0].person] = best[0].photo.label
                weak += int(getattr(event, "weak", False))
            else:
                false += 1
        total_truth += sum(len(v) for v in truth)
        for person, evs in seen.items():
            evs.sort(key=lambda e: e.seq)
            label = person_label[person]
            matched += len({e.seq for e in evs})
            right_raw += sum(e.emotion == label for e in evs)
            right_smoothed += sum(e.track_emotion == label for e in evs)
            raw_flips += sum(a.emotion != b.emotion for a, b in zip(evs, evs[1:]))
            smoothed_flips += sum(a.track_emotion != b.track_emotion for a, b in zip(evs, evs[1:]))
            switches += sum(a.track != b.track for a, b in zip(evs, evs[1:]))
            vote_right += Counter(e.emotion for e in evs).most_common(1)[0][0] == label
            vote_total += 1
            for e in evs:
                track_people[e.track][person] += 1
        for track, followed in track_people.items():
            if track is not None:
                tracks_total += 1
                tracks_mixed += int(len(followed) > 1)
        clip_cuts = _cut_frames(truth)
        called = {e.seq for e in lifecycle if e.type is TrackEventType.ENDED and e.reason == "scene_cut"}
        cuts += len(clip_cuts)
        # Called at the cut, or at the next analysed frame when the cut's own was skipped.
        cuts_called += sum(any(c <= seq <= c + CUT_CALL_FRAMES for seq in called) for c in clip_cuts)
        cut_calls_elsewhere += sum(not any(c <= seq <= c + CUT_CALL_FRAMES for c in clip_cuts) for seq in called)
        for ended in (e for e in lifecycle if e.type is TrackEventType.ENDED):
            people = track_people.get(ended.track)
            if not people:
                continue  # a track of no planted face (a false detection)
            truth_label = person_label[people.most_common(1)[0][0]]
            track_total += 1
            track_right += ended.emotion == truth_label
            by_emotion[truth_label][0] += ended.emotion == truth_label
            by_emotion[truth_label][1] += 1
    face_seconds = matched / people_clip.FPS
    return {
        "face_frame_recall": matched / max(1, total_truth),
        "face_seconds": face_seconds,
        "weak_events": weak,
        # Events on no planted face (false detections), a 100 planted face-frames.
        "false_events_per_100_face_frames": 100 * false / max(1, total_truth),
        "raw": {
            "flips_per_face_second": raw_flips / max(1e-9, face_seconds),
            "per_frame_accuracy": right_raw / max(1, matched),
            "person_majority_vote_accuracy": vote_right / max(1, vote_total),
        },
        "tracked": {
            "flips_per_face_second": smoothed_flips / max(1e-9, face_seconds),
            "per_frame_accuracy": right_smoothed / max(1, matched),
            "track_dominant_accuracy": track_right / max(1, track_total),
            # Per true emotion: the clips show every emotion about as often, however few
            # photos it has (one contempt photo can be an eighth of the people).
            "track_dominant_by_emotion": {e: {"right": r, "tracks": n} for e, (r, n) in sorted(by_emotion.items())},
            "id_switches_per_100_face_seconds": 100 * switches / max(1e-9, face_seconds),
            "tracks_covering_several_people": tracks_mixed / max(1, tracks_total),
            "tracks": tracks_total,
            "people": vote_total,
        },
        # The clip's hard cuts (queue variant), those that ended its tracks as ``scene_cut``,
        # and ``scene_cut`` calls where the clip did not cut.
        "cuts": {"in_clips": cuts, "called": cuts_called, "called_elsewhere": cut_calls_elsewhere},
    }


def _cut_frames(truth: Truth) -> list[int]:
    """The frames at which a clip cuts to another scene: its people's scene number rises."""
    out, scene = [], 0
    for seq, visible in enumerate(truth):
        now = max((a.scene for a, _box in visible), default=scene)
        if now > scene:
            out.append(seq)
        scene = now
    return out
