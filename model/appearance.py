"""What a face and a frame look like, compactly: the tracker's evidence of who is who.

A face descriptor (``DESCRIPTOR_SIZE`` values, unit length) joins three views of one
detection, each unit length and weighted: the face's layout (a 12x12 grey thumbnail of
the upright square around the box and the eyes, zero mean), its texture (local binary
patterns in 2x2 cells, which survive lighting changes), and its colours around it (a
hue/saturation histogram of the face with the hair above and the shoulders below). The
cosine distance of two descriptors is the weighted mean of the three views' distances.
It is no face recogniser: it tells the face seen a moment ago from another face at the
same spot (``tracks.appearance`` compares them).

The crop is not turned to level the eyes as the classifier's is: on a face seen from the
side the eye landmarks are a few pixels apart and their angle swings by 20 degrees from
frame to frame, and so did the crop, making one person look like two. Measured on the
tracks bench's clips (2 cameras x 40 s, both variants; a face against the person's last
10, and newcomers' first 5 faces against the last 10 of whom they replaced at the same
spot): one person's distance has its 99th percentile at 0.042 (0.068 on the eye-levelled
crop, whose worst 0.1 % reached 0.195-0.325), two people's 1st percentile at 0.241. By
view: layout 0.074 against 0.411, texture 0.016 against 0.029, colour tells only where
clothes or hair differ.

A scene signature (``SCENE_SIZE`` values) is the mean colour (CIELAB) of each cell of a
grid over the frame, with the cells a face, or the person under it, may cover marked: a
cut to another scene changes the colour of the cells nobody covers in either frame, which
people coming, going and moving in a fixed camera's view do not (``tracks.appearance``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import cv2
import numpy as np

from emotion_stream.schema import DESCRIPTOR_SIZE, SCENE_CELL_VALUES, SCENE_COLUMNS, SCENE_ROWS

from .preprocessing import Box, crop_face

THUMB = 12  # side of the layout thumbnail
MARGIN = 0.2  # the layout's square: the box enlarged by this much a side
SQUARE_PX = 64  # ...shrunk to at most this side first (area), for cheap thumbnails
# Detectors box one face at two scales on alternate frames (MTCNN the sample clip's face
# 133 or 160 px high, BlazeFace an up-scaled 48 px face 80 or 98 px wide), and the layout
# view moved with the box. The eyes set a second square: its side their distance over
# EYE_SPAN, its centre EYE_DROP of its side below them (BlazeFace's medians on the tracks
# clips: 0.41 and 0.16-0.18 of the box's width), held within EYE_BOUND times the box's (a
# face in profile has its eyes close together); the layout is cut from the mean of the two.
# A face against its person's last 5: the largest distance fell 0.165 -> 0.093 (the
# sample clip under MTCNN), 0.144 -> 0.095 and 0.189 -> 0.180 (the tracks clips of
# FER2013 faces and of photos), newcomers' 1st percentile rose 0.109 -> 0.124 and 0.209
# -> 0.212; the photos' tracks replay has half the ID switches (docs/benchmarks.md).
EYE_SPAN, EYE_DROP, EYE_BOUND = 0.41, 0.17, 1.5
LBP_CELLS = 2  # per side
LBP_BINS = 16  # the upper four of the eight neighbour bits
HUE_BINS, SAT_BINS = 8, 4
# Weights of the three views (they sum to 1): layout, texture, colour.
WEIGHTS = (0.5, 0.3, 0.2)
assert THUMB * THUMB + LBP_CELLS**2 * LBP_BINS + HUE_BINS * SAT_BINS == DESCRIPTOR_SIZE

# The cells around a face a scene signature marks, in face widths to each side and face
# heights above and below the box: the rest of a photo held up, the hair, the shoulders.
NEAR_SIDE, NEAR_ABOVE, NEAR_BELOW = 0.5, 0.5, 1.5
SCENE_SMALL = 4  # pixels a cell side in the shrunk frame the cells' colours are taken from
assert SCENE_CELL_VALUES == 4  # L, a, b, near a face

_NEIGHBOURS = ((-1, -1), (-1, 0), (-1, 1), (0, 1), (1, 1), (1, 0), (1, -1), (0, -1))


def face_descriptor(frame: np.ndarray, box: Box,
                    landmarks: Sequence[tuple[float, float]] | None = None) -> np.ndarray:
    """The descriptor of the face at ``box`` in ``frame`` (BGR or grey); the detector's
    ``landmarks`` (eyes first), when it gives them, steady the layout's square."""
    square = crop_face(frame, layout_box(box, landmarks), MARGIN, None, SQUARE_PX)
    grey = cv2.cvtColor(square, cv2.COLOR_BGR2GRAY) if square.ndim == 3 else square
    layout = cv2.resize(grey, (THUMB, THUMB), interpolation=cv2.INTER_AREA).astype(np.float32).ravel()
    layout -= layout.mean()
    texture = _lbp_histograms(cv2.resize(grey, (34, 34), interpolation=cv2.INTER_AREA))
    colour = _colour(frame, box)
    parts = [_unit(layout), _unit(texture), _unit(colour)]
    return np.concatenate([np.sqrt(w) * p for w, p in zip(WEIGHTS, parts)]).astype(np.float32)


