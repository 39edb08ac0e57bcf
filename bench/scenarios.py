"""The four measured paths of ``emotion-stream bench``, run on the same images.

(a) original: Haar + VGG19 224 RGB, one predict per face (``original.py``)
(b) direct:   our FaceAnalyzer on the files, batched, one process
(c) batch:    batch mode through an embedded Redis with N in-process workers
(d) live:     K synthetic 640x480 cameras at F fps through ingest -> Redis -> workers
              (``cluster``: the same on one redis-server, then on a 3+3 Redis Cluster)
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from emotion_stream import keys, metrics
from emotion_stream.embedded_redis import EmbeddedRedis, free_port
from emotion_stream.redis_conn import connect
from emotion_stream.schema import SkipReason
from emotion_stream.settings import Settings
from model.runtime import share_cores

from .measure import UsageSampler, percentiles


@dataclass(frozen=True)
class BenchConfig:
    images: list[Path]
    detector: str = "opencv"
    workers: int = 2
    batch_size: int = Settings.model_fields["batch_size"].default  # the worker's defaults
    max_wait_ms: int = Settings.model_fields["max_wait_ms"].default
    cameras: int = 4
    fps: float = 15.0
    live_seconds: float = 60.0
    original_limit: int = 60
    detect_max_side: int | None = None  # None: the detector's default


def _settings(config: BenchConfig, **extra: object) -> Settings:
    return Settings(detector=config.detector, detect_max_side=config.detect_max_side, batch_size=config.batch_size,
                    max_wait_ms=config.max_wait_ms, **extra)


def _stage_busy() -> dict[str, float]:
    return {
        stage: metrics.STAGE_BUSY_SECONDS.labels(stage)._value.get()  # noqa: SLF001 - own registry
        for stage in metrics.STAGES
    }


def _processed_total() -> float:
    return sum(
        sample.value
        for metric in metrics.FRAMES_PROCESSED.collect()
        for sample in metric.samples
        if sample.name.endswith("_total")
    )


def _counter_sum(counter, **labels: str) -> float:  # type: ignore[no-untyped-def]
    total = 0.0
    for metric in counter.collect():
        for sample in metric.samples:
            if sample.name.endswith("_total") and all(sample.labels.get(k) == v for k, v in labels.items()):
                total += sample.value
    return total


# ------------------------------------------------------------------------- (a)
def run_original(config: BenchConfig) -> dict[str, object]:
    from .original import OriginalPath

    path = OriginalPath()
    images = config.images[: config.original_limit]
    path.predict_file(str(images[0]))  # warm-up (graph build)
    with UsageSampler({"bench": os.getpid()}) as usage:
        start = time.perf_counter()
        for image in images:
            path.predict_file(str(image))
        wall = time.perf_counter() - start
    return {
        "images": len(images),
        "ms_per_image": 1000 * wall / len(images),
        "images_per_s": len(images) / wall,
        "processes": usage.summaries(),
    }


# ---------------------------------------------------------------- detector table
DETECT_SIZES = (192, 320, 640)


def _matched(found: list, planted: list[tuple[int, int, int, int]]) -> int:
    """Planted faces with a detection centred within half a face width of theirs."""
    centers = [(d.box[0] + d.box[2] / 2, d.box[1] + d.box[3] / 2) for d in found]
    return sum(
        any(abs(cx - (x + w / 2)) < w / 2 and abs(cy - (y + h / 2)) < h / 2 for cx, cy in centers)
        for x, y, w, h in planted
    )


def _time_detector(detect, photos: list, frame) -> dict[str, float]:  # type: ignore[no-untyped-def]
    """CPU ms per photo (as stills, 16 a call) and per live frame, and what was found."""
    detect(photos[:2], True)  # warm-up
    start = time.process_time()
    with_face = sum(1 for i in range(0, len(photos), 16) for found in detect(photos[i : i + 16], True) if found)
    photo_ms = 1000 * (time.process_time() - start) / len(photos)
    repeats = 5
    start = time.process_time()
    for _ in range(repeats):
        [frame_faces] = detect([frame], False)
    frame_ms = 1000 * (time.process_time() - start) / repeats
    return {"photo_cpu_ms": photo_ms, "photos_with_face": with_face, "frame_cpu_ms": frame_ms,
            "frame_faces": frame_faces}


def run_detectors(config: BenchConfig) -> dict[str, object]:
    """Every detector at each size in DETECT_SIZES and its default, in one run, on the same inputs: the
    bench photos (as batch mode sends them: stills) and a generated 640x480 frame with
    eight faces 40-60 px wide. The original solution's Haar call is the first row."""
    import cv2

    from emotion_stream.images import read_image_file
    from emotion_stream.settings import DEFAULT_DETECT_SIZE, DETECTORS
    from ingest.samples import small_faces_frame
    from model import create_detector

    photos = [read_image_file(p) for p in config.images]
    frame, planted = small_faces_frame()
    cascade = cv2.CascadeClassifier(cv2.data.haarcascades + "haarcascade_frontalface_default.xml")

    def original(frames, still):  # type: ignore[no-untyped-def]
        grey = (cv2.cvtColor(f, cv2.COLOR_BGR2GRAY) for f in frames)
        return [[_Box(tuple(b)) for b in cascade.detectMultiScale(g, 1.3, 5)] for g in grey]

    rows = [{"detector": "original haar", "size": "full", **_time_detector(original, photos, frame)}]
    for name in DETECTORS:
        for size in sorted({*DETECT_SIZES, DEFAULT_DETECT_SIZE[name]}):
            detector = create_detector(name, size)
            row = _time_detector(lambda f, s, d=detector: d.detect_batch(f, [s] * len(f)), photos, frame)
            rows.append({"detector": name, "size": size, "default": size == DEFAULT_DETECT_SIZE[name], **row})
    for row in rows:
        row["frame_faces"] = _matched(row["frame_faces"], planted)  # type: ignore[arg-type]
    return {"photos": len(photos), "planted_faces": len(planted), "rows": rows}


