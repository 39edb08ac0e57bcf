"""The tracker itself (pure): association, smoothing, reordering, lifecycle, state."""

from __future__ import annotations

import dataclasses
import json
from collections import Counter, defaultdict

import numpy as np
import pytest

from emotion_stream.labels import EMOTIONS
from emotion_stream.schema import (
    DESCRIPTOR_SIZE,
    OLD_SCENE_SIZE,
    FrameRecord,
    FrameStatus,
    TrackEvent,
    TrackEventType,
    decode_vector,
    encode_vector,
)
from emotion_stream.settings import Settings
from tracks.association import Motion
from tracks.camera import CONFIRMED_HITS, CUT_WITHIN_S, CameraTracker, Track, TrackerConfig, TrackerOutput
from tracks.smoothing import EmotionSmoother

from .track_scenes import FPS, Person, looks, records

CONFIG = TrackerConfig(timeout_s=1.0, reorder_window_s=0.3)


def run(recs: list[FrameRecord], *, order: list[int] | None = None, tracker: CameraTracker | None = None,
        restore_every: int = 0) -> tuple[list[dict], list[TrackEvent], CameraTracker]:
    """Feed records (in ``order``) arriving one frame interval apart; flush after each."""
    tracker = tracker or CameraTracker("cam", CONFIG)
    events: list[dict] = []
    lifecycle: list[TrackEvent] = []
    now = 0.0
    for step, i in enumerate(order if order is not None else range(len(recs))):
        now = 100.0 + step / FPS
        out = TrackerOutput()
        tracker.add(recs[i], now, out)
        for o in (out, tracker.flush(now)):
            events += [json.loads(e) for e in o.events]
            lifecycle += o.lifecycle
        if restore_every and step % restore_every == 0:
            tracker = CameraTracker.from_state(tracker.to_state(), CONFIG)
    for extra in range(1, 60):  # let the window pass and the camera fall silent
        out = tracker.flush(now + extra * 0.1)
        events += [json.loads(e) for e in out.events]
        lifecycle += out.lifecycle
    return events, lifecycle, tracker


def tracks_of(events: list[dict]) -> dict[str, Counter]:
    """person (from the synthetic name) -> Counter of track ids given to their faces."""
    found: dict[str, Counter] = defaultdict(Counter)
    for e in events:
        if e.get("type") == "face":
            found[e["name"]][e["track"]] += 1
    return found


def test_two_people_crossing_paths_keep_their_ids():
    people = [Person("happy", 40, 200, 150), Person("sad", 520, 205, -150, hidden=(1.5, 1.8))]
    events, lifecycle, _ = run(records("cam", people, 3.0))
    ids = tracks_of(events)
    assert len(ids["person0"]) == 1 and len(ids["person1"]) == 1, ids
    assert set(ids["person0"]) != set(ids["person1"])
    kinds = Counter(e.type for e in lifecycle)
    assert kinds[TrackEventType.STARTED] == 2 and kinds[TrackEventType.ENDED] == 2


@pytest.mark.parametrize("hidden_s, same_track", [(0.6, True), (1.6, False)])
def test_occlusion_shorter_than_the_timeout_keeps_the_track_longer_ends_it(hidden_s, same_track):
    person = Person("neutral", 300, 200, 0, hidden=(1.0, 1.0 + hidden_s))
    events, lifecycle, _ = run(records("cam", [person], 4.0))
    ids = tracks_of(events)["person0"]
    assert (len(ids) == 1) is same_track, ids
    ended = [e for e in lifecycle if e.type is TrackEventType.ENDED]
    assert len(ended) == len(ids)
    if not same_track:
        assert ended[0].reason == "timeout" and ended[0].duration_s == pytest.approx(1.0 - 1 / FPS, abs=0.01)


def test_frames_skipped_under_overload_do_not_end_a_track_but_endless_skipping_does():
    """A stale-skipped frame was never looked at: 1.6 s of them (longer than the timeout)
    keep the track; skipping for more than UNSEEN_TIMEOUTS timeouts ends it."""
    from tracks.camera import UNSEEN_TIMEOUTS

    def skipping(start_s: float, end_s: float, seconds: float) -> list[FrameRecord]:
        recs = records("cam", [Person("happy", 300, 200, 0)], seconds)
        return [FrameRecord(r.camera, r.seq, r.captured_at, FrameStatus.SKIPPED, []) if start_s <= r.seq / FPS < end_s
                else r for r in recs]

    events, lifecycle, _ = run(skipping(1.0, 2.6, 4.0))
    assert len(tracks_of(events)["person0"]) == 1
    assert [e.reason for e in lifecycle if e.type is TrackEventType.ENDED] == ["camera_silent"]
    long_gap = UNSEEN_TIMEOUTS * CONFIG.timeout_s + 0.5
    events, lifecycle, _ = run(skipping(1.0, 1.0 + long_gap, long_gap + 2.0))
    assert len(tracks_of(events)["person0"]) == 2
    assert [e.reason for e in lifecycle if e.type is TrackEventType.ENDED][0] == "timeout"


