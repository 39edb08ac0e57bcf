"""``train``: one classifier across face domains, trained on what serving feeds it, calibrated.

The recipe, in order:

1. Every domain folder (``prepare``d through the serving path) is loaded through the
   inference resize; folders with ``train/`` + ``validation/`` keep their own split,
   others are split here, by person when the file names say who is shown.
2. Batches are drawn balanced over domain and class (:class:`BalancedSampler`), each
   image gets camera-like augmentation (:class:`CameraAugment`), then images and targets
   are mixed up (``batches``).
3. The loss is label-smoothed cross-entropy, optionally plus distillation from the
   FER2013 mini-Xception on its seven labels (``loss``).
4. After every epoch the model is scored on each domain's validation split (mean of
   (accuracy + balanced accuracy) / 2 over domains) and the run is checkpointed, so
   ``train --resume`` continues an interrupted run to the same model (``epochs``,
   ``checkpoint``). The served weights are the mean of the last ``average_last``
   epochs' (stochastic weight averaging), or with 0 the best epoch's.
5. A temperature is fitted on validation (:mod:`model.calibration`) and baked into the
   saved model as ``softmax(logits / T)``; flip averaging is chosen on validation.

:func:`combine` serves several trained models as one (an ensemble or a soup), through step 5.

Everything is Keras 3 (``keras.ops``, ``PyDataset``), so it runs on any Keras backend.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import time
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any, cast

import numpy as np

from emotion_stream.labels import EMOTIONS
from model.metadata import ModelMetadata

from . import checkpoint
from .batches import batches, teacher_targets
from .card import Report, model_card, plot
from .checkpoint import Checkpoint, TrainState
from .domains import BalancedSampler, Domain, load_domains
from .epochs import Progress, epoch_end
from .loss import training_loss
from .networks import NETWORKS, KerasModel, build, with_temperature
from .options import TrainOptions
from .scoring import balanced_temperature, flip_gain, logits_of, scores, selection_score

log = logging.getLogger(__name__)


def train(folders: Sequence[Path], out_dir: Path, options: TrainOptions, progress: Progress | None = None,
          *, flip_average: bool | None = None) -> Report:
    """Train from scratch (or from the FER2013 weights) into ``out_dir``.
    ``flip_average``: None chooses on validation."""
    out_dir.mkdir(parents=True, exist_ok=True)
    state = TrainState(asdict(options), [str(f) for f in folders])
    return _run(folders, out_dir, options, state, None, progress, flip_average)


def resume(out_dir: Path, progress: Progress | None = None, *, flip_average: bool | None = None) -> Report:
    """Continue the run whose checkpoint is in ``out_dir`` with its own options and
    folders: from its last finished epoch to the model an uninterrupted run gives."""
    saved = checkpoint.load(out_dir)
    saved.state.resumes += 1
    options = TrainOptions(**saved.state.options)
    log.info("resuming %s at epoch %d of %d", out_dir, saved.state.epoch + 1, options.epochs)
    return _run([Path(f) for f in saved.state.folders], out_dir, options, saved.state, saved, progress, flip_average)


def _run(folders: Sequence[Path], out_dir: Path, options: TrainOptions, state: TrainState,
         resumed: Checkpoint | None, progress: Progress | None, flip_average: bool | None) -> Report:
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
    started = time.monotonic()

    train_domains, val_domains = load_domains(folders, meta, options.val_split, options.seed)
    teacher = teacher_targets(train_domains) if options.distill_weight > 0 else None
    sampler = BalancedSampler(train_domains, options.class_power, options.domain_power)
    classes = sorted({int(c) for d in train_domains for c in np.unique(d.labels)})

    model = build(options.network, size, options.weights, options.init_from_fer)
    if options.init_from and resumed is None:
        _start_from(model, Path(options.init_from))
    total_steps = options.epochs * options.steps_per_epoch
    # Warm-up: a fresh head must not wreck a pretrained body, nor large early steps a fresh one.
    warmup = min(int(options.warmup_epochs * options.steps_per_epoch), total_steps // 10)
    schedule = keras.optimizers.schedules.CosineDecay(
        0.0 if warmup else options.learning_rate, total_steps - warmup,
        warmup_target=options.learning_rate if warmup else None, warmup_steps=warmup,
    )
    model.compile(optimizer=keras.optimizers.AdamW(schedule, weight_decay=options.weight_decay),
                  loss=training_loss(classes, options.label_smoothing, options.distill_weight,
                                     options.distill_temperature))
    if resumed is not None:
        _restore(model, resumed)
    average_last = min(options.average_last, options.epochs)
    callback = epoch_end(val_domains, meta, state, epochs=options.epochs, steps_per_epoch=options.steps_per_epoch,
                         average_from=options.epochs - average_last + 1 if average_last else None,
                         out_dir=out_dir, progress=progress, resumed=resumed)
    if state.epoch < options.epochs:
        # No shuffle: every batch is a random draw already, and Keras would shuffle their
        # order with Python's global RNG, which a resumed run could not repeat.
        model.fit(batches(sampler, teacher, meta, options, epoch=state.epoch), epochs=options.epochs,
                  initial_epoch=state.epoch, shuffle=False, verbose=0, callbacks=[callback])
    averaged = None
    if average_last:
        # Stochastic weight averaging over the low-learning-rate tail of the schedule: a
        # flatter optimum than any one epoch's (Izmailov et al. 2018), which carries better
        # to other domains (Cha et al. 2021, SWAD); no pick among noisy epoch scores either.
        model.set_weights(callback.averaged_weights(model))
        averaged = {"epochs": [options.epochs - average_last + 1, options.epochs]}
    else:
        model.set_weights(callback.best_weights)

    report: Report = {
        "network": options.network, "about": spec.about, "parameters": int(model.count_params()),
        "options": asdict(options), "best_epoch": callback.best_epoch, "best_epoch_score": callback.best,
        "averaged": averaged, "epochs": callback.history,
        "train_counts": {d.name: d.counts() for d in train_domains},
        "validation_counts": {d.name: d.counts() for d in val_domains},
        "sampling": sampler.class_share(),
        "folders": [str(f) for f in folders],
        "resumed": state.resumes,
    }
    extra = {
        "trained_on": [d.name for d in train_domains],
        "class_prior": sampler.class_prior(),
        "distilled_from": "fer2013-mini-xception" if teacher is not None else None,
    }
    # Wall time over every process of the run (a resumed one included).
    elapsed = (resumed.state.elapsed_s if resumed else 0.0) + time.monotonic() - started
    report = calibrate_and_save(model, meta, val_domains, out_dir, report, extra, elapsed, flip_average)
    plot(callback.history, out_dir / "curves.png")
    return report


def _start_from(model: KerasModel, path: Path) -> None:
    """``model`` with the weights of a trained model of the same network (its logits
    network: a saved model's temperature is refitted at the end of this run)."""
    import keras

    try:
        served = keras.models.load_model(path, compile=False)
    except (OSError, ValueError) as exc:
        raise ValueError(f"--init-from {path}: cannot load it: {exc}") from None
    try:
        served = keras.Model(served.input, served.get_layer("temperature").input)
    except ValueError:
        pass  # saved without a temperature: its output is the logits
    weights = served.get_weights()
    if [w.shape for w in weights] != [tuple(v.shape) for v in model.weights]:
        raise ValueError(f"--init-from {path}: its weights do not fit {model.name} at this input size; "
                         "give a model of the same network")
    model.set_weights(weights)
    log.info("starting from the weights of %s", path)


def _restore(model: KerasModel, saved: Checkpoint) -> None:
    """The model's and the optimizer's variables as the checkpoint left them."""
    variables = list(model.variables)
    if [tuple(v.shape) for v in variables] != [a.shape for a in saved.model]:
        raise ValueError("the checkpoint's model does not match this network")
    for variable, value in zip(variables, saved.model):
        variable.assign(value)
    optimizer = model.optimizer
    optimizer.build(model.trainable_variables)
    if len(optimizer.variables) != len(saved.optimizer):
        raise ValueError("the checkpoint's optimizer state does not match this network")
    for variable, value in zip(optimizer.variables, saved.optimizer):
        variable.assign(value)


def calibrate_and_save(model: KerasModel, meta: ModelMetadata, val_domains: Sequence[Domain], out_dir: Path,
                       report: Report, extra: dict[str, Any], seconds: float,
                       flip_average: bool | None = None) -> Report:
    """From a logit model to the served one: temperature and flip averaging chosen on
    validation (``flip_average`` forces it), then model.keras, model.json, report.json
    and MODEL_CARD.md."""
    # Calibration on validation: one temperature for all domains, each domain weighing
    # the same (FER2013's 3,589 validation faces would otherwise set it alone).
    logits = [logits_of(model, d, meta) for d in val_domains]
    temperature = balanced_temperature(logits, [d.labels for d in val_domains])
    validation = {d.name: scores(lg, d.labels, temperature) for d, lg in zip(val_domains, logits)}
    flip = {d.name: flip_gain(model, d, meta, lg) for d, lg in zip(val_domains, logits)}
    served = with_temperature(model, temperature)
    target = out_dir / "model.keras"
    served.save(target)
    # Test-time flip averaging doubles the classifier's work: on only where it pays in
    # every domain's validation, unless the caller decided (a cost budget, say).
    if flip_average is None:
        flip_average = all(gain > 0 for gain in flip.values())
        choice = "on when it gains validation accuracy in every domain"
    else:
        choice = "chosen for this model: " + ("on" if flip_average else "off, within the classifier's cost budget")
    report = {**report, "temperature": temperature, "validation": validation,
              "score": selection_score(list(validation.values())), "flip_averaging_gain": flip,
              "flip_choice": choice, "seconds": round(seconds, 1)}
    meta = dataclasses.replace(meta, flip_average=flip_average, extra={
        "temperature": temperature,
        "validation": {name: {k: v[k] for k in ("accuracy", "balanced_accuracy", "ece_calibrated")}
                       for name, v in validation.items()},
        **extra,
    })
    meta.save(target.with_suffix(".json"))
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
    return calibrate_and_save(model, meta, val_domains, out_dir, report, extra, time.monotonic() - started)
