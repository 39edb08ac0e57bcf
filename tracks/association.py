"""Frame-to-frame association of face boxes with tracks.

Our own small tracker rather than ByteTrack (`supervision`) or Roboflow `trackers`: a
camera's tracker state must be written to Redis with every step so another owner can
take over exactly where a dead one stopped; plain dataclasses serialise to JSON, a
library's internal objects do not. Faces per frame are few, so a greedy match on a cost
that mixes overlap with a constant-velocity prediction and centre distance is enough,
and the bench scenario measures its identity switches.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

Box = tuple[float, float, float, float]  # x, y, w, h


@dataclass
class Motion:
    """Where a track's face was last seen, and how fast its centre moves (px/s)."""

    box: Box
    at: float
    vx: float = 0.0
    vy: float = 0.0

    def predict(self, at: float) -> Box:
        dt = min(max(0.0, at - self.at), 1.0)  # no wild extrapolation over long gaps
        x, y, w, h = self.box
        return (x + self.vx * dt, y + self.vy * dt, w, h)

    def update(self, box: Box, at: float) -> None:
        dt = at - self.at
        if dt > 1e-6:
            (cx0, cy0), (cx1, cy1) = centre(self.box), centre(box)
            # A light filter: detections jitter by a few pixels a frame.
            self.vx = 0.6 * self.vx + 0.4 * (cx1 - cx0) / dt
            self.vy = 0.6 * self.vy + 0.4 * (cy1 - cy0) / dt
        self.box, self.at = box, at


def centre(box: Box) -> tuple[float, float]:
    return box[0] + box[2] / 2, box[1] + box[3] / 2


def iou(a: Box, b: Box) -> float:
    ax1, ay1, bx1, by1 = a[0] + a[2], a[1] + a[3], b[0] + b[2], b[1] + b[3]
    w = min(ax1, bx1) - max(a[0], b[0])
    h = min(ay1, by1) - max(a[1], b[1])
    if w <= 0 or h <= 0:
        return 0.0
    inter = w * h
    return inter / (a[2] * a[3] + b[2] * b[3] - inter)


def similarity(predicted: Box, box: Box, min_iou: float) -> float:
    """How well a detection continues a track, 0 = not at all. Overlap with the predicted
    box when it is at least ``min_iou``; otherwise nearness of the centres (within one
    face width, similar size), so small fast faces still match, ranked below overlaps."""
    overlap = iou(predicted, box)
    if overlap >= min_iou:
        return 1.0 + overlap
    (px, py), (bx, by) = centre(predicted), centre(box)
    size = max(predicted[2], predicted[3], 1.0)
    distance = math.hypot(px - bx, py - by) / size
    scale = box[2] / max(predicted[2], 1.0)
    if distance > 1.0 or not 0.67 <= scale <= 1.5:
        return 0.0
    return 1.0 - distance


def associate(predicted: list[Box], boxes: list[Box], min_iou: float) -> list[tuple[int, int]]:
    """Greedy one-to-one (track index, box index) pairs, best similarity first."""
    scored = sorted(
        ((similarity(p, b, min_iou), t, d) for t, p in enumerate(predicted) for d, b in enumerate(boxes)),
        reverse=True,
    )
    used_t: set[int] = set()
    used_d: set[int] = set()
    pairs = []
    for score, t, d in scored:
        if score <= 0:
            break
        if t not in used_t and d not in used_d:
            pairs.append((t, d))
            used_t.add(t)
            used_d.add(d)
    return pairs
