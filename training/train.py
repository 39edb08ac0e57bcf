"""``train``: one classifier across face domains, distilled from the FER2013 baseline, calibrated.

The recipe, in order:

1. Every domain folder is loaded through the inference resize (no training/serving skew);
   folders with ``train/`` + ``validation/`` keep their own split, others are split here.
2. Batches are drawn balanced over domain and class (:class:`BalancedSampler`), then each
   image gets camera-like augmentation (:class:`CameraAugment`).
3. The loss is cross-entropy on the label plus knowledge distillation from the FER2013
   mini-Xception on its seven labels (teacher probabilities computed once per image),
   so the model keeps what the baseline knows about web faces while it learns photos.
4. After every epoch the model is scored on each domain's validation split (mean of
   (accuracy + balanced accuracy) / 2 over domains). The served weights are the mean of
   the last ``average_last`` epochs' (stochastic weight averaging), or with 0 the best
   epoch's.
5. A temperature is fitted on validation (:mod:`model.calibration`) and baked into the
   saved model as ``softmax(logits / T)``.

:func:`combine` serves several trained models as one (an ensemble or a soup), through step 5.

Everything is Keras 3 (``keras.ops``, ``PyDataset``), so it runs on any Keras backend.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any, cast

import numpy as np

from emotion_stream.labels import EMOTIONS
from model.calibration import expected_calibration_error, fit_temperature, softmax
from model.metadata import ModelMetadata
from model.preprocessing import scale_pixels

from .augment import CameraAugment
from .domains import BalancedSampler, Domain, load_domains
from .networks import NETWORKS, KerasModel, build, with_temperature
from .options import TrainOptions

log = logging.getLogger(__name__)

# The FER2013 teacher knows these seven of the nine labels.
TEACHER_MASK = np.array([label not in ("contempt", "uncertain") for label in EMOTIONS], np.float32)


Progress = Callable[[int, int, str], None]  # (steps done, total steps, message)
Report = dict[str, Any]  # what a run measured and chose: report.json, and the model card's source


def train(folders: Sequence[Path], out_dir: Path, options: TrainOptions, progress: Progress | None = None) -> Report:
    import keras

    if options.network not in NETWORKS:
        raise ValueError(f"unknown network {options.network!r}; choose one of {', '.join(NETWORKS)}")
    spec = NETWORKS[options.network]
    size = options.input_size or spec.input_size
    meta = ModelMetadata(
        labels=EMOTIONS, input_height=size, input_width=size, channels=spec.channels,
        preprocessing=spec.preprocessing, name=f"emotion-{options.network}", face_margin=options.face_margin,
    )
    keras.utils.set_random_seed(options.seed)
    out_dir.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()

    train_domains, val_domains = load_domains(folders, meta, options.val_split, options.seed)
    teacher = _teacher_targets(train_domains) if options.distill_weight > 0 else None
    sampler = BalancedSampler(train_domains, options.class_power)
    batches = _batches(sampler, teacher, meta, options)

    model = build(options.network, size, options.weights, options.init_from_fer)
    total_steps = options.epochs * options.steps_per_epoch
    warmup = min(200, total_steps // 10)  # a fresh head must not wreck the pretrained body
    schedule = keras.optimizers.schedules.CosineDecay(
        0.0 if warmup else options.learning_rate, total_steps - warmup,
        warmup_target=options.learning_rate if warmup else None, warmup_steps=warmup,
    )
    model.compile(optimizer=keras.optimizers.AdamW(schedule, weight_decay=options.weight_decay),
                  loss=distillation_loss(options.distill_weight, options.distill_temperature))
    average_last = min(options.average_last, options.epochs)
    selector = _select_best(val_domains, meta, progress, total_steps,
                            average_from=options.epochs - average_last + 1 if average_last else None)
    model.fit(batches, epochs=options.epochs, verbose=0, callbacks=[selector])
    averaged = None
    if average_last:
        # Stochastic weight averaging over the low-learning-rate tail of the schedule: a
        # flatter optimum than any one epoch's (Izmailov et al. 2018), which carries better
        # to other domains (Cha et al. 2021, SWAD); no pick among noisy epoch scores either.
        model.set_weights(selector.averaged_weights())
        averaged = {"epochs": [options.epochs - average_last + 1, options.epochs]}
    else:
        model.set_weights(selector.best_weights)

    report: Report = {
        "network": options.network, "about": spec.about, "options": asdict(options),
        "best_epoch": selector.best_epoch, "best_epoch_score": selector.best, "averaged": averaged,
        "epochs": selector.history,
        "train_counts": {d.name: d.counts() for d in train_domains},
        "validation_counts": {d.name: d.counts() for d in val_domains},
        "sampling": sampler.class_share(),
        "folders": [str(f) for f in folders],
    }
    extra = {
        "trained_on": [d.name for d in train_domains],
        "class_prior": sampler.class_prior(),
        "distilled_from": "fer2013-mini-xception" if teacher is not None else None,
    }
    report = _calibrate_and_save(model, meta, val_domains, out_dir, report, extra, started)
    _plot(selector.history, out_dir / "curves.png")
    return report


def _calibrate_and_save(model: KerasModel, meta: ModelMetadata, val_domains: Sequence[Domain], out_dir: Path,
                        report: Report, extra: dict[str, Any], started: float) -> Report:
    """From a logit model to the served one: temperature and flip averaging chosen on
    validation, then model.keras, model.json, report.json and MODEL_CARD.md."""
    # Calibration on validation: one temperature for all domains, each domain weighing
    # the same (FER2013's 3,589 validation faces would otherwise set it alone).
    logits = [_logits(model, d, meta) for d in val_domains]
    temperature = balanced_temperature(logits, [d.labels for d in val_domains])
    validation = {
        d.name: _scores(lg, d.labels, temperature) for d, lg in zip(val_domains, logits)
    }
    flip = {d.name: _flip_gain(model, d, meta, lg) for d, lg in zip(val_domains, logits)}
    served = with_temperature(model, temperature)
    checkpoint = out_dir / "model.keras"
    served.save(checkpoint)
    report = {**report, "temperature": temperature, "validation": validation,
              "score": selection_score(list(validation.values())), "flip_averaging_gain": flip,
              "seconds": round(time.monotonic() - started, 1)}
    # Test-time flip averaging doubles the classifier's work: on only where it pays in
    # every domain's validation.
    meta = dataclasses.replace(meta, flip_average=all(gain > 0 for gain in flip.values()), extra={
        "temperature": temperature,
        "validation": {name: {k: v[k] for k in ("accuracy", "balanced_accuracy", "ece_calibrated")}
                       for name, v in validation.items()},
        **extra,
    })
    meta.save(checkpoint.with_suffix(".json"))
    (out_dir / "report.json").write_text(json.dumps(report, indent=2) + "\n")
    (out_dir / "MODEL_CARD.md").write_text(model_card(report, meta))
    return report


def combine(members: Sequence[Path], folders: Sequence[Path], out_dir: Path, val_split: float = 0.2,
            seed: int = 42, soup: bool = False) -> Report:
    """Several trained models (same input) -> one served model, calibrated again and with
    flip averaging chosen on the validation of ``folders`` (split as ``train`` split them,
    same ``val_split`` and ``seed``). One file, so serving does not know it is combined.

    By default an ensemble: the mean of the members' calibrated log-probabilities (each
    member runs). ``soup``: one network whose weights are the mean of the members'
    ("model soup", Wortsman et al. 2022): it costs one member's time, and works for
    members of one network fine-tuned from the same start (here: the FER2013 weights),
    which stay in one basin of the loss, so their average is a good network too."""
    import keras

    from model.emotion_model import read_metadata

    found = [read_metadata(m) for m in members]
    if len(members) < 2 or any(m is None for m in found):
        raise ValueError("combine needs two or more models, each with its metadata file (model.json)")
    metas = cast(list[ModelMetadata], found)
    first = metas[0]
    shape = (first.input_height, first.input_width, first.channels)
    for path, m in zip(members, metas):
        if (m.input_height, m.input_width, m.channels, m.preprocessing, m.labels) != (*shape, first.preprocessing, first.labels):
            raise ValueError(f"{path}: input or labels differ from {members[0]}; members must match")
    out_dir.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    kind = "soup" if soup else "ensemble"
    meta = ModelMetadata(labels=first.labels, input_height=shape[0], input_width=shape[1], channels=shape[2],
                         preprocessing=first.preprocessing, name=f"emotion-{kind}{len(members)}",
                         face_margin=first.face_margin)
    _, val_domains = load_domains(folders, meta, val_split, seed)
    served = [keras.models.load_model(path, compile=False) for path in members]
    if soup:
        # The members' logit networks (their temperatures are not weights, and are refitted).
        nets = [keras.Model(s.input, s.get_layer("temperature").input) for s in served]
        weights = [n.get_weights() for n in nets]
        if any([w.shape for w in ws] != [w.shape for w in weights[0]] for ws in weights):
            raise ValueError("--soup needs members of one network (the same weights' shapes); these differ")
        # Batch-norm statistics are averaged with the rest: the members stay close enough.
        model = keras.models.clone_model(nets[0])
        model.set_weights([np.mean(ws, axis=0).astype(ws[0].dtype) for ws in zip(*weights)])
        about = "one network: the mean of the members' weights (a model soup)"
    else:
        inputs = keras.Input(shape)
        # Each member's logits / T (its softmax's input): their mean is, up to a per-row
        # constant, the mean of the members' calibrated log-probabilities.
        outputs = [keras.Model(s.input, s.get_layer("temperature").output, name=f"member{i}")(inputs)
                   for i, s in enumerate(served)]
        model = keras.Model(inputs, keras.layers.Average(name="logits")(outputs), name=meta.name)
        about = "mean of the members' calibrated log-probabilities"
    # The members' mean prior, when every member states one.
    priors = [m.class_prior() or {} for m in metas]
    prior = None if not all(priors) else {
        label: round(sum(p.get(label, 0.0) for p in priors) / len(priors), 4)
        for label in EMOTIONS if any(label in p for p in priors)}
    report: Report = {
        "network": f"{kind} of {len(members)}", "about": about,
        "members": [{"path": str(p), "name": m.name, "validation": m.extra.get("validation")}
                    for p, m in zip(members, metas)],
        "validation_counts": {d.name: d.counts() for d in val_domains},
        "folders": [str(f) for f in folders],
    }
    extra = {"members": [str(p) for p in members], "class_prior": prior,
             "trained_on": first.extra.get("trained_on"), "distilled_from": first.extra.get("distilled_from")}
    return _calibrate_and_save(model, meta, val_domains, out_dir, report, extra, started)


# --------------------------------------------------------------------------- data
def _batches(sampler: BalancedSampler, teacher: list[np.ndarray] | None, meta: ModelMetadata,
             options: TrainOptions) -> Any:
    """A ``keras.utils.PyDataset`` of balanced, augmented batches. Each batch's random
    state derives from (seed, epoch, index), so runs repeat exactly. (Defined on call:
    importing keras at module level costs seconds.)"""
    import keras

    class Batches(keras.utils.PyDataset):  # type: ignore[misc]  # keras is untyped
        def __init__(self) -> None:
            super().__init__(workers=max(1, (os.cpu_count() or 1)), use_multiprocessing=False)
            self.sampler, self.teacher, self.meta, self.options = sampler, teacher, meta, options
            self.augment = CameraAugment() if options.augment else None
            self.epoch = 0

        def __len__(self) -> int:
            return options.steps_per_epoch

        def on_epoch_end(self) -> None:
            self.epoch += 1

        def __getitem__(self, index: int) -> tuple[np.ndarray, np.ndarray]:
            rng = np.random.default_rng((self.options.seed, self.epoch, index))
            picks = self.sampler.draw(self.options.batch_size, rng)
            m = self.meta
            x = np.empty((len(picks), m.input_height, m.input_width, m.channels), np.float32)
            y = np.zeros((len(picks), 2 * len(EMOTIONS) + 1), np.float32)
            for row, (d, i) in enumerate(picks):
                image = self.sampler.domains[d].images[i]
                x[row] = self.augment(image, rng) if self.augment else image
                y[row, self.sampler.domains[d].labels[i]] = 1.0
                if self.teacher is not None:
                    y[row, len(EMOTIONS): 2 * len(EMOTIONS)] = self.teacher[d][i]
                    y[row, -1] = 1.0
            return scale_pixels(x, m.preprocessing), y

    return Batches()


def _teacher_targets(domains: Sequence[Domain]) -> list[np.ndarray]:
    """The FER2013 model's probabilities (9 canonical columns) for every training image."""
    from model.emotion_model import FER2013, EmotionModel

    teacher = EmotionModel(FER2013)
    out = []
    for domain in domains:
        log.info("teacher: %d images of %s", len(domain), domain.name)
        out.append(teacher.predict_proba(list(domain.images)).astype(np.float32))
    return out


