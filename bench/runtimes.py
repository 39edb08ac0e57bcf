"""The shipped classifier in each runtime, side by side: LiteRT, ONNX Runtime and Keras
(on the Keras backend). Each runs in a fresh process: start-up (imports, loading, the
first batch), CPU ms a face at batch 1, 16 and 64, and the process's peak memory. This is
the measurement that chose the serving runtime (README, "Model runtime")."""

from __future__ import annotations

import json
import resource
import subprocess
import sys
import time

from .measure import Figures

RUNTIMES = ("litert", "onnx", "keras")
BATCHES = (1, 16, 64)


def run_runtimes(model: str | None = None, threads: int = 1) -> Figures:
    """``model``: a Keras file with its exports beside it (same stem); None: the shipped default."""
    rows: Figures = {}
    for runtime in RUNTIMES:
        command = [sys.executable, "-m", "bench.runtimes", runtime, str(threads), model or ""]
        result = subprocess.run(command, capture_output=True, text=True, timeout=600)
        if result.returncode != 0:
            rows[runtime] = {"error": (result.stderr.strip().splitlines() or ["failed"])[-1]}
            continue
        rows[runtime] = json.loads(result.stdout.strip().splitlines()[-1])
    return {"threads": threads, "rows": rows}


def _probe(runtime: str, threads: int, model: str) -> Figures:
    started = time.perf_counter()
    import numpy as np

    from model import EmotionModel

    path = None
    if model:
        suffix = {"litert": ".tflite", "onnx": ".onnx", "keras": ".keras"}[runtime]
        path = str(model).rsplit(".", 1)[0] + suffix
    classifier = EmotionModel(path, runtime=runtime, threads=threads)
    m = classifier.metadata
    shape = (m.input_height, m.input_width, m.channels)
    classifier.predict_proba(np.zeros((1, *shape), np.float32))
    startup = time.perf_counter() - started
    rng = np.random.default_rng(0)
    per_face = {}
    for size in BATCHES:
        batch = rng.uniform(-1, 1, (size, *shape)).astype(np.float32)
        classifier.predict_proba(batch)
        calls = max(5, 512 // size)
        cpu = time.process_time()
        for _ in range(calls):
            classifier.predict_proba(batch)
        per_face[f"batch {size}"] = 1000 * (time.process_time() - cpu) / (calls * size)
    return {"model": classifier.id, "backend": classifier.backend, "flip_average": m.flip_average,
            "startup_s": startup, "cpu_ms_per_face": per_face,
            "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


if __name__ == "__main__":
    print(json.dumps(_probe(sys.argv[1], int(sys.argv[2]), sys.argv[3] if len(sys.argv) > 3 else "")))