def test_weak_detections_hold_a_track_through_a_dip_but_never_start_or_keep_one_for_long():
    """ByteTrack's second association: a face whose detector score dips below the face
    threshold for 1.5 s (weak boxes only) keeps its track; weak boxes alone start no
    track; weak boxes lingering where a face was hold its track only so long."""
    from tracks.camera import WEAK_HOLD_TIMEOUTS

    def with_weak(recs: list[FrameRecord], start_s: float, end_s: float, keep_face: bool = False,
                  box=None) -> list[FrameRecord]:
        out = []
        for r in recs:
            if start_s <= r.seq / FPS < end_s:
                boxes = [tuple(f["box"]) for f in r.faces] if box is None else [box]
                faces = r.faces if keep_face else []
                r = FrameRecord(r.camera, r.seq, r.captured_at, r.status, faces, [{"box": list(b)} for b in boxes])
            out.append(r)
        return out

    person = Person("happy", 300, 200, 20)
    events, lifecycle, _ = run(with_weak(records("cam", [person], 4.0), 1.0, 2.5))
    assert len(tracks_of(events)["person0"]) == 1
    assert Counter(e.type for e in lifecycle)[TrackEventType.STARTED] == 1

    nobody = [FrameRecord("cam", i, 1_000_000.0 + i / FPS, FrameStatus.ANALYSED, [], [{"box": [100, 100, 60, 60]}])
              for i in range(30)]
    events, lifecycle, _ = run(nobody)
    assert not lifecycle and not events

    # The face leaves at 1 s; a false weak box stays where it was for 5 s.
    gone = Person("sad", 300, 200, 0, end=1.0)
    recs = records("cam", [gone], 6.0)
    recs = with_weak(recs, 1.0, 6.0, box=(300, 200, 60, 60))
    _, lifecycle, _ = run(recs)
    [ended] = [e for e in lifecycle if e.type is TrackEventType.ENDED]
    assert ended.reason == "timeout"
    assert ended.at - 1_000_000.0 <= 1.0 + (WEAK_HOLD_TIMEOUTS + 1) * CONFIG.timeout_s + 0.1


def test_a_frames_weak_detections_are_numbered_after_its_faces():
    """(seq, face_index) names one event: the worker numbers weak detections after the
    frame's faces, and the human line says which are weak."""
    from cli.common import format_event
    from emotion_stream.schema import FaceEvent, FrameKind, FrameMessage
    from model.analyzer import FaceResult
    from worker.outcomes import Origin, analyzed_outcome
    from worker.streams import Entry

    def face(x: int, weak: bool) -> FaceResult:
        return FaceResult((x, 10, 40, 40), "happy", 0.9, np.eye(len(EMOTIONS))[EMOTIONS.index("happy")], 0.9,
                          weak=weak)

    message = FrameMessage("cam", 7, 1.0, FrameKind.LIVE, b"", 640, 480)
    outcome = analyzed_outcome(Entry("s", "1-0", None), message, [face(0, False)], 1.1, Origin("w", "d", "m"),
                               tracking=True, weak=[face(100, True), face(200, True)])
    record = FrameRecord.from_json(outcome.frame_record)
    docs = [*record.faces, *record.weak]
    assert [(d["face_index"], d["faces_in_frame"], d["weak"]) for d in docs] == [(0, 1, False), (1, 1, True),
                                                                                (2, 1, True)]
    lines = [format_event(FaceEvent(**{k: v for k, v in d.items() if k not in ("type", "v")})) for d in docs]
    assert [line.endswith("(weak)") for line in lines] == [False, True, True]


def test_frame_records_round_trip_weak_detections_and_refuse_malformed_ones():
    from emotion_stream.schema import SCENE_SIZE, MessageError

    descriptor = encode_vector([0.1] * DESCRIPTOR_SIZE)
    record = FrameRecord("cam", 3, 1.5, FrameStatus.ANALYSED, [], [{"box": [1, 2, 30, 40], "descriptor": descriptor}],
                         encode_vector([0.5] * SCENE_SIZE))
    assert FrameRecord.from_json(record.to_json()) == record
    assert "weak" not in FrameRecord("cam", 3, 1.5, FrameStatus.ANALYSED).to_json()  # old shape when none
    # A worker from before descriptors wrote bare boxes: read as weak detections without more.
    old = {**json.loads(record.to_json()), "weak": [[1, 2, 30, 40]]}
    assert FrameRecord.from_json(json.dumps(old)).weak == [{"box": [1, 2, 30, 40]}]
    for bad in ([[1, 2]], [[1, 2, 0, 5]], [["x", 1, 2, 3]], 7, [{"box": [1, 2, 3, 4], "descriptor": "AAAA"}]):
        doc = {**json.loads(record.to_json()), "weak": bad}
        with pytest.raises(MessageError):
            FrameRecord.from_json(json.dumps(doc))
    nan = encode_vector([float("nan")] + [0.0] * (DESCRIPTOR_SIZE - 1))
    infinite = encode_vector([0.0] * (DESCRIPTOR_SIZE - 2) + [float("inf"), float("-inf")])
    short = encode_vector([0.0] * (DESCRIPTOR_SIZE - 1))
    face = json.loads(records("cam", [Person("happy", 100, 100, 0)], 0.1)[0].to_json())["faces"][0]
    for descriptor, reason in ((nan, "not a finite number"), (infinite, "not a finite number"),
                               (short, f"{DESCRIPTOR_SIZE - 1} values, expected")):
        doc = {**json.loads(record.to_json()), "faces": [{**face, "descriptor": descriptor}]}
        with pytest.raises(MessageError, match=reason):
            FrameRecord.from_json(json.dumps(doc))
    with pytest.raises(MessageError, match="scene signature"):
        FrameRecord.from_json(json.dumps({**json.loads(record.to_json()), "scene": short}))
    # An older worker's signature (a brightness grid and a histogram) is read as none: no
    # cut is called on that frame, and the frame is not lost.
    old_scene = encode_vector([0.5] * OLD_SCENE_SIZE)
    assert FrameRecord.from_json(json.dumps({**json.loads(record.to_json()), "scene": old_scene})).scene == ""
    with pytest.raises(MessageError, match="scene signature: not a finite number"):
        FrameRecord.from_json(json.dumps({**json.loads(record.to_json()),
                                          "scene": encode_vector([float("nan")] * OLD_SCENE_SIZE)}))