@dataclass(frozen=True)
class _Box:
    box: tuple[int, int, int, int]


# ------------------------------------------------------------------------- (b)
def run_direct(config: BenchConfig, analyzer) -> dict[str, object]:  # type: ignore[no-untyped-def]
    """Per-stage CPU seconds (process time: includes OpenCV and TensorFlow threads)."""
    from emotion_stream.images import read_image_file

    batch = 32
    cpu = {"decode": 0.0, "detect": 0.0, "classify": 0.0}
    wall = {"decode": 0.0, "detect": 0.0, "classify": 0.0}
    analyzer.analyze_batch([read_image_file(config.images[0])], whole_image_fallback=True)  # warm-up
    faces = 0
    with UsageSampler({"bench": os.getpid()}) as usage:
        start = time.perf_counter()
        for i in range(0, len(config.images), batch):
            chunk = config.images[i : i + batch]
            t, c = time.perf_counter(), time.process_time()
            frames = [read_image_file(p) for p in chunk]
            wall["decode"] += time.perf_counter() - t
            cpu["decode"] += time.process_time() - c
            t, c = time.perf_counter(), time.process_time()
            detections = analyzer.detector.detect_batch(frames, [True] * len(frames))
            wall["detect"] += time.perf_counter() - t
            cpu["detect"] += time.process_time() - c
            t, c = time.perf_counter(), time.process_time()
            results = analyzer.classify(frames, detections, [True] * len(frames))
            wall["classify"] += time.perf_counter() - t
            cpu["classify"] += time.process_time() - c
            faces += sum(1 for r in results for face in r if not face.whole_image)
        total = time.perf_counter() - start
    n = len(config.images)
    return {
        "images": n,
        "faces": faces,
        "ms_per_image": 1000 * total / n,
        "images_per_s": n / total,
        "stage_ms_per_image": {k: 1000 * v / n for k, v in wall.items()},
        "stage_cpu_ms_per_image": {k: 1000 * v / n for k, v in cpu.items()},
        "processes": usage.summaries(),
    }


