"""What a model file needs beside its weights: label order, input shape, preprocessing.

Stored as a small JSON file next to the weights (``model.keras`` -> ``model.json``), so a
user's own VGG19 224x224 RGB model loads as easily as a 64x64 grey one. When there is
no such file the shape is read from the model itself.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from enum import StrEnum
from pathlib import Path


class Preprocessing(StrEnum):
    """How 8-bit pixels become model input (after resize and colour conversion)."""

    MINUS_ONE_TO_ONE = "minus_one_to_one"  # x/127.5 - 1: mini-Xception, MobileNet, Inception
    ZERO_TO_ONE = "zero_to_one"  # x/255: ImageDataGenerator(rescale=1/255)
    CAFFE = "caffe"  # BGR minus ImageNet mean: keras.applications VGG16/VGG19/ResNet50
    RAW = "raw"  # 0..255 floats: models that rescale inside (EfficientNet, ConvNeXt)


@dataclass(frozen=True)
class ModelMetadata:
    labels: tuple[str, ...]  # the model's output order; dataset spellings are fine
    input_height: int
    input_width: int
    channels: int  # 1 = grey, 3 = colour (RGB order unless preprocessing is caffe)
    preprocessing: Preprocessing
    name: str = "model"
    face_margin: float = 0.2  # crop margin (fraction of the face box) the model was trained with
    flip_average: bool = False  # average each face's probabilities with its mirror image (chosen on validation)
    extra: dict[str, object] = field(default_factory=dict)  # provenance, metrics, licence

    def to_json(self) -> str:
        doc = asdict(self)
        doc["labels"] = list(self.labels)
        return json.dumps(doc, indent=2)

    def save(self, path: Path) -> None:
        path.write_text(self.to_json() + "\n")

    def class_prior(self) -> dict[str, float] | None:
        """The class shares the model was trained under (``extra["class_prior"]``, by
        canonical label), or None when the metadata does not say."""
        prior = self.extra.get("class_prior")
        if not isinstance(prior, dict) or not prior:
            return None
        return {str(k): float(v) for k, v in prior.items()}

    @classmethod
    def load(cls, path: Path) -> ModelMetadata:
        doc = json.loads(path.read_text())
        doc["labels"] = tuple(doc["labels"])
        doc["preprocessing"] = Preprocessing(doc["preprocessing"])
        return cls(**doc)


def sidecar_path(weights: Path) -> Path:
    """``dir/model.keras`` -> ``dir/model.json``."""
    return weights.with_suffix(".json")
