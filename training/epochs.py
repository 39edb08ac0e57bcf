"""What happens after every training epoch: validation, the weight average, the best
epoch, the checkpoint, and a progress line with the time left."""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from model.metadata import ModelMetadata

from . import checkpoint
from .checkpoint import Checkpoint, TrainState
from .domains import Domain
from .scoring import logits_of, scores, selection_score

log = logging.getLogger(__name__)

Progress = Callable[[int, int, str], None]  # (steps done, total steps, message)


def epoch_end(val_domains: Sequence[Domain], meta: ModelMetadata, state: TrainState, *, epochs: int,
              steps_per_epoch: int, average_from: int | None, out_dir: Path | None,
              progress: Progress | None = None, resumed: Checkpoint | None = None) -> Any:
    """A Keras callback that scores each epoch on every domain's validation split, sums
    the weights of epochs ``average_from``.. (1-based) for the weight average, keeps the
    best epoch's weights, and writes ``state`` with the arrays to ``out_dir``'s checkpoint
    (none when ``out_dir`` is None). ``resumed``: the checkpoint this run continues."""
    import keras

    class EpochEnd(keras.callbacks.Callback):  # type: ignore[misc]  # keras is untyped
        def __init__(self) -> None:
            super().__init__()
            self.state = state
            self.summed = resumed.summed if resumed else None
            self.best_weights = resumed.best_weights if resumed else None
            self.dtypes: list[np.dtype[Any]] = []
            self.step = state.epoch * steps_per_epoch
            self.started = time.monotonic()
            self.first_epoch = state.epoch

        # Names the rest of the recipe reads.
        @property
        def history(self) -> list[dict[str, Any]]:
            return self.state.history

        @property
        def best(self) -> float:
            return self.state.best

        @property
        def best_epoch(self) -> int:
            return self.state.best_epoch

        @property
        def averaged(self) -> int:
            return self.state.averaged

        def averaged_weights(self, model: Any) -> list[np.ndarray]:
            """The mean of the summed epochs' weights, in ``model``'s dtypes (a finished
            run that is resumed trains no epoch: the callback never met the model)."""
            if self.summed is None:
                raise RuntimeError("no epoch was averaged")
            dtypes = self.dtypes or [w.dtype for w in model.get_weights()]
            return [(w / self.state.averaged).astype(t) for w, t in zip(self.summed, dtypes)]

        def on_train_batch_end(self, batch: int, logs: dict[str, Any] | None = None) -> None:
            self.step += 1
            if progress and self.step % 5 == 0:
                progress(self.step, epochs * steps_per_epoch, f"loss {float((logs or {}).get('loss', math.nan)):.3f}")

        def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
            per_domain = {d.name: scores(logits_of(self.model, d, meta), d.labels) for d in val_domains}
            score = selection_score(list(per_domain.values()))
            current = self.model.get_weights()
            if average_from is not None and epoch + 1 >= average_from:
                # (Batch-norm statistics are averaged too: the tail's weights stay close.)
                self.dtypes = [w.dtype for w in current]
                weights = [np.asarray(w, np.float64) for w in current]
                self.summed = weights if self.summed is None else [a + w for a, w in zip(self.summed, weights)]
                self.state.averaged += 1
            done = epoch + 1
            elapsed = self.state.elapsed_s + time.monotonic() - self.started
            entry = {"epoch": done, "loss": float((logs or {}).get("loss", math.nan)), "score": score,
                     **{f"{n}_{k}": s[k] for n, s in per_domain.items() for k in ("accuracy", "balanced_accuracy")},
                     "seconds": round(elapsed, 1)}
            self.state.history.append(entry)
            if score > self.state.best:
                self.state.best, self.state.best_epoch, self.best_weights = score, done, current
            self.state.epoch = done
            if out_dir is not None:
                state = TrainState(**{**self.state.__dict__, "elapsed_s": elapsed})
                checkpoint.save(out_dir, Checkpoint(
                    state, [np.asarray(v) for v in self.model.variables],
                    [np.asarray(v) for v in self.model.optimizer.variables], self.summed, self.best_weights))
            per_epoch = (time.monotonic() - self.started) / max(1, done - self.first_epoch)
            log.info("epoch %d/%d: %s (%.0f s in all, about %.0f s left)", done, epochs,
                     " ".join(f"{k}={v:.3f}" for k, v in entry.items() if k not in ("epoch", "seconds")),
                     elapsed, per_epoch * (epochs - done))
            if progress:
                progress(self.step, epochs * steps_per_epoch, f"epoch {done} validation {score:.3f}")

    return EpochEnd()
