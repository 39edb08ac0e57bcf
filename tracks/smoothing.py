"""A track's emotion over time: exponential smoothing plus hysteresis.

Per-frame labels flicker (noise, blinks, JPEG); a person's expression changes at most a
few times a minute. The shown label therefore changes only when another one leads it in
the smoothed (calibrated) probabilities by ``margin`` for ``frames`` frames in a row,
a "class lock" that a single odd frame cannot break.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from emotion_stream.labels import EMOTIONS


@dataclass
class EmotionSmoother:
    time_constant_s: float
    margin: float
    frames: int
    probabilities: list[float] = field(default_factory=list)  # smoothed, EMOTIONS order
    shown: str = ""
    candidate: str = ""
    streak: int = 0
    last_at: float = 0.0

    def update(self, probabilities: np.ndarray | list[float], at: float, weight: float = 1.0) -> str | None:
        """Fold in one frame's probabilities (capture time ``at``), counting ``weight``
        as much as a face (a weak detection may count less). Returns the previous label
        when the shown label changed, else None."""
        p = np.asarray(probabilities, np.float64)
        if not self.probabilities:
            self.probabilities, self.shown, self.last_at = p.tolist(), EMOTIONS[int(p.argmax())], at
            return None
        dt = max(0.0, at - self.last_at)
        alpha = weight if self.time_constant_s <= 0 else weight * (1.0 - math.exp(-dt / self.time_constant_s))
        smoothed = (1.0 - alpha) * np.asarray(self.probabilities) + alpha * p
        self.probabilities, self.last_at = smoothed.tolist(), at
        best = EMOTIONS[int(smoothed.argmax())]
        lead = smoothed[EMOTIONS.index(best)] - smoothed[EMOTIONS.index(self.shown)]
        if best == self.shown or lead < self.margin:
            self.candidate, self.streak = "", 0
            return None
        self.streak = self.streak + 1 if best == self.candidate else 1
        self.candidate = best
        if self.streak < self.frames:
            return None
        previous, self.shown, self.candidate, self.streak = self.shown, best, "", 0
        return previous
