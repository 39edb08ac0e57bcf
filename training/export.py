"""``export``: a Keras classifier as a LiteRT (``.tflite``) or ONNX (``.onnx``) file that
serves without TensorFlow, with its metadata, checked against the Keras model.

The exported network always ends in a softmax (a logit model gets one appended), so
every runtime reads probabilities. The metadata (labels, input, preprocessing,
calibration, flip averaging) travels in the sidecar ``<out>.json``; when the output
shares its stem and folder with the source (``default.keras`` -> ``default.tflite``) the
two files share one sidecar, already right. Quantisation: ``float16`` halves a
``.tflite`` file (computed in float32 on a CPU); ``int8`` quantises weights and
activations, calibrated on ``calibration`` images (face crops as the model sees them),
and is worth it only where accuracy holds (see README, "Model runtime").
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from model.errors import ModelError
from model.evaluation import list_labelled
from model.metadata import ModelMetadata, sidecar_path
from model.preprocessing import resize_face, scale_pixels

from .networks import KerasModel
from .options import EXPORT_FORMATS, QUANTIZE

log = logging.getLogger(__name__)

SUFFIX = {"tflite": ".tflite", "onnx": ".onnx"}
FLOAT_TOLERANCE = 1e-3  # largest probability difference a float32 export may show
CALIBRATION_IMAGES = 512


@dataclass(frozen=True)
class ExportReport:
    out: Path
    metadata: Path
    format: str
    quantize: str
    bytes: int
    max_difference: float  # largest probability difference from Keras on the check batch
    same_labels: float  # share of the check batch with the same top label


def export(source: Path, out: Path, fmt: str = "tflite", quantize: str = "none",
           calibration: Path | None = None) -> ExportReport:
    """Write ``out`` (and its metadata) from the Keras file ``source``; ValueError with
    one line on anything unusable."""
    from model.emotion_model import read_metadata
    from model.runtime import load_keras

    if fmt not in EXPORT_FORMATS:
        raise ValueError(f"unknown format {fmt!r}; choose one of {', '.join(EXPORT_FORMATS)}")
    if quantize not in QUANTIZE:
        raise ValueError(f"unknown quantisation {quantize!r}; choose one of {', '.join(QUANTIZE)}")
    if out.suffix != SUFFIX[fmt]:
        raise ValueError(f"{out}: a {fmt} file ends in {SUFFIX[fmt]}")
    if fmt == "onnx" and quantize == "float16":
        raise ValueError("float16 ONNX is not offered: CPU runtimes compute it slower than float32")
    if quantize == "int8" and calibration is None:
        raise ValueError("int8 needs --calibration DIR: face crops (e.g. prepare's output) to set its ranges")
    if source.suffix not in (".keras", ".h5"):
        raise ValueError(f"{source}: not a Keras model file (.keras or .h5)")
    if not source.is_file():
        raise ValueError(f"{source}: " + ("a folder, not a model file" if source.is_dir() else "no such file"))
    try:
        meta = read_metadata(source)
    except ModelError as exc:
        raise ValueError(str(exc)) from None
    if meta is None:
        raise ValueError(f"{source}: no metadata beside it ({sidecar_path(source).name}): the export would not "
                         "know its labels, input and preprocessing")
    try:
        model = _with_softmax(load_keras(source))
    except Exception as exc:  # Keras raises a zoo of types for bad files
        raise ValueError(f"{source}: cannot load: {str(exc).splitlines()[0][:200]}") from None
    shape = (meta.input_height, meta.input_width, meta.channels)
    if tuple(model.input_shape[1:]) != shape:
        raise ValueError(f"{source}: the model's input {model.input_shape[1:]} disagrees with its metadata {shape}")
    samples = _calibration_batch(calibration, meta) if calibration else _probe_batch(meta)
    out.parent.mkdir(parents=True, exist_ok=True)
    logging.getLogger("tf2onnx").setLevel(logging.WARNING)  # its optimiser narrates every pass
    if fmt == "tflite":
        _tflite(model, out, quantize, samples)
    else:
        _onnx(model, out, quantize, samples)
    metadata = _write_metadata(source, out, meta, fmt, quantize)
    expected = np.asarray(model.predict(samples, verbose=0))
    from model.inference import load_network

    got = load_network(out)(samples)
    report = ExportReport(out, metadata, fmt, quantize, out.stat().st_size, float(np.abs(got - expected).max()),
                          float(np.mean(got.argmax(1) == expected.argmax(1))))
    if quantize == "none" and report.max_difference > FLOAT_TOLERANCE:
        raise ValueError(f"{out}: differs from {source} by {report.max_difference:.2g} (more than "
                         f"{FLOAT_TOLERANCE:g}): the export is wrong")
    return report


def _with_softmax(model: KerasModel) -> KerasModel:
    """``model`` ending in probabilities; it is called once, which export needs."""
    import keras

    activation = getattr(model.layers[-1], "activation", None)
    if getattr(activation, "__name__", "") != "softmax":
        model = keras.Model(model.input, keras.layers.Softmax(name="probabilities")(model.output), name=model.name)
    model.predict(np.zeros((1, *model.input_shape[1:]), np.float32), verbose=0)
    return model


def _tflite(model: KerasModel, out: Path, quantize: str, samples: np.ndarray) -> None:
    import tensorflow as tf

    options: dict[str, Any] = {}
    if quantize == "float16":
        options = {"optimizations": [tf.lite.Optimize.DEFAULT], "target_spec": _float16_spec(tf)}
    elif quantize == "int8":
        def representative() -> Iterator[list[np.ndarray]]:
            for row in samples:
                yield [row[None]]

        # Weights and activations in int8; the input and output stay float32, so the
        # runtime's interface does not change.
        options = {"optimizations": [tf.lite.Optimize.DEFAULT], "representative_dataset": representative}
    model.export(str(out), format="litert", verbose=False, **options)


def _float16_spec(tf: Any) -> Any:
    spec = tf.lite.TargetSpec()
    spec.supported_types = [tf.float16]
    return spec


def _onnx(model: KerasModel, out: Path, quantize: str, samples: np.ndarray) -> None:
    if quantize == "none":
        model.export(str(out), format="onnx", verbose=False)
        return
    from onnxruntime.quantization import (
        CalibrationDataReader,
        QuantFormat,
        QuantType,
        quantize_static,
    )

    class Reader(CalibrationDataReader):  # type: ignore[misc]  # onnxruntime is untyped
        def __init__(self, name: str) -> None:
            self.rows = iter(samples)
            self.name = name

        def get_next(self) -> dict[str, np.ndarray] | None:
            row = next(self.rows, None)
            return None if row is None else {self.name: row[None]}

    from onnxruntime.quantization.shape_inference import quant_pre_process

    with tempfile.TemporaryDirectory(prefix="export-") as tmp:
        floating, prepared = Path(tmp) / "float.onnx", Path(tmp) / "prepared.onnx"
        model.export(str(floating), format="onnx", verbose=False)
        import onnx

        name = onnx.load(str(floating)).graph.input[0].name
        # Folded and shape-annotated first, unsigned activations and per-channel weights:
        # the form ONNX Runtime's x86 int8 kernels run. Signed activations and one scale
        # a tensor ran no faster than float32 here (1.12 against 1.18 ms a face at batch
        # 64, one thread); this form 0.40 against 1.24 (the model card).
        quant_pre_process(str(floating), str(prepared), skip_symbolic_shape=True)
        # Up to the last convolution, where the cost is: what follows it (its block's sum,
        # pooling, dense, temperature, softmax) stays float, or the probabilities come in
        # steps of 1/255.
        nodes = onnx.load(str(prepared)).graph.node
        last_conv = max((i for i, n in enumerate(nodes) if n.op_type == "Conv"), default=len(nodes) - 1)
        quantize_static(str(prepared), str(out), Reader(name), quant_format=QuantFormat.QDQ,
                        activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8, per_channel=True,
                        nodes_to_exclude=[n.name for n in nodes[last_conv + 1:]])


def _probe_batch(meta: ModelMetadata, n: int = 64) -> np.ndarray:
    """A batch to compare the export with Keras: smooth random images in the model's scaling."""
    import cv2

    rng = np.random.default_rng(0)
    small = rng.integers(0, 256, (n, 8, 8, meta.channels), dtype=np.uint8)
    images = np.stack([cv2.resize(s, (meta.input_width, meta.input_height), interpolation=cv2.INTER_CUBIC)
                       .reshape(meta.input_height, meta.input_width, meta.channels) for s in small])
    return scale_pixels(images.astype(np.float32), meta.preprocessing)


