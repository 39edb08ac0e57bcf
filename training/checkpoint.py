"""The state of a training run after each epoch, so ``train --resume`` continues it.

One file, ``OUT/checkpoint.npz``, replaced atomically after every epoch: the model's
variables (weights, batch-norm statistics, the dropout seed generators' state), the
optimizer's (step, moments), the weight-averaging sum, the best epoch's weights, and the
run's history, options and folders. The batches need nothing more: each one's random
state derives from (seed, epoch, index).
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

FILE = "checkpoint.npz"


@dataclass
class TrainState:
    """What a run has done, besides its arrays."""

    options: dict[str, Any]
    folders: list[str]
    epoch: int = 0  # epochs finished
    history: list[dict[str, Any]] = field(default_factory=list)
    best: float = -1.0
    best_epoch: int = -1
    averaged: int = 0  # epochs summed into the weight average
    elapsed_s: float = 0.0  # wall time of all its processes together
    resumes: int = 0  # times it was continued after an interruption


@dataclass
class Checkpoint:
    state: TrainState
    model: list[np.ndarray]  # model.variables, in order
    optimizer: list[np.ndarray]  # optimizer.variables, in order
    summed: list[np.ndarray] | None = None  # weight average numerator (float64), get_weights order
    best_weights: list[np.ndarray] | None = None


def path(out_dir: Path) -> Path:
    return out_dir / FILE


def save(out_dir: Path, checkpoint: Checkpoint) -> None:
    arrays: dict[str, np.ndarray] = {"state": np.frombuffer(json.dumps(asdict(checkpoint.state)).encode(), np.uint8)}
    for prefix, values in (("m", checkpoint.model), ("o", checkpoint.optimizer),
                           ("s", checkpoint.summed or []), ("b", checkpoint.best_weights or [])):
        arrays.update({f"{prefix}{i}": np.asarray(v) for i, v in enumerate(values)})
    target = path(out_dir)
    partial = target.with_suffix(".partial.npz")
    with partial.open("wb") as fh:
        np.savez(fh, allow_pickle=False, **arrays)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(partial, target)  # a crash mid-write leaves the previous epoch's checkpoint


def load(out_dir: Path) -> Checkpoint:
    """The last epoch's checkpoint; ValueError naming the file if there is none or it is unreadable."""
    source = path(out_dir)
    if not source.is_file():
        raise ValueError(f"{source}: no checkpoint to resume from (train writes one after every epoch)")
    try:
        with np.load(source, allow_pickle=False) as data:
            arrays = {key: data[key] for key in data.files}
        state = TrainState(**json.loads(arrays.pop("state").tobytes()))
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ValueError(f"{source}: unreadable checkpoint ({exc})") from None

    def series(prefix: str) -> list[np.ndarray]:
        return [arrays[f"{prefix}{i}"] for i in range(sum(1 for k in arrays if k[0] == prefix and k[1:].isdigit()))]

    return Checkpoint(state, series("m"), series("o"), series("s") or None, series("b") or None)
