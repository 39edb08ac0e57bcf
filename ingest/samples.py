"""Sample media with real faces, generated from a photo that an installed package ships.

matplotlib carries ``grace_hopper.jpg`` (public domain portrait, Wikimedia Commons) in its
sample data. From it we build the demo clip, the test fixtures and the benchmark load,
so nothing has to be downloaded or committed.
"""

from __future__ import annotations

import math
from functools import cache
from pathlib import Path

import cv2
import numpy as np

FRAME_SIZE = (640, 480)  # width, height


@cache
def _portrait() -> np.ndarray:
    import matplotlib.cbook

    path = matplotlib.cbook.get_sample_data("grace_hopper.jpg", asfileobj=False)
    image = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if image is None:
        raise FileNotFoundError(f"cannot read matplotlib sample image {path}")
    image.setflags(write=False)
    return image


@cache
def _scaled_portraits(width: int, height: int) -> tuple[np.ndarray, np.ndarray]:
    """The portrait at one size, and its mirror image (a second, distinct-looking face)."""
    small = cv2.resize(_portrait(), (width, height), interpolation=cv2.INTER_AREA)
    return small, np.ascontiguousarray(small[:, ::-1])


def sample_face() -> np.ndarray:
    """The Grace Hopper portrait (BGR, 600x512), one clearly visible face."""
    return _portrait().copy()


def sample_frame(t: float = 0.0, size: tuple[int, int] = FRAME_SIZE, faces: int = 1) -> np.ndarray:
    """A synthetic camera frame at time ``t`` seconds: ``faces`` portraits drifting
    slowly over a textured background, so consecutive frames differ like video does."""
    width, height = size
    frame = np.empty((height, width, 3), np.uint8)
    # A soft gradient background that changes with t (no faces in it).
    xs = np.linspace(0, 1, width, dtype=np.float32)[None, :]
    ys = np.linspace(0, 1, height, dtype=np.float32)[:, None]
    frame[..., 0] = (90 + 60 * xs + 20 * math.sin(t)).astype(np.uint8)
    frame[..., 1] = (110 + 50 * ys).astype(np.uint8)
    frame[..., 2] = (120 + 40 * (1 - xs) * ys).astype(np.uint8)
    face = _portrait()
    slot_w = width // faces
    portrait_h = int(height * 0.8)
    portrait_w = min(slot_w - 8, int(portrait_h * face.shape[1] / face.shape[0]))
    portrait_h = int(portrait_w * face.shape[0] / face.shape[1])
    portraits = _scaled_portraits(portrait_w, portrait_h)
    for i in range(faces):
        image = portraits[i % 2]
        dx = int((slot_w - portrait_w) / 2 * (1 + 0.6 * math.sin(0.7 * t + i)))
        dy = int((height - portrait_h) / 2 * (1 + 0.6 * math.cos(0.5 * t + i)))
        x0 = min(width - portrait_w, max(0, i * slot_w + dx))
        y0 = min(height - portrait_h, max(0, dy))
        frame[y0 : y0 + portrait_h, x0 : x0 + portrait_w] = image
    return frame


# Width of the face in the portrait, as the detectors box it (BlazeFace 215, Haar 225).
_PORTRAIT_FACE_WIDTH = 220


def small_faces_frame(
    widths: tuple[int, ...] = (40, 44, 48, 52, 56, 60, 42, 58), size: tuple[int, int] = FRAME_SIZE, seed: int = 0
) -> tuple[np.ndarray, list[tuple[int, int, int, int]]]:
    """A frame of several small faces (distant people) on a noisy background, and the
    planted face boxes (x, y, w, h). Portraits alternate with their mirror image and sit
    on a grid of four columns, so up to eight fit in 640x480."""
    width, height = size
    rng = np.random.default_rng(seed)
    background = np.full((height, width, 3), (100, 120, 130), np.uint8)
    frame = cv2.add(background, rng.integers(0, 30, background.shape, dtype=np.uint8))
    face = _portrait()
    boxes = []
    columns = 4
    for i, face_w in enumerate(widths):
        scale = face_w / _PORTRAIT_FACE_WIDTH
        pw, ph = round(face.shape[1] * scale), round(face.shape[0] * scale)
        portrait = cv2.resize(face, (pw, ph), interpolation=cv2.INTER_AREA)
        if i % 2:
            portrait = portrait[:, ::-1]
        x = 20 + (i % columns) * (width // columns)
        y = 20 + (i // columns) * (height // 2)
        if x + pw > width or y + ph > height:
            raise ValueError(f"{len(widths)} faces of up to {max(widths)} px do not fit in {width}x{height}")
        frame[y : y + ph, x : x + pw] = portrait
        # The face sits at about (155, 115) of the 512x600 portrait.
        boxes.append((x + round(155 * scale), y + round(115 * scale), face_w, face_w))
    return frame, boxes


def write_clip(path: Path, seconds: float = 4.0, fps: int = 15, faces: int = 1, size: tuple[int, int] = FRAME_SIZE) -> Path:
    """Write an MJPEG .avi (any suffix works) of :func:`sample_frame` frames."""
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter.fourcc(*"MJPG"), fps, size)
    if not writer.isOpened():
        raise RuntimeError(f"cannot open video writer for {path}")
    try:
        for i in range(int(seconds * fps)):
            writer.write(sample_frame(i / fps, size, faces))
    finally:
        writer.release()
    return path


def write_y4m(path: Path, seconds: float = 4.0, fps: int = 15, faces: int = 1, size: tuple[int, int] = FRAME_SIZE) -> Path:
    """Write a YUV4MPEG2 (4:2:0) clip, the format Chromium's fake camera reads."""
    width, height = size
    with open(path, "wb") as fh:
        fh.write(f"YUV4MPEG2 W{width} H{height} F{fps}:1 Ip A1:1 C420jpeg\n".encode())
        for i in range(int(seconds * fps)):
            yuv = cv2.cvtColor(sample_frame(i / fps, size, faces), cv2.COLOR_BGR2YUV_I420)
            fh.write(b"FRAME\n")
            fh.write(yuv.tobytes())
    return path
