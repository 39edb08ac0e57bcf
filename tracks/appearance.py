"""Comparing what faces and frames look like (the vectors ``model.appearance`` makes)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from emotion_stream.schema import SCENE_GRID_CELLS


def descriptor_distance(a: np.ndarray, b: np.ndarray) -> float:
    """Cosine distance of two unit descriptors, 0 (the same) to 2."""
    return float(1.0 - np.dot(a, b))


def gallery_distance(gallery: Sequence[np.ndarray], descriptor: np.ndarray) -> float:
    """How far a face is from a track's looks: its nearest kept descriptor (DeepSORT's
    smallest cosine distance to the track's gallery)."""
    return min(descriptor_distance(kept, descriptor) for kept in gallery)


def scene_change(a: np.ndarray, b: np.ndarray) -> tuple[float, float]:
    """(layout change: mean absolute difference of the brightness grids, 0-1; histogram
    change: 1 - the Bhattacharyya coefficient, 0-1) of two scene signatures."""
    cells = SCENE_GRID_CELLS
    layout = float(np.mean(np.abs(a[:cells] - b[:cells])))
    overlap = float(np.sum(np.sqrt(np.clip(a[cells:], 0, None) * np.clip(b[cells:], 0, None))))
    return layout, max(0.0, 1.0 - overlap)