def distillation_loss(weight: float, temperature: float) -> Callable[[Any, Any], Any]:
    """Cross-entropy on the label + weight * T^2 * KL(teacher_T || student_T), the KL over
    the teacher's seven labels. y_true packs [one-hot (9) | teacher (9) | has-teacher]."""
    from keras import ops

    k = len(EMOTIONS)
    mask = ops.convert_to_tensor(TEACHER_MASK)

    def distillation_loss(y_true: Any, logits: Any) -> Any:
        onehot, teacher, has_teacher = y_true[:, :k], y_true[:, k: 2 * k], y_true[:, -1]
        ce = -ops.sum(onehot * ops.log_softmax(logits, axis=-1), axis=-1)
        if weight <= 0:
            return ce
        student = ops.log_softmax(ops.where(mask > 0, logits / temperature, -1e9), axis=-1)
        soft = ops.power(ops.maximum(teacher, 1e-8), 1.0 / temperature) * mask
        soft = soft / ops.sum(soft, axis=-1, keepdims=True)
        kl = ops.sum(soft * (ops.log(ops.maximum(soft, 1e-8)) - student) * mask, axis=-1)
        return ce + weight * temperature**2 * has_teacher * kl

    return distillation_loss


# --------------------------------------------------------------------------- scoring
def _logits(model: KerasModel, domain: Domain, meta: ModelMetadata) -> np.ndarray:
    x = scale_pixels(domain.images.astype(np.float32), meta.preprocessing)
    return np.asarray(model.predict(x, batch_size=256, verbose=0), np.float64)