def test_shuffled_arrival_within_the_window_gives_the_in_order_result():
    recs = records("cam", [Person("happy", 100, 100, 50), Person("anger", 400, 100, -30)], 3.0)
    in_order = run(recs)
    rng = np.random.default_rng(1)
    order = list(range(len(recs)))
    for start in range(0, len(order), 3):  # two workers: neighbours finish swapped
        chunk = order[start:start + 3]
        rng.shuffle(chunk)
        order[start:start + 3] = chunk
    shuffled = run(recs, order=order)
    def strip(events: list[dict]) -> list[tuple]:
        return [(e["seq"], e["track"], e["track_emotion"]) for e in events if e.get("type") == "face"]

    assert strip(shuffled[0]) == strip(in_order[0])
    assert [e.to_json() for e in shuffled[1]] == [e.to_json() for e in in_order[1]]
    assert [e["seq"] for e in shuffled[0] if e.get("type") == "face"] == sorted(
        e["seq"] for e in shuffled[0] if e.get("type") == "face")


def test_state_saved_and_restored_every_few_frames_changes_nothing():
    recs = records("cam", [Person("surprise", 100, 100, 80), Person("fear", 500, 300, -60, start=0.5)], 3.0)
    plain = run(recs)
    restored = run(recs, restore_every=4)
    assert [json.dumps(e, sort_keys=True) for e in restored[0]] == [json.dumps(e, sort_keys=True) for e in plain[0]]
    assert [e.to_json() for e in restored[1]] == [e.to_json() for e in plain[1]]


def test_after_a_spell_of_skipped_frames_a_face_must_look_closer_to_continue_its_track():
    """Skipped frames hide whether someone left: after a spell longer than the timeout, a
    face continues a track only within the tighter stale gate. A look-alike (0.16 from
    the person's looks: within the usual gate) at the same spot after 1.6 s of skipped
    frames starts a track of its own; the person themself keeps theirs, and with every
    frame looked at, the look-alike's change goes by as the same face."""
    gates = CONFIG.gates
    assert gates.stale_appearance < 0.16 < gates.max_appearance  # (the look-alike: between the two)
    other = np.random.default_rng(3).normal(size=DESCRIPTOR_SIZE)  # how the look-alike differs

    def clip(skip: bool, lookalike: bool) -> list[FrameRecord]:
        recs = records("cam", [Person("happy", 300, 200, 0)], 4.0, describe=True)
        out = []
        for r in recs:
            if skip and 1.0 <= r.seq / FPS < 2.6:
                out.append(FrameRecord(r.camera, r.seq, r.captured_at, FrameStatus.SKIPPED, []))
                continue
            if lookalike and r.seq / FPS >= 2.6:
                u = np.asarray(decode_vector(r.faces[0]["descriptor"], DESCRIPTOR_SIZE))
                w = other - np.dot(other, u) * u
                turned = 0.84 * u + np.sqrt(1 - 0.84**2) * w / np.linalg.norm(w)  # cosine distance 0.16
                r.faces[0]["descriptor"] = encode_vector(turned.tolist())
            out.append(r)
        return out

    for skip, lookalike, tracks in ((True, False, 1), (True, True, 2), (False, True, 1)):
        events, lifecycle, _ = run(clip(skip, lookalike))
        assert len(tracks_of(events)["person0"]) == tracks, (skip, lookalike)
        if tracks == 2:
            ended = [e.reason for e in lifecycle if e.type is TrackEventType.ENDED]
            assert ended[0] == "replaced", ended


def test_a_frame_that_never_arrives_is_skipped_after_the_window_and_counted():
    recs = records("cam", [Person("happy", 100, 100, 0)], 1.0)
    tracker = CameraTracker("cam", CONFIG)
    out = TrackerOutput()
    window = CONFIG.reorder_window_s
    for r in recs[1:5]:
        tracker.add(r, 100.0, out)
    assert not tracker.flush(100.0 + window / 2)  # a camera joined mid-stream waits for stragglers once
    first = tracker.flush(100.0 + window + 1e-6)
    assert [json.loads(e)["seq"] for e in first.events] == [1, 2, 3, 4] and first.gaps == 0
    starting = CameraTracker("cam", CONFIG)
    starting.add(recs[0], 100.0, out)
    assert len(starting.flush(100.0).events) == 1  # a source's first frame: nothing can come before it
    for r in recs[6:]:
        tracker.add(r, 101.0, out)
    assert not tracker.flush(101.0 + window / 2)  # frame 5 may still come
    later = tracker.flush(101.0 + window + 1e-6)
    assert later.gaps == 1 and json.loads(later.events[0])["seq"] == 6
    late = TrackerOutput()
    tracker.add(recs[5], 101.0, late)  # arrives after all: published, without a track
    assert tracker.late == 1 and [json.loads(e)["track"] for e in late.events] == [None]


