"""Training batches: balanced draws, camera augmentation, mixup, and the packed targets.

Each batch's random state derives from (seed, epoch, index), so a run repeats exactly,
and a resumed run draws the batches the interrupted one would have drawn.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from typing import Any

import numpy as np

from emotion_stream.labels import EMOTIONS
from model.metadata import ModelMetadata
from model.preprocessing import scale_pixels

from .augment import CameraAugment
from .domains import BalancedSampler, Domain
from .options import TrainOptions

log = logging.getLogger(__name__)

K = len(EMOTIONS)
# y_true packs [one-hot label (K) | teacher probabilities (K) | has a teacher (1)].
TARGET_WIDTH = 2 * K + 1


def batches(sampler: BalancedSampler, teacher: list[np.ndarray] | None, meta: ModelMetadata,
            options: TrainOptions, epoch: int = 0) -> Any:
    """A ``keras.utils.PyDataset`` of balanced, augmented, mixed batches from ``epoch`` on.
    (Defined on call: importing keras at module level costs seconds.)"""
    import keras

    augment = CameraAugment() if options.augment else None

    class Batches(keras.utils.PyDataset):  # type: ignore[misc]  # keras is untyped
        def __init__(self) -> None:
            super().__init__(workers=max(1, (os.cpu_count() or 1)), use_multiprocessing=False)
            self.epoch = epoch

        def __len__(self) -> int:
            return options.steps_per_epoch

        def on_epoch_end(self) -> None:
            self.epoch += 1

        def __getitem__(self, index: int) -> tuple[np.ndarray, np.ndarray]:
            rng = np.random.default_rng((options.seed, self.epoch, index))
            picks = sampler.draw(options.batch_size, rng)
            x = np.empty((len(picks), meta.input_height, meta.input_width, meta.channels), np.float32)
            y = np.zeros((len(picks), TARGET_WIDTH), np.float32)
            for row, (d, i) in enumerate(picks):
                image = sampler.domains[d].images[i]
                x[row] = augment(image, rng) if augment else image
                y[row, sampler.domains[d].labels[i]] = 1.0
                if teacher is not None:
                    y[row, K: 2 * K] = teacher[d][i]
                    y[row, -1] = 1.0
            x = scale_pixels(x, meta.preprocessing)
            if options.mixup > 0:
                x, y = mixup(x, y, options.mixup, rng)
            return x, y

    return Batches()


def mixup(x: np.ndarray, y: np.ndarray, alpha: float, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Each image blended with another of the batch, and its targets with the same weight
    (Zhang et al. 2018): one Beta(alpha, alpha) weight per image, the larger share kept
    by the image itself so every row stays mostly its own."""
    weight = rng.beta(alpha, alpha, len(x)).astype(np.float32)
    weight = np.maximum(weight, 1.0 - weight)
    other = rng.permutation(len(x))
    mixed_x = weight[:, None, None, None] * x + (1.0 - weight[:, None, None, None]) * x[other]
    mixed_y = weight[:, None] * y + (1.0 - weight[:, None]) * y[other]
    return mixed_x.astype(np.float32), mixed_y.astype(np.float32)


def teacher_targets(domains: Sequence[Domain]) -> list[np.ndarray]:
    """The FER2013 model's probabilities (9 canonical columns) for every training image."""
    from model.emotion_model import FER2013, EmotionModel

    teacher = EmotionModel(FER2013)
    out = []
    for domain in domains:
        log.info("teacher: %d images of %s", len(domain), domain.name)
        out.append(teacher.predict_proba(list(domain.images)).astype(np.float32))
    return out
