"""Every detector at a few sizes, side by side on the same photos and frame: CPU ms and faces found."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from .config import BenchConfig
from .measure import Figures

DETECT_SIZES = (192, 320, 640)


class _Boxed(Protocol):
    @property
    def box(self) -> tuple[int, int, int, int]: ...


# frames, as stills? -> the boxes found in each frame
Detect = Callable[[Sequence[np.ndarray], bool], Sequence[Sequence[_Boxed]]]


def _matched(found: Sequence[_Boxed], planted: list[tuple[int, int, int, int]]) -> int:
    """Planted faces with a detection centred within half a face width of theirs."""
    centers = [(d.box[0] + d.box[2] / 2, d.box[1] + d.box[3] / 2) for d in found]
    return sum(
        any(abs(cx - (x + w / 2)) < w / 2 and abs(cy - (y + h / 2)) < h / 2 for cx, cy in centers)
        for x, y, w, h in planted
    )


def _time_detector(detect: Detect, photos: list[np.ndarray], frame: np.ndarray) -> Figures:
    """CPU ms per photo (as stills, 16 a call) and per live frame, and what was found."""
    detect(photos[:2], True)  # warm-up
    start = time.process_time()
    with_face = sum(1 for i in range(0, len(photos), 16) for found in detect(photos[i : i + 16], True) if found)
    photo_ms = 1000 * (time.process_time() - start) / len(photos)
    repeats = 5
    start = time.process_time()
    for _ in range(repeats):
        [frame_faces] = detect([frame], False)
    frame_ms = 1000 * (time.process_time() - start) / repeats
    return {"photo_cpu_ms": photo_ms, "photos_with_face": with_face, "frame_cpu_ms": frame_ms,
            "frame_faces": frame_faces}


def run_detectors(config: BenchConfig) -> Figures:
    """Every detector at each size in DETECT_SIZES and its default, in one run, on the same inputs: the
    bench photos (as batch mode sends them: stills) and a generated 640x480 frame with
    eight faces 40-60 px wide. The original solution's Haar call is the first row."""
    import cv2

    from emotion_stream.images import read_image_file
    from emotion_stream.settings import DEFAULT_DETECT_SIZE, DETECTORS
    from ingest.samples import small_faces_frame
    from model import Detection, FaceDetector, create_detector
    from model.haar import cascade_path

    photos = [read_image_file(p) for p in config.images]
    frame, planted = small_faces_frame()
    cascade = cv2.CascadeClassifier(cascade_path("haarcascade_frontalface_default.xml"))

    def original(frames: Sequence[np.ndarray], still: bool) -> list[list[_Box]]:
        grey = (cv2.cvtColor(f, cv2.COLOR_BGR2GRAY) for f in frames)
        return [[_Box((int(x), int(y), int(w), int(h))) for x, y, w, h in cascade.detectMultiScale(g, 1.3, 5)]
                for g in grey]

    rows: list[Figures] = [{"detector": "original haar", "size": "full", **_time_detector(original, photos, frame)}]
    for name in DETECTORS:
        for size in sorted({*DETECT_SIZES, DEFAULT_DETECT_SIZE[name]}):
            detector = create_detector(name, size)

            def detect(frames: Sequence[np.ndarray], still: bool, d: FaceDetector = detector) -> list[list[Detection]]:
                return d.detect_batch(frames, [still] * len(frames))

            row = _time_detector(detect, photos, frame)
            rows.append({"detector": name, "size": size, "default": size == DEFAULT_DETECT_SIZE[name], **row})
    for row in rows:
        row["frame_faces"] = _matched(row["frame_faces"], planted)
    return {"photos": len(photos), "planted_faces": len(planted), "rows": rows}


@dataclass(frozen=True)
class _Box:
    box: tuple[int, int, int, int]
