"""What faces and frames look like to the tracker (``model.appearance``), on real pixels."""

from __future__ import annotations

import math

import numpy as np

from emotion_stream.schema import SCENE_SIZE
from model.detection import Detection
from tracks.appearance import descriptor_distance, scene_change
from tracks.camera import CUT_CELLS, CUT_COLOUR, CUT_DARK, CUT_QUANTILE


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


def test_a_cut_moves_the_scene_signature_and_people_coming_and_going_do_not(blazeface_analyzer) -> None:
    """The background is judged, not the faces: the cells near a face (marked from the
    detector's boxes) are left out in both frames, so a face moving, or replaced by
    another at the same spot, moves nothing, and a cut to another room moves every cell."""
    from ingest.samples import sample_frame
    from model.appearance import scene_signature

    def signature(frame: np.ndarray) -> np.ndarray:
        return scene_signature(frame, [d.box for d in blazeface_analyzer.detector.detect(frame)])

    def room(frame: np.ndarray) -> np.ndarray:  # mirrored, darker, a green cast
        return np.clip(frame[:, ::-1].astype(np.float32) * (0.35, 0.9, 0.4), 0, 255).astype(np.uint8)

    first, moved = sample_frame(0.0, faces=2), sample_frame(0.2, faces=2)
    replaced = moved.copy()  # the face on the right another one
    x, y, w, h = max((d.box for d in blazeface_analyzer.detector.detect(moved)), key=lambda b: b[0])
    replaced[y:y + h, x:x + w] = 255 - replaced[y:y + h, x:x + w]
    for later in (moved, replaced):
        change = scene_change(signature(first), signature(later), CUT_CELLS, CUT_QUANTILE, CUT_DARK)
        assert change < CUT_COLOUR / 3, change
    cut = scene_change(signature(first), signature(room(moved)), CUT_CELLS, CUT_QUANTILE, CUT_DARK)
    assert cut >= 3 * CUT_COLOUR, cut


def test_a_cut_in_a_video_with_black_bars_is_judged_on_the_picture(blazeface_analyzer) -> None:
    """4:3 pictures in a 16:9 video: the bars are a quarter of the cells, never change,
    and must not hold the quantile under the mark through a cut."""
    import cv2

    from ingest.samples import sample_frame
    from model.appearance import scene_signature

    def pillarboxed(frame: np.ndarray) -> np.ndarray:
        return cv2.copyMakeBorder(frame, 0, 0, 107, 107, cv2.BORDER_CONSTANT, value=(0, 0, 0))

    def signature(frame: np.ndarray) -> np.ndarray:
        frame = pillarboxed(frame)
        return scene_signature(frame, [d.box for d in blazeface_analyzer.detector.detect(frame)])

    first, moved = sample_frame(0.0, faces=2), sample_frame(0.2, faces=2)
    other_room = np.clip(moved[::-1].astype(np.float32) * (0.5, 0.9, 1.3), 0, 255).astype(np.uint8)
    assert scene_change(signature(first), signature(moved), CUT_CELLS, CUT_QUANTILE, CUT_DARK) < CUT_COLOUR / 3
    cut = scene_change(signature(first), signature(other_room), CUT_CELLS, CUT_QUANTILE, CUT_DARK)
    assert cut >= 2 * CUT_COLOUR, cut
    black = np.zeros(SCENE_SIZE, np.float32)
    assert scene_change(black, black, CUT_CELLS, CUT_QUANTILE, CUT_DARK) == 0.0  # a dark camera: no cut


def test_two_people_replaced_at_once_are_no_cut_because_their_cells_are_left_out(blazeface_analyzer,
                                                                                face_bgr) -> None:
    """Two photos, each with its own background, over more than half the frame, replaced
    by two others at once: counted in, their cells would move the median of all cells
    past a cut."""
    import cv2

    from model.appearance import scene_signature

    def frame(photo: np.ndarray) -> np.ndarray:
        out = np.full((480, 640, 3), (90, 120, 140), np.uint8)
        square = cv2.resize(photo, (300, 300))
        out[170:470, 10:310] = out[170:470, 330:630] = square
        return out

    other = np.clip(face_bgr[:, :, ::-1] * np.array([1.4, 0.8, 0.6]), 0, 255).astype(np.uint8)  # its own light
    before, after = frame(face_bgr), frame(other)
    found = [blazeface_analyzer.detector.detect(f) for f in (before, after)]
    assert [len(faces) for faces in found] == [2, 2]
    marked_before, marked_after = (scene_signature(f, [d.box for d in faces]) for f, faces in zip((before, after), found))
    change = scene_change(marked_before, marked_after, CUT_CELLS, CUT_QUANTILE, CUT_DARK)
    assert change < CUT_COLOUR / 3, change
    unmarked = scene_change(scene_signature(before), scene_signature(after), CUT_CELLS, 0.5, CUT_DARK)
    assert unmarked >= CUT_COLOUR, unmarked


def test_a_frame_full_of_faces_is_judged_on_all_its_cells() -> None:
    """Too few cells near no face: all cells count, and a cut still changes most of them."""
    from ingest.samples import sample_frame
    from model.appearance import scene_signature

    frame, later = sample_frame(0.0), sample_frame(0.2)
    everywhere = [(x, y, 60, 60) for x in range(0, 640, 160) for y in range(0, 480, 160)]
    full = scene_signature(frame, everywhere)
    assert full.reshape(-1, 4)[:, 3].min() == 1.0
    for other, cut in ((later, False), (255 - later, True)):
        change = scene_change(full, scene_signature(other, everywhere), CUT_CELLS, CUT_QUANTILE, CUT_DARK)
        assert change >= CUT_COLOUR if cut else change < CUT_COLOUR / 3, change
