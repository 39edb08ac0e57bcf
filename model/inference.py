"""Where a classifier network runs: LiteRT or ONNX Runtime for exported files, Keras for
``.keras``/``.h5`` files.

Serving on a CPU needs neither TensorFlow nor Keras: an exported ``.tflite`` runs in
LiteRT (XNNPACK), an ``.onnx`` in ONNX Runtime (its CUDA provider when onnxruntime-gpu
sees a GPU). A Keras file goes through ``model.runtime`` (TensorFlow, JAX or PyTorch,
on a GPU when the backend sees one), which is where training and export live too.
Each network takes a float32 batch (n, H, W, C), already scaled, and returns (n, K)
probabilities; the network decides nothing else.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from .errors import ModelError

log = logging.getLogger(__name__)

# The runtime of each kind of file; "auto" takes the file's own.
SUFFIX_RUNTIME = {".tflite": "litert", ".onnx": "onnx", ".keras": "keras", ".h5": "keras", ".hdf5": "keras"}


class Network(Protocol):
    backend: str  # litert | onnxruntime | the Keras backend's name
    device: str  # cpu | gpu:<name>
    input_shape: tuple[int, int, int]  # H, W, C
    outputs: int

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        """float32 (n, H, W, C), scaled -> (n, outputs) probabilities."""
        ...


def runtime_of(path: Path, runtime: str = "auto") -> str:
    """The runtime that runs ``path``: its suffix's, which ``runtime`` may only confirm."""
    own = SUFFIX_RUNTIME.get(path.suffix.lower())
    if own is None:
        raise ModelError(f"{path}: unknown model file type {path.suffix!r}; use "
                         + ", ".join(SUFFIX_RUNTIME))
    if runtime not in ("auto", own):
        raise ModelError(f"{path}: a {path.suffix} file runs in {own}, not {runtime}")
    return own


def load_network(path: Path, runtime: str = "auto", threads: int | None = None) -> Network:
    """The network in ``path``; ModelError naming the file when it is missing, empty,
    truncated or not a model."""
    kind = runtime_of(path, runtime)
    if not path.is_file():
        raise ModelError(f"{path}: weights file not found")
    if path.stat().st_size == 0:
        raise ModelError(f"{path}: weights file is empty")
    try:
        if kind == "litert":
            return LiteRTNetwork(path, threads)
        if kind == "onnx":
            return OnnxNetwork(path, threads)
        return KerasNetwork(path, threads)
    except ModelError:
        raise
    except Exception as exc:  # every runtime raises its own zoo of types for bad files
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ModelError(f"{path}: cannot load weights: {reason[:200]}") from None


def _shape(dims: Any, path: Path) -> tuple[int, int, int]:
    """(H, W, C) of an image classifier's (N, H, W, C) input."""
    dims = list(dims)
    if len(dims) != 4 or not all(isinstance(d, (int, np.integer)) and d > 0 for d in dims[1:]) or dims[3] not in (1, 3):
        raise ModelError(f"{path}: expected an image classifier input (N, H, W, 1|3), got {dims}")
    return int(dims[1]), int(dims[2]), int(dims[3])


class LiteRTNetwork:
    """A ``.tflite`` file in LiteRT with XNNPACK. An interpreter is not re-entrant, so each
    thread gets its own (the file is read once); each resizes its input only when the
    batch size changes, which the caller's batch buckets keep rare."""

    backend = "litert"
    device = "cpu"

    def __init__(self, path: Path, threads: int | None) -> None:
        from ai_edge_litert.interpreter import Interpreter

        self._content = path.read_bytes()
        self._threads = threads or os.cpu_count() or 1
        self._interpreter_class: Callable[..., Any] = Interpreter
        self._local = threading.local()
        first = self._interpreter()
        detail = first.interpreter.get_input_details()[0]
        self.input_shape = _shape(detail["shape_signature"], path)
        self.outputs = int(first.interpreter.get_output_details()[0]["shape"][-1])

    def _interpreter(self) -> _Interpreter:
        current: _Interpreter | None = getattr(self._local, "interpreter", None)
        if current is None:
            from .runtime import quiet_stderr

            with quiet_stderr():  # the XNNPACK delegate announces itself on stderr
                interpreter = self._interpreter_class(model_content=self._content, num_threads=self._threads)
                interpreter.allocate_tensors()
            current = _Interpreter(interpreter, interpreter.get_input_details()[0]["index"],
                                   interpreter.get_output_details()[0]["index"])
            self._local.interpreter = current
        return current

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        state = self._interpreter()
        if state.batch != len(batch):
            state.interpreter.resize_tensor_input(state.input, [len(batch), *self.input_shape])
            state.interpreter.allocate_tensors()
            state.batch = len(batch)
        state.interpreter.set_tensor(state.input, np.ascontiguousarray(batch, np.float32))
        state.interpreter.invoke()
        return np.array(state.interpreter.get_tensor(state.output))  # a copy: the buffer is reused


@dataclass
class _Interpreter:
    interpreter: Any
    input: int
    output: int
    batch: int = 1


class OnnxNetwork:
    """An ``.onnx`` file in ONNX Runtime: its CUDA provider when one is available
    (onnxruntime-gpu), else the CPU. One session serves every thread."""

    backend = "onnxruntime"

    def __init__(self, path: Path, threads: int | None) -> None:
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = threads or 0  # 0: ONNX Runtime's own choice (the cores)
        options.inter_op_num_threads = 1
        options.log_severity_level = 3
        # Idle pool threads would spin for work, burning the cores the other workers'
        # detectors and decoders need (batch mode, 2 workers: 177 and 187 against 231 and 243 images/s).
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        providers = [p for p in ("CUDAExecutionProvider", "CPUExecutionProvider") if p in ort.get_available_providers()]
        self._session = ort.InferenceSession(str(path), options, providers=providers)
        used = self._session.get_providers()[0]
        self.device = "gpu:cuda" if used == "CUDAExecutionProvider" else "cpu"
        first = self._session.get_inputs()[0]
        self._input = first.name
        self.input_shape = _shape([1, *first.shape[1:]], path)
        self.outputs = int(self._session.get_outputs()[0].shape[-1])

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        return np.asarray(self._session.run(None, {self._input: np.ascontiguousarray(batch, np.float32)})[0])


class KerasNetwork:
    """A Keras file on the Keras backend (``model.runtime``): TensorFlow, JAX or PyTorch,
    on a GPU when the backend sees one."""

    def __init__(self, path: Path, threads: int | None) -> None:
        import importlib.util

        if importlib.util.find_spec("keras") is None:
            raise ModelError(f"{path}: a Keras file needs Keras and TensorFlow: pip install 'emotion-stream[train]', "
                             "or serve an exported file (emotion-stream export)")
        from .runtime import compile_inference, device, keras_backend, load_keras

        self.backend = keras_backend(threads)
        model = load_keras(path)
        shape, out = tuple(model.input_shape), model.output_shape
        if len(out) != 2:
            raise ModelError(f"{path}: expected an image classifier (N,H,W,1|3) -> (N,K), got {shape} -> {out}")
        self.input_shape = _shape(shape, path)
        self.outputs = int(out[1])
        activation = getattr(model.layers[-1], "activation", None)
        self._infer = compile_inference(model, softmax=getattr(activation, "__name__", "") != "softmax")
        self.device = device()

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        return self._infer(batch)
