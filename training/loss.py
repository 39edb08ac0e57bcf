"""The training loss: label-smoothed cross-entropy, plus distillation from a teacher."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from emotion_stream.labels import EMOTIONS

from .batches import K

# The FER2013 teacher knows these seven of the nine labels.
TEACHER_MASK = np.array([label not in ("contempt", "uncertain") for label in EMOTIONS], np.float32)


def training_loss(classes: Sequence[int], smoothing: float, weight: float, temperature: float
                  ) -> Callable[[Any, Any], Any]:
    """Cross-entropy against the label smoothed by ``smoothing`` over ``classes`` (those
    some domain has: no mass on a class nothing is labelled with), plus ``weight`` * T^2 *
    KL(teacher_T || student_T) over the teacher's seven labels where a teacher is packed
    (see ``batches.TARGET_WIDTH``). Mixed-up targets are linear mixes; both terms take them."""
    from keras import ops

    present = np.zeros(K, np.float32)
    present[list(classes)] = 1.0
    uniform = ops.convert_to_tensor(present / present.sum())
    mask = ops.convert_to_tensor(TEACHER_MASK)

    def loss(y_true: Any, logits: Any) -> Any:
        onehot, teacher, has_teacher = y_true[:, :K], y_true[:, K: 2 * K], y_true[:, -1]
        target = (1.0 - smoothing) * onehot + smoothing * ops.sum(onehot, axis=-1, keepdims=True) * uniform
        ce = -ops.sum(target * ops.log_softmax(logits, axis=-1), axis=-1)
        if weight <= 0:
            return ce
        student = ops.log_softmax(ops.where(mask > 0, logits / temperature, -1e9), axis=-1)
        soft = ops.power(ops.maximum(teacher, 1e-8), 1.0 / temperature) * mask
        soft = soft / ops.maximum(ops.sum(soft, axis=-1, keepdims=True), 1e-8)
        kl = ops.sum(soft * (ops.log(ops.maximum(soft, 1e-8)) - student) * mask, axis=-1)
        return ce + weight * temperature**2 * has_teacher * kl

    return loss