def test_a_recorded_videos_missing_frame_is_waited_for_longer():
    """Every frame of a recorded video comes, in batches of the workers that read it as
    fast as they can: a missing one is waited for RECORDED_REORDER_WINDOW_S, not the live
    window, and then joins its track."""
    from tracks.camera import RECORDED_REORDER_WINDOW_S

    recs = [dataclasses.replace(r, position_s=r.captured_at - 1000.0)
            for r in records("cam", [Person("happy", 100, 100, 0)], 1.0)]
    tracker = CameraTracker("cam", CONFIG)
    out = TrackerOutput()
    for r in recs[:3] + recs[4:8]:
        tracker.add(r, 100.0, out)
    first = tracker.flush(100.0)
    assert [json.loads(e)["seq"] for e in first.events] == [0, 1, 2]
    [started] = first.lifecycle  # where in the video the person appeared
    assert started.position_s == round(recs[0].position_s, 6) and started.at == recs[0].captured_at
    assert not tracker.flush(100.0 + 10 * CONFIG.reorder_window_s).events  # frame 3 is coming
    tracker.add(recs[3], 106.0, out)
    events = [json.loads(e) for e in tracker.flush(106.0).events]
    assert [e["seq"] for e in events] == [3, 4, 5, 6, 7] and {e["track"] for e in events} == {1}
    tracker.add(recs[9], 107.0, out)  # frame 8 never comes: skipped after the longer window
    tracker = CameraTracker.from_state(tracker.to_state(), CONFIG)  # an owner's takeover keeps it
    assert not tracker.flush(107.0 + RECORDED_REORDER_WINDOW_S / 2).events
    assert tracker.flush(107.0 + RECORDED_REORDER_WINDOW_S + 1e-6).gaps == 1


def test_duplicated_records_never_publish_twice():
    recs = records("cam", [Person("happy", 100, 100, 0)], 1.0)
    twice = [r for r in recs for _ in range(2)]  # every record delivered twice
    events, lifecycle, tracker = run(twice)
    faces = [e for e in events if e.get("type") == "face"]
    assert sorted(e["seq"] for e in faces) == list(range(len(recs)))
    assert tracker.duplicates == len(recs) and tracker.late == 0
    kinds = Counter(e.type for e in lifecycle)
    assert kinds[TrackEventType.STARTED] == kinds[TrackEventType.ENDED] == 1


def test_end_marker_ends_every_track_once_then_publishes_the_end():
    recs = records("cam", [Person("happy", 100, 100, 0), Person("sad", 300, 100, 0)], 1.0)
    end = FrameRecord("cam", len(recs), recs[-1].captured_at + 0.05, FrameStatus.END)
    events, lifecycle, tracker = run(recs + [end])
    ended = [e for e in lifecycle if e.type is TrackEventType.ENDED]
    assert sorted(e.track for e in ended) == [1, 2] and {e.reason for e in ended} == {"end_of_stream"}
    assert events[-1]["type"] == "end" and not tracker.tracks
    assert ended[0].emotion_seconds and ended[0].duration_s == pytest.approx((len(recs) - 1) / FPS, abs=0.01)


def test_a_camera_that_stops_without_an_end_marker_ends_its_tracks():
    events, lifecycle, tracker = run(records("cam", [Person("happy", 100, 100, 0)], 1.0))
    assert [e.reason for e in lifecycle if e.type is TrackEventType.ENDED] == ["camera_silent"]


def test_a_camera_restarting_its_numbering_ends_the_old_tracks():
    first = records("cam", [Person("happy", 100, 100, 0)], 1.0)
    again = records("cam", [Person("happy", 100, 100, 0)], 1.0, t0=first[-1].captured_at + 5)
    events, lifecycle, _ = run(first + again)
    reasons = [e.reason for e in lifecycle if e.type is TrackEventType.ENDED]
    assert reasons[0] == "camera_restarted" and len(reasons) == 2
    assert len([e for e in events if e.get("type") == "face"]) == len(first) + len(again)


def test_smoothing_with_hysteresis_flickers_far_less_than_frames():
    rng = np.random.default_rng(3)
    smoother = EmotionSmoother(0.5, 0.1, 3)
    raw_flips = shown_flips = 0
    last_raw = None
    for i in range(300):  # 20 s of a happy face, noisy classifier
        p = rng.dirichlet(np.full(9, 0.3)) * 0.8
        p[4] += 0.2
        raw = int(np.argmax(p))
        raw_flips += last_raw is not None and raw != last_raw
        last_raw = raw
        shown_flips += smoother.update(p, i / FPS) is not None
    assert raw_flips > 50 and shown_flips <= 2 and smoother.shown == "happy"


def test_a_real_change_of_expression_comes_through_after_the_hold():
    smoother = EmotionSmoother(0.3, 0.1, 3)
    def one_hot(i: int) -> np.ndarray:
        return np.eye(9)[i] * 0.9 + 0.1 / 9

    for i in range(30):
        smoother.update(one_hot(4), i / FPS)
    changes = [(i, smoother.update(one_hot(7), (30 + i) / FPS)) for i in range(30)]
    switched = [i for i, previous in changes if previous is not None]
    assert len(switched) == 1 and smoother.shown == "surprise" and 2 <= switched[0] <= 12


