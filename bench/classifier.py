"""The classifier alone, side by side with other models: CPU ms a face at a few batch sizes."""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import TYPE_CHECKING

import numpy as np

from .measure import Figures

if TYPE_CHECKING:
    from model import EmotionModel


def run_classifiers(models: Mapping[str, EmotionModel], batches: tuple[int, ...] = (1, 16, 64)) -> Figures:
    """Classifier alone, side by side: CPU ms per face at a few batch sizes, on face
    crops of the sample portrait (preparation included: resize, colour, scaling)."""
    from ingest.samples import sample_face

    face = sample_face()
    crops = [np.ascontiguousarray(np.roll(face, i, axis=1)[:300, 100:400]) for i in range(64)]
    rows: Figures = {}
    for name, model in models.items():
        model.warm_up()
        row: dict[str, float] = {}
        for size in batches:
            calls = max(3, 256 // size)
            c = time.process_time()
            for i in range(calls):
                model.predict_proba(crops[:size])
            row[f"batch {size}"] = 1000 * (time.process_time() - c) / (calls * size)
        rows[name] = {"model": model.id, "cpu_ms_per_face": row}
    return rows
