"""FaceAnalyzer: frames in, per-face emotions out - detection plus one batched classify."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from emotion_stream.labels import EMOTIONS
from emotion_stream.settings import Settings

from .appearance import face_descriptor
from .detection import Detection, FaceDetector, Landmarks
from .detectors import create_detector
from .emotion_model import EmotionModel
from .preprocessing import Box
from .views import CutPlan, crop_shifted, cut_plan


@dataclass(frozen=True, slots=True)
class FaceResult:
    box: Box
    emotion: str
    confidence: float
    probabilities: np.ndarray  # (9,) in EMOTIONS order
    detector_score: float
    whole_image: bool = False  # no face was found; the whole image was classified
    landmarks: Landmarks | None = None  # frame pixels, when the detector gives them
    weak: bool = False  # a detection under the face threshold (tracking decides its fate)
    descriptor: np.ndarray | None = None  # what the face looks like (model.appearance), when asked
    looked: bool = False  # a weak detection a closer look found a face in (Detection.looked)

    def probabilities_dict(self) -> dict[str, float]:
        return {label: round(float(p), 5) for label, p in zip(EMOTIONS, self.probabilities)}


@dataclass(slots=True)
class StageTimes:
    """CPU seconds spent per stage in one analyze_batch call."""

    detect: float = 0.0
    classify: float = 0.0


class FaceAnalyzer:
    """Detects faces in BGR frames and classifies all of them in one model call.

    With ``whole_image_fallback`` a frame without a detected face is classified as a
    whole (Kaggle test images are often tight crops); the result says so.
    """

    def __init__(self, model: EmotionModel, detector: FaceDetector,
                 new_detector: Callable[[], FaceDetector] | None = None) -> None:
        self.model = model
        self.detector = detector
        # More detectors like this one, for detection on several threads (a detector is
        # not thread-safe; the model is).
        self.new_detector = new_detector
        self._siblings: list[FaceAnalyzer] = []

    def siblings(self, n: int) -> list[FaceAnalyzer]:
        """``n`` analyzers for other threads: this one's model, detectors of their own
        (made once, then reused: a detector's first batches of a size cost extra)."""
        if self.new_detector is None:
            raise RuntimeError("this analyzer cannot make more detectors")
        while len(self._siblings) < n:
            self._siblings.append(FaceAnalyzer(self.model, self.new_detector(), self.new_detector))
        return self._siblings[:n]

    @classmethod
    def from_settings(cls, settings: Settings, model: EmotionModel | None = None) -> FaceAnalyzer:
        """The detector the settings name, and their model unless one is given to share
        (one model serves several in-process workers; each needs its own detector)."""
        if model is None:
            model = EmotionModel.from_settings(settings)

        def new_detector() -> FaceDetector:
            if not settings.tracking:
                return create_detector(settings.detector, settings.detect_max_side,
                                       still_search=settings.still_detect_size)
            return create_detector(settings.detector, settings.detect_max_side, settings.track_weak_score,
                                   settings.track_second_look, settings.still_detect_size)

        return cls(model, new_detector(), new_detector)

    def analyze(self, frame: np.ndarray, *, whole_image_fallback: bool = False, views: int = 1) -> list[FaceResult]:
        return self.analyze_batch([frame], whole_image_fallback=[whole_image_fallback], views=views)[0]

    def analyze_batch(
        self,
        frames: Sequence[np.ndarray],
        *,
        whole_image_fallback: Sequence[bool] | bool = False,
        times: StageTimes | None = None,
        views: int = 1,
    ) -> list[list[FaceResult]]:
        """Every face of every frame, each classified through ``views`` crop views
        (``model.views``: 1 is the centred crop and its mirror)."""
        if isinstance(whole_image_fallback, bool):
            whole_image_fallback = [whole_image_fallback] * len(frames)
        t0 = time.perf_counter()
        detections = self.detector.detect_batch(frames, whole_image_fallback)
        t1 = time.perf_counter()
        results = self.classify(frames, detections, whole_image_fallback, views=[views] * len(frames))
        if times is not None:
            times.detect += t1 - t0
            times.classify += time.perf_counter() - t1
        return results

    def classify(
        self,
        frames: Sequence[np.ndarray],
        detections: Sequence[Sequence[Detection]],
        whole_image_fallback: Sequence[bool],
        *,
        weak: Sequence[Sequence[Detection]] | None = None,
        describe: Sequence[bool] | None = None,
        views: Sequence[int] | None = None,
    ) -> list[list[FaceResult]]:
        """Crop every detected face of every frame and classify them in one call. Each
        frame's ``weak`` detections are classified too and come after its faces (marked
        ``weak``); frames with ``describe`` set get appearance descriptors for tracking.
        A frame's ``views`` (default 1) is how many crop views its faces are classified
        through (``model.views``); a whole image is classified with its mirror image only."""
        crops: list[np.ndarray] = []
        owners: list[tuple[int, Detection, bool, bool]] = []  # frame, detection, whole image, weak
        margin = self.model.face_margin
        # Crops at twice the model's input keep detail for its own area resize.
        crop_size = 2 * max(self.model.metadata.input_height, self.model.metadata.input_width)
        per_pair = 2 if self.model.metadata.flip_average else 1
        looks: list[list[tuple[int, bool]]] = []  # a face's (crop, mirrored) views

        def look(frame: np.ndarray, det: Detection | None, plan: CutPlan) -> None:
            """Cut each of the plan's places once (``det`` None: the whole frame) and note
            the face's views of them."""
            first = len(crops)
            crops.extend(frame if det is None else crop_shifted(frame, det.box, margin, det.landmarks, crop_size, place)
                         for place in plan.places)
            looks.append([(first + index, mirrored) for index, mirrored in plan.looks])

        for i, (frame, found) in enumerate(zip(frames, detections)):
            plan = cut_plan(views[i] if views is not None else 1, per_pair)
            if not found and whole_image_fallback[i]:
                h, w = frame.shape[:2]
                look(frame, None, cut_plan(1, per_pair))
                owners.append((i, Detection((0, 0, w, h), 0.0), True, False))
            weak_here = weak[i] if weak is not None else ()
            for det, is_weak in [*((d, False) for d in found), *((d, True) for d in weak_here)]:
                look(frame, det, plan)
                owners.append((i, det, False, is_weak))
        probabilities = self.model.predict_views(crops, looks)
        results: list[list[FaceResult]] = [[] for _ in frames]
        for (i, det, whole, is_weak), probs, label in zip(owners, probabilities, self.model.decide(probabilities)):
            described = describe and describe[i] and not whole
            descriptor = face_descriptor(frames[i], det.box, det.landmarks) if described else None
            results[i].append(FaceResult(det.box, EMOTIONS[int(label)], float(probs.max()), probs, det.score,
                                         whole, det.landmarks, is_weak, descriptor, det.looked))
        return results
