"""What running the commands costs a machine: start-up time (``predict`` of one photo
against a bare ``import numpy, cv2``) and a running worker's memory, with whether any
deep-learning framework is mapped into it. Each is measured on fresh processes, for this
checkout and, with ``baseline``, for another checkout side by side in the same run
(the same interpreter runs both: ``python -m cli`` in a checkout's folder imports that
checkout's packages first)."""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil

from emotion_stream.embedded_redis import EmbeddedRedis

from .measure import Figures

ROOT = Path(__file__).resolve().parents[1]
FRAMEWORKS = ("tensorflow", "libjax", "jaxlib", "torch")  # library paths that must not be mapped


CLI = [sys.executable, "-m", "cli"]  # run with the checkout as the working directory


def _wall(command: list[str], cwd: Path, repeats: int) -> float:
    """Median wall seconds of a command run ``repeats`` times (after one unmeasured run)."""
    times = []
    for i in range(repeats + 1):
        start = time.perf_counter()
        subprocess.run(command, cwd=cwd, capture_output=True, check=True, timeout=300)
        if i:
            times.append(time.perf_counter() - start)
    return statistics.median(times)


def run_startup(photo: Path, baseline: Path | None = None, repeats: int = 5) -> Figures:
    """Wall seconds of ``predict PHOTO`` and ``--help``, and of a bare Python that imports
    numpy and OpenCV, each the median of ``repeats`` fresh processes."""
    bare = _wall([sys.executable, "-c", "import numpy, cv2"], ROOT, repeats)
    out: Figures = {"bare_import_numpy_cv2_s": bare, "repeats": repeats, "photo": photo.name}
    for name, tree in (("baseline", baseline), ("current", ROOT)):
        if tree is None:
            continue
        predict = _wall([*CLI, "predict", str(photo.resolve())], tree, repeats)
        help_s = _wall([*CLI, "--help"], tree, repeats)
        out[name] = {"tree": str(tree), "predict_s": predict, "help_s": help_s, "predict_over_bare": predict / bare}
    return out


def run_worker_memory(baseline: Path | None = None, seconds: float = 20.0) -> Figures:
    """A real ``worker`` process (and a 15 fps sample camera) on an embedded Redis: its
    resident memory once serving, and which frameworks' libraries it maps."""
    out: Figures = {"seconds": seconds}
    for name, tree in (("baseline", baseline), ("current", ROOT)):
        if tree is None:
            continue
        with tempfile.TemporaryDirectory(prefix="bench-worker-") as tmp, EmbeddedRedis(data_dir=Path(tmp)) as redis:
            env = {**os.environ, "REDIS_URL": redis.url, "EMOTION_STREAM_LOG_LEVEL": "WARNING"}
            worker = subprocess.Popen([*CLI, "worker"], cwd=tree, env=env, stdout=subprocess.DEVNULL,
                                      stderr=subprocess.DEVNULL)
            camera = subprocess.Popen([*CLI, "ingest", "sample:2", "--camera", "bench-mem", "--fps", "15",
                                       "--duration", str(seconds)], cwd=tree, env=env,
                                      stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            try:
                samples = []
                process = psutil.Process(worker.pid)
                deadline = time.monotonic() + seconds
                while time.monotonic() < deadline and worker.poll() is None:
                    samples.append(process.memory_info().rss / 2**20)
                    time.sleep(0.5)
                maps = Path(f"/proc/{worker.pid}/maps").read_text() if worker.poll() is None else ""
            finally:
                for process_ in (camera, worker):
                    process_.terminate()
                for process_ in (camera, worker):
                    process_.wait(30)
        if not samples:
            raise RuntimeError(f"the worker of {tree} exited at once")
        mapped = sorted({framework for framework in FRAMEWORKS if framework in maps})
        tail = samples[len(samples) // 2:]  # serving, past start-up
        out[name] = {"tree": str(tree), "peak_rss_mb": max(samples), "serving_rss_mb": statistics.median(tail),
                     "frameworks_mapped": mapped}
    return out