def _scores(logits: np.ndarray, labels: np.ndarray, temperature: float = 1.0) -> dict[str, Any]:
    predicted = logits.argmax(axis=1)
    recall = {EMOTIONS[c]: float(np.mean(predicted[labels == c] == c)) for c in np.unique(labels)}
    return {
        "accuracy": float(np.mean(predicted == labels)),
        "balanced_accuracy": float(np.mean(list(recall.values()))),
        "per_class_recall": recall,
        "ece_uncalibrated": expected_calibration_error(softmax(logits), labels),
        "ece_calibrated": expected_calibration_error(softmax(logits, temperature), labels),
    }


def balanced_temperature(logits: Sequence[np.ndarray], labels: Sequence[np.ndarray]) -> float:
    """One temperature for several domains' validation logits, every domain weighing the same."""
    weights = np.concatenate([np.full(len(y), 1.0 / max(1, len(y))) for y in labels])
    return fit_temperature(np.concatenate(logits), np.concatenate(labels), weights=weights)


def selection_score(scores: Sequence[dict[str, Any]]) -> float:
    """Mean over domains of (accuracy + balanced accuracy) / 2: no domain and no class
    may be given up for the others."""
    return float(np.mean([(float(s["accuracy"]) + float(s["balanced_accuracy"])) / 2 for s in scores]))


