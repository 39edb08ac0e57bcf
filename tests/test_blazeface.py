"""BlazeFace: landmarks on a real photo, small and many faces, noise, alignment, bad input."""

from __future__ import annotations

import math

import cv2
import numpy as np
import pytest

from ingest.samples import sample_face, sample_frame, small_faces_frame
from model import ModelError, blazeface, create_detector
from model.blazeface import (
    LIVE_SIZES_KEPT,
    VARIANTS,
    BlazeFaceDetector,
    model_dir,
    sized_model,
    ssd_anchors,
    weighted_nms,
)
from model.preprocessing import crop_face, eye_angle
from tracks.association import iou

# Grace Hopper's pupils in the 512x600 portrait (looked up on the image by eye).
EYES = ((215, 188), (305, 184))


@pytest.fixture(scope="module")
def detector() -> BlazeFaceDetector:
    return create_detector("blazeface")  # type: ignore[return-value]


def _near(point, target, tolerance):
    return math.dist(point, target) <= tolerance


@pytest.mark.parametrize("still", [False, True])
def test_landmarks_land_on_the_eyes_of_a_real_photo(detector, still):
    [face] = detector.detect(sample_face(), still=still)
    assert face.score > 0.5 and len(face.landmarks) == 6
    eyes = sorted(face.landmarks[:2])
    assert _near(eyes[0], EYES[0], 15) and _near(eyes[1], EYES[1], 15), eyes
    nose, mouth = face.landmarks[2], face.landmarks[3]
    assert EYES[0][1] < nose[1] < mouth[1] < 320  # nose below the eyes, mouth below the nose
    x, y, w, h = face.box
    assert x < EYES[0][0] and EYES[1][0] < x + w and y < EYES[0][1] < y + h


def test_finds_every_face_of_a_multi_face_frame(detector):
    for faces in (1, 2, 3):
        found = detector.detect(sample_frame(1.0, faces=faces))
        assert len(found) == faces, found


def test_a_drifting_face_is_one_face(detector):
    # The portrait drifts across a 640x480 frame; at t=6.7 s, when frames were cut into
    # tiles, its half in one tile used to survive as a second face.
    for i in range(0, 100, 3):
        assert len(detector.detect(sample_frame(i / 10, faces=1))) == 1, i
    assert len(detector.detect(sample_frame(6.7, faces=1))) == 1


def test_finds_small_faces_at_the_default_size(detector):
    frame, planted = small_faces_frame()
    found = detector.detect(frame)
    assert len(found) == len(planted)
    for x, y, w, h in planted:
        assert any(abs(d.box[0] + d.box[2] / 2 - (x + w / 2)) < w / 2 and
                   abs(d.box[1] + d.box[3] / 2 - (y + h / 2)) < h / 2 for d in found), (x, y, w, h)
    # At 192 px they are too small to see: the size is doing the work.
    assert len(create_detector("blazeface", 192).detect(frame)) < len(planted)


def test_weak_detections_are_below_the_threshold_apart_from_faces_and_change_no_face(detector):
    """The split for tracking: faces exactly as without it; weak ones score under 0.5 and
    overlap no face; a frame made hard to see (dark, noisy) yields weak ones; stills none."""
    weak_detector = create_detector("blazeface", weak_score=0.05)
    rng = np.random.default_rng(1)
    frames = [sample_frame(t / 3, faces=2) for t in range(6)]
    frames += [np.clip(f * 0.25 + rng.normal(0, 25, f.shape), 0, 255).astype(np.uint8) for f in frames]
    split = weak_detector.detect_batch_split(frames)
    assert [faces for faces, _ in split] == detector.detect_batch(frames)
    weak = [w for _, ws in split for w in ws]
    assert weak and all(0.05 <= w.score < 0.5 for w in weak)
    assert all(iou(w.box, f.box) <= 0.3 for faces, ws in split for w in ws for f in faces)
    assert all(not ws for _, ws in weak_detector.detect_batch_split(frames, [True] * len(frames)))


