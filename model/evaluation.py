"""Scoring predictions against labels (a CSV or label folders): accuracy, per-class recall,
confusion matrix."""

from __future__ import annotations

import csv
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from emotion_stream.images import IMAGE_SUFFIXES
from emotion_stream.labels import EMOTIONS, canonical


def list_labelled(folder: Path) -> tuple[list[Path], np.ndarray]:
    """FOLDER/<label>/*.<image>; labels in any common spelling ("angry" = anger)."""
    paths: list[Path] = []
    labels: list[int] = []
    for label_dir in sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith(".")):
        try:
            index = EMOTIONS.index(canonical(label_dir.name))
        except ValueError as exc:
            raise ValueError(f"{label_dir}: {exc}") from None
        for path in sorted(label_dir.iterdir()):
            if path.suffix.lower() in IMAGE_SUFFIXES and path.is_file():
                paths.append(path)
                labels.append(index)
    if not paths:
        raise ValueError(f"{folder}: no images in label folders")
    return paths, np.asarray(labels, np.int64)


class LabelsError(ValueError):
    """The labels/submission CSV is unusable; the message names the file and line."""


def read_labels_csv(path: Path) -> dict[str, str]:
    """``image_path,emotion`` rows -> {file name: canonical emotion}.

    Used for both answer files and submission files (same format).
    """
    try:
        # utf-8-sig: spreadsheets save "CSV UTF-8" with a byte-order mark before the header.
        with path.open(newline="", encoding="utf-8-sig") as fh:
            reader = csv.DictReader(fh, skipinitialspace=True)
            if not reader.fieldnames or {"image_path", "emotion"} - set(reader.fieldnames):
                raise LabelsError(f"{path}: expected header 'image_path,emotion', got {reader.fieldnames}")
            labels: dict[str, str] = {}
            first_line: dict[str, int] = {}
            for line, row in enumerate(reader, start=2):
                name = (row["image_path"] or "").strip()
                if not name:
                    raise LabelsError(f"{path}:{line}: empty image_path")
                try:
                    label = canonical(row["emotion"] or "")
                except ValueError as exc:
                    raise LabelsError(f"{path}:{line}: {exc}") from None
                key = Path(name).name
                if key in labels and labels[key] != label:
                    raise LabelsError(f"{path}:{line}: {key} is {label}, but line {first_line[key]} "
                                      f"says {labels[key]}")
                labels[key] = label
                first_line.setdefault(key, line)
    except OSError as exc:
        raise LabelsError(f"{path}: {exc.strerror or exc}") from None
    except UnicodeDecodeError:
        raise LabelsError(f"{path}: not a UTF-8 text file") from None
    return labels


