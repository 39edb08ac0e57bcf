"""The face detectors by name: BlazeFace (default, ``blazeface.py``), OpenCV Haar cascade
(``haar.py``) and MTCNN (``mtcnn_detector.py``). Each is imported only when chosen.

Haar and MTCNN detect on a copy of the frame downscaled to ``max_side`` pixels and map the
boxes back to full resolution: detection cost grows with pixel count, and faces that matter
for emotion are large enough to survive the downscale.
"""

from __future__ import annotations

from emotion_stream.settings import DEFAULT_DETECT_SIZE, DEFAULT_STILL_DETECT_SIZE, DETECTORS

from .detection import FaceDetector


def create_detector(name: str, max_side: int | None = None, weak_score: float = 0.0,
                    second_look: float = 0.0, still_search: int = DEFAULT_STILL_DETECT_SIZE) -> FaceDetector:
    """A detector by name. ``max_side`` (unset: ``DEFAULT_DETECT_SIZE``) is the longest
    side frames are analysed at: BlazeFace runs its model on the frame scaled to it, as
    one input of the frame's shape (see ``BlazeFaceDetector``); Haar and MTCNN shrink
    frames to it and map boxes back. For
    Haar, 192 px found about the same faces as 480 px on the 350 px dev photos (157 vs
    160 of 219) for half the CPU, but misses faces under ~10 % of the frame's shorter
    side (about 64 px in 640x480). ``weak_score``: BlazeFace also reports detections down
    to this score apart (``detect_batch_split``), for tracking; the others have none.
    ``second_look``: BlazeFace looks again, closer, at each weak detection, and marks one
    whose closer look scores this much ``looked`` (``BlazeFaceDetector._second_look``).
    ``still_search``: BlazeFace also searches stills that no face fills for smaller faces
    at this longest side (``BlazeFaceDetector._detect_still``; 0: not)."""
    if name not in DETECTORS:
        raise ValueError(f"unknown detector {name!r}; choose one of {', '.join(DETECTORS)}")
    max_side = max_side or DEFAULT_DETECT_SIZE[name]
    if name == "blazeface":
        from .blazeface import BlazeFaceDetector

        return BlazeFaceDetector(detect_max_side=max_side, weak_score=weak_score, second_look=second_look,
                                 still_search=still_search)
    if name == "opencv":
        from .haar import OpenCVDetector

        return OpenCVDetector(max_side=max_side)
    from .mtcnn_detector import MTCNNDetector

    return MTCNNDetector(max_side=max_side)
