"""prepare (faces, planted near-duplicates, no-face images) and a short train run."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from cli import main
from emotion_stream.labels import EMOTIONS

EXE = str(Path(sys.executable).with_name("emotion-stream"))


def _rotate(image: np.ndarray, degrees: float) -> np.ndarray:
    h, w = image.shape[:2]
    return cv2.warpAffine(image, cv2.getRotationMatrix2D((w / 2, h / 2), degrees, 1.0), (w, h),
                          borderMode=cv2.BORDER_REFLECT)


def distinct_faces(face: np.ndarray) -> dict[str, np.ndarray]:
    """Five images that are not copies of each other (checked: pairwise similarity
    <= 0.56), each with a detectable face: the portrait, its mirror image, rotations."""
    mirror = np.ascontiguousarray(face[:, ::-1])
    return {"orig": face, "mirror": mirror, "o-15": _rotate(face, -15), "m+15": _rotate(mirror, 15),
            "m-15": _rotate(mirror, -15)}


def _shift(image: np.ndarray, fraction: float = 0.07) -> np.ndarray:
    dy, dx = int(image.shape[0] * fraction), int(image.shape[1] * fraction / 2)
    return cv2.copyMakeBorder(image[dy:, dx:], 0, dy, 0, dx, cv2.BORDER_REPLICATE)


def _digest(folder: Path) -> str:
    h = hashlib.sha256()
    for path in sorted(folder.rglob("*")):
        h.update(str(path.relative_to(folder)).encode())
        if path.is_file():
            h.update(path.read_bytes())
    return h.hexdigest()


@pytest.fixture()
def planted(tmp_path, face_bgr):
    faces = distinct_faces(face_bgr)
    root = tmp_path / "train"
    files: dict[str, np.ndarray | bytes] = {
        "happy/orig.jpg": faces["orig"],
        "happy/orig_small.jpg": cv2.resize(faces["orig"], None, fx=0.6, fy=0.6, interpolation=cv2.INTER_AREA),
        "happy/m-15.jpg": faces["m-15"],
        "sad/mirror.jpg": faces["mirror"],
        "sad/mirror_q30.jpg": cv2.imencode(".jpg", faces["mirror"], [cv2.IMWRITE_JPEG_QUALITY, 30])[1].tobytes(),
        "angry/o-15.jpg": faces["o-15"],  # "angry": a dataset spelling of anger
        "angry/m+15.png": faces["m+15"],
        "surprise/o-15_shifted.jpg": _shift(faces["o-15"]),
        "neutral/blank.jpg": np.full((300, 300, 3), 128, np.uint8),
        "neutral/noise.png": np.random.default_rng(0).integers(0, 255, (300, 300, 3), dtype=np.uint8),
        "happy/notes.txt": b"not an image",
    }
    for rel, content in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, bytes):
            path.write_bytes(content)
        else:
            cv2.imwrite(str(path), content)
    return root


@pytest.mark.parametrize("detector", ["blazeface", "opencv"])
def test_prepare_finds_exactly_the_planted_duplicates_and_no_face_images(detector, planted, tmp_path, capsys):
    before = _digest(planted)
    out = tmp_path / "clean"
    assert main(["prepare", str(planted), "--out", str(out), "--detector", detector, "--workers", "2"]) == 0
    summary = capsys.readouterr().out
    assert _digest(planted) == before  # the input folder is never modified
    report = json.loads((out / "report.json").read_text())
    groups = sorted((g["kind"], tuple(g["members"])) for g in report["groups"])
    assert groups == [
        ("across", ("anger/o-15.jpg", "surprise/o-15_shifted.jpg")),
        ("within", ("happy/orig.jpg", "happy/orig_small.jpg")),
        ("within", ("sad/mirror.jpg", "sad/mirror_q30.jpg")),
    ]
    kept = sorted(str(p.relative_to(out)) for p in out.glob("*/*.jpg"))
    # The two images without a face are kept whole: serving classifies such stills whole.
    assert kept == ["anger/m+15.png.jpg", "happy/m-15.jpg", "happy/orig.jpg", "neutral/blank.jpg",
                    "neutral/noise.png.jpg", "sad/mirror.jpg"]
    assert report["no_face"] == 2 and report["whole"] == 2 and report["after"]["neutral"] == 2
    assert report["skipped_files"] == {"happy/notes.txt": "not an image file extension (.txt)"}
    rows = (out / "report.csv").read_text().splitlines()
    assert rows[0] == "image,label,outcome,faces,duplicate_group,error" and len(rows) == 11
    assert sum(",whole," in row for row in rows) == 2
    assert "duplicate groups:     3 (2 within one label" in summary
    assert "no face found:        2 (2 kept whole" in summary
    for crop in out.glob("[!n]*/*.jpg"):  # square face crops
        image = cv2.imread(str(crop))
        assert image.shape[0] == image.shape[1] and image.shape[0] >= 64
    if detector == "blazeface":  # crops of the 15-degree tilted heads are levelled
        from model import create_detector
        from model.preprocessing import eye_angle

        blazeface = create_detector("blazeface")
        # The mirrored portrait's eye line is +2.5 degrees; turned by -15 and +15 degrees.
        for crop, tilt in (("happy/m-15.jpg", 17.5), ("anger/m+15.png.jpg", -12.5)):
            [after_crop] = blazeface.detect_batch([cv2.imread(str(out / crop))], [True])[0]
            residual = abs(eye_angle(after_crop.landmarks))  # landmarks are good to a few degrees
            assert residual < abs(tilt) - 5, (crop, tilt, residual)

    # Resumable: a second run reuses the cache and decides the same.
    assert main(["prepare", str(planted), "--out", str(out), "--detector", detector, "--workers", "1"]) == 0
    assert json.loads((out / "report.json").read_text())["groups"] == report["groups"]
    assert sorted(str(p.relative_to(out)) for p in out.glob("*/*.jpg")) == kept
    # --no-face drop: the same, without the two; another margin does not reuse the crops.
    assert main(["prepare", str(planted), "--out", str(out), "--detector", detector, "--workers", "1",
                 "--no-face", "drop", "--margin", "0.3"]) == 0
    dropped = json.loads((out / "report.json").read_text())
    assert dropped["whole"] == 0 and "neutral" not in dropped["after"]
    assert sorted(str(p.relative_to(out)) for p in out.glob("*/*.jpg")) == [k for k in kept if "neutral" not in k]
    assert json.loads((out / ".prepare" / "options.json").read_text())["margin"] == 0.3


def test_prepare_a_domain_with_its_own_splits_split_by_split(tmp_path, face_bgr, capsys):
    """FER2013's layout: train/ and validation/ prepared apart, test/ left alone, each
    48 px grey face through the still detector and the one crop."""
    _, fer = _two_domains(tmp_path, face_bgr)
    (fer / "test" / "happy").mkdir(parents=True)
    cv2.imwrite(str(fer / "test" / "happy" / "t.png"), cv2.imread(str(next((fer / "train" / "happy").iterdir()))))
    out = tmp_path / "fer-clean"
    assert main(["prepare", str(fer), "--out", str(out), "--workers", "1"]) == 0
    printed = capsys.readouterr().out
    assert "== train" in printed and "== validation" in printed
    assert sorted(p.name for p in out.iterdir()) == ["train", "validation"]
    for split, per_label in (("train", 5), ("validation", 1)):
        report = json.loads((out / split / "report.json").read_text())
        assert report["before"] == {"anger": per_label, "happy": per_label, "surprise": per_label}
        assert report["no_face"] == 0, report  # every small grey face is found
        crops = list((out / split).glob("*/*.jpg"))
        assert crops and all(cv2.imread(str(c)).shape[0] == cv2.imread(str(c)).shape[1] for c in crops)


def _two_domains(root: Path, face_bgr: np.ndarray) -> tuple[Path, Path]:
    """A tiny two-domain set: colour crops by label (split here), and a FER2013-like
    folder of 48x48 grey crops with its own train/ and validation/."""
    faces = distinct_faces(face_bgr)
    photos, fer = root / "photos", root / "fer"
    for label, base in (("happy", "orig"), ("sad", "mirror"), ("surprise", "o-15")):
        for i in range(6):
            variant = cv2.convertScaleAbs(faces[base], alpha=0.8 + 0.08 * i, beta=i * 3)
            (photos / label).mkdir(parents=True, exist_ok=True)
            cv2.imwrite(str(photos / label / f"{base}_{i}.jpg"), cv2.resize(variant, (160, 160)))
            grey = cv2.cvtColor(cv2.resize(variant, (48, 48), interpolation=cv2.INTER_AREA), cv2.COLOR_BGR2GRAY)
            split = "validation" if i == 0 else "train"
            (fer / split / ("angry" if label == "sad" else label)).mkdir(parents=True, exist_ok=True)
            cv2.imwrite(str(fer / split / ("angry" if label == "sad" else label) / f"{i}.png"), grey)
    return photos, fer


@pytest.mark.slow
def test_train_on_two_domains_then_load_calibrated_and_evaluate(tmp_path, face_bgr, capsys):
    photos, fer = _two_domains(tmp_path, face_bgr)
    model_dir = tmp_path / "model"
    result = subprocess.run(
        [EXE, "train", str(photos), str(fer), "--out", str(model_dir), "--epochs", "2", "--steps", "3",
         "--train-batch-size", "8", "--val-split", "0.34", "--domain-power", "0"],
        capture_output=True, text=True, timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    for name in ("model.keras", "model.json", "curves.png", "MODEL_CARD.md", "report.json"):
        assert (model_dir / name).is_file(), name
    meta = json.loads((model_dir / "model.json").read_text())
    assert meta["labels"] == list(EMOTIONS) and meta["input_height"] == 64 and meta["channels"] == 1
    assert meta["extra"]["temperature"] > 0 and meta["extra"]["trained_on"] == ["photos", "fer"]
    report = json.loads((model_dir / "report.json").read_text())
    # Both domains trained and validated; FER's own validation folder was used as is.
    assert report["train_counts"]["fer"] == {"anger": 5, "happy": 5, "surprise": 5}
    assert report["validation_counts"]["fer"] == {"anger": 1, "happy": 1, "surprise": 1}
    assert sum(report["validation_counts"]["photos"].values()) == 6
    # Balanced sampling: each domain's classes drawn equally often here (equal counts).
    assert report["sampling"]["photos"] == {"happy": 0.3333, "sad": 0.3333, "surprise": 0.3333}
    # The prior tracking divides out: domains weigh the same, so happy and surprise
    # (in both) have a third, anger and sad (in one) a sixth.
    assert meta["extra"]["class_prior"] == {"anger": 0.1667, "happy": 0.3333, "sad": 0.1667, "surprise": 0.3333}
    assert len(report["epochs"]) == 2 and report["best_epoch"] in (1, 2)
    card = (model_dir / "MODEL_CARD.md").read_text()
    assert "| photos | train |" in card and "| fer | validation |" in card and "distillation" in card
    # By default it serves the mean of the last epochs' weights: here both (fewer than 6).
    assert report["averaged"]["epochs"] == [1, 2]
    assert "the mean of epochs 1-2's (stochastic weight averaging)" in card

    from model import EmotionModel

    model = EmotionModel(model_dir / "model.keras")
    probs = model.predict_proba([face_bgr])
    assert probs.shape == (1, 9) and abs(float(probs.sum()) - 1) < 1e-4
    assert main(["evaluate", str(fer / "validation"), "--whole-image", "--model", str(model_dir / "model.keras"),
                 "--json"]) == 0
    scored = json.loads(capsys.readouterr().out)
    # The serving path (detector, crop), and beside it every image whole.
    assert scored["scored"] == 3 and 0.0 <= scored["balanced_accuracy"] <= 1.0 and scored["ece"] is not None
    assert scored["no_face"] == 0 and scored["whole_image"]["scored"] == 3
    noise = scored["ece_of_a_calibrated_model"]  # on 3 images, mostly noise
    assert 0.0 < noise["mean"] <= noise["p95"] < 1.0
    assert scored["whole_image"]["classify_ms_per_face"] > 0

    # A second member (another class power), then the two combined into one served file.
    other = tmp_path / "other"
    # (Subprocesses, as above: training needs oneDNN off before TensorFlow loads.)
    train_args = [EXE, "train", str(photos), str(fer), "--epochs", "1", "--steps", "3", "--train-batch-size", "8",
                  "--val-split", "0.34"]
    ensemble = tmp_path / "ensemble"
    for extra in (["--out", str(other), "--class-power", "1", "--average-last", "0"],
                  ["--out", str(ensemble), "--combine", str(model_dir / "model.keras"), str(other / "model.keras")]):
        result = subprocess.run([*train_args, *extra], capture_output=True, text=True, timeout=600, check=False)
        assert result.returncode == 0, result.stderr[-3000:]
    # That member serves its best epoch's weights, as asked.
    assert json.loads((other / "report.json").read_text())["averaged"] is None
    assert "Selected epoch: 1 of 1" in (other / "MODEL_CARD.md").read_text()
    combined = json.loads((ensemble / "model.json").read_text())
    assert combined["name"] == "emotion-ensemble2" and combined["extra"]["temperature"] > 0
    first, second = (json.loads((d / "model.json").read_text())["extra"]["class_prior"] for d in (model_dir, other))
    assert combined["extra"]["class_prior"] == {k: round((first[k] + second[k]) / 2, 4) for k in first}
    assert "Members" in (ensemble / "MODEL_CARD.md").read_text()
    members = [EmotionModel(d / "model.keras") for d in (model_dir, other)]
    served = EmotionModel(ensemble / "model.keras")
    batch = served.prepare([face_bgr, cv2.flip(face_bgr, 1)])
    for m in (*members, served):  # compare the networks themselves, without flip averaging
        m.metadata = dataclasses.replace(m.metadata, flip_average=False)
    # softmax(mean of the members' log-probabilities / T): undo T and compare.
    T = combined["extra"]["temperature"]
    expected = np.mean([np.log(m.predict_proba(batch)[:, :8]) for m in members], axis=0)
    got = np.log(served.predict_proba(batch)[:, :8]) * T
    # Log-probabilities are equal up to a per-row constant.
    assert np.allclose(got - got.mean(axis=1, keepdims=True), expected - expected.mean(axis=1, keepdims=True),
                       atol=2e-3)
    # The same two as a soup: one network, its weights the members' mean.
    soup = tmp_path / "soup"
    result = subprocess.run([*train_args, "--out", str(soup), "--soup", "--combine", str(model_dir / "model.keras"),
                             str(other / "model.keras")], capture_output=True, text=True, timeout=600, check=False)
    assert result.returncode == 0, result.stderr[-3000:]
    assert json.loads((soup / "model.json").read_text())["name"] == "emotion-soup2"
    import keras

    weights = [keras.models.load_model(d / "model.keras", compile=False).get_weights()
               for d in (model_dir, other, soup)]
    assert len(weights[2]) == len(weights[0]) > 10
    for a, b, mean in zip(*weights):
        assert np.allclose(mean, (a + b) / 2, atol=1e-6)
    assert not all(np.allclose(a, b) for a, b in zip(weights[0], weights[1]))  # the members differ
    # One model is no ensemble, and a soup needs its members: refused with a one-line error (exit 1).
    for extra, error in ((["--combine", str(model_dir / "model.keras")], "two or more models"),
                         (["--soup"], "give them with --combine")):
        result = subprocess.run([*train_args, "--out", str(tmp_path / "bad"), *extra],
                                capture_output=True, text=True, timeout=600, check=False)
        assert result.returncode == 1 and error in result.stderr, result.stderr[-2000:]


def test_weight_averaging_serves_the_mean_of_the_last_epochs(tmp_path):
    """The callback behind --average-last sums exactly the epochs it is told to, still
    remembers the best single epoch, and checkpoints every epoch."""
    import keras

    from model.metadata import ModelMetadata
    from training import checkpoint
    from training.checkpoint import TrainState
    from training.domains import Domain
    from training.epochs import epoch_end

    meta = ModelMetadata(labels=EMOTIONS, input_height=4, input_width=4, channels=1,
                         preprocessing="zero_to_one", name="tiny")
    rng = np.random.default_rng(0)
    val = [Domain("d", rng.integers(0, 255, (12, 4, 4, 1), dtype=np.uint8), np.arange(12) % 9)]
    model = keras.Sequential([keras.Input((4, 4, 1)), keras.layers.Flatten(), keras.layers.Dense(9)])
    model.compile(optimizer=keras.optimizers.AdamW(1e-3), loss="mse")
    model.optimizer.build(model.trainable_variables)
    callback = epoch_end(val, meta, TrainState({}, []), epochs=3, steps_per_epoch=1, average_from=2,
                         out_dir=tmp_path)
    callback.set_model(model)
    per_epoch = []
    for epoch in range(3):
        model.set_weights([rng.normal(size=w.shape).astype(np.float32) for w in model.get_weights()])
        per_epoch.append(model.get_weights())
        callback.on_epoch_end(epoch, {"loss": 1.0})
        saved = checkpoint.load(tmp_path)
        assert saved.state.epoch == epoch + 1 and len(saved.state.history) == epoch + 1
        assert all(np.array_equal(a, b) for a, b in zip(saved.model, per_epoch[-1]))
    assert callback.averaged == 2 and len(callback.history) == 3
    for got, second, third in zip(callback.averaged_weights(model), per_epoch[1], per_epoch[2]):
        assert got.dtype == np.float32 and np.allclose(got, (second + third) / 2)
    best = max(callback.history, key=lambda h: h["score"])
    assert callback.best_epoch == best["epoch"]
    assert all(np.array_equal(a, b) for a, b in zip(callback.best_weights, per_epoch[best["epoch"] - 1]))


@pytest.mark.slow
def test_an_interrupted_run_resumed_gives_the_model_of_an_uninterrupted_one(tmp_path, face_bgr):
    """SIGKILL after a checkpoint, `train --resume`: the same served weights, the same
    per-epoch history, and the card counts the resume. A further run from the finished
    model (`--init-from`) starts from its weights; another network's are refused."""
    import signal
    import time

    import keras

    photos, fer = _two_domains(tmp_path, face_bgr)
    args = [str(photos), str(fer), "--network", "resnet10", "--epochs", "4", "--steps", "12",
            "--train-batch-size", "8", "--val-split", "0.34", "--average-last", "2"]
    whole, broken = tmp_path / "whole", tmp_path / "broken"
    result = subprocess.run([EXE, "train", *args, "--out", str(whole)], capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    process = subprocess.Popen([EXE, "train", *args, "--out", str(broken)], stdout=subprocess.DEVNULL,
                               stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 300
    while not (broken / "checkpoint.npz").is_file() and time.monotonic() < deadline and process.poll() is None:
        time.sleep(0.02)
    process.send_signal(signal.SIGKILL)
    process.wait(timeout=30)
    assert process.returncode == -signal.SIGKILL, "the run finished before it could be interrupted"
    from training.checkpoint import load

    done = load(broken).state.epoch
    assert 1 <= done < 4 and not (broken / "model.keras").exists()
    result = subprocess.run([EXE, "train", "--resume", str(broken)], capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    assert f"resuming {broken} at epoch {done + 1} of 4" in result.stderr
    reports = [json.loads((d / "report.json").read_text()) for d in (whole, broken)]
    for a, b in zip(reports[0]["epochs"], reports[1]["epochs"]):
        assert a["epoch"] == b["epoch"] and a["loss"] == pytest.approx(b["loss"], rel=1e-4), (a, b)
    assert reports[1]["resumed"] == 1 and "(1 resumes)" in (broken / "MODEL_CARD.md").read_text()
    weights = [keras.models.load_model(d / "model.keras", compile=False).get_weights() for d in (whole, broken)]
    assert all(np.allclose(a, b, atol=1e-5) for a, b in zip(*weights))
    # A finished run resumed trains nothing and serves again, here with flip averaging forced off.
    result = subprocess.run([EXE, "train", "--resume", str(whole), "--flip-average", "off"], capture_output=True,
                            text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    assert json.loads((whole / "model.json").read_text())["flip_average"] is False
    again = keras.models.load_model(whole / "model.keras", compile=False).get_weights()
    assert all(np.allclose(a, b, atol=1e-5) for a, b in zip(weights[0], again))
    # A further schedule from the finished model (`--init-from`) starts from its weights:
    # at a vanishing learning rate they are still its weights after a step.
    warm = tmp_path / "warm"
    result = subprocess.run([EXE, "train", *args[:4], "--epochs", "1", "--steps", "1", "--train-batch-size", "8",
                             "--val-split", "0.34", "--flip-average", "off", "--out", str(warm),
                             "--init-from", str(whole / "model.keras"), "--learning-rate", "1e-12",
                             "--warmup-epochs", "0"], capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    assert f"started from the weights of `{whole / 'model.keras'}`" in (warm / "MODEL_CARD.md").read_text()
    kernels = [[w.numpy() for w in keras.models.load_model(d / "model.keras", compile=False).trainable_weights]
               for d in (whole, warm)]
    assert all(np.allclose(a, b, atol=1e-6) for a, b in zip(*kernels))
    from training.networks import build
    from training.train import _start_from

    with pytest.raises(ValueError, match="do not fit"):
        _start_from(build("resnet18", 64), whole / "model.keras")
    # Nothing to resume from: one line, exit 1.
    result = subprocess.run([EXE, "train", "--resume", str(tmp_path / "nothing")], capture_output=True, text=True)
    assert result.returncode == 1 and "no checkpoint to resume from" in result.stderr