@dataclass
class EvaluationReport:
    confusion: np.ndarray  # (9, 9): rows = truth, columns = prediction, EMOTIONS order
    skipped: dict[str, str] = field(default_factory=dict)  # file name -> reason
    seconds_per_image: float | None = None
    unlabelled: list[str] = field(default_factory=list)  # predictions with no answer
    ece: float | None = None  # expected calibration error of the top probability, when known
    # (mean, 95th percentile) of the ECE a perfectly calibrated model would measure here:
    # how much of ``ece`` is the sample's size (model.calibration.calibrated_ece)
    ece_noise: tuple[float, float] | None = None
    classify_ms_per_face: float | None = None  # classifier alone, batched
    no_face: list[str] = field(default_factory=list)  # no face found: classified whole, as serving does

    @property
    def scored(self) -> int:
        return int(self.confusion.sum())

    @property
    def accuracy(self) -> float:
        return float(np.trace(self.confusion) / self.scored) if self.scored else 0.0

    def recall(self) -> dict[str, float | None]:
        """Per-class recall; None for classes absent from the truth."""
        support = self.confusion.sum(axis=1)
        return {
            label: (float(self.confusion[i, i] / support[i]) if support[i] else None)
            for i, label in enumerate(EMOTIONS)
        }

    @property
    def balanced_accuracy(self) -> float:
        """Mean recall over the classes present in the truth."""
        present = [r for r in self.recall().values() if r is not None]
        return float(np.mean(present)) if present else 0.0

    def standard_errors(self) -> tuple[float, float]:
        """(accuracy's, balanced accuracy's) binomial standard errors: how far another
        sample of as many images would move them. Two models' figures closer than about
        twice this are not told apart by this set (219 photos at 0.68: 0.032). Rates are
        taken half an image from 0 and 1, so a class of one image, right or wrong, counts
        as uncertain rather than as exact."""
        if not self.scored:
            return 0.0, 0.0
        support = self.confusion.sum(axis=1)
        present = support > 0
        n = support[present]
        recall = (np.diag(self.confusion)[present] + 0.5) / (n + 1)
        accuracy = (np.trace(self.confusion) + 0.5) / (self.scored + 1)
        balanced = np.sqrt(np.sum(recall * (1 - recall) / n)) / present.sum()
        return float(np.sqrt(accuracy * (1 - accuracy) / self.scored)), float(balanced)

    def to_dict(self) -> dict[str, object]:
        return {
            "accuracy": self.accuracy,
            "balanced_accuracy": self.balanced_accuracy,
            "standard_errors": dict(zip(("accuracy", "balanced_accuracy"), self.standard_errors())),
            "ece": self.ece,
            "ece_of_a_calibrated_model": (None if self.ece_noise is None
                                          else {"mean": self.ece_noise[0], "p95": self.ece_noise[1]}),
            "classify_ms_per_face": self.classify_ms_per_face,
            "scored": self.scored,
            "skipped": len(self.skipped),
            "skipped_files": self.skipped,
            "no_face": len(self.no_face),
            "no_face_files": self.no_face,
            "unlabelled": len(self.unlabelled),
            "unlabelled_files": self.unlabelled,
            "per_class_recall": self.recall(),
            "labels": list(EMOTIONS),
            "confusion": self.confusion.tolist(),
            "seconds_per_image": self.seconds_per_image,
        }

    def format_text(self) -> str:
        se, balanced_se = self.standard_errors()
        lines = [f"categorical accuracy: {self.accuracy:.4f}  ({np.trace(self.confusion)}/{self.scored} images; "
                 f"standard error {se:.3f})",
                 f"balanced accuracy:    {self.balanced_accuracy:.4f}  (mean per-class recall; standard error "
                 f"{balanced_se:.3f})"]
        if self.ece is not None:
            lines.append(f"calibration error:    {self.ece:.4f}  (ECE, 15 bins)")
            if self.ece_noise is not None:
                lines.append(f"  a calibrated model: {self.ece_noise[0]:.4f}  (the same confidences on {self.scored} "
                             f"images; 95 % of draws under {self.ece_noise[1]:.4f})")
        if self.seconds_per_image is not None:
            lines.append(f"time per image:       {self.seconds_per_image * 1000:.1f} ms")
        if self.classify_ms_per_face is not None:
            lines.append(f"classify per face:    {self.classify_ms_per_face:.2f} ms  (batched)")
        lines.append(f"no face found:        {len(self.no_face)}  (classified whole, as serving does)")
        lines.append(f"skipped:              {len(self.skipped)}")
        for name, reason in sorted(self.skipped.items())[:20]:
            lines.append(f"  {name}: {reason}")
        if len(self.skipped) > 20:
            lines.append(f"  ... and {len(self.skipped) - 20} more")
        lines.append(f"without a label:      {len(self.unlabelled)}")
        for name in self.unlabelled[:20]:
            lines.append(f"  {name}")
        if len(self.unlabelled) > 20:
            lines.append(f"  ... and {len(self.unlabelled) - 20} more")
        lines.append("")
        lines.append("per-class recall:")
        support = self.confusion.sum(axis=1)
        for (label, recall), n in zip(self.recall().items(), support):
            shown = "   -  " if recall is None else f"{recall:6.3f}"
            lines.append(f"  {label:<10} {shown}  (n={n})")
        lines.append("")
        lines.append("confusion matrix (rows = true, columns = predicted):")
        short = [label[:5] for label in EMOTIONS]
        lines.append(" " * 11 + " ".join(f"{s:>5}" for s in short))
        for label, row in zip(EMOTIONS, self.confusion):
            lines.append(f"  {label:<9}" + " ".join(f"{v:5d}" for v in row))
        return "\n".join(lines)


def format_comparison(path: EvaluationReport, whole: EvaluationReport) -> str:
    """The serving path's report, with the whole-image figures as a second column."""
    def figure(value: float | None) -> str:
        return "   -  " if value is None else f"{value:6.3f}"

    lines = [f"{'':<22} {'serving path':>12} {'whole image':>12}",
             f"{'accuracy':<22} {figure(path.accuracy):>12} {figure(whole.accuracy):>12}",
             f"{'balanced accuracy':<22} {figure(path.balanced_accuracy):>12} {figure(whole.balanced_accuracy):>12}",
             f"{'calibration error':<22} {figure(path.ece):>12} {figure(whole.ece):>12}"]
    if path.ece_noise is not None and whole.ece_noise is not None:
        lines.append(f"{'  a calibrated model':<22} {figure(path.ece_noise[0]):>12} {figure(whole.ece_noise[0]):>12}")
    for (label, a), b in zip(path.recall().items(), whole.recall().values()):
        if a is not None or b is not None:
            lines.append(f"{'  recall ' + label:<22} {figure(a):>12} {figure(b):>12}")
    return "\n".join(lines) + "\n\nserving path in full:\n" + path.format_text()


def score(
    truth: Mapping[str, str],
    predicted: Mapping[str, str],
    skipped: Mapping[str, str] | None = None,
) -> EvaluationReport:
    """Confusion matrix over images that have both a truth label and a prediction;
    labels without a prediction are reported as skipped, predictions without a label as
    unlabelled."""
    index = {label: i for i, label in enumerate(EMOTIONS)}
    confusion = np.zeros((len(EMOTIONS), len(EMOTIONS)), np.int64)
    missed = dict(skipped or {})
    for name, true_label in truth.items():
        if name in predicted:
            confusion[index[true_label], index[predicted[name]]] += 1
        elif name not in missed:
            missed[name] = "no prediction"
    unlabelled = sorted(set(predicted) - set(truth))
    return EvaluationReport(confusion, missed, unlabelled=unlabelled)
