"""Frame-to-frame association of face boxes with tracks: motion and appearance.

Our own small tracker rather than ByteTrack (`supervision`) or Roboflow `trackers`: a
camera's tracker state must be written to Redis with every step so another owner can
take over exactly where a dead one stopped; plain dataclasses serialise to JSON, a
library's internal objects do not. Faces per frame are few, so a greedy match suffices.

As in DeepSORT and BoT-SORT, a match must pass both gates: motion (overlap with the
constant-velocity prediction, or a centre within one face width for small fast faces,
and a face size that did not jump) and appearance (the face's descriptor close enough to
one the track kept). A different face at the same spot fails the second, so it starts
its own track; two people who swap places each match their own looks. A track missed
for a frame or more may take back a face farther away if the face looks like it
(``reid_radius``). The score ranks the pairs that pass: overlap first, then nearness,
less the appearance distance.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from .appearance import gallery_distance

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
    inter = _intersection(a, b)
    return inter / (a[2] * a[3] + b[2] * b[3] - inter) if inter else 0.0


def within(a: Box, b: Box) -> float:
    """The share of the smaller box that lies inside the other: 1.0 when one face box
    holds the other whatever their sizes (IoU of a 66 px box inside a 98 px one: 0.45)."""
    return _intersection(a, b) / max(min(a[2] * a[3], b[2] * b[3]), 1e-9)


def size_ratio(a: Box, b: Box) -> float:
    """How many times wider the wider box is (1.0: the same size)."""
    return max(a[2], b[2]) / max(min(a[2], b[2]), 1.0)


def _intersection(a: Box, b: Box) -> float:
    w = min(a[0] + a[2], b[0] + b[2]) - max(a[0], b[0])
    h = min(a[1] + a[3], b[1] + b[3]) - max(a[1], b[1])
    return w * h if w > 0 and h > 0 else 0.0


@dataclass(frozen=True)
class Gates:
    min_iou: float = 0.2  # least overlap that counts as the same place
    max_scale: float = 1.5  # a face may grow or shrink by this factor between matches, no more
    # Largest descriptor distance (cosine) to a track's gallery. Measured on the tracks
    # bench's clips (model.appearance): one person's distance to their last faces has its
    # 99.9th percentile at 0.091 (largest 0.139), a newcomer's to whom they replaced at the
    # same spot its 1st percentile at 0.241.
    max_appearance: float = 0.2
    # The same for a face against a provisional track (``tracks.camera.Track``), whose
    # looks are a weak box's, often a part of the face. Measured on the tracks bench's
    # clips (8 cameras x 60 s): a person's first face against their own provisional track
    # had its 99th percentile at 0.24-0.34, the next person's at least 0.32.
    provisional_appearance: float = 0.3
    # The same for a track unlooked at for longer than the timeout, its frames skipped under
    # overload: the spell may have held a change of person that nobody saw. Measured on
    # recordings of the tracks bench's clips: one person's face against their last five
    # has its 99.9th percentile at 0.096 / 0.121 (photos / FER2013 faces), a newcomer's
    # against whom they replaced its 1st at 0.207 / 0.194 (docs/benchmarks.md).
    stale_appearance: float = 0.12
    reid_radius: float = 3.0  # a track missed last frame may take a face this many widths away...
    reid_appearance: float = 0.15  # ...if it looks this much like it


@dataclass(frozen=True)
class TrackView:
    """What association needs of a track."""

    predicted: Box
    gallery: Sequence[np.ndarray]  # descriptors it kept (empty: appearance unknown)
    missed: bool  # not matched in the previous frame
    max_appearance: float | None = None  # its own appearance gate (None: the gates')


@dataclass(frozen=True)
class Candidate:
    """A detection to match: its box and, when the worker made one, its descriptor."""

    box: Box
    descriptor: np.ndarray | None = None


def motion_score(predicted: Box, box: Box, gates: Gates, missed: bool = False,
                 appearance: float | None = None) -> float:
    """How well ``box`` continues a track predicted at ``predicted``, 0 = not at all.
    Overlap scores 1 + IoU; otherwise nearness of the centres (within one face width,
    or ``reid_radius`` widths for a missed track that looks alike) scores below."""
    if size_ratio(predicted, box) > gates.max_scale:
        return 0.0  # 84 px continued by 177 px is somebody else
    overlap = iou(predicted, box)
    if overlap >= gates.min_iou:
        return 1.0 + overlap
    (px, py), (bx, by) = centre(predicted), centre(box)
    size = max(predicted[2], predicted[3], 1.0)
    distance = math.hypot(px - bx, py - by) / size
    if distance <= 1.0:
        return 1.0 - distance / 2
    if missed and appearance is not None and appearance <= gates.reid_appearance and distance <= gates.reid_radius:
        return 0.5 - distance / (4 * gates.reid_radius)
    return 0.0


def associate(tracks: Sequence[TrackView], detections: Sequence[Candidate], gates: Gates) -> list[tuple[int, int]]:
    """Greedy one-to-one (track index, detection index) pairs, best score first."""
    scored = []
    for t, track in enumerate(tracks):
        for d, detection in enumerate(detections):
            appearance = None
            if track.gallery and detection.descriptor is not None:
                appearance = gallery_distance(track.gallery, detection.descriptor)
                if appearance > (gates.max_appearance if track.max_appearance is None else track.max_appearance):
                    continue  # another face
            score = motion_score(track.predicted, detection.box, gates, track.missed, appearance)
            if score > 0:
                scored.append((score - (appearance or 0.0), t, d))
    scored.sort(reverse=True)
    used_t: set[int] = set()
    used_d: set[int] = set()
    pairs = []
    for _score, t, d in scored:
        if t not in used_t and d not in used_d:
            pairs.append((t, d))
            used_t.add(t)
            used_d.add(d)
    return pairs
