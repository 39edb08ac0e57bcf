"""(b) direct: our FaceAnalyzer on the files, batched, in one process, per stage."""

from __future__ import annotations

import os
import time
from typing import TYPE_CHECKING

from .config import BenchConfig
from .measure import Figures, UsageSampler

if TYPE_CHECKING:
    from model import FaceAnalyzer


def run_direct(config: BenchConfig, analyzer: FaceAnalyzer) -> Figures:
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