def test_a_second_look_marks_weak_candidates_on_small_faces_and_none_on_noise(monkeypatch):
    """Faces of 26-40 px are 10-16 px to the full-range model at 256 px: it finds two of
    eight, and two more only as weak candidates. A closer look finds a face in both
    (``looked``), where they are; the faces stay as they were; on noise no weak
    candidate is looked. A frame gets at most SECOND_LOOK_MAX looks, best first."""
    frame, planted = small_faces_frame((26, 28, 30, 32, 34, 36, 38, 40))
    faces, weak = create_detector("blazeface", weak_score=0.2).detect_batch_split([frame])[0]
    looker = create_detector("blazeface", weak_score=0.2, second_look=0.6)
    looked_faces, looked_weak = looker.detect_batch_split([frame])[0]
    assert weak and not any(w.looked for w in weak)
    assert looked_faces == faces and [w.box for w in looked_weak] == [w.box for w in weak]
    assert all(w.looked and w.score < 0.5 for w in looked_weak)
    assert all(any(iou(w.box, box) >= 0.3 for box in planted) for w in looked_weak)
    rng = np.random.default_rng(0)
    noise = [rng.integers(0, 256, (480, 640, 3), dtype=np.uint8) for _ in range(40)]
    split = looker.detect_batch_split(noise)
    assert any(ws for _, ws in split) and not any(fs for fs, _ in split)
    assert not any(w.looked for _, ws in split for w in ws)
    monkeypatch.setattr(blazeface, "SECOND_LOOK_MAX", 1)
    [best] = [w for w in looker.detect_batch_split([frame])[0][1] if w.looked]
    assert best.score == max(w.score for w in weak)


def test_no_false_positives_on_noise(detector):
    rng = np.random.default_rng(0)
    for _ in range(200):
        noise = rng.integers(0, 256, (480, 640, 3), dtype=np.uint8)
        assert detector.detect(noise) == []


def test_tight_crops_need_the_still_padding(detector):
    x, y, w, h = 156, 117, 215, 215
    tight = np.ascontiguousarray(sample_face()[y : y + h, x : x + w])
    assert len(detector.detect(tight, still=True)) == 1


def test_a_small_grey_tight_face_is_found_as_a_still(detector):
    """A FER2013-style still (48 px, grey, the face filling it), through the short-range model."""
    x, y, w, h = 140, 100, 250, 250
    grey = cv2.cvtColor(sample_face()[y : y + h, x : x + w], cv2.COLOR_BGR2GRAY)
    small = cv2.resize(grey, (48, 48), interpolation=cv2.INTER_AREA)
    [face] = detector.detect(small, still=True)
    assert face.box[2] > 24 and len(face.landmarks) == 6
    eyes = sorted(face.landmarks[:2])  # the pupils, scaled like the photo
    assert _near(eyes[0], ((EYES[0][0] - x) * 48 / w, (EYES[0][1] - y) * 48 / h), 3), eyes
    assert _near(eyes[1], ((EYES[1][0] - x) * 48 / w, (EYES[1][1] - y) * 48 / h), 3), eyes


@pytest.mark.parametrize(
    "frame",
    [
        np.zeros((1, 1, 3), np.uint8),
        np.zeros((50, 10000, 3), np.uint8),
        np.zeros((10000, 50, 3), np.uint8),
        np.full((480, 640), 128, np.uint8),  # grey, 2-D
        np.zeros((480, 640, 4), np.uint8),  # BGRA
        np.zeros((480, 640, 3), np.uint8),  # all black
    ],
    ids=["1x1", "10000x50", "50x10000", "grey", "bgra", "black"],
)
def test_odd_frames_do_not_crash(detector, frame):
    assert detector.detect(frame) == []
    assert detector.detect(frame, still=True) == []


def test_grey_and_bgra_faces_are_still_found(detector):
    face = sample_face()
    assert len(detector.detect(cv2.cvtColor(face, cv2.COLOR_BGR2GRAY))) == 1
    assert len(detector.detect(cv2.cvtColor(face, cv2.COLOR_BGR2BGRA))) == 1


def test_missing_model_file_is_one_clear_error(tmp_path):
    missing = tmp_path / "nope.tflite"
    with pytest.raises(ModelError, match="nope.tflite"):
        BlazeFaceDetector(path=missing)


@pytest.mark.parametrize("runtime", ["tflite", "opencv"])
def test_corrupt_model_file_is_one_clear_error(tmp_path, runtime):
    corrupt = tmp_path / "corrupt.tflite"
    corrupt.write_bytes(b"TFL3" + bytes(range(256)) * 8)
    with pytest.raises(ModelError, match="corrupt.tflite") as info:
        BlazeFaceDetector(path=corrupt, runtime=runtime)
    assert "\n" not in str(info.value)


