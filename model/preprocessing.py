"""Face crops and pixel scaling shared by inference and training."""

from __future__ import annotations

import math
from collections.abc import Sequence

import cv2
import numpy as np

from .metadata import ModelMetadata, Preprocessing

Box = tuple[int, int, int, int]  # x, y, width, height

_IMAGENET_BGR_MEAN = np.array([103.939, 116.779, 123.68], dtype=np.float32)


def square_box(box: Box, margin: float) -> Box:
    """The square around ``box`` enlarged by ``margin`` on each side (may exceed the frame)."""
    x, y, w, h = box
    side = max(w, h) * (1.0 + 2.0 * margin)
    cx, cy = x + w / 2.0, y + h / 2.0
    side_i = max(1, int(round(side)))
    return int(round(cx - side / 2.0)), int(round(cy - side / 2.0)), side_i, side_i


def eye_angle(landmarks: Sequence[tuple[float, float]]) -> float:
    """Degrees the line through the two eyes (landmarks 0 and 1) is turned from level,
    positive when the eye on the right of the image is lower."""
    (ax, ay), (bx, by) = landmarks[0], landmarks[1]
    if ax > bx:  # which eye is "left" depends on mirroring: take them in image order
        (ax, ay), (bx, by) = (bx, by), (ax, ay)
    return math.degrees(math.atan2(by - ay, bx - ax))


def crop_face(
    frame: np.ndarray,
    box: Box,
    margin: float,
    landmarks: Sequence[tuple[float, float]] | None = None,
    max_size: int | None = None,
) -> np.ndarray:
    """The one crop geometry of inference, ``prepare`` and ``train``: a square around the
    face box enlarged by ``margin`` per side. With eye landmarks, the crop is rotated
    about the box center so the eyes are level (a tilted head then looks like the upright
    faces the classifier learned from). Parts outside the frame are filled by edge
    replication, so faces at the border keep their aspect ratio. ``max_size`` shrinks
    larger crops to that side (area interpolation)."""
    x, y, s, _ = square_box(box, margin)
    fh, fw = frame.shape[:2]
    if not (x < fw and y < fh and x + s > 0 and y + s > 0):
        raise ValueError(f"face box {box} lies outside the {fw}x{fh} frame")
    out = min(s, max_size) if max_size else s
    if landmarks is None or len(landmarks) < 2:
        return _square(frame, x, y, s, out)
    # Rotate a shrunken copy of a square wide enough for the angle: shrinking first
    # (area interpolation, only the part inside the frame) keeps the pixels alias-free
    # and the rotation cheap; shrinking inside the warp instead cost accuracy.
    angle = eye_angle(landmarks)
    turn = math.radians(angle)
    wide = int(math.ceil(s * (abs(math.cos(turn)) + abs(math.sin(turn)))))
    offset = (wide - s) // 2
    region = _square(frame, x - offset, y - offset, wide, round(wide * out / s))
    center = region.shape[0] / 2.0
    rotation = cv2.getRotationMatrix2D((center, center), angle, 1.0)
    rotation[:, 2] += out / 2.0 - center
    return cv2.warpAffine(region, rotation, (out, out), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)


def _square(frame: np.ndarray, x: int, y: int, side: int, out: int) -> np.ndarray:
    """frame[y:y+side, x:x+side] at ``out`` x ``out`` pixels, edge-replicated where it
    extends past the frame. Only the part inside the frame is resized, then padded."""
    fh, fw = frame.shape[:2]
    x0, y0, x1, y1 = max(x, 0), max(y, 0), min(x + side, fw), min(y + side, fh)
    crop = frame[y0:y1, x0:x1]
    if out != side:
        k = out / side
        size = (max(1, round((x1 - x0) * k)), max(1, round((y1 - y0) * k)))
        interp = cv2.INTER_AREA if k < 1 else cv2.INTER_LINEAR
        crop = cv2.resize(crop, size, interpolation=interp)
        top, left = min(out - 1, round((y0 - y) * k)), min(out - 1, round((x0 - x) * k))
    else:
        top, left = y0 - y, x0 - x
    crop = crop[: out - top, : out - left]  # rounding may overshoot by a pixel
    bottom, right = out - top - crop.shape[0], out - left - crop.shape[1]
    if top or bottom or left or right:
        crop = cv2.copyMakeBorder(crop, top, bottom, left, right, borderType=cv2.BORDER_REPLICATE)
    return crop


def to_model_input(faces: Sequence[np.ndarray], meta: ModelMetadata) -> np.ndarray:
    """Resize, convert colour and scale uint8 crops (BGR or grey) into one float32 batch."""
    batch = np.empty((len(faces), meta.input_height, meta.input_width, meta.channels), np.float32)
    for i, face in enumerate(faces):
        batch[i] = resize_face(face, meta)
    return scale_pixels(batch, meta.preprocessing)


def resize_face(face: np.ndarray, meta: ModelMetadata) -> np.ndarray:
    """A uint8 crop at the model's size and channel order, not yet scaled. Training
    uses this too, so the model sees exactly the pixels it will see in service."""
    size = (meta.input_width, meta.input_height)
    if face.ndim == 2:
        face = face[:, :, None]
    if face.shape[0] < 1 or face.shape[1] < 1:
        raise ValueError("empty face crop")
    shrinking = face.shape[0] > size[1] or face.shape[1] > size[0]
    face = cv2.resize(face, size, interpolation=cv2.INTER_AREA if shrinking else cv2.INTER_LINEAR)
    if face.ndim == 2:
        face = face[:, :, None]
    channels = face.shape[2]
    if meta.channels == 1:
        if channels == 3:
            face = cv2.cvtColor(face, cv2.COLOR_BGR2GRAY)[:, :, None]
        return face
    if channels == 1:
        face = cv2.cvtColor(face, cv2.COLOR_GRAY2BGR)
    if meta.preprocessing is not Preprocessing.CAFFE:
        face = face[:, :, ::-1]  # BGR -> RGB; caffe-style models want BGR
    return face


def scale_pixels(batch: np.ndarray, mode: Preprocessing) -> np.ndarray:
    """Scale 0..255 float pixels in place according to the model's convention."""
    if mode is Preprocessing.MINUS_ONE_TO_ONE:
        batch *= 1.0 / 127.5
        batch -= 1.0
    elif mode is Preprocessing.ZERO_TO_ONE:
        batch *= 1.0 / 255.0
    elif mode is Preprocessing.CAFFE:
        batch -= _IMAGENET_BGR_MEAN[: batch.shape[-1]]
    return batch