def run_classifiers(models: dict[str, object], batches: tuple[int, ...] = (1, 16, 64)) -> dict[str, object]:
    """Classifier alone, side by side: CPU ms per face at a few batch sizes, on face
    crops of the sample portrait (preparation included: resize, colour, scaling)."""
    from ingest.samples import sample_face

    face = sample_face()
    crops = [np.ascontiguousarray(np.roll(face, i, axis=1)[:300, 100:400]) for i in range(64)]
    rows = {}
    for name, model in models.items():
        model.warm_up()  # type: ignore[attr-defined]
        row = {}
        for size in batches:
            calls = max(3, 256 // size)
            c = time.process_time()
            for i in range(calls):
                model.predict_proba(crops[:size])  # type: ignore[attr-defined]
            row[f"batch {size}"] = 1000 * (time.process_time() - c) / (calls * size)
        rows[name] = {"model": model.id, "cpu_ms_per_face": row}  # type: ignore[attr-defined]
    return rows


# ------------------------------------------------------------------------- (c)
@contextlib.contextmanager
def _folder_of(images: list[Path]) -> Iterator[Path]:
    """The images in one folder (linked), as batch mode reads a folder."""
    folder = Path(tempfile.mkdtemp(prefix="bench-batch-"))
    try:
        for image in images:
            target = folder / image.name
            if not target.exists():
                try:
                    os.link(image, target)
                except OSError:
                    shutil.copy(image, target)
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def run_batch(config: BenchConfig, model) -> dict[str, object]:  # type: ignore[no-untyped-def]
    from batch import BatchJob

    settings = _settings(config)
    threads = share_cores(config.workers)  # as `emotion-stream batch` does

    async def main(url: str, folder: Path, out: Path) -> dict[str, object]:
        stop = asyncio.Event()
        workers = _start_workers(config, settings, model, url, stop, "bench")
        client = connect(url, "bench-batch")
        await _workers_ready(client, config.workers)
        busy0, processed0 = _stage_busy(), _processed_total()
        start = time.perf_counter()
        summary = await BatchJob(client, folder, out, settings).run()
        wall = time.perf_counter() - start
        busy1, processed1 = _stage_busy(), _processed_total()
        stop.set()
        await asyncio.gather(*workers)
        await client.aclose()
        frames = max(1.0, processed1 - processed0)
        return {
            "images": summary.rows,
            "images_per_s": summary.rows / wall,
            "seconds": wall,
            "stage_ms_per_image": {s: 1000 * (busy1[s] - busy0[s]) / frames for s in busy1},
        }

    with _folder_of(config.images) as folder, EmbeddedRedis() as redis:
        out = folder.parent / f"{folder.name}-submission.csv"
        with UsageSampler({"bench (workers + job)": os.getpid(), "redis-server": redis._process.pid}) as usage:  # noqa: SLF001
            result = asyncio.run(main(redis.url, folder, out))
        out.unlink(missing_ok=True)
    import cv2

    cv2.setNumThreads(threads)
    result["workers"] = config.workers
    result["processes"] = usage.summaries()
    return result


# ------------------------------------------------------------------------- (d)
@contextlib.contextmanager
def _engine(kind: str) -> Iterator[tuple[str, dict[str, int]]]:
    """(Redis URL, {name: pid} of its server processes) for a live run.
    ``embedded``: the default embedded server on a unix socket. ``single``: one Debian
    redis-server on loopback TCP. ``cluster``: 3 masters + 3 replicas of the same binary
    on loopback (``single`` and ``cluster`` differ only in being a cluster)."""
    if kind == "cluster":
        from emotion_stream.local_cluster import LocalCluster

        with LocalCluster(masters=3, replicas=1) as cluster:
            masters = {n.port for n in cluster.master_nodes()}
            yield cluster.url, {f"redis {'master' if n.port in masters else 'replica'} :{n.port}": n.process.pid
                                for n in cluster.nodes}
        return
    binary = shutil.which("redis-server") if kind == "single" else None
    if kind == "single" and binary is None:
        raise RuntimeError("no redis-server on PATH (scripts/install-system-deps.sh)")
    with EmbeddedRedis(port=free_port() if kind == "single" else None, binary=binary) as redis:
        yield redis.url, {"redis-server": redis._process.pid}  # noqa: SLF001


def run_live(config: BenchConfig, model, idle_cameras: int = 0, engine: str = "embedded") -> dict[str, object]:  # type: ignore[no-untyped-def]
    """K sample cameras through ingest -> Redis -> workers; ``idle_cameras`` more ids are
    announced first that never send a frame (what many registered cameras cost).
    ``engine``: which Redis (``_engine``)."""
    from emotion_stream.events import live_events
    from emotion_stream.schema import FaceEvent
    from ingest.camera import IngestOptions, run_camera
    from ingest.publisher import FramePublisher
    from ingest.sources import SourceSpec

    settings = _settings(config)
    latencies: list[float] = []
    frames_seen: set[tuple[str, int]] = set()
    backlog: list[int] = []

    async def main(url: str) -> dict[str, object]:
        stop = asyncio.Event()
        client = connect(url, "bench-live")
        for first in range(0, idle_cameras, 1000):
            await client.sadd(keys.CAMERAS, *(f"idle-{i:05d}" for i in range(first, min(idle_cameras, first + 1000))))
        tasks = _start_workers(config, settings, model, url, stop, "live")
        await _workers_ready(client, config.workers)

        async def subscriber() -> None:
            async for event in live_events(client, None, stop):
                if isinstance(event, FaceEvent) and event.face_index == 0:
                    latencies.append(time.time() - event.captured_at)
                    frames_seen.add((event.camera, event.seq))

        async def watch_backlog() -> None:
            while not stop.is_set():
                total = 0
                for cam in range(config.cameras):
                    with contextlib.suppress(Exception):
                        for info in await client.xinfo_groups(keys.frames(f"cam{cam}")):
                            total += int(info["pending"])
                        total += await _lag(client, keys.frames(f"cam{cam}"))
                backlog.append(total)
                await asyncio.sleep(1.0)

        tasks.append(asyncio.create_task(subscriber()))
        tasks.append(asyncio.create_task(watch_backlog()))
        ingested0 = _counter_sum(metrics.FRAMES_INGESTED)
        stale0 = _counter_sum(metrics.FRAMES_SKIPPED, reason=SkipReason.STALE)
        trimmed0 = _counter_sum(metrics.FRAMES_SKIPPED, reason=SkipReason.TRIMMED)
        busy0, processed0 = _stage_busy(), _processed_total()
        cameras = [
            asyncio.create_task(run_camera(SourceSpec.parse("sample:1"), FramePublisher(client, f"cam{c}", settings),
                                           IngestOptions(fps=config.fps), stop))
            for c in range(config.cameras)
        ]
        start = time.perf_counter()
        await asyncio.sleep(config.live_seconds)
        stop.set()
        await asyncio.gather(*cameras, *tasks, return_exceptions=True)
        wall = time.perf_counter() - start
        processed = _processed_total() - processed0
        busy1 = _stage_busy()
        await client.aclose()
        return {
            "ingested_fps": (_counter_sum(metrics.FRAMES_INGESTED) - ingested0) / wall,
            "processed_fps": processed / wall,
            "stale_skipped": _counter_sum(metrics.FRAMES_SKIPPED, reason=SkipReason.STALE) - stale0,
            "trimmed": _counter_sum(metrics.FRAMES_SKIPPED, reason=SkipReason.TRIMMED) - trimmed0,
            "stage_ms_per_frame": {s: 1000 * (busy1[s] - busy0[s]) / max(1.0, processed) for s in busy1},
        }

    with _engine(engine) as (url, servers):
        with UsageSampler({"bench (ingest + workers)": os.getpid(), **servers}) as usage:
            result = asyncio.run(main(url))
    # Skip the first 5 s of latencies: workers warming up their compiled functions.
    steady = latencies[int(len(latencies) * 5 / max(1.0, config.live_seconds)):]
    tenth = max(1, len(backlog) // 10)
    result.update(
        engine=engine,
        cameras=config.cameras,
        idle_cameras=idle_cameras,
        offered_fps=config.cameras * config.fps,
        seconds=config.live_seconds,
        workers=config.workers,
        capture_to_event_ms={k: 1000 * v for k, v in percentiles(steady).items()},
        frames_with_events=len(frames_seen),
        backlog_first_tenth=sum(backlog[:tenth]) / tenth if backlog else None,
        backlog_last_tenth=sum(backlog[-tenth:]) / tenth if backlog else None,
        processes=usage.summaries(),
    )
    return result


def _start_workers(config: BenchConfig, settings: Settings, model, url: str, stop: asyncio.Event, prefix: str):  # type: ignore[no-untyped-def]
    """In-process workers sharing one model, each with its own detector (as batch mode)."""
    from worker import start_in_process

    return start_in_process(settings, url, stop, config.workers, model, prefix)


async def _workers_ready(client, n: int, timeout: float = 120.0) -> None:  # type: ignore[no-untyped-def]
    """Wait until n workers have a heartbeat: loaded, warmed up and connected."""
    deadline = time.monotonic() + timeout
    while len(await client.hgetall(keys.WORKERS)) < n:
        if time.monotonic() > deadline:
            raise RuntimeError(f"only {len(await client.hgetall(keys.WORKERS))} of {n} workers came up")
        await asyncio.sleep(0.1)


async def _lag(client, stream: str) -> int:  # type: ignore[no-untyped-def]
    for info in await client.xinfo_groups(stream):
        if info.get("lag") is not None:
            return int(info["lag"])
        last = info["last-delivered-id"]
        last = last.decode() if isinstance(last, bytes) else last
        return len(await client.xrange(stream, min=f"({last}", max="+", count=10_000))
    return 0
