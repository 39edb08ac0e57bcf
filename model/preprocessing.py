"""Face crops and pixel scaling shared by inference and training."""

from __future__ import annotations

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


def crop_face(frame: np.ndarray, box: Box, margin: float) -> np.ndarray:
    """Square crop around a face; parts outside the frame are filled by edge replication
    so faces at the border keep their aspect ratio."""
    x, y, s, _ = square_box(box, margin)
    fh, fw = frame.shape[:2]
    x0, y0, x1, y1 = max(x, 0), max(y, 0), min(x + s, fw), min(y + s, fh)
    if x1 <= x0 or y1 <= y0:
        raise ValueError(f"face box {box} lies outside the {fw}x{fh} frame")
    crop = frame[y0:y1, x0:x1]
    pads = (y0 - y, (y + s) - y1, x0 - x, (x + s) - x1)
    if any(pads):
        crop = cv2.copyMakeBorder(crop, *pads, borderType=cv2.BORDER_REPLICATE)
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
