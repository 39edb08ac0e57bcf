"""Emotion classification and face detection.

``EmotionModel`` classifies face crops into the nine canonical emotions; detectors find
faces; ``FaceAnalyzer`` combines them for whole frames. Names are imported on first use
(PEP 562), so ``import model.metadata`` does not load OpenCV, and nothing here loads a
deep-learning framework: exported models serve in LiteRT or ONNX Runtime.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from emotion_stream.settings import DETECTORS as DETECTORS

if TYPE_CHECKING:
    from .analyzer import FaceAnalyzer as FaceAnalyzer
    from .analyzer import FaceResult as FaceResult
    from .detection import Detection as Detection
    from .detection import FaceDetector as FaceDetector
    from .detectors import create_detector as create_detector
    from .emotion_model import EmotionModel as EmotionModel
    from .errors import ModelError as ModelError
    from .metadata import ModelMetadata as ModelMetadata
    from .metadata import Preprocessing as Preprocessing

_WHERE = {
    "FaceAnalyzer": "analyzer", "FaceResult": "analyzer", "Detection": "detection", "FaceDetector": "detection",
    "create_detector": "detectors", "EmotionModel": "emotion_model", "ModelError": "errors",
    "ModelMetadata": "metadata", "Preprocessing": "metadata",
}

__all__ = ["DETECTORS", *sorted(_WHERE)]


def __getattr__(name: str) -> Any:
    if name not in _WHERE:
        raise AttributeError(f"module 'model' has no attribute {name!r}")
    return getattr(importlib.import_module(f".{_WHERE[name]}", __name__), name)
