"""The CPU stage of a micro-batch: decode, detect, classify. Runs off the event loop."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field

from emotion_stream.images import ImageError, ImageLimits, decode_image
from emotion_stream.schema import DeadLetterKind, FrameKind, FrameMessage
from model import FaceAnalyzer, FaceResult
from model.analyzer import StageTimes

log = logging.getLogger(__name__)


@dataclass(slots=True)
class BatchTimes:
    """Seconds spent in each CPU stage for a whole batch."""

    decode: float = 0.0
    detect: float = 0.0
    classify: float = 0.0


@dataclass(slots=True)
class FrameAnalysis:
    faces: list[FaceResult] = field(default_factory=list)
    error: str = ""  # set when the frame cannot be processed (dead-letter reason)
    error_kind: DeadLetterKind | None = None  # set with error


class FrameProcessor:
    """Decodes each frame once and analyses the batch with one classifier call."""

    def __init__(self, analyzer: FaceAnalyzer, limits: ImageLimits) -> None:
        self.analyzer = analyzer
        self.limits = limits

    def process(self, messages: list[FrameMessage]) -> tuple[list[FrameAnalysis], BatchTimes]:
        times = BatchTimes()
        out = [FrameAnalysis() for _ in messages]
        frames, owners = [], []
        t0 = time.perf_counter()
        for i, message in enumerate(messages):
            try:
                frames.append(decode_image(message.image, self.limits))
                owners.append(i)
            except ImageError as exc:
                out[i].error, out[i].error_kind = f"undecodable image: {exc}", DeadLetterKind.UNDECODABLE_IMAGE
        times.decode = time.perf_counter() - t0
        if not frames:
            return out, times
        fallback = [messages[i].kind is FrameKind.STILL for i in owners]
        stage = StageTimes()
        try:
            results = self.analyzer.analyze_batch(frames, whole_image_fallback=fallback, times=stage)
        except Exception:
            # One pathological frame must not sink the batch: retry one by one and
            # blame only the frames that fail on their own.
            log.exception("batch analysis failed; retrying frame by frame")
            results = []
            for frame, still in zip(frames, fallback):
                try:
                    results.append(self.analyzer.analyze_batch([frame], whole_image_fallback=[still], times=stage)[0])
                except Exception as exc:  # reported per frame
                    results.append(exc)  # type: ignore[arg-type]
        for i, faces in zip(owners, results):
            if isinstance(faces, Exception):
                out[i].error = f"analysis failed: {type(faces).__name__}: {faces}"
                out[i].error_kind = DeadLetterKind.ANALYSIS_FAILED
            else:
                out[i].faces = faces
        times.detect, times.classify = stage.detect, stage.classify
        return out, times
