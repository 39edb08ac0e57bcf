"""The CPU stage of a micro-batch: decode, detect, classify. Runs off the event loop.

Shaped for accelerators: frames are decoded and searched for faces on a pool of CPU
threads (``--cpu-threads``, one detector each), then every face of the micro-batch goes
to the classifier in one call. With the classifier on a GPU the CPU stage is the limit,
so more threads and larger micro-batches (``--batch-size``) fill the accelerator.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np

from emotion_stream import metrics
from emotion_stream.images import ImageError, ImageLimits, decode_image
from emotion_stream.schema import DeadLetterKind, FrameKind, FrameMessage
from model import FaceAnalyzer, FaceResult
from model.analyzer import StageTimes
from model.detectors import Detection, FaceDetector

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
    """Decodes each frame once, detects on ``threads`` CPU threads, and classifies the
    whole batch's faces with one classifier call."""

    def __init__(self, analyzer: FaceAnalyzer, limits: ImageLimits, threads: int = 1) -> None:
        self.analyzer = analyzer
        self.limits = limits
        self.threads = threads if analyzer.new_detector is not None else 1
        self._pool = ThreadPoolExecutor(self.threads, thread_name_prefix="detect") if self.threads > 1 else None
        self._local = threading.local()
        # One detector per pool thread, made now: loading a model hides stderr for a moment
        # (runtime.quiet_stderr), which must not happen while other threads log.
        self._spare: queue.SimpleQueue[FaceDetector] = queue.SimpleQueue()
        if self._pool is not None and analyzer.new_detector is not None:
            for _ in range(self.threads):
                self._spare.put(analyzer.new_detector())
        self._queued = 0  # frames handed to the pool and not finished (a metric)
        self._lock = threading.Lock()

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True)

    def process(self, messages: list[FrameMessage]) -> tuple[list[FrameAnalysis], BatchTimes]:
        times = BatchTimes()
        out = [FrameAnalysis() for _ in messages]
        if self._pool is None:
            prepared = [self._decode_detect(m) for m in messages]
        else:
            self._track_queue(len(messages))
            prepared = list(self._pool.map(self._decode_detect, messages))
        frames: list[np.ndarray] = []
        found: list[list[Detection] | None] = []
        owners: list[int] = []
        for i, (frame, detections, error, decode_s, detect_s) in enumerate(prepared):
            times.decode += decode_s
            times.detect += detect_s
            if frame is None:
                out[i].error, out[i].error_kind = error, DeadLetterKind.UNDECODABLE_IMAGE
            else:
                frames.append(frame)
                found.append(detections)
                owners.append(i)
        if not frames:
            return out, times
        fallback = [messages[i].kind is FrameKind.STILL for i in owners]
        stage = StageTimes()
        try:
            if any(d is None for d in found):
                raise RuntimeError("detection failed on a frame")
            t0 = time.perf_counter()
            results = self.analyzer.classify(frames, found, fallback)  # type: ignore[arg-type]
            stage.classify = time.perf_counter() - t0
            metrics.CLASSIFY_BATCH_FACES.observe(sum(len(r) for r in results))
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
        times.detect += stage.detect
        times.classify = stage.classify
        return out, times

    def _decode_detect(self, message: FrameMessage) -> tuple[np.ndarray | None, list[Detection] | None, str, float, float]:
        """(frame, detections or None if detection raised, decode error, decode s, detect s)."""
        t0 = time.perf_counter()
        try:
            try:
                frame = decode_image(message.image, self.limits)
            except ImageError as exc:
                return None, None, f"undecodable image: {exc}", time.perf_counter() - t0, 0.0
            t1 = time.perf_counter()
            try:
                detections = self._detector().detect_batch([frame], [message.kind is FrameKind.STILL])[0]
            except Exception:  # process() retries frame by frame, logs, and dead-letters what fails
                detections = None
            return frame, detections, "", t1 - t0, time.perf_counter() - t1
        finally:
            if self._pool is not None:
                self._track_queue(-1)

    def _detector(self) -> FaceDetector:
        """This thread's detector (the analyzer's own when there is no pool)."""
        if self._pool is None or self.analyzer.new_detector is None:
            return self.analyzer.detector
        detector = getattr(self._local, "detector", None)
        if detector is None:
            detector = self._local.detector = self._spare.get_nowait()
        return detector

    def _track_queue(self, delta: int) -> None:
        with self._lock:
            self._queued += delta
            metrics.CPU_STAGE_QUEUE.set(self._queued)
