"""Video sources: webcam index, video file, or rtsp://, http(s):// URL (OpenCV + FFmpeg).

``VideoSource.read`` blocks, so callers run it in a thread. A lost live source is
reopened with backoff; every reopen is counted in ``source_reconnects_total``.
"""

from __future__ import annotations

import logging
import math
import os
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

log = logging.getLogger(__name__)

OPEN_TIMEOUT_MS = 5000
READ_TIMEOUT_MS = 5000


class SourceError(RuntimeError):
    """The source cannot be used at all (e.g. a file path that does not exist)."""


SAMPLE = "sample"  # synthetic camera: moving portraits generated in-process


@dataclass(frozen=True)
class SourceSpec:
    target: int | str  # webcam index, path/URL, or "sample" / "sample:N" (N faces)

    @classmethod
    def parse(cls, text: str) -> SourceSpec:
        return cls(int(text)) if text.isdigit() else cls(text)

    @property
    def is_sample(self) -> bool:
        return isinstance(self.target, str) and (self.target == SAMPLE or self.target.startswith(SAMPLE + ":"))

    @property
    def is_file(self) -> bool:
        return isinstance(self.target, str) and "://" not in self.target and not self.is_sample

    @property
    def is_http(self) -> bool:
        return isinstance(self.target, str) and self.target.lower().startswith(("http://", "https://"))

    def describe(self) -> str:
        if isinstance(self.target, int):
            return f"webcam {self.target}"
        from emotion_stream.logs import redact

        return redact(self.target)  # RTSP URLs often carry credentials


class SampleSource:
    """Synthetic frames of moving real portraits (see ingest.samples): a camera that
    needs no device, for demos, compose and load tests."""

    native_fps = 15.0

    def __init__(self, spec: SourceSpec) -> None:
        from .samples import sample_frame

        self._frame = sample_frame
        _, _, count = str(spec.target).partition(":")
        self.faces = int(count) if count.isdigit() and int(count) > 0 else 1
        self._start = time.monotonic()

    def open(self) -> bool:
        return True

    def read(self) -> np.ndarray:
        return self._frame(time.monotonic() - self._start, faces=self.faces)

    def rewind(self) -> bool:
        return True

    def position_s(self) -> float | None:
        return None  # drawn for any moment: paced by the reader

    def close(self) -> None:
        pass


def file_problem(spec: SourceSpec) -> str | None:
    """Why a file source cannot be read at all (None: it is a file, or not a file source)."""
    path = Path(str(spec.target))
    if not spec.is_file or path.is_file():
        return None
    return "a folder, not a video file" if path.is_dir() else "no such video file"


def open_source(spec: SourceSpec) -> VideoSource | SampleSource:
    return SampleSource(spec) if spec.is_sample else VideoSource(spec)


def _opencv_warnings_at_debug() -> None:
    """OpenCV's C++ core writes its warnings straight to stderr ("can't open camera by
    index", beside our own line saying so): shown at DEBUG only. A user's own
    OPENCV_LOG_LEVEL wins."""
    if "OPENCV_LOG_LEVEL" not in os.environ:
        levels = cv2.utils.logging
        levels.setLogLevel(levels.LOG_LEVEL_WARNING if log.isEnabledFor(logging.DEBUG) else levels.LOG_LEVEL_ERROR)


