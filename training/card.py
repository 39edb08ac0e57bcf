"""The model card (MODEL_CARD.md) and training curves (curves.png) of a training run."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from emotion_stream.labels import EMOTIONS
from model.metadata import ModelMetadata

Report = dict[str, Any]  # what a run measured and chose: report.json, and the model card's source


def plot(history: list[dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (loss_ax, acc_ax) = plt.subplots(1, 2, figsize=(11, 4))
    epochs = [h["epoch"] for h in history]
    loss_ax.plot(epochs, [h["loss"] for h in history], label="training loss")
    for key in history[0] if history else []:
        if key.endswith("accuracy") or key == "score":
            acc_ax.plot(epochs, [h[key] for h in history], label=f"validation {key}")
    loss_ax.set_title("training loss")
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
        distillation = ("off" if options["distill_weight"] <= 0 else
                        f"weight {options['distill_weight']}, T {options['distill_temperature']}")
        lines += [
            f"- Network: {report['network']}: {report['about']}; + global average pooling, dropout 0.3, "
            f"dense(9); {report['parameters']:,} parameters; served as softmax(logits / T), "
            f"T = {report['temperature']:.3f} (fitted on validation).",
            f"- Training: {options['epochs']} epochs x {options['steps_per_epoch']} steps x {options['batch_size']} "
            f"images, AdamW {options['learning_rate']} ({options['warmup_epochs']} epoch linear warm-up, then "
            f"cosine), weight decay {options['weight_decay']}; batches drawn by domain (size^"
            f"{options.get('domain_power', 0.0)}) and class (count^{options['class_power']}); camera augmentation {'on' if options['augment'] else 'off'}; "
            f"mixup {options['mixup'] or 'off'}; label smoothing {options['label_smoothing']}; distillation "
            f"from the FER2013 mini-Xception {distillation}; seed {options['seed']}; {report['seconds']} s "
            f"of wall time ({report.get('resumed', 0)} resumes)"
            + (f"; started from the weights of `{options['init_from']}`." if options.get("init_from") else "."),
            _selected(report),
        ]
    lines += [
        f"- Input: {meta.input_height}x{meta.input_width}, {'grey' if meta.channels == 1 else 'colour'}, "
        f"preprocessing `{meta.preprocessing.value}`, face crop margin {meta.face_margin} (eye-aligned crops).",
        f"- Test-time flip averaging: {'on' if meta.flip_average else 'off'} ({report['flip_choice']}; it "
        "doubles the classifier's work).",
        "- Class prior (each class's share of the training batches, `class_prior` in the metadata; "
        "tracking divides a track's summed probabilities by it to the power `--track-prior-power`): "
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
    ]
    history: list[dict[str, Any]] = report.get("epochs", [])
    if history:
        domains = list(validation)
        lines += ["", "## Training, epoch by epoch (validation, without flip averaging)", "",
                  "| epoch | loss | " + " | ".join(f"{d} acc / bal" for d in domains) + " | score | wall s |",
                  "| --- | --- |" + " --- |" * len(domains) + " --- | --- |"]
        for h in history:
            cells = [f"{h[f'{d}_accuracy']:.3f} / {h[f'{d}_balanced_accuracy']:.3f}" for d in domains]
            lines.append(f"| {h['epoch']} | {h['loss']:.3f} | " + " | ".join(cells)
                         + f" | {h['score']:.3f} | {h.get('seconds', '')} |")
    lines.append("")
    return "\n".join(lines)
