"""Synthetic people for tracking tests: frame records as workers would write them."""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from emotion_stream.labels import EMOTIONS
from emotion_stream.schema import (
    DESCRIPTOR_SIZE,
    SCENE_CELL_VALUES,
    SCENE_SIZE,
    FaceEvent,
    FrameRecord,
    FrameStatus,
    encode_vector,
)

FPS = 15


@dataclass
class Person:
    """A face moving at constant speed, visible in [start, end) seconds except while hidden."""

    emotion: str
    start_x: float
    y: float
    speed: float  # px/s
    start: float = 0.0
    end: float = 1e9
    size: float = 60.0
    hidden: tuple = ()  # occluded (from, to) seconds, or several such pairs
    looks: int | None = None  # who they are (a descriptor); None: the person's index in the scene
    path: list | None = None  # (t, x, y) waypoints to move along instead of start_x + speed * t

    def box(self, t: float) -> tuple[int, int, int, int] | None:
        spans = [self.hidden] if self.hidden and not isinstance(self.hidden[0], tuple) else list(self.hidden)
        if not self.start <= t < self.end or any(a <= t < b for a, b in spans):
            return None
        if self.path:
            ts, xs, ys = zip(*self.path)
            x, y = float(np.interp(t, ts, xs)), float(np.interp(t, ts, ys))
            return round(x), round(y), round(self.size), round(self.size)
        return (round(self.start_x + self.speed * (t - self.start)), round(self.y), round(self.size), round(self.size))


def looks(who: int, rng: np.random.Generator, noise: float = 0.08) -> str:
    """A descriptor of person ``who`` in one frame: their own direction plus a little
    noise, as the worker's descriptor of one face varies frame to frame (distance ~0.01-0.1
    to another frame of them; two people are ~1 apart)."""
    base = np.random.default_rng(10_000 + who).normal(size=DESCRIPTOR_SIZE)
    v = base / np.linalg.norm(base) + rng.normal(0, noise / np.sqrt(DESCRIPTOR_SIZE), DESCRIPTOR_SIZE)
    return encode_vector((v / np.linalg.norm(v)).tolist())


def scene_signature(room: int) -> str:
    """A frame's scene signature in room ``room`` (another room after a cut): each cell's
    colour, no cell marked near a face."""
    rng = np.random.default_rng(20_000 + room)
    cells = np.zeros((SCENE_SIZE // SCENE_CELL_VALUES, SCENE_CELL_VALUES))
    cells[:, :3] = rng.uniform(40, 220, (len(cells), 3))
    return encode_vector(cells.ravel().tolist())


def probabilities(emotion: str, rng: np.random.Generator, noise: float) -> dict[str, float]:
    """A classifier's output for a face showing ``emotion``: right on average, noisy."""
    logits = rng.normal(0, noise, len(EMOTIONS))
    logits[EMOTIONS.index(emotion)] += 1.5
    logits[EMOTIONS.index("uncertain")] = -9
    p = np.exp(logits) / np.exp(logits).sum()
    return {label: float(v) for label, v in zip(EMOTIONS, p)}


def records(camera: str, people: list[Person], seconds: float, *, noise: float = 1.0, seed: int = 0,
            t0: float = 1_000_000.0, describe: bool = False, cuts: tuple[float, ...] = ()) -> list[FrameRecord]:
    """One record per frame at FPS, faces in person order (the person index is in ``name``).
    ``describe``: faces carry descriptors (each person's looks) and frames a scene
    signature, which changes at each of ``cuts`` (seconds)."""
    rng = np.random.default_rng(seed)
    out = []
    for seq in range(int(seconds * FPS)):
        t = seq / FPS
        faces = []
        for index, person in enumerate(people):
            box = person.box(t)
            if box is None:
                continue
            faces.append(asdict(FaceEvent(
                camera=camera, seq=seq, captured_at=t0 + t, processed_at=t0 + t + 0.03, face_index=len(faces),
                faces_in_frame=0, box=box, emotion="", confidence=0.0,
                probabilities=probabilities(person.emotion, rng, noise), whole_image=False, detector="synthetic",
                model="synthetic", worker="test", name=f"person{index}",
            )))
        for face in faces:
            face["faces_in_frame"] = len(faces)
            face["emotion"] = max(face["probabilities"], key=face["probabilities"].get)
            face["confidence"] = face["probabilities"][face["emotion"]]
            if describe:
                person = people[int(face["name"].removeprefix("person"))]
                index = int(face["name"].removeprefix("person"))
                face["descriptor"] = looks(index if person.looks is None else person.looks, rng)
        scene = scene_signature(sum(1 for c in cuts if c <= t)) if describe else ""
        out.append(FrameRecord(camera, seq, t0 + t, FrameStatus.ANALYSED, faces, scene=scene))
    return out