def test_dominant_emotion_votes_with_likelihoods_when_the_model_prior_is_known():
    """Summed probabilities favour what the model saw most in training; divided by the
    training prior, the emotion these frames are evidence for wins."""
    prior = {"anger": 0.1, "contempt": 0.02, "disgust": 0.1, "fear": 0.1, "happy": 0.2, "neutral": 0.3, "sad": 0.1,
             "surprise": 0.08}
    frames = [{"neutral": 0.5, "anger": 0.3, "happy": 0.2}] * 10 + [{"anger": 0.1, "contempt": 0.02, "neutral": 0.88}]
    track = Track(1, 0.0, 0.0, 0, Motion((0, 0, 10, 10), 0.0), EmotionSmoother(0.5, 0.1, 3),
                  evidence=[sum(f.get(label, 0.0) for f in frames) for label in EMOTIONS])
    assert track.dominant() == "neutral"  # 5.88 of neutral against 3.1 of anger
    as_tuple = tuple(prior.get(label, 0.0) for label in EMOTIONS)
    assert track.dominant(as_tuple) == "anger"  # 3.1 / 0.1 = 31 against 5.88 / 0.3 = 19.6
    # A class the model was never trained on (prior 0) cannot win, however large its sum.
    track.evidence[EMOTIONS.index("uncertain")] = 100.0
    assert track.dominant(as_tuple) == "anger"


def test_a_rare_emotions_probability_floor_does_not_win_at_the_default_prior_power():
    """Divided by a share of 0.005, contempt's trace of probability on every frame (the
    floor label smoothing leaves) outvotes everything at power 1; at the default power
    the frames' evidence wins, and anger still beats the more common neutral."""
    shares = {"anger": 0.136, "contempt": 0.005, "disgust": 0.055, "fear": 0.116, "happy": 0.224, "neutral": 0.193,
              "sad": 0.15, "surprise": 0.121}
    frame = {"anger": 0.4, "neutral": 0.45, "contempt": 0.015, "happy": 0.135}
    track = Track(1, 0.0, 0.0, 0, Motion((0, 0, 10, 10), 0.0), EmotionSmoother(0.5, 0.1, 3),
                  evidence=[10 * frame.get(label, 0.0) for label in EMOTIONS])

    def prior(settings: Settings) -> tuple[float, ...] | None:
        return TrackerConfig.from_settings(settings, shares).class_prior

    powers = (Settings(track_prior_power=0), Settings(), Settings(track_prior_power=1))
    assert [track.dominant(prior(s)) for s in powers] == ["neutral", "anger", "contempt"]


def test_tracker_config_takes_the_class_prior_to_its_power_unless_that_is_0():
    from model.emotion_model import read_metadata

    shipped = read_metadata(None)  # the served default's metadata, read without Keras
    assert shipped is not None and shipped.class_prior() is not None
    shares = shipped.class_prior()
    prior = TrackerConfig.from_settings(Settings(track_prior_power=1), shares).class_prior
    assert prior is not None and len(prior) == len(EMOTIONS)
    assert abs(sum(prior) - 1.0) < 1e-3 and prior[EMOTIONS.index("uncertain")] == 0.0
    half = TrackerConfig.from_settings(Settings(track_prior_power=0.5), shares).class_prior
    assert half == pytest.approx([p**0.5 for p in prior])
    assert TrackerConfig.from_settings(Settings(track_prior_power=0), shares).class_prior is None
    # The FER2013 baseline's metadata has no training prior: summed probabilities as they are.
    fer = read_metadata("fer2013")
    assert fer is not None and fer.class_prior() is None
    assert TrackerConfig.from_settings(Settings(), fer.class_prior()).class_prior is None


@pytest.mark.parametrize("seed", range(8))
def test_hostile_capture_times_never_raise_and_never_run_time_backwards(seed):
    """Capture times that step back (an NTP step, a second writer), repeat, or jump far
    ahead: the tracker and the owner's accounting (metrics) never raise, every duration
    and shown-emotion second is >= 0, and the state still round-trips."""
    import dataclasses

    import redis.asyncio as aioredis

    from tracks.owner import TrackOwner

    rng = np.random.default_rng(seed)
    people = [Person("happy", 100, 150, 40), Person("sad", 400, 150, -40, start=0.5)]
    recs = records("cam", people, 4.0, seed=seed)
    for i, rec in enumerate(recs):
        jolt = rng.choice([0.0, 0.0, 0.0, -0.3, -5.0, 0.0, 1e6, -1e6])
        if i and rng.random() < 0.1:
            jolt = recs[i - 1].captured_at - rec.captured_at  # the previous frame's time again
        at = rec.captured_at + jolt
        faces = [{**face, "captured_at": at} for face in rec.faces]
        recs[i] = dataclasses.replace(rec, captured_at=at, faces=faces)
    owner = TrackOwner(aioredis.Redis(), Settings(), "fuzz")  # never connects: only its accounting runs
    tracker = CameraTracker("cam", CONFIG)
    order = rng.permutation(len(recs))  # out of order too, as workers finish
    for step, i in enumerate(order):
        now = 100.0 + step / FPS
        out = TrackerOutput()
        tracker.add(recs[i], now, out)
        out.merge(tracker.flush(now))
        owner._account("cam", out, now + 0.01)  # what the service does with each flush
        assert all(seconds >= 0 for seconds in out.emotion_seconds.values()), out.emotion_seconds
        for event in out.lifecycle:
            assert event.duration_s is None or event.duration_s >= 0
            assert all(v >= 0 for v in (event.emotion_seconds or {}).values())
        tracker = CameraTracker.from_state(tracker.to_state(), CONFIG)
    out = tracker.flush(1e9)
    owner._account("cam", out, 1e9)