def _flip_gain(model: KerasModel, domain: Domain, meta: ModelMetadata, logits: np.ndarray) -> float:
    """Validation accuracy gained by averaging with the mirrored face (test-time flip)."""
    flipped = Domain(domain.name, np.ascontiguousarray(domain.images[:, :, ::-1]), domain.labels)
    both = softmax(logits) + softmax(_logits(model, flipped, meta))
    return float(np.mean(both.argmax(1) == domain.labels) - np.mean(logits.argmax(1) == domain.labels))


def _select_best(val_domains: Sequence[Domain], meta: ModelMetadata, progress: Progress | None, total_steps: int,
                 average_from: int | None = None) -> Any:
    """Keras callback: progress, per-epoch validation, best weights kept in memory, and
    the running sum of the weights of epochs ``average_from``.. (1-based) when given."""
    import keras

    class SelectBest(keras.callbacks.Callback):  # type: ignore[misc]  # keras is untyped
        def __init__(self) -> None:
            super().__init__()
            self.best, self.best_epoch, self.best_weights = -math.inf, -1, None
            self.history: list[dict[str, Any]] = []
            self.step = 0
            self.started = time.monotonic()
            self.summed: list[np.ndarray] | None = None
            self.dtypes: list[np.dtype] = []
            self.averaged = 0

        def averaged_weights(self) -> list[np.ndarray]:
            if self.summed is None:
                raise RuntimeError("no epoch was averaged")
            return [(w / self.averaged).astype(t) for w, t in zip(self.summed, self.dtypes)]

        def on_train_batch_end(self, batch: int, logs: dict[str, Any] | None = None) -> None:
            self.step += 1
            if progress and self.step % 5 == 0:
                progress(self.step, total_steps, f"loss {float((logs or {}).get('loss', math.nan)):.3f}")

        def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
            scores = {d.name: _scores(_logits(self.model, d, meta), d.labels) for d in val_domains}
            score = selection_score(list(scores.values()))
            if average_from is not None and epoch + 1 >= average_from:
                # (Batch-norm statistics are averaged too: the tail's weights stay close.)
                current = self.model.get_weights()
                self.dtypes = [w.dtype for w in current]
                weights = [np.asarray(w, np.float64) for w in current]
                self.summed = weights if self.summed is None else [a + w for a, w in zip(self.summed, weights)]
                self.averaged += 1
            entry = {"epoch": epoch + 1, "loss": float((logs or {}).get("loss", math.nan)), "score": score,
                     **{f"{n}_{k}": s[k] for n, s in scores.items() for k in ("accuracy", "balanced_accuracy")}}
            self.history.append(entry)
            if score > self.best:
                self.best, self.best_epoch, self.best_weights = score, epoch + 1, self.model.get_weights()
            elapsed = time.monotonic() - self.started
            eta = elapsed / max(1, self.step) * (total_steps - self.step)
            log.info("epoch %d: %s (%.0f s, about %.0f s left)", epoch + 1,
                     " ".join(f"{k}={v:.3f}" for k, v in entry.items() if k != "epoch"), elapsed, eta)
            if progress:
                progress(self.step, total_steps, f"epoch {epoch + 1} validation {score:.3f}")

    return SelectBest()