def test_both_runtimes_agree():
    frame = sample_frame(0.5, faces=2)
    tflite = BlazeFaceDetector(runtime="tflite").detect(frame)
    opencv = BlazeFaceDetector(runtime="opencv").detect(frame)
    assert len(tflite) == len(opencv) == 2
    for a, b in zip(tflite, opencv):
        assert np.allclose(a.box, b.box, atol=2) and abs(a.score - b.score) < 0.01
        assert np.allclose(a.landmarks, b.landmarks, atol=2)


def test_anchor_layouts_match_the_models():
    assert len(ssd_anchors(VARIANTS["full"])) == 48 * 48
    assert len(ssd_anchors(VARIANTS["short"])) == 16 * 16 * 2 + 8 * 8 * 6


def test_anchor_layouts_of_a_sized_input():
    anchors = ssd_anchors(VARIANTS["full"], 192, 256)
    assert len(anchors) == 48 * 64
    # Row by row, x fastest: the order of the model's (1, 48, 64, ...) output reshaped.
    assert anchors[1, 0] > anchors[0, 0] and anchors[1, 1] == anchors[0, 1]
    assert anchors[64, 1] > anchors[0, 1] and anchors[64, 0] == anchors[0, 0]


@pytest.mark.parametrize("input_hw", [(192, 256), (256, 192), (160, 256)])
def test_a_sized_model_computes_the_graph_with_free_input_dimensions(input_hw, onnx_full_range):
    """The patched file (input shape, upsampling sizes) against ONNX Runtime running the
    unpatched graph, converted by tf2onnx, with its input dimensions left free."""
    from ai_edge_litert.interpreter import Interpreter

    path = model_dir() / VARIANTS["full"].file
    interpreter = Interpreter(model_content=sized_model(path.read_bytes(), *input_hw), num_threads=1)
    interpreter.allocate_tensors()
    x = np.random.default_rng(0).uniform(-1, 1, (1, *input_hw, 3)).astype(np.float32)
    interpreter.set_tensor(interpreter.get_input_details()[0]["index"], x)
    interpreter.invoke()
    ours = sorted((interpreter.get_tensor(o["index"]) for o in interpreter.get_output_details()),
                  key=lambda a: a.shape[-1])
    theirs = sorted(onnx_full_range.run(None, {onnx_full_range.get_inputs()[0].name: x}), key=lambda a: a.shape[-1])
    anchors = input_hw[0] // 4 * (input_hw[1] // 4)
    for a, b in zip(ours, theirs, strict=True):
        assert a.shape == b.shape == (1, anchors, a.shape[-1])
        assert np.abs(a - b).max() < 1e-3 * max(1.0, float(np.abs(b).max()))


@pytest.fixture(scope="module")
def onnx_full_range():
    import onnxruntime as ort
    import tf2onnx

    proto, _ = tf2onnx.convert.from_tflite(str(model_dir() / VARIANTS["full"].file), opset=17)
    for dim, name in zip(proto.graph.input[0].type.tensor_type.shape.dim, ("n", "h", "w")):
        dim.dim_param = name
    for output in proto.graph.output:
        for dim in output.type.tensor_type.shape.dim:
            dim.dim_param = "free"
    del proto.graph.value_info[:]  # shapes inferred for the 192 px input
    return ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])


