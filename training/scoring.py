"""Scoring a network on validation: logits, accuracy per domain and class, the selection
score, one temperature for all domains, and what flip averaging gains."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from emotion_stream.labels import EMOTIONS
from model.calibration import expected_calibration_error, fit_temperature, softmax
from model.metadata import ModelMetadata
from model.preprocessing import scale_pixels

from .domains import Domain
from .networks import KerasModel


def logits_of(model: KerasModel, domain: Domain, meta: ModelMetadata) -> np.ndarray:
    x = scale_pixels(domain.images.astype(np.float32), meta.preprocessing)
    return np.asarray(model.predict(x, batch_size=256, verbose=0), np.float64)


def scores(logits: np.ndarray, labels: np.ndarray, temperature: float = 1.0) -> dict[str, Any]:
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


def selection_score(per_domain: Sequence[dict[str, Any]]) -> float:
    """Mean over domains of (accuracy + balanced accuracy) / 2: no domain and no class
    may be given up for the others."""
    return float(np.mean([(float(s["accuracy"]) + float(s["balanced_accuracy"])) / 2 for s in per_domain]))


def flip_gain(model: KerasModel, domain: Domain, meta: ModelMetadata, logits: np.ndarray) -> float:
    """Validation accuracy gained by averaging with the mirrored face (test-time flip)."""
    flipped = Domain(domain.name, np.ascontiguousarray(domain.images[:, :, ::-1]), domain.labels)
    both = softmax(logits) + softmax(logits_of(model, flipped, meta))
    return float(np.mean(both.argmax(1) == domain.labels) - np.mean(logits.argmax(1) == domain.labels))
