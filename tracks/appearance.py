"""Comparing what faces and frames look like (the vectors ``model.appearance`` makes)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from emotion_stream.schema import SCENE_CELL_VALUES


def descriptor_distance(a: np.ndarray, b: np.ndarray) -> float:
    """Cosine distance of two unit descriptors, 0 (the same) to 2."""
    return float(1.0 - np.dot(a, b))


def gallery_distance(gallery: Sequence[np.ndarray], descriptor: np.ndarray) -> float:
    """How far a face is from a track's looks: its nearest kept descriptor (DeepSORT's
    smallest cosine distance to the track's gallery)."""
    return min(descriptor_distance(kept, descriptor) for kept in gallery)


def scene_change(a: np.ndarray, b: np.ndarray, min_cells: int, quantile: float, dark: float) -> float:
    """How far the background's colour moved between two scene signatures: the
    ``quantile`` of the cells' colour distances (CIELAB) over the cells no face was near
    in either frame, or over every cell when fewer than ``min_cells`` are (faces fill the
    frame). A low quantile, as someone nobody detected changes the cells they cover
    and a cut changes nearly all. Cells no lighter than ``dark`` in both frames are left
    out: a video's black bars (4:3 in 16:9 fills a quarter of the cells) never change,
    and counted in they would hold the quantile at 0 through every cut."""
    cells_a, cells_b = a.reshape(-1, SCENE_CELL_VALUES), b.reshape(-1, SCENE_CELL_VALUES)
    distance = np.linalg.norm(cells_a[:, :3] - cells_b[:, :3], axis=1)
    lit = (cells_a[:, 0] > dark) | (cells_b[:, 0] > dark)
    free = lit & (cells_a[:, 3] < 0.5) & (cells_b[:, 3] < 0.5)
    judged = np.sort(distance[free] if int(free.sum()) >= min_cells else distance[lit])
    if not len(judged):
        return 0.0  # black in both: nothing to judge
    return float(judged[round(quantile * (len(judged) - 1))])  # its nearest rank (np.quantile: 20x the CPU)
