"""TensorFlow import and device/thread set-up, done once per process.

Importing TensorFlow costs seconds, so nothing imports it at module level; commands that
need a model call :func:`tensorflow` first.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager
from functools import cache
from types import ModuleType

log = logging.getLogger(__name__)


@cache
def tensorflow(threads: int | None = None) -> ModuleType:
    """Import TensorFlow quietly, limit its CPU threads, and report the devices it sees.

    ``threads`` bounds intra-op parallelism; with N worker processes on N cores, one
    thread each avoids oversubscription. A GPU is used automatically when visible.
    """
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    with quiet_stderr():
        import tensorflow as tf

    if threads:
        try:
            tf.config.threading.set_intra_op_parallelism_threads(threads)
            tf.config.threading.set_inter_op_parallelism_threads(max(1, min(2, threads)))
        except RuntimeError:  # already initialised by an earlier caller: keep its choice
            pass
    gpus = tf.config.list_physical_devices("GPU")
    for gpu in gpus:
        try:
            tf.config.experimental.set_memory_growth(gpu, True)
        except RuntimeError:
            pass
    log.debug("TensorFlow %s, GPUs: %s", tf.__version__, [g.name for g in gpus] or "none")
    return tf


@contextmanager
def quiet_stderr() -> Iterator[None]:
    """Hide the C++ banners TensorFlow and TFLite print while loading (oneDNN notice, XNNPACK):
    they are written before TF_CPP_MIN_LOG_LEVEL takes effect. Python errors raised by
    the import still surface, after stderr is restored."""
    if os.environ.get("TF_CPP_MIN_LOG_LEVEL", "2") == "0":
        yield
        return
    saved = os.dup(2)
    try:
        with open(os.devnull, "wb") as devnull:
            os.dup2(devnull.fileno(), 2)
            yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def share_cores(workers: int) -> int:
    """With at least one in-process worker per core, OpenCV's own threads only add
    contention: use one. Returns the previous thread count (to restore it)."""
    import cv2

    previous = cv2.getNumThreads()
    if workers >= (os.cpu_count() or 1):
        cv2.setNumThreads(1)
    return previous


def has_gpu() -> bool:
    return bool(tensorflow().config.list_physical_devices("GPU"))
