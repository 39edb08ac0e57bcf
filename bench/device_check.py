"""``emotion-stream bench --device-check``: is the accelerator really used, and what does it give?

Runs the classifier, the direct path and batch mode on the backend's device, and the
classifier again in a child process with the GPU hidden (``CUDA_VISIBLE_DEVICES=``) for
the CPU figure; samples GPU utilisation with ``nvidia-smi`` meanwhile. Exit status:
0 the GPU did the work; 3 no GPU visible to the Keras backend (the run was CPU-only);
4 a GPU was visible but stayed idle (utilisation never rose above 0 %).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

import numpy as np

from emotion_stream.settings import Settings

from .config import BenchConfig
from .measure import Figures

if TYPE_CHECKING:
    from model import EmotionModel

NO_GPU, GPU_IDLE = 3, 4
CLASSIFY_BATCH = 256


def classifier_faces_per_s(model: EmotionModel, seconds: float = 5.0) -> float:
    """Faces per second through the model at a large batch (prepared input, no resize)."""
    m = model.metadata
    batch = np.random.default_rng(0).uniform(-1, 1, (CLASSIFY_BATCH, m.input_height, m.input_width, m.channels))
    batch = batch.astype(np.float32)
    model.predict_proba(batch)  # compile
    done, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        model.predict_proba(batch)
        done += len(batch)
    return done / (time.perf_counter() - start)


@contextmanager
def gpu_utilisation() -> Iterator[list[float]]:
    """Samples of GPU utilisation (%) every 0.2 s while the block runs (empty without nvidia-smi)."""
    samples: list[float] = []
    smi = shutil.which("nvidia-smi")
    stop = threading.Event()

    def sample() -> None:
        while smi and not stop.is_set():
            out = subprocess.run([smi, "--query-gpu=utilization.gpu", "--format=csv,noheader,nounits"],
                                 capture_output=True, text=True, timeout=5)
            if out.returncode == 0 and out.stdout.strip():
                samples.append(float(out.stdout.split()[0]))
            stop.wait(0.2)

    thread = threading.Thread(target=sample, daemon=True)
    thread.start()
    try:
        yield samples
    finally:
        stop.set()
        thread.join(10)


def _cpu_reference() -> float | None:
    """The classifier's faces/s with the GPU hidden, in a fresh process."""
    code = ("from model import EmotionModel; from bench.device_check import classifier_faces_per_s; "
            "print(classifier_faces_per_s(EmotionModel(runtime='keras')))")
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": ""}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=600)
    try:
        return float(out.stdout.strip().splitlines()[-1])
    except (ValueError, IndexError):
        return None


def run(config: BenchConfig, settings: Settings) -> tuple[int, Figures]:
    from model import EmotionModel, FaceAnalyzer, create_detector

    from .batch_mode import run_batch
    from .direct import run_direct

    if settings.model_runtime == "auto":
        # An accelerator runs the Keras file (or ONNX Runtime's CUDA provider, when asked
        # for with --model-runtime onnx); LiteRT, the CPU default, never would.
        settings = settings.model_copy(update={"model_runtime": "keras"})
    model = EmotionModel.from_settings(settings)
    report: Figures = {"backend": model.backend, "device": model.device}
    if not model.device.startswith("gpu"):
        report["verdict"] = f"no GPU visible to {model.backend}: nothing ran on an accelerator"
        return NO_GPU, report
    with gpu_utilisation() as samples:
        report["classifier_faces_per_s"] = classifier_faces_per_s(model)
        report["direct"] = run_direct(config, FaceAnalyzer(model, create_detector(config.detector, config.detect_max_side)))
        report["batch"] = run_batch(config, model)
    report["classifier_faces_per_s_cpu"] = _cpu_reference()
    report["gpu_utilisation_percent"] = {"max": max(samples, default=None),
                                         "mean": sum(samples) / len(samples) if samples else None,
                                         "samples": len(samples)}
    if samples and max(samples) <= 0:
        report["verdict"] = "a GPU is visible but stayed idle"
        return GPU_IDLE, report
    report["verdict"] = "the GPU did the work"
    return 0, report


def format_text(report: Figures) -> str:
    return json.dumps(report, indent=2, default=str)