@pytest.mark.parametrize("canvas", [(720, 1280), (640, 480), (300, 1000)])
def test_frames_of_any_shape_find_the_face_where_it_is(detector, canvas):
    """A live frame of any shape is one input of its own shape: the portrait, scaled to
    half the frame's height and put off-centre, is found with its eyes where they are."""
    height, width = canvas
    face = sample_face()
    scale = height / 2 / face.shape[0]
    small = cv2.resize(face, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
    frame = np.full((height, width, 3), 90, np.uint8)
    x0, y0 = width - small.shape[1] - width // 10, height // 8
    frame[y0:y0 + small.shape[0], x0:x0 + small.shape[1]] = small
    [found] = detector.detect(frame)
    eyes = sorted(found.landmarks[:2])
    tolerance = max(6.0, 15 * scale)
    for eye, (ex, ey) in zip(eyes, EYES):
        assert _near(eye, (x0 + ex * scale, y0 + ey * scale), tolerance), (eye, canvas)


def test_models_kept_for_frame_shapes_are_bounded():
    detector = BlazeFaceDetector(detect_max_side=512)
    shapes = [(32 * k, 512) for k in range(6, 17)]  # 11 input shapes: 192x512 to 512x512
    for shape in shapes:
        assert detector.detect(np.zeros((*shape, 3), np.uint8)) == []
    assert len(detector._live) == LIVE_SIZES_KEPT < len(shapes)


def test_weighted_nms_merges_overlapping_candidates():
    def box(x0, y0, size, score_landmark):
        points = np.zeros((8, 2), np.float32)
        points[0], points[1] = (x0, y0), (x0 + size, y0 + size)
        points[2:] = score_landmark
        return points

    points = np.stack([box(0.10, 0.10, 0.2, 0.2), box(0.12, 0.10, 0.2, 0.3), box(0.6, 0.6, 0.2, 0.7)])
    scores = np.array([0.9, 0.6, 0.8], np.float32)
    merged = weighted_nms(points, scores, min_score=0.5)
    assert [round(s, 2) for _, s in merged] == [0.9, 0.8]
    first = merged[0][0]
    # Score-weighted mean of the two overlapping candidates.
    assert first[0, 0] == pytest.approx((0.9 * 0.10 + 0.6 * 0.12) / 1.5)
    assert first[2, 0] == pytest.approx((0.9 * 0.2 + 0.6 * 0.3) / 1.5)
    assert weighted_nms(points, scores, min_score=0.95) == []


def test_alignment_levels_the_eyes(detector):
    face = sample_face()
    [upright] = detector.detect(face, still=True)
    h, w = face.shape[:2]
    tilt = cv2.getRotationMatrix2D((w / 2, h / 2), 20, 1.0)  # head turned 20 degrees
    tilted = cv2.warpAffine(face, tilt, (w, h), borderMode=cv2.BORDER_REPLICATE)
    [found] = detector.detect(tilted, still=True)
    expected = eye_angle(upright.landmarks) - 20  # counter-clockwise on screen: negative
    assert eye_angle(found.landmarks) == pytest.approx(expected, abs=5)
    aligned = crop_face(tilted, found.box, 0.2, found.landmarks)
    [again] = detector.detect(aligned, still=True)
    # Within the landmarks' own noise (a few degrees each time they are measured).
    assert abs(eye_angle(again.landmarks)) < 10
    # Without landmarks the crop keeps the tilt.
    [unaligned] = detector.detect(crop_face(tilted, found.box, 0.2), still=True)
    assert eye_angle(unaligned.landmarks) == pytest.approx(expected, abs=5)
    assert abs(eye_angle(again.landmarks)) < abs(eye_angle(unaligned.landmarks)) - 10


def test_crop_size_limit_keeps_the_geometry(detector):
    [found] = detector.detect(sample_face(), still=True)
    full = crop_face(sample_face(), found.box, 0.2, found.landmarks)
    small = crop_face(sample_face(), found.box, 0.2, found.landmarks, max_size=128)
    assert small.shape[:2] == (128, 128)
    reference = cv2.resize(full, (128, 128), interpolation=cv2.INTER_AREA)
    assert np.mean(np.abs(small.astype(int) - reference.astype(int))) < 6


def test_events_carry_landmarks_and_older_consumers_ignore_new_fields():
    import json

    from emotion_stream.schema import FaceEvent, parse_event

    event = FaceEvent(
        camera="c", seq=1, captured_at=1.0, processed_at=1.1, face_index=0, faces_in_frame=1,
        box=(1, 2, 3, 4), emotion="happy", confidence=0.9, probabilities={}, whole_image=False,
        detector="blazeface", model="m", worker="w", landmarks=[[1.0, 2.0]] * 6,
    )
    assert parse_event(event.to_json()) == event
    doc = json.loads(event.to_json())
    doc["added_by_a_newer_producer"] = 1
    assert parse_event(json.dumps(doc)) == event
    del doc["landmarks"]  # from a producer that predates landmarks
    assert parse_event(json.dumps(doc)).landmarks is None
