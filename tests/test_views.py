"""Crop views (``model.views``): a still's face classified through several crops, averaged."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest

from model.preprocessing import crop_face
from model.views import CENTRED, MAX_VIEWS, SHIFT, View, crop_shifted, cut_plan, view_set


def test_each_pair_is_centred_on_the_face_and_eight_see_every_point_in_both_mirrors() -> None:
    eight = view_set(MAX_VIEWS)
    for first, second in zip(eight[::2], eight[1::2]):
        assert (first.dx + second.dx, first.dy + second.dy) == (0, 0)  # opposite points
        assert first.mirrored != second.mirrored
        assert max(abs(first.dx), abs(first.dy)) == SHIFT
    seen = Counter(eight)
    assert len(seen) == 16 and set(seen.values()) == {1}  # 8 points x 2 mirror images, once each
    assert len({(v.dx, v.dy) for v in view_set(4)}) == 8  # four pairs reach every point
    assert view_set(1) == CENTRED and view_set(1, per_pair=1) == (View(),)
    assert len(view_set(8, per_pair=1)) == 8
    with pytest.raises(ValueError, match="views must be 1-8, not 9"):
        view_set(9)


@pytest.mark.parametrize("n, per_pair", [(1, 2), (1, 1), (4, 2), (8, 2), (8, 1)])
def test_a_cut_plan_cuts_each_place_once_and_keeps_every_view(n: int, per_pair: int) -> None:
    plan = cut_plan(n, per_pair)
    assert len(set(plan.places)) == len(plan.places) and not any(p.mirrored for p in plan.places)
    assert {i for i, _ in plan.looks} == set(range(len(plan.places)))
    views = [View(plan.places[i].dx, plan.places[i].dy, mirrored) for i, mirrored in plan.looks]
    assert views == list(view_set(n, per_pair))
    assert len(cut_plan(8).places) == 8  # 16 views of 8 places: each place in both mirror images


def test_a_view_moves_the_crop_by_its_share_of_the_box(face_bgr) -> None:
    box, size = (60, 50, 100, 120), 128
    assert np.array_equal(crop_shifted(face_bgr, box, 0.2, None, size, View()), crop_face(face_bgr, box, 0.2, None, size))
    moved = crop_shifted(face_bgr, box, 0.2, None, size, View(-SHIFT, SHIFT, mirrored=True))
    assert np.array_equal(moved, crop_face(face_bgr, (54, 57, 100, 120), 0.2, None, size))  # mirrored later


def test_one_view_is_the_centred_crop_and_its_mirror_as_flip_averaging_was(blazeface_analyzer, face_bgr) -> None:
    model = blazeface_analyzer.model
    assert model.metadata.flip_average
    (face,) = blazeface_analyzer.detector.detect(face_bgr)
    crop = crop_face(face_bgr, face.box, model.face_margin, face.landmarks, 128)
    (result,), = blazeface_analyzer.classify([face_bgr], [[face]], [False])
    np.testing.assert_allclose(result.probabilities, model.predict_proba([crop])[0], atol=1e-6)


def test_a_frames_views_are_averaged_and_frames_with_other_counts_share_the_call(blazeface_analyzer, face_bgr):
    model = blazeface_analyzer.model
    (face,) = blazeface_analyzer.detector.detect(face_bgr)
    blank = np.full((90, 60, 3), 128, np.uint8)  # no face: classified whole, with its mirror only
    frames, found = [face_bgr, blank, face_bgr], [[face], [], [face]]
    one, whole, eight = blazeface_analyzer.classify(frames, found, [False, True, False], views=[1, 8, 8])
    by_hand = []
    for view in view_set(8):
        crop = crop_shifted(face_bgr, face.box, model.face_margin, face.landmarks, 128, view)
        by_hand.append(np.ascontiguousarray(crop[:, ::-1]) if view.mirrored else crop)
    np.testing.assert_allclose(eight[0].probabilities, model.predict_proba(by_hand).mean(axis=0), atol=1e-5)
    np.testing.assert_allclose(one[0].probabilities, blazeface_analyzer.analyze(face_bgr)[0].probabilities, atol=1e-6)
    assert whole[0].whole_image
    np.testing.assert_allclose(whole[0].probabilities, model.predict_proba([blank])[0], atol=1e-6)
    assert np.abs(one[0].probabilities - eight[0].probabilities).max() > 1e-4


def test_every_face_needs_a_look_at_a_crop_there_is(default_model, face_bgr) -> None:
    with pytest.raises(ValueError, match="a face without a look"):
        default_model.predict_views([face_bgr], [[(0, False)], []])
    with pytest.raises(ValueError, match="looks at crops 0-1 of 1"):
        default_model.predict_views([face_bgr], [[(0, False), (1, True)]])
    assert default_model.predict_views([], []).shape == (0, 9)
    one, mirrored, both = default_model.predict_views([face_bgr], [[(0, False)], [(0, True)], [(0, False), (0, True)]])
    np.testing.assert_allclose(both, (one + mirrored) / 2, atol=1e-6)
    np.testing.assert_allclose(both, default_model.predict_proba([face_bgr])[0], atol=1e-6)


def test_the_worker_gives_stills_their_views_and_live_frames_one(blazeface_analyzer, face_bgr):
    import cv2

    from emotion_stream.images import ImageLimits
    from emotion_stream.schema import FrameKind, FrameMessage
    from worker.processing import FrameProcessor

    data = cv2.imencode(".jpg", face_bgr)[1].tobytes()
    h, w = face_bgr.shape[:2]
    messages = [FrameMessage("cam", seq, 0.0, kind, data, w, h) for seq, kind in enumerate((FrameKind.LIVE, FrameKind.STILL))]
    limits = ImageLimits(10_000_000, 10_000_000)
    (live, still), _ = FrameProcessor(blazeface_analyzer, limits, still_views=8).process(messages)
    (centred_live, centred_still), _ = FrameProcessor(blazeface_analyzer, limits).process(messages)
    np.testing.assert_allclose(live.faces[0].probabilities, centred_live.faces[0].probabilities, atol=1e-6)
    assert np.abs(still.faces[0].probabilities - centred_still.faces[0].probabilities).max() > 1e-4


def test_a_batch_job_with_other_views_is_another_job(tmp_path) -> None:
    from batch.job import job_id, job_key
    from emotion_stream.settings import Settings

    centred = job_key(tmp_path, Settings())
    assert "still_views" not in centred  # the key of a job begun before views existed
    assert job_id(job_key(tmp_path, Settings(still_views=8))) != job_id(centred)
    assert job_key(tmp_path, Settings(still_views=1)) == centred