# ---------------------------------------------------------------- who is who: appearance
def _track_ids(events: list[dict]) -> dict[str, list[int]]:
    ids: dict[str, list[int]] = defaultdict(list)
    for e in events:
        if e.get("type") == "face":
            ids[e["name"]].append(e["track"])
    return ids


def test_two_people_who_swap_places_keep_their_own_ids():
    """Side by side, then each steps to the other's spot in 0.4 s, through the other (and
    once with one hidden behind the other meanwhile): by motion alone each took the
    other's id; their looks keep them apart."""
    for hidden in ((), (1.1, 1.5)):
        a = Person("happy", 0, 200, 0, path=[(0, 200, 200), (1.0, 200, 200), (1.4, 290, 200), (3, 290, 200)])
        b = Person("sad", 0, 200, 0, hidden=hidden,
                   path=[(0, 290, 200), (1.0, 290, 200), (1.4, 200, 200), (3, 200, 200)])
        events, lifecycle, _ = run(records("cam", [a, b], 3.0, describe=True))
        ids = _track_ids(events)
        assert len(set(ids["person0"])) == 1 and len(set(ids["person1"])) == 1, (hidden, ids)
        assert set(ids["person0"]) != set(ids["person1"])
        assert Counter(e.type for e in lifecycle)[TrackEventType.STARTED] == 2


def test_a_person_replaced_at_the_same_spot_is_a_new_track_and_the_first_ends():
    first = Person("happy", 300, 200, 0, end=2.0, looks=1)
    second = Person("anger", 300, 200, 0, start=2.2, looks=2)  # 0.2 s later, same spot
    events, lifecycle, _ = run(records("cam", [first, second], 4.0, describe=True))
    ids = _track_ids(events)
    assert len(set(ids["person0"])) == 1 and len(set(ids["person1"])) == 1
    assert set(ids["person0"]) != set(ids["person1"])
    # The first track ends as the newcomer's starts on top of it, not a timeout later.
    ended = [e for e in lifecycle if e.type is TrackEventType.ENDED]
    assert [e.track for e in ended][0] == ids["person0"][0] and ended[0].reason == "replaced"
    assert ended[0].at == min(e["captured_at"] for e in events if e.get("name") == "person1")
    # Smoothing starts afresh: the newcomer's shown emotion never carries the first's.
    second_events = [e for e in events if e.get("name") == "person1"]
    assert second_events[0]["track_emotion"] == second_events[0]["emotion"]
    changed = [e for e in lifecycle if e.type is TrackEventType.EMOTION_CHANGED]
    assert all(e.track != ids["person1"][0] or e.previous != "happy" for e in changed)


def test_a_person_leaving_and_coming_back_within_the_timeout_keeps_the_track():
    """Out of sight for 0.6 s (under the 1 s timeout), back at the same spot or two face
    widths away: their looks bring them back to their own track."""
    for back_at in (300, 420):
        person = Person("neutral", 0, 200, 0, hidden=(1.0, 1.6), path=[(0, 300, 200), (1.0, 300, 200),
                                                                      (1.6, back_at, 200), (3, back_at, 200)])
        events, lifecycle, _ = run(records("cam", [person], 3.0, describe=True))
        assert len(set(_track_ids(events)["person0"])) == 1, back_at
        assert Counter(e.type for e in lifecycle)[TrackEventType.STARTED] == 1


def test_a_face_whose_looks_change_steadily_keeps_its_track():
    """A face turning (or its box scale flipping) changes its descriptor a little every
    frame: 0.034 a step here, 0.29 over three, past the 0.2 gate. The track compares a
    face with its last face as well as with the looks it keeps every third face."""
    u, v = np.eye(DESCRIPTOR_SIZE)[:2]
    recs = records("cam", [Person("happy", 300, 200, 0)], 1.2, describe=True)
    for rec in recs:
        turned = np.cos(np.radians(15 * rec.seq)) * u + np.sin(np.radians(15 * rec.seq)) * v
        rec.faces[0]["descriptor"] = encode_vector(turned.tolist())
    events, lifecycle, _ = run(recs)
    assert len(set(_track_ids(events)["person0"])) == 1
    assert Counter(e.type for e in lifecycle)[TrackEventType.STARTED] == 1


def test_a_cut_ends_every_track_and_new_people_get_new_ones():
    people = [Person("happy", 100, 200, 0, end=2.0, looks=1), Person("sad", 400, 200, 0, end=2.0, looks=2),
              Person("anger", 100, 200, 0, start=2.0, looks=3), Person("fear", 400, 200, 0, start=2.0, looks=4)]
    events, lifecycle, _ = run(records("cam", people, 4.0, describe=True, cuts=(2.0,)))
    ended = [e for e in lifecycle if e.type is TrackEventType.ENDED]
    cut = [e for e in ended if e.reason == "scene_cut"]
    assert len(cut) == 2 and all(abs(e.at - 1_000_002.0) < 1.5 / FPS for e in cut)
    assert len({t for ids in _track_ids(events).values() for t in ids}) == 4
    # The same scene going on (people walking about) is no cut.
    _, lifecycle, _ = run(records("cam", [Person("happy", 40, 200, 140)], 3.0, describe=True))
    assert not [e for e in lifecycle if e.reason == "scene_cut"]
    # Frames skipped across the cut: frames up to CUT_WITHIN_S apart are still compared;
    # further apart, light drifting in between could pass for a cut, so none is called
    # and the newcomers' looks tell them apart.
    for skipped_s, called in ((CUT_WITHIN_S - 0.2, 2), (CUT_WITHIN_S + 0.3, 0)):
        recs = [FrameRecord(r.camera, r.seq, r.captured_at, FrameStatus.SKIPPED, [])
                if 2.0 - skipped_s <= r.seq / FPS < 2.0 else r
                for r in records("cam", people, 4.0, describe=True, cuts=(2.0,))]
        events, lifecycle, _ = run(recs)
        assert sum(e.reason == "scene_cut" for e in lifecycle) == called, skipped_s
        assert len({t for ids in _track_ids(events).values() for t in ids}) == 4