def _calibration_batch(folder: Path, meta: ModelMetadata) -> np.ndarray:
    """Up to CALIBRATION_IMAGES face crops from ``folder`` (label folders, or plain images),
    as the model sees them."""
    import cv2

    from emotion_stream.images import IMAGE_SUFFIXES

    try:
        paths, _ = list_labelled(folder)
    except ValueError:
        paths = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if not paths:
        raise ValueError(f"{folder}: no images to calibrate with")
    picked = [paths[i] for i in np.random.default_rng(0).permutation(len(paths))[:CALIBRATION_IMAGES]]
    images = []
    for path in picked:
        image = cv2.imread(str(path), cv2.IMREAD_COLOR if meta.channels == 3 else cv2.IMREAD_GRAYSCALE)
        if image is not None:
            images.append(resize_face(image, meta).reshape(meta.input_height, meta.input_width, meta.channels))
    return scale_pixels(np.stack(images).astype(np.float32), meta.preprocessing)


def _write_metadata(source: Path, out: Path, meta: ModelMetadata, fmt: str, quantize: str) -> Path:
    target = sidecar_path(out)
    if target.resolve() == sidecar_path(source).resolve():
        return target  # one network in several files, one metadata file: already right
    digest = hashlib.sha256(source.read_bytes()).hexdigest()[:16]
    extra = {**meta.extra, "exported_from": {"file": source.name, "sha256": digest, "format": fmt,
                                              "quantize": quantize}}
    dataclasses.replace(meta, extra=extra).save(target)
    return target