def layout_box(box: Box, landmarks: Sequence[tuple[float, float]] | None = None) -> Box:
    """The square the layout view is cut from (before MARGIN): the box's own, or with the
    eyes, the mean of it and the square the eyes set (EYE_SPAN, EYE_DROP)."""
    x, y, w, h = box
    side, cx, cy = float(max(w, h)), x + w / 2.0, y + h / 2.0
    if landmarks is not None and len(landmarks) >= 2:
        (ax, ay), (bx, by) = landmarks[0], landmarks[1]
        eyes = min(max(math.hypot(bx - ax, by - ay) / EYE_SPAN, side / EYE_BOUND), side * EYE_BOUND)
        side, cx, cy = (side + eyes) / 2, (cx + (ax + bx) / 2) / 2, (cy + (ay + by) / 2 + EYE_DROP * eyes) / 2
    half = side / 2
    return round(cx - half), round(cy - half), max(1, round(side)), max(1, round(side))


def _lbp_histograms(grey: np.ndarray) -> np.ndarray:
    image = grey.astype(np.int16)
    centre = image[1:-1, 1:-1]
    h, w = centre.shape
    code = np.zeros((h, w), np.uint8)
    for bit, (dy, dx) in enumerate(_NEIGHBOURS):
        code |= (image[1 + dy:1 + dy + h, 1 + dx:1 + dx + w] >= centre).astype(np.uint8) << bit
    code >>= 4  # 16 bins: the half of the pattern nearest the top (robust, small)
    cell = h // LBP_CELLS
    hists = [np.bincount(code[i * cell:(i + 1) * cell, j * cell:(j + 1) * cell].ravel(), minlength=LBP_BINS)
             for i in range(LBP_CELLS) for j in range(LBP_CELLS)]
    return np.sqrt(np.concatenate(hists).astype(np.float32))  # Hellinger: histograms compare by overlap


def _colour(frame: np.ndarray, box: Box) -> np.ndarray:
    """Hue/saturation histogram of the face, the hair above it and the shoulders below."""
    if frame.ndim == 2 or frame.shape[2] == 1:
        return np.ones(HUE_BINS * SAT_BINS, np.float32)  # a grey camera has no colour to tell apart
    x, y, w, h = box
    fh, fw = frame.shape[:2]
    x0, y0 = max(0, int(x - 0.25 * w)), max(0, int(y - 0.4 * h))
    x1, y1 = min(fw, int(x + 1.25 * w)), min(fh, int(y + 1.6 * h))
    if x1 <= x0 or y1 <= y0:
        return np.ones(HUE_BINS * SAT_BINS, np.float32)
    region = cv2.resize(frame[y0:y1, x0:x1, :3], (24, 32), interpolation=cv2.INTER_AREA)
    hsv = cv2.cvtColor(region, cv2.COLOR_BGR2HSV)
    hist = cv2.calcHist([hsv], [0, 1], None, [HUE_BINS, SAT_BINS], [0, 180, 0, 256]).ravel()
    return np.sqrt(hist.astype(np.float32))


def scene_signature(frame: np.ndarray, faces: Sequence[Box] = ()) -> np.ndarray:
    """The frame's scene signature: each cell's mean colour (OpenCV's 8-bit CIELAB: L
    0-255, a and b centred on 128) and 1 where it is near one of ``faces`` (NEAR_*), else
    0; SCENE_COLUMNS x SCENE_ROWS cells, row by row."""
    colour = frame if frame.ndim == 3 and frame.shape[2] == 3 else cv2.cvtColor(frame, cv2.COLOR_GRAY2BGR)
    shrunk = (SCENE_COLUMNS * SCENE_SMALL, SCENE_ROWS * SCENE_SMALL)
    small = cv2.resize(colour, shrunk, interpolation=cv2.INTER_AREA)
    lab = cv2.cvtColor(small, cv2.COLOR_BGR2LAB).astype(np.float32)
    cells = cv2.resize(lab, (SCENE_COLUMNS, SCENE_ROWS), interpolation=cv2.INTER_AREA)
    near = np.zeros((SCENE_ROWS, SCENE_COLUMNS, 1), np.float32)
    cell_w, cell_h = frame.shape[1] / SCENE_COLUMNS, frame.shape[0] / SCENE_ROWS
    for x, y, w, h in faces:
        c0, c1 = _cells(x - NEAR_SIDE * w, x + (1 + NEAR_SIDE) * w, cell_w, SCENE_COLUMNS)
        r0, r1 = _cells(y - NEAR_ABOVE * h, y + (1 + NEAR_BELOW) * h, cell_h, SCENE_ROWS)
        near[r0:r1 + 1, c0:c1 + 1] = 1.0  # empty when the box lies outside the frame
    return np.concatenate([cells, near], axis=2).ravel()


def _cells(start: float, end: float, size: float, count: int) -> tuple[int, int]:
    """The first and the last of ``count`` cells of ``size`` pixels that [start, end] reaches."""
    return max(0, int(start // size)), min(count - 1, int(end // size))


def _unit(v: np.ndarray) -> np.ndarray:
    norm = float(np.linalg.norm(v))
    return v / norm if norm > 1e-9 else np.full_like(v, 1.0 / np.sqrt(len(v)))