def test_a_face_that_jumps_in_size_is_someone_else():
    """84 px continued by 177 px overlaps enough (IoU 0.225 > 0.2) but is no continuation."""
    near = Person("happy", 300, 200, 0, end=1.0, size=84, looks=1)
    far = Person("happy", 260, 160, 0, start=1.0, size=177, looks=1)  # same looks: only the size tells
    events, _, _ = run(records("cam", [near, far], 2.0))
    ids = _track_ids(events)
    assert set(ids["person0"]).isdisjoint(ids["person1"])


def test_weak_detections_continuing_a_confirmed_track_are_published_as_weak():
    """A face whose score dips under the threshold for 1 s: the worker classified the weak
    detection, and tracking publishes it, on the person's track, marked weak."""
    person = Person("surprise", 300, 200, 10)
    recs = records("cam", [person], 3.0, describe=True)
    dipped = []
    for r in recs:
        if 1.0 <= r.seq / FPS < 2.0:
            r = FrameRecord(r.camera, r.seq, r.captured_at, r.status, [], r.faces, r.scene)
        dipped.append(r)
    events, lifecycle, _ = run(dipped)
    faces = [e for e in events if e.get("type") == "face"]
    weak = [e for e in faces if e["weak"]]
    assert len(weak) == FPS and all(1.0 <= (e["captured_at"] - 1_000_000.0) < 2.0 for e in weak)
    assert len({e["track"] for e in faces}) == 1
    assert Counter(e.type for e in lifecycle)[TrackEventType.STARTED] == 1
    # Weak detections never start a track, classified or not.
    alone = [FrameRecord(r.camera, r.seq, r.captured_at, r.status, [], r.faces, r.scene) for r in recs]
    events, lifecycle, _ = run(alone)
    assert not events and not lifecycle


