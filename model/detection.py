"""What every face detector shares: the ``Detection`` record, the ``FaceDetector``
protocol and the box helpers. The detectors (``blazeface.py``, ``haar.py``,
``mtcnn_detector.py``) depend on this module; ``detectors.py`` is their registry.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

import cv2
import numpy as np

from .preprocessing import Box

Landmarks = tuple[tuple[float, float], ...]


@dataclass(frozen=True, slots=True)
class Detection:
    box: Box  # x, y, width, height in full-resolution pixels
    score: float  # detector confidence in [0, 1]
    # Frame pixels, BlazeFace order: eye, eye, nose tip, mouth, ear, ear; None if the
    # detector gives none. The two eyes level the crop (preprocessing.crop_face).
    landmarks: Landmarks | None = None
    # A weak detection that a closer look found a face in (BlazeFace's second look): a
    # tracker may start a track of it where no other track is.
    looked: bool = False

    @property
    def area(self) -> int:
        return self.box[2] * self.box[3]


class FaceDetector(Protocol):
    name: str

    def detect(self, frame: np.ndarray) -> list[Detection]:
        """Every face in one BGR frame, largest first."""
        ...

    def detect_batch(
        self, frames: Sequence[np.ndarray], stills: Sequence[bool] | None = None
    ) -> list[list[Detection]]:
        """Every face in each BGR frame, largest first. ``stills`` marks still photos,
        often tight face crops, for detectors that need context added around them."""
        ...


def detect_with_weak(detector: FaceDetector, frames: Sequence[np.ndarray], stills: Sequence[bool]
                     ) -> tuple[list[list[Detection] | None], list[list[Detection]]]:
    """(faces, weak detections) of each frame, for tracking: weak ones from detectors
    that report them (BlazeFace's ``detect_batch_split``), none from the others."""
    split = getattr(detector, "detect_batch_split", None)
    if split is None:
        return list(detector.detect_batch(frames, stills)), [[] for _ in frames]
    pairs = split(frames, stills)
    return [faces for faces, _ in pairs], [weak for _, weak in pairs]


def downscale(frame: np.ndarray, max_side: int) -> tuple[np.ndarray, float]:
    """Frame resized so its longer side is at most ``max_side``; returns (image, factor)."""
    longest = max(frame.shape[:2])
    if longest <= max_side:
        return frame, 1.0
    factor = max_side / longest
    size = (max(1, round(frame.shape[1] * factor)), max(1, round(frame.shape[0] * factor)))
    return cv2.resize(frame, size, interpolation=cv2.INTER_AREA), factor


def to_full_box(box: Sequence[float], factor: float, shape: tuple[int, ...]) -> Box:
    x, y, w, h = (v / factor for v in box)
    x0, y0 = max(0, int(round(x))), max(0, int(round(y)))
    x1, y1 = min(shape[1], int(round(x + w))), min(shape[0], int(round(y + h)))
    return x0, y0, max(1, x1 - x0), max(1, y1 - y0)


def largest_first(found: list[Detection]) -> list[Detection]:
    return sorted(found, key=lambda d: d.area, reverse=True)
