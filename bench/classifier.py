"""The classifier alone, side by side with other models: CPU ms a face at a few batch sizes."""

from __future__ import annotations

import time

import numpy as np


def run_classifiers(models: dict[str, object], batches: tuple[int, ...] = (1, 16, 64)) -> dict[str, object]:
    """Classifier alone, side by side: CPU ms per face at a few batch sizes, on face
    crops of the sample portrait (preparation included: resize, colour, scaling)."""
    from ingest.samples import sample_face

    face = sample_face()
    crops = [np.ascontiguousarray(np.roll(face, i, axis=1)[:300, 100:400]) for i in range(64)]
    rows = {}
    for name, model in models.items():
        model.warm_up()  # type: ignore[attr-defined]
        row = {}
        for size in batches:
            calls = max(3, 256 // size)
            c = time.process_time()
            for i in range(calls):
                model.predict_proba(crops[:size])  # type: ignore[attr-defined]
            row[f"batch {size}"] = 1000 * (time.process_time() - c) / (calls * size)
        rows[name] = {"model": model.id, "cpu_ms_per_face": row}  # type: ignore[attr-defined]
    return rows
