"""Emotion classification and face detection.

``EmotionModel`` classifies face crops into the nine canonical emotions; detectors find
faces; ``FaceAnalyzer`` combines them for whole frames. TensorFlow is imported lazily.
"""

from emotion_stream.settings import DETECTORS

from .analyzer import FaceAnalyzer, FaceResult
from .detection import Detection, FaceDetector
from .detectors import create_detector
from .emotion_model import EmotionModel
from .errors import ModelError
from .metadata import ModelMetadata, Preprocessing

__all__ = [
    "DETECTORS",
    "Detection",
    "EmotionModel",
    "FaceAnalyzer",
    "FaceDetector",
    "FaceResult",
    "ModelError",
    "ModelMetadata",
    "Preprocessing",
    "create_detector",
]
