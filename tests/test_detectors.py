"""Every detector on a real face photo; the analyzer's batching and whole-image fallback."""

from __future__ import annotations

import numpy as np
import pytest

from emotion_stream.settings import DETECTORS
from ingest.samples import sample_frame

# Where Grace Hopper's face is in the 512x600 portrait (checked by eye).
FACE_REGION = (150, 100, 390, 350)  # x0, y0, x1, y1
EYES = ((215, 188), (305, 184))  # her pupils (as in test_blazeface)


def _inside(box, region, slack=30):
    x, y, w, h = box
    x0, y0, x1, y1 = region
    return x >= x0 - slack and y >= y0 - slack and x + w <= x1 + slack and y + h <= y1 + slack


@pytest.mark.parametrize("name", DETECTORS)
def test_detector_finds_the_face_in_a_real_photo(name, face_bgr, request):
    analyzer = request.getfixturevalue(f"{name}_analyzer")
    found = analyzer.detector.detect(face_bgr)
    assert len(found) == 1, found
    assert _inside(found[0].box, FACE_REGION)
    assert found[0].box[2] > 120  # a face, not a detail of the uniform
    assert 0.5 < found[0].score <= 1.0


@pytest.mark.parametrize("name", ["blazeface", "mtcnn"])
def test_the_eye_landmarks_land_on_the_eyes(name, face_bgr, request):
    """Detectors that find eyes report them in frame pixels, eyes first: they level the
    classifier's crop and steady the tracker's descriptor (``model.appearance``)."""
    [found] = request.getfixturevalue(f"{name}_analyzer").detector.detect(face_bgr)
    assert found.landmarks is not None and len(found.landmarks) >= 4
    eyes = sorted(found.landmarks[:2])
    assert all(np.hypot(ex - x, ey - y) <= 15 for (ex, ey), (x, y) in zip(eyes, EYES)), eyes
    nose, mouth = found.landmarks[2], found.landmarks[3]
    assert max(y for _, y in EYES) < nose[1] < mouth[1] < 320, (nose, mouth)


@pytest.mark.parametrize("name", DETECTORS)
def test_detector_finds_nothing_in_a_blank_frame(name, request):
    analyzer = request.getfixturevalue(f"{name}_analyzer")
    assert analyzer.detector.detect(np.full((480, 640, 3), 127, np.uint8)) == []


@pytest.mark.parametrize("name", DETECTORS)
def test_analyzer_batches_frames_with_several_faces(name, request):
    analyzer = request.getfixturevalue(f"{name}_analyzer")
    frames = [sample_frame(0.0, faces=1), sample_frame(1.0, faces=2), sample_frame(2.0, faces=3)]
    results = analyzer.analyze_batch(frames)
    assert [len(r) for r in results] == [1, 2, 3]
    for faces in results:
        areas = [f.box[2] * f.box[3] for f in faces]
        assert areas == sorted(areas, reverse=True)  # largest face first
        for face in faces:
            assert not face.whole_image
            assert face.probabilities.shape == (9,)
            assert abs(float(face.probabilities.sum()) - 1.0) < 1e-4
            assert face.emotion in ("neutral", "sad", "happy")


def test_whole_image_fallback_only_when_asked(opencv_analyzer):
    blank = np.full((100, 100, 3), 90, np.uint8)
    assert opencv_analyzer.analyze(blank) == []
    [result] = opencv_analyzer.analyze(blank, whole_image_fallback=True)
    assert result.whole_image and result.box == (0, 0, 100, 100)


@pytest.mark.parametrize("name", ["opencv", "blazeface"])
def test_detection_runs_on_a_downscaled_frame_and_maps_back(name, face_bgr, request):
    import cv2

    detector = request.getfixturevalue(f"{name}_analyzer").detector
    big = cv2.resize(face_bgr, (face_bgr.shape[1] * 3, face_bgr.shape[0] * 3))
    [small_hit] = detector.detect(face_bgr)
    [big_hit] = detector.detect(big)
    # Same face, coordinates in the big frame's pixels (3x), within a few pixels.
    assert np.allclose(np.array(big_hit.box) / 3, small_hit.box, atol=12)


def _group_photo(face: np.ndarray, size: tuple[int, int],
                 tile: int) -> tuple[np.ndarray, list[tuple[int, int, int, int]]]:
    """The portrait tiled over a grey photo of ``size``, ``tile`` px wide each, and where
    each copy's face is (FACE_REGION scaled)."""
    import cv2

    width, height = size
    photo = np.full((height, width, 3), 150, np.uint8)
    scale = tile / face.shape[1]
    copy = cv2.resize(face, (tile, round(face.shape[0] * scale)))
    regions = []
    for y in range(20, height - copy.shape[0] + 1, copy.shape[0] + 20):
        for x in range(20, width - tile + 1, tile + 20):
            photo[y:y + copy.shape[0], x:x + tile] = copy
            x0, y0, x1, y1 = FACE_REGION
            regions.append((x + round(x0 * scale), y + round(y0 * scale), x + round(x1 * scale), y + round(y1 * scale)))
    return photo, regions


@pytest.mark.parametrize(("size", "tile"), [((640, 480), 130), ((3000, 2000), 400)])
def test_a_still_of_several_people_gives_every_face(face_bgr, size, tile):
    """A group photo's faces are far under the still view's reach (it shows a 640x480
    photo to the short-range model at an eighth of its size): a still no face fills is
    searched again with the full-range model, and each face is found once."""
    from model.blazeface import BlazeFaceDetector

    photo, regions = _group_photo(face_bgr, size, tile)
    found = BlazeFaceDetector().detect(photo, still=True)
    assert len(found) == len(regions) >= 6
    for region in regions:
        assert sum(_inside(face.box, region, slack=tile // 10) for face in found) == 1, region
    assert BlazeFaceDetector(still_search=0).detect(photo, still=True) == []  # the face crops' view alone


def test_a_face_crop_is_searched_as_before(face_bgr):
    from model.blazeface import BlazeFaceDetector

    [face] = BlazeFaceDetector().detect(face_bgr, still=True)
    assert [face] == BlazeFaceDetector(still_search=0).detect(face_bgr, still=True)
