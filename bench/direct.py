"""(b) direct: our FaceAnalyzer on the files, batched, in one process: as ``predict`` and
``evaluate`` run it (``analyze_files``, batches on one thread a core), and once more on
one thread, stage by stage, for each stage's CPU."""

from __future__ import annotations

import os
import time
from typing import TYPE_CHECKING

from .config import BenchConfig
from .measure import Figures, UsageSampler

if TYPE_CHECKING:
    from model import FaceAnalyzer


def run_direct(config: BenchConfig, analyzer: FaceAnalyzer) -> Figures:
    """Images a second through ``analyze_files``; per-stage CPU seconds of the one-thread
    pass (process time: includes the libraries' own threads)."""
    from emotion_stream.images import read_image_file
    from model.stills import BATCH, analyze_files

    batch = BATCH
    cpu = {"decode": 0.0, "detect": 0.0, "classify": 0.0}
    wall = {"decode": 0.0, "detect": 0.0, "classify": 0.0}
    for _ in analyze_files(analyzer, config.images[: 4 * batch]):  # warm-up: every thread's detector and model
        pass
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
        one_thread = time.perf_counter() - start
        start, cpu_start = time.perf_counter(), time.process_time()
        for _ in analyze_files(analyzer, config.images, batch_size=batch):
            pass
        total, threads_cpu = time.perf_counter() - start, time.process_time() - cpu_start
    n = len(config.images)
    return {
        "images": n,
        "faces": faces,
        "threads": os.cpu_count() or 1,
        "ms_per_image": 1000 * total / n,
        "images_per_s": n / total,
        "one_thread_images_per_s": n / one_thread,
        "cpu_ms_per_image": 1000 * threads_cpu / n,  # the threaded pass, every stage and thread
        "stage_ms_per_image": {k: 1000 * v / n for k, v in wall.items()},
        "stage_cpu_ms_per_image": {k: 1000 * v / n for k, v in cpu.items()},
        "processes": usage.summaries(),
    }
