"""The CLI as users run it: help, predict, evaluate, exit codes, one-line errors."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from cli import COMMANDS, main
from emotion_stream.settings import DETECTORS

from .hostile import hostile_images

EXE = Path(sys.executable).with_name("emotion-stream")


def run_cli(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(EXE), *args], capture_output=True, text=True, timeout=timeout)


def test_help_lists_every_subcommand():
    result = run_cli("--help")
    assert result.returncode == 0
    for name in COMMANDS:
        assert f"\n    {name} " in result.stdout, name
    assert run_cli("no-such-command").returncode == 2


def test_every_flag_of_every_command_says_what_it_does():
    import argparse

    from cli import build_parser

    parser = build_parser()
    [commands] = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    silent = [f"{name} {action.option_strings[-1]}" for name, command in commands.choices.items()
              for action in command._actions
              if action.option_strings and action.help != argparse.SUPPRESS and not (action.help or "").strip()]
    assert not silent, silent


@pytest.fixture()
def mixed_folder(tmp_path, face_bgr):
    """Good faces and every hostile file, with an answers CSV covering all of them."""
    folder = tmp_path / "images"
    folder.mkdir()
    corpus = hostile_images(face_bgr)
    for name, (data, _) in corpus.items():
        (folder / name).write_bytes(data)
    cv2.imwrite(str(folder / "hopper.jpg"), face_bgr)
    labels = tmp_path / "labels.csv"
    with labels.open("w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["image_path", "emotion"])
        for name in sorted(p.name for p in folder.iterdir()):
            writer.writerow([name, "neutral"])
        writer.writerow(["not-there.jpg", "happy"])
    bad = {n for n, (_, expected) in corpus.items() if expected is not None}
    return folder, labels, bad


def test_predict_reports_bad_files_in_one_line_and_exits_1(mixed_folder):
    folder, _, bad = mixed_folder
    result = run_cli("predict", "--json", *(str(p) for p in sorted(folder.iterdir())))
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    docs = [json.loads(line) for line in result.stdout.splitlines()]
    assert len(docs) == len(list(folder.iterdir()))
    errors = {Path(d["image"]).name for d in docs if "error" in d}
    assert errors == bad
    for name in bad:
        assert any(line.startswith("emotion-stream predict:") and name in line for line in result.stderr.splitlines())
    hopper = next(d for d in docs if d["image"].endswith("hopper.jpg"))
    assert len(hopper["faces"]) == 1 and not hopper["faces"][0]["whole_image"]
    assert set(hopper["faces"][0]["probabilities"]) == {
        "anger", "contempt", "disgust", "fear", "happy", "neutral", "sad", "surprise", "uncertain"
    }


def test_predict_table_and_bad_weights(face_bgr, tmp_path, capsys):
    image = tmp_path / "hopper.png"
    cv2.imwrite(str(image), face_bgr)
    assert main(["predict", str(image)]) == 0
    out = capsys.readouterr().out
    assert "hopper.png" in out and "emotion" in out.splitlines()[0]
    result = run_cli("predict", "--model", str(tmp_path / "nope.keras"), str(image))
    assert result.returncode == 1
    assert result.stderr.strip().splitlines()[-1] == (
        f"emotion-stream predict: error: {tmp_path / 'nope.keras'}: weights file not found"
    )
    assert "Traceback" not in result.stderr


def test_predict_reads_an_image_from_standard_input(face_bgr):
    """`curl URL | emotion-stream predict -`, with the same size limit as a file."""
    jpeg = cv2.imencode(".jpg", face_bgr)[1].tobytes()
    result = subprocess.run([str(EXE), "predict", "--json", "-"], input=jpeg, capture_output=True, timeout=120)
    assert result.returncode == 0, result.stderr
    [doc] = [json.loads(line) for line in result.stdout.splitlines()]
    assert doc["image"] == "-" and len(doc["faces"]) == 1 and not doc["faces"][0]["whole_image"]
    big = subprocess.run([str(EXE), "predict", "-"], input=jpeg, capture_output=True, timeout=120,
                         env={**os.environ, "EMOTION_STREAM_MAX_IMAGE_BYTES": "1024"})
    assert big.returncode == 1
    assert big.stderr.decode().strip().splitlines()[-1] == (
        "emotion-stream predict: -: standard input is over the limit of 1024 bytes")


def test_predict_of_a_video_says_which_command_reads_videos(tmp_path):
    from ingest.samples import write_clip

    clip = write_clip(tmp_path / "talk.avi", seconds=0.5, fps=10, faces=1)
    result = run_cli("predict", str(clip))
    assert result.returncode == 1
    assert result.stderr.strip().splitlines()[-1] == (
        f"emotion-stream predict: {clip}: not a recognised image format (a video: `emotion-stream ingest {clip} "
        "--camera ID --pace workers` beside a worker analyses every frame)")


def test_evaluate_folder_carries_on_and_counts_skips(mixed_folder, capsys):
    folder, labels, bad = mixed_folder
    assert main(["evaluate", str(folder), "--labels", str(labels), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    good = len(list(folder.iterdir())) - len(bad)
    assert report["scored"] == good
    assert report["skipped"] == len(bad) + 1  # + the labelled file that is missing
    assert set(report["skipped_files"]) == bad | {"not-there.jpg"}
    assert 0.0 <= report["accuracy"] <= 1.0
    assert len(report["confusion"]) == 9 and sum(map(sum, report["confusion"])) == good


def test_evaluate_scores_a_submission_csv_exactly(tmp_path, capsys):
    labels = tmp_path / "labels.csv"
    # As a spreadsheet saves "CSV UTF-8": a byte-order mark, CRLF, a space after the comma.
    labels.write_bytes("\ufeffimage_path, emotion\r\na.jpg,happy\r\nb.jpg,sad\r\nc.jpg, anger\r\nd.jpg,neutral\r\n"
                       .encode())
    submission = tmp_path / "submission.csv"
    submission.write_text("image_path,emotion\na.jpg,happy\nb.jpg,sad\nc.jpg,happy\nd.jpg,neutral\n")
    assert main(["evaluate", str(submission), "--labels", str(labels)]) == 0
    text = capsys.readouterr().out
    assert "categorical accuracy: 0.7500  (3/4 images; standard error 0.229)" in text
    assert "anger       0.000  (n=1)" in text and "happy       1.000  (n=1)" in text


def test_evaluation_reports_how_far_another_sample_would_move_its_figures():
    from emotion_stream.labels import EMOTIONS
    from model.evaluation import EvaluationReport

    confusion = np.zeros((len(EMOTIONS), len(EMOTIONS)), np.int64)
    anger, happy = EMOTIONS.index("anger"), EMOTIONS.index("happy")
    confusion[anger, anger], confusion[anger, happy] = 50, 50  # recall 0.5 of 100
    confusion[happy, happy], confusion[happy, anger] = 90, 10  # recall 0.9 of 100
    report = EvaluationReport(confusion)
    accuracy_se, balanced_se = report.standard_errors()
    assert accuracy_se == pytest.approx((0.7 * 0.3 / 200) ** 0.5, rel=0.01)
    assert balanced_se == pytest.approx((0.5 * 0.5 / 100 + 0.9 * 0.1 / 100) ** 0.5 / 2, rel=0.01)
    one_wrong = confusion.copy()
    one_wrong[EMOTIONS.index("fear"), anger] = 1  # one image, wrong: uncertain, not exactly 0
    assert EvaluationReport(one_wrong).standard_errors()[1] > 0.1
    assert report.to_dict()["standard_errors"] == {"accuracy": accuracy_se, "balanced_accuracy": balanced_se}
    assert EvaluationReport(np.zeros_like(confusion)).standard_errors() == (0.0, 0.0)


def test_evaluate_rejects_bad_label_files(tmp_path, capsys):
    labels = tmp_path / "labels.csv"
    labels.write_text("name,label\na.jpg,happy\n")
    assert main(["evaluate", str(tmp_path), "--labels", str(labels)]) == 1
    assert "expected header 'image_path,emotion'" in capsys.readouterr().err
    labels.write_text("image_path,emotion\na.jpg,joyful-ish\n")
    assert main(["evaluate", str(tmp_path), "--labels", str(labels)]) == 1
    assert "labels.csv:2: unknown emotion label 'joyful-ish'" in capsys.readouterr().err


@pytest.mark.parametrize("detector", DETECTORS)
def test_evaluate_on_the_shared_dev_set(shared_faces, detector, capsys):
    args = ["evaluate", str(shared_faces / "test_kaggle"), "--labels", str(shared_faces / "test_labels.csv")]
    assert main([*args, "--detector", detector, "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["scored"] == 219 and report["skipped"] == 0
    assert report["accuracy"] > 0.35  # far above the 1/8 of guessing


def test_settings_read_the_environment_and_given_values_win(monkeypatch):
    from pydantic import ValidationError

    from emotion_stream.settings import Settings

    monkeypatch.setenv("emotion_stream_batch_size", "32")  # any case, as before
    monkeypatch.setenv("EMOTION_STREAM_TRACKING", "false")
    monkeypatch.setenv("EMOTION_STREAM_REDIS_URL", "redis://second:6379")
    monkeypatch.setenv("REDIS_URL", "redis://first:6379")
    settings = Settings()
    assert (settings.batch_size, settings.tracking, settings.redis_url) == (32, False, "redis://first:6379")
    given = Settings(batch_size=4, redis_url="redis://given:6379")
    assert (given.batch_size, given.redis_url) == (4, "redis://given:6379")
    assert given.overridden({"max_wait_ms": 7}).batch_size == 4  # no second read of the environment
    monkeypatch.setenv("REDIS_URL", "http://web:80")
    with pytest.raises(ValidationError) as bad:
        Settings()
    assert bad.value.errors()[0]["loc"] == ("REDIS_URL",)  # the variable the user set
    assert Settings(redis_url=None).redis_url is None  # a given value replaces the bad one unread


def test_a_variable_no_setting_reads_is_named_in_a_warning_not_ignored(tmp_path):
    """A typo or a renamed setting in the environment would otherwise change nothing
    without a word; every setting's own variables (both Redis URL spellings) stay quiet."""
    env = {**os.environ, "EMOTION_STREAM_BACTH_SIZE": "8", "emotion_stream_track_prior_correction": "false",
           "EMOTION_STREAM_REDIS_URL": "redis://127.0.0.1:1", "EMOTION_STREAM_TRACK_PRIOR_POWER": "0"}
    result = subprocess.run([str(EXE), "predict", str(tmp_path / "none.jpg")], capture_output=True, text=True,
                            timeout=120, env=env)
    warnings = [line for line in result.stderr.splitlines() if "is not a setting" in line]
    assert len(warnings) == 2 and all("WARNING" in line for line in warnings), result.stderr
    assert "EMOTION_STREAM_BACTH_SIZE is not a setting, ignored" in warnings[0]
    assert warnings[1].endswith("EMOTION_STREAM_TRACK_PRIOR_CORRECTION is not a setting, ignored: "
                                "set EMOTION_STREAM_TRACK_PRIOR_POWER (0: off)")


def test_setting_flags_are_generated_from_the_settings_fields():
    from emotion_stream.settings import DEFAULT_DETECT_SIZE, Settings

    help_text = subprocess.run([EXE, "worker", "--help"], capture_output=True, text=True, timeout=60).stdout
    squashed = " ".join(help_text.split())
    for name in ("batch_size", "max_wait_ms", "claim_idle_ms"):
        field = Settings.model_fields[name]
        assert f"{field.description} (default {field.get_default()}; env EMOTION_STREAM_{name.upper()})" in squashed
    # Derived text stays true when the table changes: no default is typed twice.
    assert ", ".join(f"{k} {v}" for k, v in DEFAULT_DETECT_SIZE.items()) in squashed
