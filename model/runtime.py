"""The Keras runtime in one place: the Keras backend, its device and threads, and
compiled inference, for Keras files (training, export, and serving on an accelerator).

``KERAS_BACKEND`` picks TensorFlow (the default), JAX or PyTorch; every Keras network runs
through :func:`compile_inference`, so nothing else in the project is specific to one of
them. Importing any of them costs seconds, so nothing imports them at module level, and
exported files (``model.inference``) serve without them.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from functools import cache
from pathlib import Path
from types import ModuleType
from typing import Any, cast

import numpy as np

log = logging.getLogger(__name__)


@cache
def tensorflow(threads: int | None = None) -> ModuleType:
    """Import TensorFlow quietly, limit its CPU threads, and report the devices it sees.

    ``threads`` bounds intra-op parallelism; with N worker processes on N cores, one
    thread each avoids oversubscription. A GPU is used automatically when visible.
    """
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    srtp_before_tensorflow()
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
    module: ModuleType = tf
    return module


def srtp_before_tensorflow() -> None:
    """Load libsrtp (aiortc's SRTP, the WebRTC gateway) before TensorFlow in any process
    that may hold both. TensorFlow loads its framework library with global symbols, its
    BoringSSL among them; libsrtp loaded afterwards binds ``HMAC_Init_ex`` to that copy and
    segfaults in its start-up self-test. Loaded first, it binds to its own OpenSSL."""
    try:
        import pylibsrtp  # noqa: F401
    except ImportError:  # no WebRTC in this install: nothing to protect
        pass


_STDERR_LOCK = threading.RLock()


@contextmanager
def quiet_stderr() -> Iterator[None]:
    """Hide the C++ banners TensorFlow and TFLite print while loading (oneDNN notice, XNNPACK):
    they are written before TF_CPP_MIN_LOG_LEVEL takes effect. Python errors raised by
    the import still surface, after stderr is restored. File descriptor 2 is process-wide:
    two threads interleaving their save/restore would leave it pointing at /dev/null (all
    later logs lost), hence the lock; load models at start-up, not while serving, since
    what other threads log meanwhile is hidden too."""
    if os.environ.get("TF_CPP_MIN_LOG_LEVEL", "2") == "0":
        yield
        return
    with _STDERR_LOCK:
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


@contextmanager
def cores_shared(workers: int) -> Iterator[None]:
    """``share_cores`` for the length of a block."""
    import cv2

    previous = share_cores(workers)
    try:
        yield
    finally:
        cv2.setNumThreads(previous)


BACKENDS = ("tensorflow", "jax", "torch")


@cache
def keras_backend(threads: int | None = None) -> str:
    """Set up the backend named by ``KERAS_BACKEND`` (threads, GPU memory growth) before
    Keras is imported, and return its name."""
    name = os.environ.setdefault("KERAS_BACKEND", "tensorflow")
    if name not in BACKENDS:
        raise RuntimeError(f"KERAS_BACKEND={name!r}: use one of {', '.join(BACKENDS)}")
    if name == "tensorflow":
        tensorflow(threads)
    elif name == "jax":
        if threads:  # read by XLA when it starts, so set before the first import
            os.environ.setdefault("XLA_FLAGS", "--xla_cpu_multi_thread_eigen=false "
                                  f"intra_op_parallelism_threads={threads}")
    else:
        import torch

        if threads:
            torch.set_num_threads(threads)
    with quiet_stderr():
        import keras

    backend = str(keras.backend.backend())
    log.debug("Keras %s on %s (%s)", keras.__version__, backend, device())
    return backend


def device() -> str:
    """Where the backend runs models: ``cpu`` or ``gpu:<name>``."""
    name = os.environ.get("KERAS_BACKEND", "tensorflow")
    if name == "jax":
        import jax

        first = jax.devices()[0]
        return "cpu" if first.platform == "cpu" else f"gpu:{first.device_kind}"
    if name == "torch":
        import torch

        return f"gpu:{torch.cuda.get_device_name(0)}" if torch.cuda.is_available() else "cpu"
    gpus = tensorflow().config.list_physical_devices("GPU")
    return f"gpu:{gpus[0].name}" if gpus else "cpu"


def compile_inference(model: Any, softmax: bool) -> Callable[[np.ndarray], np.ndarray]:
    """``model`` (a Keras model) as a compiled function float32 batch -> probabilities,
    with the backend's own compiler: one ``tf.function`` trace for every batch size, a
    ``jax.jit`` per batch shape (callers pad to a few sizes), eager PyTorch without
    autograd (``torch.compile`` when on a GPU, where it pays)."""
    backend = keras_backend()
    if backend == "tensorflow":
        tf = tensorflow()
        spec = tf.TensorSpec([None, *model.input_shape[1:]], tf.float32)

        def forward(x: Any) -> Any:
            y = model(x, training=False)
            return tf.nn.softmax(y) if softmax else y

        infer_tf = tf.function(forward, input_signature=[spec])
        return lambda x: np.asarray(infer_tf(x))
    if backend == "jax":
        import jax

        trainable = [v.value for v in model.trainable_variables]
        fixed = [v.value for v in model.non_trainable_variables]

        @jax.jit
        def infer_jax(trainable: Any, fixed: Any, x: Any) -> Any:
            y, _ = model.stateless_call(trainable, fixed, x, training=False)
            return jax.nn.softmax(y) if softmax else y

        return lambda x: np.asarray(infer_jax(trainable, fixed, x))
    import torch

    call = model
    if torch.cuda.is_available():
        call = torch.compile(model)

    def infer_torch(x: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            y = call(x, training=False)
            if softmax:
                y = torch.softmax(y, dim=-1)
            return np.asarray(y.detach().cpu().numpy())

    return infer_torch


def load_keras(path: Path) -> Any:
    """A Keras model file (Keras is untyped: the model is Any); Keras' own errors pass through."""
    keras_backend()
    import keras

    return keras.models.load_model(path, compile=False)


def tflite_interpreter_class() -> type:
    """The TFLite interpreter (BlazeFace): LiteRT's when installed, else TensorFlow's."""
    try:
        from ai_edge_litert.interpreter import Interpreter
    except ImportError:
        import tensorflow as tf

        return cast(type, tf.lite.Interpreter)
    return cast(type, Interpreter)


def has_gpu() -> bool:
    """Whether TensorFlow sees a GPU (for TensorFlow-only parts such as MTCNN)."""
    return bool(tensorflow().config.list_physical_devices("GPU"))
