"""What faces and frames look like to the tracker (``model.appearance``), on real pixels."""

from __future__ import annotations

import math

import numpy as np

from model.detection import Detection
from tracks.appearance import descriptor_distance, scene_change
from tracks.camera import CUT_HISTOGRAM, CUT_LAYOUT


def _turned(landmarks: list[tuple[float, float]], degrees: float) -> list[tuple[float, float]]:
    """The landmarks turned about the eyes' midpoint: what a detector reports for a face
    seen from the side, whose eye points are a few pixels apart and swing frame to frame."""
    (ax, ay), (bx, by) = landmarks[0], landmarks[1]
    cx, cy = (ax + bx) / 2, (ay + by) / 2
    c, s = math.cos(math.radians(degrees)), math.sin(math.radians(degrees))
    return [(cx + (x - cx) * c - (y - cy) * s, cy + (x - cx) * s + (y - cy) * c) for x, y in landmarks]


def test_a_face_looks_the_same_whatever_angle_its_eye_landmarks_swing_to(blazeface_analyzer, face_bgr):
    """The descriptor is taken upright: the eye angle that levels the classifier's crop
    would turn the descriptor with every swing of a side-on face's eye points, and the
    tracker would see two people where there is one."""
    (face,) = blazeface_analyzer.detector.detect(face_bgr)
    assert face.landmarks is not None
    swung = [Detection(face.box, face.score, _turned(list(face.landmarks), d)) for d in (-20.0, 0.0, 20.0)]
    results = blazeface_analyzer.classify([face_bgr] * 3, [[d] for d in swung], [False] * 3, describe=[True] * 3)
    descriptors = [faces[0].descriptor for faces in results]
    assert all(d is not None and abs(float(np.linalg.norm(d)) - 1.0) < 1e-4 for d in descriptors)
    assert max(descriptor_distance(descriptors[1], d) for d in descriptors) < 1e-6


def test_a_face_boxed_at_another_scale_keeps_its_looks_by_its_eyes(blazeface_analyzer, face_bgr):
    """Detectors box one face at two scales on alternate frames (MTCNN the sample clip's
    face 133 or 160 px high); the eyes steady the square the layout is cut from."""
    from model.appearance import face_descriptor

    (face,) = blazeface_analyzer.detector.detect(face_bgr)
    x, y, w, h = face.box
    taller = (x, y - h // 10, w, h + h // 5)
    by_box = descriptor_distance(face_descriptor(face_bgr, face.box), face_descriptor(face_bgr, taller))
    by_eyes = descriptor_distance(face_descriptor(face_bgr, face.box, face.landmarks),
                                  face_descriptor(face_bgr, taller, face.landmarks))
    assert by_eyes < 0.6 * by_box, (by_eyes, by_box)


def test_a_cut_moves_the_scene_signature_and_a_moving_face_does_not() -> None:
    from ingest.samples import sample_frame
    from model.appearance import scene_signature

    a, b = scene_signature(sample_frame(0.0)), scene_signature(sample_frame(0.2))
    room = np.clip(sample_frame(0.2)[:, ::-1].astype(np.float32) * (0.35, 0.9, 0.4), 0, 255).astype(np.uint8)
    layout, histogram = scene_change(a, b)
    cut_layout, cut_histogram = scene_change(a, scene_signature(room))
    assert layout < CUT_LAYOUT and histogram < CUT_HISTOGRAM
    assert cut_layout >= CUT_LAYOUT and cut_histogram >= CUT_HISTOGRAM
