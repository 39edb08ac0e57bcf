"""Face detectors: BlazeFace (default, ``blazeface.py``), OpenCV Haar cascade and MTCNN.

Haar and MTCNN detect on a copy of the frame downscaled to ``max_side`` pixels and map the boxes
back to full resolution: detection cost grows with pixel count, and faces that matter
for emotion are large enough to survive the downscale.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

import cv2
import numpy as np

from emotion_stream.settings import DEFAULT_DETECT_SIZE, DETECTORS

from .preprocessing import Box

log = logging.getLogger(__name__)

Landmarks = tuple[tuple[float, float], ...]


@dataclass(frozen=True, slots=True)
class Detection:
    box: Box  # x, y, width, height in full-resolution pixels
    score: float  # detector confidence in [0, 1]
    # Frame pixels, BlazeFace order: eye, eye, nose tip, mouth, ear, ear; None if the
    # detector gives none. The two eyes level the crop (preprocessing.crop_face).
    landmarks: Landmarks | None = None

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


def _downscale(frame: np.ndarray, max_side: int) -> tuple[np.ndarray, float]:
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


class OpenCVDetector:
    """Haar cascade. ``haarcascade_frontalface_alt2`` (scale step 1.15, 3 neighbours) is the
    default: on the dev photos it found more faces than the original solution's
    ``frontalface_default`` (162 vs 157 of 219 at 192 px) for less CPU (12.5 vs 13.6 ms),
    with the same accuracy; both are shipped with OpenCV."""

    name = "opencv"

    def __init__(
        self,
        max_side: int = DEFAULT_DETECT_SIZE["opencv"],
        scale_factor: float = 1.15,
        min_neighbors: int = 3,
        min_face_fraction: float = 0.1,
        cascade: str = "haarcascade_frontalface_alt2.xml",
    ) -> None:
        path = cv2.data.haarcascades + cascade
        self._cascade = cv2.CascadeClassifier(path)
        if self._cascade.empty():
            raise RuntimeError(f"cannot load Haar cascade {path}")
        self.max_side = max_side
        self.scale_factor = scale_factor
        self.min_neighbors = min_neighbors
        self.min_face_fraction = min_face_fraction

    def detect(self, frame: np.ndarray) -> list[Detection]:
        small, factor = _downscale(frame, self.max_side)
        grey = cv2.cvtColor(small, cv2.COLOR_BGR2GRAY) if small.ndim == 3 else small
        min_side = max(20, int(min(grey.shape[:2]) * self.min_face_fraction))
        boxes, _, weights = self._cascade.detectMultiScale3(
            grey,
            scaleFactor=self.scale_factor,
            minNeighbors=self.min_neighbors,
            minSize=(min_side, min_side),
            outputRejectLevels=True,
        )
        found = [
            # Level weights are unbounded margins; squash to (0, 1) for a comparable score.
            Detection(to_full_box(b, factor, frame.shape), 1.0 / (1.0 + math.exp(-float(w))))
            for b, w in zip(boxes, np.ravel(weights))
        ]
        return largest_first(found)

    def detect_batch(
        self, frames: Sequence[np.ndarray], stills: Sequence[bool] | None = None
    ) -> list[list[Detection]]:
        return [self.detect(frame) for frame in frames]


class MTCNNDetector:
    """MTCNN from the `mtcnn` package (weights ship in the wheel).

    Calling ``MTCNN().detect_faces`` per image costs ~110 ms here, mostly per-call
    overhead. We send same-sized frames through the networks as one batch, and shrink
    each frame so the smallest face we look for is MTCNN's native 20 px; that prunes the
    image pyramid (and sidesteps mtcnn 1.0 failing when ``min_face_size`` is raised).
    """

    name = "mtcnn"
    _NATIVE_MIN_FACE = 20

    def __init__(
        self, max_side: int = DEFAULT_DETECT_SIZE["mtcnn"], min_confidence: float = 0.9,
        min_face_fraction: float = 0.1,
    ) -> None:
        from mtcnn import MTCNN

        from .runtime import has_gpu

        self._mtcnn = MTCNN(device="GPU:0" if has_gpu() else "CPU:0")
        self.max_side = max_side
        self.min_confidence = min_confidence
        self.min_face_fraction = min_face_fraction

    def detect(self, frame: np.ndarray) -> list[Detection]:
        return self.detect_batch([frame])[0]

    def _shrink(self, frame: np.ndarray) -> tuple[np.ndarray, float]:
        h, w = frame.shape[:2]
        min_face = self.min_face_fraction * min(h, w)
        factor = min(1.0, self.max_side / max(h, w), self._NATIVE_MIN_FACE / max(min_face, 1.0))
        if frame.ndim == 2:
            frame = cv2.cvtColor(frame, cv2.COLOR_GRAY2BGR)
        if factor < 1.0:
            size = (max(1, round(w * factor)), max(1, round(h * factor)))
            frame = cv2.resize(frame, size, interpolation=cv2.INTER_AREA)
        return cv2.cvtColor(frame, cv2.COLOR_BGR2RGB), factor

    def detect_batch(
        self, frames: Sequence[np.ndarray], stills: Sequence[bool] | None = None
    ) -> list[list[Detection]]:
        results: list[list[Detection]] = [[] for _ in frames]
        # MTCNN pads a batch to its largest image: batch frames of one shape together.
        groups: dict[tuple[int, ...], list[int]] = {}
        for i, frame in enumerate(frames):
            groups.setdefault(frame.shape, []).append(i)
        for indices in groups.values():
            shrunk = [self._shrink(frames[i]) for i in indices]
            found = self._mtcnn.detect_faces([img for img, _ in shrunk])
            for i, (_, factor), faces in zip(indices, shrunk, found):
                results[i] = largest_first(
                    [
                        Detection(to_full_box(f["box"], factor, frames[i].shape), float(f["confidence"]))
                        for f in faces
                        if f["confidence"] >= self.min_confidence
                    ]
                )
        return results


def create_detector(name: str, max_side: int | None = None, weak_score: float = 0.0) -> FaceDetector:
    """A detector by name. ``max_side`` (unset: ``DEFAULT_DETECT_SIZE``) is the longest
    side frames are analysed at: BlazeFace tiles frames above its 192 px input (see
    ``BlazeFaceDetector``); Haar and MTCNN shrink frames to it and map boxes back. For
    Haar, 192 px found about the same faces as 480 px on the 350 px dev photos (157 vs
    160 of 219) for half the CPU, but misses faces under ~10 % of the frame's shorter
    side (about 64 px in 640x480). ``weak_score``: BlazeFace also reports detections down
    to this score apart (``detect_batch_split``), for tracking; the others have none."""
    if name not in DETECTORS:
        raise ValueError(f"unknown detector {name!r}; choose one of {', '.join(DETECTORS)}")
    max_side = max_side or DEFAULT_DETECT_SIZE[name]
    if name == "blazeface":
        from .blazeface import BlazeFaceDetector

        return BlazeFaceDetector(detect_max_side=max_side, weak_score=weak_score)
    if name == "opencv":
        return OpenCVDetector(max_side=max_side)
    return MTCNNDetector(max_side=max_side)