def test_a_weak_detection_a_closer_look_found_a_face_in_starts_a_track_where_no_track_is():
    """A face the detector only ever scores under the face threshold, but whose closer
    look found a face (``looked``): it gets a track of its own, published as weak. A
    looked box on top of a track no face continued (the person's box at another scale,
    refused on appearance) starts none: the person stays one track."""
    alone = [FrameRecord(r.camera, r.seq, r.captured_at, r.status, [], [dict(f, looked=True) for f in r.faces],
                         r.scene) for r in records("cam", [Person("fear", 300, 200, 10)], 2.0, describe=True)]
    events, lifecycle, _ = run(alone)
    faces = [e for e in events if e.get("type") == "face"]
    assert len(faces) == len(alone) and all(e["weak"] for e in faces) and len({e["track"] for e in faces}) == 1
    assert [e.type for e in lifecycle] == [TrackEventType.STARTED, TrackEventType.ENDED]
    # Not looked: the same boxes start nothing.
    plain = [FrameRecord(r.camera, r.seq, r.captured_at, r.status, [],
                         [{k: v for k, v in w.items() if k != "looked"} for w in r.weak], r.scene) for r in alone]
    events, lifecycle, _ = run(plain)
    assert not events and not lifecycle
    # Until 1 s the looked box is a part of the face (64 of 100 px); then the face shows,
    # past the size gate (1.56x) but lying on the provisional track: it is that track's,
    # which then takes no weak box (an 80 px part) in a frame its face took it in.
    shown = []
    for r in records("cam", [Person("fear", 300, 200, 10, size=100)], 2.0, describe=True):
        x, y, w, h = r.faces[0]["box"]
        side = 64 if r.seq / FPS < 1.0 else 80
        part = dict(r.faces[0], box=[x + (w - side) // 2, y + (h - side) // 2, side, side], looked=True)
        faces = r.faces if r.seq / FPS >= 1.0 else []
        shown.append(FrameRecord(r.camera, r.seq, r.captured_at, r.status, faces, [part], r.scene))
    events, lifecycle, _ = run(shown)
    faces = [e for e in events if e.get("type") == "face"]
    assert len({e["track"] for e in faces}) == 1 and len({e["seq"] for e in faces}) == len(faces) == len(shown)
    assert Counter(e.type for e in lifecycle)[TrackEventType.STARTED] == 1

    person = Person("sad", 300, 200, 10, size=110)
    recs = records("cam", [person], 3.0, describe=True)
    stranger = looks(7, np.random.default_rng(3))  # its crop at 70 px looks like no one
    odd = []
    for r in recs:
        if 1.0 <= r.seq / FPS < 1.5:
            x, y, w, h = r.faces[0]["box"]
            part = dict(r.faces[0], box=[x + 20, y + 20, 70, 70], descriptor=stranger, looked=True)
            r = FrameRecord(r.camera, r.seq, r.captured_at, r.status, [], [part], r.scene)
        odd.append(r)
    events, lifecycle, _ = run(odd)
    faces = [e for e in events if e.get("type") == "face"]
    assert len({e["track"] for e in faces}) == 1
    assert Counter(e.type for e in lifecycle)[TrackEventType.STARTED] == 1


def test_a_weak_box_smaller_than_the_face_does_not_cost_the_face_its_track():
    """Weak detections are often part of the face: 76 px inside a 111 px face for half a
    second, then the face's box is back, a little larger (120 px, as detector boxes
    jitter). It is the same track: the size gate compares the face with the face's last
    size, not with the weak box's (120 / 76 is past the 1.5 gate)."""
    person = Person("sad", 300, 200, 10, size=111)
    recs = records("cam", [person], 3.0, describe=True)
    dipped = []
    for r in recs:
        x, y, w, h = r.faces[0]["box"]
        if 1.0 <= r.seq / FPS < 1.5:
            part = [dict(r.faces[0], box=[x + (w - 76) // 2, y + (h - 76) // 2 + 8, 76, 76])]
            r = FrameRecord(r.camera, r.seq, r.captured_at, r.status, [], part, r.scene)
        elif r.seq / FPS >= 1.5:
            r = FrameRecord(r.camera, r.seq, r.captured_at, r.status, [dict(r.faces[0], box=[x - 4, y - 4, 120, 120])],
                            scene=r.scene)
        dipped.append(r)
    events, lifecycle, _ = run(dipped)
    faces = [e for e in events if e.get("type") == "face"]
    assert sum(e["weak"] for e in faces) == int(FPS // 2) + 1
    assert len({e["track"] for e in faces}) == 1
    assert Counter(e.type for e in lifecycle)[TrackEventType.STARTED] == 1


def test_a_face_boxed_at_two_scales_ends_up_on_one_track_and_a_false_face_inside_ends_none():
    """BlazeFace boxes some faces at two scales on alternate frames (66 and 98 px, the
    small box inside the large one: IoU 0.45), and the large box's crop looks different
    enough to be refused. The large box starts a track and ends the small box's
    (``replaced``): one switch, not a trade of the person between two tracks every frame
    as the weak boxes alternate. A false 35 px face on a part of a 112 px face ends
    nothing."""
    person = Person("sad", 300, 200, 10, size=66)
    recs = records("cam", [person], 3.0, describe=True)
    rng = np.random.default_rng(1)
    two_scales = []
    for r in recs:
        x, y, w, h = r.faces[0]["box"]
        if r.seq / FPS >= 1.0:
            large = dict(r.faces[0], box=[x - 16, y - 16, 98, 98], descriptor=looks(7, rng))
            faces, weak = ([large], []) if r.seq % 2 else ([], r.faces)
            r = FrameRecord(r.camera, r.seq, r.captured_at, r.status, faces, weak, r.scene)
        two_scales.append(r)
    events, lifecycle, _ = run(two_scales)
    ids = [e["track"] for e in events if e.get("type") == "face"]
    assert sum(a != b for a, b in zip(ids, ids[1:])) == 1
    ended = [e for e in lifecycle if e.type is TrackEventType.ENDED]
    assert ended[0].track == ids[0] and ended[0].reason == "replaced"

    big = Person("sad", 300, 200, 10, size=112)
    recs = records("cam", [big], 3.0, describe=True)
    with_part = []
    for r in recs:
        x, y, w, h = r.faces[0]["box"]
        if r.seq / FPS >= 1.0:
            part = dict(r.faces[0], box=[x + 40, y + 50, 35, 35], descriptor=looks(7, rng))
            r = FrameRecord(r.camera, r.seq, r.captured_at, r.status, [part], r.faces, r.scene)
        with_part.append(r)
    events, lifecycle, _ = run(with_part)
    assert not [e for e in lifecycle if e.type is TrackEventType.ENDED and e.reason == "replaced"]
    first = events[0]["track"]
    assert all(e["track"] == first for e in events if e.get("type") == "face" and e["box"][2] > 100)


def test_a_state_from_before_descriptors_loads_and_its_tracks_start_a_gallery():
    tracker = CameraTracker("cam", CONFIG)
    for rec in records("cam", [Person("happy", 300, 200, 0)], 0.5):
        out = TrackerOutput()
        tracker.add(rec, 100.0 + rec.seq / FPS, out)
        tracker.flush(100.0 + rec.seq / FPS)
    doc = json.loads(tracker.to_state())
    for t in doc["tracks"]:  # what the previous version wrote
        for key in ("gallery", "latest", "hits", "last_match_seq"):
            del t[key]
    del doc["last_scene"]
    restored = CameraTracker.from_state(json.dumps(doc), CONFIG)
    older = {**doc, "last_scene": encode_vector([0.5] * OLD_SCENE_SIZE)}  # a signature of before the grid
    assert CameraTracker.from_state(json.dumps(older), CONFIG).last_scene == ""
    [track] = restored.tracks.values()
    assert track.gallery == [] and track.hits >= CONFIRMED_HITS
    later = records("cam", [Person("happy", 300, 200, 0)], 1.0, describe=True, t0=1_000_000.0)
    for rec in later[8:12]:
        out = TrackerOutput()
        restored.add(rec, 200.0, out)
        out.merge(restored.flush(200.0 + 1.0))
    [track] = restored.tracks.values()
    assert len(track.gallery) >= 1  # its next face started the gallery, on the same track
