"""`bench` runs end to end on a few generated images. Figures are not asserted: they
belong to the benchmark, not to tests."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import cv2
import pytest

from ingest.samples import sample_frame

EXE = str(Path(sys.executable).with_name("emotion-stream"))


@pytest.mark.slow
def test_bench_smoke(tmp_path):
    for i in range(6):
        cv2.imwrite(str(tmp_path / f"img_{i}.jpg"), sample_frame(i * 0.5, size=(350, 350)))
    result = subprocess.run(
        [EXE, "bench", "--images", str(tmp_path), "--json", "--original-limit", "2", "--live-seconds", "4",
         "--cameras", "1", "--fps", "5", "--workers", "1"],
        capture_output=True, text=True, timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout)
    for section in ("original", "detector", "direct", "batch", "live", "ratios", "compute_limit"):
        assert section in report, section
    assert report["batch"]["images"] == 6 and report["direct"]["images"] == 6
    assert set(report["direct"]["stage_cpu_ms_per_image"]) == {"decode", "detect", "classify"}
    assert {"p50", "p95", "p99"} == set(report["live"]["capture_to_event_ms"])
    assert report["live"]["frames_with_events"] > 0
    assert {"direct/original (images/s)", "batch/original (images/s)", "direct/direct with opencv (images/s)"} == set(report["ratios"])
    for proc in report["live"]["processes"]:
        assert proc["peak_rss_mb"] > 0


def test_bench_recorded_analyses_every_frame_of_a_video_at_the_workers_pace():
    result = subprocess.run([EXE, "bench", "--only", "recorded", "--live-seconds", "3", "--fps", "5", "--workers", "1",
                             "--json"], capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    recorded = json.loads(result.stdout)["recorded"]
    assert recorded["frames"] == 15 and recorded["frame_outcomes"] == {"ingested": 15, "processed": 15}, recorded
    assert recorded["face_events"] == 30 and recorded["video_seconds_per_second"] > 0, recorded
    assert recorded["face_events_without_a_track"] == 0, recorded


def test_bench_input_mistakes_are_one_line(tmp_path):
    """A missing compare model and an --images path that is no folder ended in tracebacks."""
    cases = [(["--only", "classifier", "--compare-model", str(tmp_path / "none.onnx")],
              f"{tmp_path / 'none.onnx'}: weights file not found"),
             (["--images", str(tmp_path / "none"), "--only", "direct"], f"--images {tmp_path / 'none'}: not a folder")]
    for args, error in cases:
        result = subprocess.run([EXE, "bench", *args], capture_output=True, text=True, timeout=300)
        assert result.returncode == 1 and "Traceback" not in result.stderr, result.stderr[-2000:]
        assert result.stderr.strip().splitlines()[-1] == f"emotion-stream bench: error: {error}"


@pytest.mark.parametrize("queue", [False, True])
def test_the_people_clip_never_shows_one_photo_twice_within_seconds(queue):
    """The tracks clip takes photos round-robin over the labels; a label with one photo
    (test_kaggle's contempt) comes back every eighth person. Drawn slot by slot, it was
    also one person in both slots a second apart, whom re-identification rightly
    followed from one slot to the other, and the clip counted as two people. Now one
    photo's showings are more than twice the track timeout apart."""
    import numpy as np

    from bench.people_clip import FPS, Photo, schedule

    labels = ["anger", "contempt", "disgust", "fear", "happy", "neutral", "sad", "surprise"]
    photos = [Photo(np.zeros((4, 4, 3), np.uint8), label, (0, 0, 4, 4), f"{label}{i}")
              for label in labels for i in range(1 if label == "contempt" else 5)]
    for seed in range(8):
        plan = schedule(photos, 60.0, seed=seed, queue=queue)
        assert len(plan) > 25 and {a.slot for a in plan} == {0, 1}
        shown: dict[str, list[tuple[int, int]]] = {}
        for a in plan:
            shown.setdefault(a.photo.name, []).append((a.first, a.last))
        for spans in shown.values():
            spans.sort()
            assert all(b[0] - a[1] > 2 * FPS for a, b in zip(spans, spans[1:])), spans


@pytest.mark.slow
def test_tracks_replay_runs_the_worker_analysis_and_gives_the_same_figures_twice(tmp_path):
    """`bench --only tracks-replay` on generated portraits (two labels): both clips go
    through detection, classification, descriptors and the tracker, and a second run
    gives the same figures (nothing in it depends on timing)."""
    for i, label in enumerate(["happy", "sad"] * 3):
        (tmp_path / label).mkdir(exist_ok=True)
        cv2.imwrite(str(tmp_path / label / f"{i}.jpg"), sample_frame(i * 0.7, size=(320, 320)))
    command = [EXE, "bench", "--only", "tracks-replay", "--people", str(tmp_path), "--cameras", "1",
               "--tracks-seconds", "6", "--json"]
    runs = []
    for _ in range(2):
        result = subprocess.run(command, capture_output=True, text=True, timeout=600)
        assert result.returncode == 0, result.stderr[-3000:]
        runs.append(json.loads(result.stdout)["tracks_replay"])
    first, second = runs
    assert first["replay"] and first["photos"] == 6 and first["photos_by_emotion"] == {"happy": 3, "sad": 3}
    for variant in ("gaps", "queue"):
        figures = first["current"][variant]
        assert figures["face_frame_recall"] > 0.5 and figures["tracked"]["tracks"] >= 2, figures
        # Per true emotion, adding up to the per-person accuracy.
        per = figures["tracked"]["track_dominant_by_emotion"]
        assert set(per) <= {"happy", "sad"} and per, per
        right, people = sum(v["right"] for v in per.values()), sum(v["tracks"] for v in per.values())
        assert right / people == pytest.approx(figures["tracked"]["track_dominant_accuracy"])
        assert figures == second["current"][variant]