# --------------------------------------------------------------------------- outputs
def _plot(history: list[dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (loss_ax, acc_ax) = plt.subplots(1, 2, figsize=(11, 4))
    epochs = [h["epoch"] for h in history]
    loss_ax.plot(epochs, [h["loss"] for h in history], label="training loss")
    for key in history[0] if history else []:
        if key.endswith("accuracy") or key == "score":
            acc_ax.plot(epochs, [h[key] for h in history], label=f"validation {key}")
    loss_ax.set_title("loss (cross-entropy + distillation)")
    acc_ax.set_title("validation, per domain")
    for ax in (loss_ax, acc_ax):
        ax.set_xlabel("epoch")
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def _selected(report: Report) -> str:
    score = "mean over domains of (accuracy + balanced accuracy) / 2 on validation"
    averaged: dict[str, Any] | None = report.get("averaged")
    if averaged:
        first, last = averaged["epochs"]
        return (f"- Weights: the mean of epochs {first}-{last}'s (stochastic weight averaging); validation score "
                f"({score}, without flip averaging) {report['score']:.3f}, against "
                f"{report['best_epoch_score']:.3f} for the best single epoch ({report['best_epoch']}).")
    return f"- Selected epoch: {report['best_epoch']} of {report['options']['epochs']} ({score})."


def model_card(report: Report, meta: ModelMetadata) -> str:
    validation: dict[str, dict[str, Any]] = report["validation"]
    lines = [f"# Model card: {meta.name}", ""]
    if "members" in report:
        output = "logits" if report["network"].startswith("soup") else "mean"
        lines.append(f"- Network: {report['network']}: {report['about']}, served as softmax({output} / T), "
                     f"T = {report['temperature']:.3f} (fitted on validation). Members (each with its own card):")
        for m in report["members"]:
            scores = m["validation"] or {}
            lines.append(f"  - `{m['path']}` ({m['name']}): validation " + ", ".join(
                f"{d} {s['accuracy']:.3f} / {s['balanced_accuracy']:.3f}" for d, s in scores.items()))
    else:
        options = report["options"]
        lines += [
            f"- Network: {report['network']}: {report['about']}; + global average pooling, dropout 0.3, "
            f"dense(9); served as softmax(logits / T), T = {report['temperature']:.3f} (fitted on validation).",
            f"- Training: {options['epochs']} epochs x {options['steps_per_epoch']} steps x {options['batch_size']} "
            f"images, AdamW {options['learning_rate']} cosine, weight decay {options['weight_decay']}; batches "
            f"balanced over domain (equal) and class (count^{options['class_power']}); camera augmentation "
            f"{'on' if options['augment'] else 'off'}; distillation from the FER2013 mini-Xception "
            f"(weight {options['distill_weight']}, T {options['distill_temperature']}); seed {options['seed']}; "
            f"{report['seconds']} s.",
            _selected(report),
        ]
    lines += [
        f"- Input: {meta.input_height}x{meta.input_width}, {'grey' if meta.channels == 1 else 'colour'}, "
        f"preprocessing `{meta.preprocessing.value}`, face crop margin {meta.face_margin} (eye-aligned crops).",
        f"- Test-time flip averaging: {'on' if meta.flip_average else 'off'} (on when it gains validation "
        "accuracy in every domain; it doubles the classifier's work).",
        "- Class prior (each class's share of the training batches, `class_prior` in the metadata; "
        "tracking divides it out of a track's summed probabilities): "
        + ", ".join(f"{k} {v:.3f}" for k, v in (meta.class_prior() or {}).items()) + ".",
        "",
        "## Data",
        "",
        "| domain | split | images | per class |",
        "| --- | --- | --- | --- |",
    ]
    for split, key in (("train", "train_counts"), ("validation", "validation_counts")):
        for name, counts in report.get(key, {}).items():
            lines.append(f"| {name} | {split} | {sum(counts.values())} | "
                         + ", ".join(f"{k} {v}" for k, v in counts.items()) + " |")
    lines += [
        "",
        "## Validation",
        "",
        "| domain | accuracy | balanced accuracy | ECE before / after calibration | flip averaging gain |",
        "| --- | --- | --- | --- | --- |",
    ]
    for name, s in validation.items():
        lines.append(f"| {name} | {s['accuracy']:.3f} | {s['balanced_accuracy']:.3f} | "
                     f"{s['ece_uncalibrated']:.3f} / {s['ece_calibrated']:.3f} | "
                     f"{report['flip_averaging_gain'][name]:+.3f} |")
    lines += ["", "Per-class recall on validation:", "",
              "| class | " + " | ".join(validation) + " |", "| --- |" + " --- |" * len(validation)]
    for label in EMOTIONS:
        cells = [f"{s['per_class_recall'][label]:.3f}" if label in s["per_class_recall"] else "-"
                 for s in validation.values()]
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    lines += [
        "",
        "`uncertain` has no training images in any domain: the model never predicts it; "
        "abstention (`--uncertain-below P`) maps low-confidence faces to it.",
        "",
    ]
    return "\n".join(lines)
