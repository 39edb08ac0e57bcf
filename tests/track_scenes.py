"""Synthetic people for tracking tests: frame records as workers would write them."""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from emotion_stream.labels import EMOTIONS
from emotion_stream.schema import FaceEvent, FrameRecord, FrameStatus

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

    def box(self, t: float) -> tuple[int, int, int, int] | None:
        spans = [self.hidden] if self.hidden and not isinstance(self.hidden[0], tuple) else list(self.hidden)
        if not self.start <= t < self.end or any(a <= t < b for a, b in spans):
            return None
        return (round(self.start_x + self.speed * (t - self.start)), round(self.y), round(self.size), round(self.size))


def probabilities(emotion: str, rng: np.random.Generator, noise: float) -> dict[str, float]:
    """A classifier's output for a face showing ``emotion``: right on average, noisy."""
    logits = rng.normal(0, noise, len(EMOTIONS))
    logits[EMOTIONS.index(emotion)] += 1.5
    logits[EMOTIONS.index("uncertain")] = -9
    p = np.exp(logits) / np.exp(logits).sum()
    return {label: float(v) for label, v in zip(EMOTIONS, p)}


def records(camera: str, people: list[Person], seconds: float, *, noise: float = 1.0, seed: int = 0,
            t0: float = 1_000_000.0) -> list[FrameRecord]:
    """One record per frame at FPS, faces in person order (the person index is in ``name``)."""
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
        out.append(FrameRecord(camera, seq, t0 + t, FrameStatus.ANALYSED, faces))
    return out