class VideoSource:
    """One OpenCV capture; reopens on demand. Not thread-safe: one reader at a time."""

    def __init__(self, spec: SourceSpec) -> None:
        self.spec = spec
        problem = file_problem(spec)
        if problem:
            raise SourceError(f"{spec.target}: {problem}")
        self._capture: cv2.VideoCapture | None = None
        self._lock = threading.Lock()
        self.native_fps: float = 0.0

    def open(self) -> bool:
        """(Re)open the capture; False when the source is not available now."""
        self.close()
        _opencv_warnings_at_debug()
        target = self.spec.target
        if isinstance(target, int):
            capture = cv2.VideoCapture(target)
        else:
            # Timeouts keep a vanished RTSP server from blocking a read forever.
            params = [cv2.CAP_PROP_OPEN_TIMEOUT_MSEC, OPEN_TIMEOUT_MS, cv2.CAP_PROP_READ_TIMEOUT_MSEC, READ_TIMEOUT_MS]
            capture = cv2.VideoCapture(target, cv2.CAP_FFMPEG, params)
        if not capture.isOpened():
            capture.release()
            return False
        fps = capture.get(cv2.CAP_PROP_FPS)
        self.native_fps = fps if 0 < fps < 240 else 0.0
        with self._lock:
            self._capture = capture
        return True

    def read(self) -> np.ndarray | None:
        """The next frame, or None (end of file, lost stream, or a garbage frame)."""
        with self._lock:
            capture = self._capture
        if capture is None:
            return None
        ok, frame = capture.read()
        if not ok or frame is None:
            return None
        return frame

    def rewind(self) -> bool:
        with self._lock:
            capture = self._capture
        return bool(capture is not None and capture.set(cv2.CAP_PROP_POS_FRAMES, 0))

    def position_s(self) -> float | None:
        """The last frame read's timestamp in its file, seconds; None without one. (Not
        while a read runs: the caller awaits each read before asking.)"""
        with self._lock:
            capture = self._capture
        if capture is None or not self.spec.is_file:
            return None
        ms = capture.get(cv2.CAP_PROP_POS_MSEC)
        return ms / 1000 if math.isfinite(ms) and ms >= 0 else None

    def close(self) -> None:
        with self._lock:
            capture, self._capture = self._capture, None
        if capture is not None:
            capture.release()


def valid_frame(frame: object) -> bool:
    """A usable BGR frame: 8-bit, 2-D or 3-channel, non-empty, sane size."""
    return (
        isinstance(frame, np.ndarray)
        and frame.dtype == np.uint8
        and frame.ndim in (2, 3)
        and (frame.ndim == 2 or frame.shape[2] in (1, 3, 4))
        and 8 <= frame.shape[0] <= 16384
        and 8 <= frame.shape[1] <= 16384
    )


class RateLimiter:
    """Lets through at most ``fps`` events per second (0 = unlimited), dropping the rest."""

    def __init__(self, fps: float) -> None:
        self.interval = 1.0 / fps if fps > 0 else 0.0
        self._next = 0.0

    def ready(self, now: float | None = None) -> bool:
        now = time.monotonic() if now is None else now
        if now < self._next - 1e-6:  # a file's frame times add up in floats: 0.6 vs 0.6000000000000001
            return False
        # Schedule from the ideal time, not from now, so the average rate holds.
        self._next = max(self._next + self.interval, now - self.interval)
        return True


class VideoClock:
    """Each frame's time in a video file: the container's timestamp where it has one,
    since phones record at a variable frame rate and the frame count over the mean rate
    drifts (by 0.6 s at 2 s into a clip that halves its rate there), else the frame count
    over the rate. It never goes back, and after a rewind (``--loop``) it continues
    after the last frame, so the video's clock runs on as a camera's would."""

    def __init__(self, fps: float) -> None:
        self.interval = 1.0 / fps
        self._first: float | None = None  # the file's first timestamp (some start above 0)
        self._offset = 0.0  # added after each rewind
        self.last: float | None = None

    def next(self, stamp: float | None) -> float:
        """The position of the frame just read, given its timestamp (None: none)."""
        after = None if self.last is None else self.last + self.interval
        if stamp is not None and self._first is None:
            self._first = stamp
        position = None if stamp is None or self._first is None else self._offset + stamp - self._first
        if position is None or (self.last is not None and position <= self.last):
            position = after if after is not None else 0.0
        self.last = position
        return position

    def rewound(self) -> None:
        """The file starts again: its timestamps start again, the clock does not."""
        if self.last is not None:
            self._offset, self._first = self.last + self.interval, None
