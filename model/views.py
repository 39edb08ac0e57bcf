"""Crop views: test-time augmentation for stills, where accuracy is worth more CPU.

By default a face is classified from its centred crop and that crop's mirror image (flip
averaging). With ``n`` views a face is classified from ``n`` pairs instead, averaged:
pair ``k`` crops the face shifted by ``SHIFT`` of its box towards one of eight compass
points and the opposite point mirrored, so every pair is centred on the face as a whole;
four pairs cover the eight points, eight cover each in both mirror images. On the
validation splits (the served model, through the detector; docs/benchmarks.md, "Crop
views") eight views scored 1-2 points above the centred pair, for eight times the
network's work (each place is cut once; its mirror image is flipped in the model's
input). Live frames stay on one pair: spread over a track's frames instead, the views
did not help the tracks clips.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import cache

import numpy as np

from .preprocessing import Box, crop_face

SHIFT = 0.06  # of the face box's width and height
MAX_VIEWS = 8  # each of the ring's points in both mirror images
# Compass points in turn, so that point k and point k + 4 are opposite.
_RING = ((-1, -1), (0, -1), (1, -1), (1, 0), (1, 1), (0, 1), (-1, 1), (-1, 0))


@dataclass(frozen=True, slots=True)
class View:
    """Where a crop is cut, as a share of the face box, and whether it is mirrored."""

    dx: float = 0.0
    dy: float = 0.0
    mirrored: bool = False


CENTRED = (View(), View(mirrored=True))


def view_set(n: int, per_pair: int = 2) -> tuple[View, ...]:
    """The crops a face is seen through with ``n`` views (1: the centred pair), the first
    ``per_pair`` of each pair (1 for a model without flip averaging)."""
    if not 1 <= n <= MAX_VIEWS:
        raise ValueError(f"views must be 1-{MAX_VIEWS}, not {n}")
    if n == 1:
        return CENTRED[:per_pair]
    out: list[View] = []
    for k in range(n):
        (ax, ay), (bx, by) = _RING[k], _RING[(k + 4) % len(_RING)]
        mirrored = k % 2 == 1
        out += (View(ax * SHIFT, ay * SHIFT, mirrored), View(bx * SHIFT, by * SHIFT, not mirrored))[:per_pair]
    return tuple(out)


@dataclass(frozen=True, slots=True)
class CutPlan:
    """A view set as crops to cut: each place once (``places``, unmirrored), and each
    view as (its place's index, mirrored). The same for every face seen through it."""

    places: tuple[View, ...]
    looks: tuple[tuple[int, bool], ...]


@cache
def cut_plan(n: int, per_pair: int = 2) -> CutPlan:
    """``view_set(n, per_pair)`` as a ``CutPlan``: a mirror image shares its place's crop."""
    places: dict[tuple[float, float], int] = {}
    looks = []
    for view in view_set(n, per_pair):
        index = places.setdefault((view.dx, view.dy), len(places))
        looks.append((index, view.mirrored))
    return CutPlan(tuple(View(dx, dy) for dx, dy in places), tuple(looks))


def crop_shifted(
    frame: np.ndarray,
    box: Box,
    margin: float,
    landmarks: Sequence[tuple[float, float]] | None,
    max_size: int,
    view: View,
) -> np.ndarray:
    """``crop_face`` of ``box`` moved by the view's shift (the eyes' angle is the same);
    mirroring is left to the model's input batch, where it costs nothing."""
    x, y, w, h = box
    if view.dx or view.dy:
        box = (x + round(view.dx * w), y + round(view.dy * h), w, h)
    return crop_face(frame, box, margin, landmarks, max_size)
