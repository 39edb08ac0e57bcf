"""MTCNN from the `mtcnn` package: TensorFlow's, imported only when this detector is chosen."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import cv2
import numpy as np

from emotion_stream.settings import DEFAULT_DETECT_SIZE

from .detection import Detection, Landmarks, largest_first, to_full_box
from .errors import ModelError


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
        from .runtime import has_gpu, srtp_before_tensorflow

        srtp_before_tensorflow()  # mtcnn imports TensorFlow itself
        try:
            from mtcnn import MTCNN
        except ImportError:
            raise ModelError("the mtcnn detector runs on TensorFlow: pip install 'emotion-stream[train]'") from None

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
                        Detection(to_full_box(f["box"], factor, frames[i].shape), float(f["confidence"]),
                                  _landmarks(f.get("keypoints"), factor))
                        for f in faces
                        if f["confidence"] >= self.min_confidence
                    ]
                )
        return results


def _landmarks(keypoints: Mapping[str, Sequence[float]] | None, factor: float) -> Landmarks | None:
    """MTCNN's keypoints in frame pixels, in BlazeFace's order as far as it has them:
    the eyes, the nose tip, the mouth (the middle of its corners); no ears."""
    if not keypoints:
        return None
    try:
        points = [keypoints[k] for k in ("left_eye", "right_eye", "nose")]
        mouth = [(a + b) / 2 for a, b in zip(keypoints["mouth_left"], keypoints["mouth_right"])]
    except KeyError:
        return None
    return tuple((float(x) / factor, float(y) / factor) for x, y in [*points, mouth])
