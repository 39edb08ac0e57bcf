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
from model.appearance import scene_signature
from model.detection import Detection, FaceDetector, detect_with_weak

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
    weak: list[FaceResult] = field(default_factory=list)  # below the face threshold, classified (tracking only)
    scene: np.ndarray | None = None  # the frame's scene signature (tracking only)
    error: str = ""  # set when the frame cannot be processed (dead-letter reason)
    error_kind: DeadLetterKind | None = None  # set with error


@dataclass(slots=True)
class Prepared:
    """One frame after the CPU pool: decoded and searched for faces, or why not."""

    frame: np.ndarray | None
    detections: list[Detection] | None  # None: the detector raised (retried frame by frame)
    error: str  # decode failure (dead-letter reason)
    decode_s: float
    detect_s: float = 0.0
    weak: list[Detection] = field(default_factory=list)
    scene: np.ndarray | None = None


class FrameProcessor:
    """Decodes each frame once, detects on ``threads`` CPU threads, and classifies the
    whole batch's faces with one classifier call. With ``describe`` (tracking on), live
    frames also get what tracking needs: weak detections classified, descriptors of what
    every face looks like, and the frame's scene signature."""

    def __init__(self, analyzer: FaceAnalyzer, limits: ImageLimits, threads: int = 1, describe: bool = False,
                 still_views: int = 1) -> None:
        self.analyzer = analyzer
        self.limits = limits
        self.describe = describe
        self.still_views = still_views  # crop views a face of a still (model.views); live frames take 1
        self.threads = threads if analyzer.new_detector is not None else 1
        self._pool = ThreadPoolExecutor(self.threads, thread_name_prefix="detect") if self.threads > 1 else None
        self._local = threading.local()
        # One detector per pool thread, the analyzer's siblings' (as the direct path's),
        # made now: loading a model hides stderr for a moment (runtime.quiet_stderr),
        # which must not happen while other threads log.
        self._spare: queue.SimpleQueue[FaceDetector] = queue.SimpleQueue()
        if self._pool is not None:
            for sibling in analyzer.siblings(self.threads):
                self._spare.put(sibling.detector)
        self._queued = 0  # frames handed to the pool and not finished (a metric)
        self._lock = threading.Lock()

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True)

    def process(self, messages: list[FrameMessage]) -> tuple[list[FrameAnalysis], BatchTimes]:
        times = BatchTimes()
        out = [FrameAnalysis() for _ in messages]
        if self._pool is None:
            prepared = self._decode_detect(messages)
        else:
            # One chunk per thread: detectors that batch frames (MTCNN) keep batching.
            self._track_queue(len(messages))
            step = -(-len(messages) // self.threads)
            chunks = [messages[i : i + step] for i in range(0, len(messages), step)]
            prepared = [item for chunk in self._pool.map(self._decode_detect, chunks) for item in chunk]
        frames: list[np.ndarray] = []
        found: list[list[Detection] | None] = []
        weak: list[list[Detection]] = []
        owners: list[int] = []
        for i, item in enumerate(prepared):
            times.decode += item.decode_s
            times.detect += item.detect_s
            if item.frame is None:
                out[i].error, out[i].error_kind = item.error, DeadLetterKind.UNDECODABLE_IMAGE
            else:
                out[i].scene = item.scene
                frames.append(item.frame)
                found.append(item.detections)
                weak.append(item.weak)
                owners.append(i)
        if not frames:
            return out, times
        fallback = [messages[i].kind is FrameKind.STILL for i in owners]
        describe = [self.describe and messages[i].kind.is_video for i in owners]
        views = [self.still_views if still else 1 for still in fallback]
        stage = StageTimes()
        results: list[list[FaceResult] | Exception]
        try:
            detections = [d for d in found if d is not None]
            if len(detections) < len(found):
                raise RuntimeError("detection failed on a frame")
            t0 = time.perf_counter()
            classified = self.analyzer.classify(frames, detections, fallback, weak=weak, describe=describe,
                                                  views=views)
            stage.classify = time.perf_counter() - t0
            metrics.CLASSIFY_BATCH_FACES.observe(sum(len(r) for r in classified))
            results = list(classified)
        except Exception:
            # One pathological frame must not sink the batch: retry one by one and
            # blame only the frames that fail on their own.
            log.exception("batch analysis failed; retrying frame by frame")
            results = []
            for frame, still, seen in zip(frames, fallback, views):
                try:
                    results.append(self.analyzer.analyze_batch([frame], whole_image_fallback=[still], times=stage,
                                                               views=seen)[0])
                except Exception as exc:  # reported per frame
                    results.append(exc)
        for i, faces in zip(owners, results):
            if isinstance(faces, Exception):
                out[i].error = f"analysis failed: {type(faces).__name__}: {faces}"
                out[i].error_kind = DeadLetterKind.ANALYSIS_FAILED
            else:
                out[i].faces = [face for face in faces if not face.weak]
                out[i].weak = [face for face in faces if face.weak]
        times.detect += stage.detect
        times.classify = stage.classify
        return out, times

    def _decode_detect(self, messages: list[FrameMessage]) -> list[Prepared]:
        """Decode each frame, then find faces in all of them with one detector call."""
        out: list[Prepared] = []
        try:
            frames, stills, decoded = [], [], []
            for i, message in enumerate(messages):
                t0 = time.perf_counter()
                try:
                    frames.append(decode_image(message.image, self.limits))
                    stills.append(message.kind is FrameKind.STILL)
                    decoded.append(i)
                    out.append(Prepared(None, None, "", time.perf_counter() - t0))
                except ImageError as exc:
                    out.append(Prepared(None, None, f"undecodable image: {exc}", time.perf_counter() - t0))
            if not frames:
                return out
            t1 = time.perf_counter()
            try:
                found, weak = detect_with_weak(self._detector(), frames, stills)
            except Exception:  # process() retries frame by frame, logs, and dead-letters what fails
                found, weak = [None] * len(frames), [[] for _ in frames]
            share = (time.perf_counter() - t1) / len(frames)
            for i, frame, still, detections, weak_ones in zip(decoded, frames, stills, found, weak):
                scene, t2 = None, time.perf_counter()
                if self.describe and not still and detections is not None:  # marks where faces are
                    scene = scene_signature(frame, [d.box for d in (*detections, *weak_ones)])
                decode_s = out[i].decode_s + time.perf_counter() - t2  # counted with decoding
                out[i] = Prepared(frame, detections, "", decode_s, share, weak_ones, scene)
            return out
        finally:
            if self._pool is not None:
                self._track_queue(-len(messages))

    def _detector(self) -> FaceDetector:
        """This thread's detector (the analyzer's own when there is no pool)."""
        if self._pool is None:
            return self.analyzer.detector
        detector = getattr(self._local, "detector", None)
        if detector is None:
            detector = self._local.detector = self._spare.get_nowait()
        return detector

    def _track_queue(self, delta: int) -> None:
        with self._lock:
            self._queued += delta
            metrics.CPU_STAGE_QUEUE.set(self._queued)
