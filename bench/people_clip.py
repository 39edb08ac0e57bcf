"""A live clip of people holding expressions, built from labelled face photos.

Like the hidden evaluation clip: 640x480 at 15 fps, two people at a time, each holding
one expression (one photo) for 2 s, drifting a little, with camera-like noise. Two
variants (``schedule``'s ``queue``):

- gaps: between two people a slot stays empty longer than the track timeout;
- queue: the next person takes the same spot 0-0.3 s after the last one left, as at a
  kiosk or after a cut in a video file, and every ``CUT_S`` the whole scene cuts to
  another background with new people in both spots.

The truth (who, where, which expression) comes with every frame.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from model.detection import FaceDetector

SIZE = (640, 480)
FPS = 15.0
HOLD_S = 2.0  # each person's appearance
GAP_S = 1.6  # empty slot between two people (over the 1 s track timeout)
QUEUE_GAP_S = (0.0, 0.3)  # queue variant: the next person comes this soon
CUT_S = 7.0  # queue variant: a hard cut (new scene, new people) this often
FACE_PX = 110  # face width in the frame


@dataclass(frozen=True)
class Photo:
    image: np.ndarray  # square crop around the face, face box centred
    label: str
    face: tuple[int, int, int, int]  # face box inside ``image``
    name: str


@dataclass(frozen=True)
class Appearance:
    """One person in one slot: visible in frames [first, last]."""

    person: int  # unique per clip
    slot: int
    photo: Photo
    first: int
    last: int
    scene: int = 0  # which background it is seen against (the queue variant cuts)

    def box(self, frame: int, scale: float) -> tuple[int, int, int, int]:
        """Where the face is in ``frame`` (the photo drifts on a slow ellipse)."""
        t = (frame - self.first) / FPS
        x0 = 90 + self.slot * 300 + 25 * math.sin(1.3 * t + self.person)
        y0 = 120 + 20 * math.cos(0.9 * t + self.person)
        fx, fy, fw, fh = self.photo.face
        return int(x0 + fx * scale), int(y0 + fy * scale), int(fw * scale), int(fh * scale)


def load_photos(pairs: Sequence[tuple[Path, str]], detector: FaceDetector) -> list[Photo]:
    """Crop each photo to a square around its largest face (found by ``detector``) with
    room around it; photos without a face are left out."""
    photos = []
    for path, label in pairs:
        image = cv2.imread(str(path), cv2.IMREAD_COLOR)
        if image is None:
            continue
        found = detector.detect_batch([image], [True])[0]
        if not found:
            continue
        x, y, w, h = found[0].box
        side = int(max(w, h) * 1.8)
        cx, cy = x + w // 2, y + h // 2
        x0, y0 = cx - side // 2, cy - side // 2
        pad = side
        padded = cv2.copyMakeBorder(image, pad, pad, pad, pad, cv2.BORDER_REPLICATE)
        crop = padded[y0 + pad : y0 + pad + side, x0 + pad : x0 + pad + side]
        photos.append(Photo(crop, label, (x - x0, y - y0, w, h), path.name))
    return photos


def schedule(photos: Sequence[Photo], seconds: float, seed: int, queue: bool = False) -> list[Appearance]:
    """Two slots, staggered, each a sequence of people. Photos are taken round-robin over
    the labels (shuffled within each), so rare expressions appear as often as common
    ones, as in a clip of people asked to hold each expression. ``queue``: the queue
    variant (module docstring)."""
    rng = np.random.default_rng(seed)
    by_label: dict[str, list[int]] = {}
    for i in rng.permutation(len(photos)):
        by_label.setdefault(photos[i].label, []).append(int(i))
    labels = sorted(by_label)
    order = [by_label[labels[k % len(labels)]][(k // len(labels)) % len(by_label[labels[k % len(labels)]])]
             for k in range(len(photos))]
    frames = int(seconds * FPS)
    hold, gap = int(HOLD_S * FPS), int(GAP_S * FPS)
    cuts = cut_frames(seconds) if queue else []
    # Both slots' people are drawn in the order they appear, so that the rotation's
    # consecutive photos never show at once: a label with one photo (contempt) must
    # not be one person in both slots a second apart, whom any re-identification
    # rightly follows from one slot to the other.
    starts = [int(slot * (hold if queue else hold + gap) / 2) for slot in (0, 1)]
    out: list[Appearance] = []
    while True:
        slot = min((0, 1), key=lambda s: starts[s])
        start = starts[slot]
        if start >= frames or (not queue and start + hold > frames):
            break
        photo = photos[order[len(out) % len(order)]]
        if not queue:
            out.append(Appearance(len(out), slot, photo, start, start + hold - 1))
            starts[slot] = start + hold + gap
            continue
        scene = sum(1 for c in cuts if c <= start)
        # An appearance ends at the next cut; the next scene starts with new people.
        end = min(start + hold, next((c for c in cuts if c > start), frames), frames)
        out.append(Appearance(len(out), slot, photo, start, end - 1, scene))
        starts[slot] = end if end in cuts else end + int(rng.uniform(*QUEUE_GAP_S) * FPS)
    return out


def cut_frames(seconds: float) -> list[int]:
    """The frames at which the queue variant cuts to a new scene."""
    return [int(k * CUT_S * FPS) for k in range(1, int(seconds / CUT_S) + 1) if k * CUT_S < seconds]


def render(appearances: Sequence[Appearance], frame: int, rng: np.random.Generator) -> tuple[np.ndarray, list[tuple[Appearance, tuple[int, int, int, int]]]]:
    """Frame ``frame`` of the clip (BGR) and the visible people with their face boxes."""
    w, h = SIZE
    xs = np.linspace(0, 1, w, dtype=np.float32)[None, :]
    ys = np.linspace(0, 1, h, dtype=np.float32)[:, None]
    image: np.ndarray = np.empty((h, w, 3), np.uint8)
    scene = max((a.scene for a in appearances if a.first <= frame), default=0)
    image[..., 0] = 80 + 50 * xs
    image[..., 1] = 100 + 40 * ys
    image[..., 2] = 110 + 30 * (1 - xs)
    if scene:  # after a cut: another room, its own light and things on its walls
        room = np.random.default_rng(scene)
        image[:] = np.clip(image.astype(np.int16) + room.integers(-70, 70, 3), 0, 255).astype(np.uint8)
        for _ in range(3):
            x0, y0 = int(room.integers(0, w - 120)), int(room.integers(0, h - 120))
            color = tuple(int(c) for c in room.integers(0, 255, 3))
            cv2.rectangle(image, (x0, y0), (x0 + int(room.integers(60, 200)), y0 + int(room.integers(60, 200))),
                          color, -1)
    visible = []
    for a in appearances:
        if not a.first <= frame <= a.last:
            continue
        scale = FACE_PX / a.photo.face[2]
        side = int(a.photo.image.shape[0] * scale)
        photo = cv2.resize(a.photo.image, (side, side), interpolation=cv2.INTER_AREA)
        box = a.box(frame, scale)
        fx, fy = int(a.photo.face[0] * scale), int(a.photo.face[1] * scale)
        x0, y0 = box[0] - fx, box[1] - fy
        xa, ya, xb, yb = max(0, x0), max(0, y0), min(w, x0 + side), min(h, y0 + side)
        image[ya:yb, xa:xb] = photo[ya - y0 : yb - y0, xa - x0 : xb - x0]
        visible.append((a, box))
    # Camera: exposure drift, sensor noise (stronger in the dark), hand-held jitter, blur.
    gain = 1.0 + 0.15 * math.sin(frame / FPS * 0.8)
    noisy = image.astype(np.float32) * gain + rng.normal(0, 10, image.shape).astype(np.float32)
    shift = np.array([[1, 0, rng.integers(-2, 3)], [0, 1, rng.integers(-2, 3)]], np.float32)
    image = cv2.warpAffine(np.clip(noisy, 0, 255).astype(np.uint8), shift, SIZE, borderMode=cv2.BORDER_REPLICATE)
    image = cv2.GaussianBlur(image, (5, 5), rng.uniform(0.5, 1.2))
    return image, visible
