"""Exported models: the shipped default in LiteRT and ONNX Runtime equals the Keras file,
`export` writes files that load and agree, and bad exported files are one clear error."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from cli import main
from model import EmotionModel, ModelError
from model.emotion_model import BUNDLED

EXE = str(Path(sys.executable).with_name("emotion-stream"))


def _crops(face: np.ndarray) -> list[np.ndarray]:
    """Face crops that differ: the portrait cut, shifted, mirrored, darkened, grey, small."""
    base = face[80:420, 120:460]
    return [base, np.ascontiguousarray(base[:, ::-1]), face[60:440, 100:480], (base * 0.5).astype(np.uint8),
            cv2.cvtColor(base, cv2.COLOR_BGR2GRAY), cv2.resize(base, (48, 48)), face[100:400, 140:440]]


@pytest.fixture(scope="module")
def keras_default():
    return EmotionModel(runtime="keras")


# How far each shipped export's probabilities may lie from the .keras file's: LiteRT runs
# the float32 network, ONNX Runtime the int8 one (`make export`; 0.037 at most on the
# 219 test photos, the model card).
SHIPPED_TOLERANCE = {"litert": 1e-3, "onnx": 0.05}


@pytest.mark.parametrize("runtime", ["litert", "onnx"])
def test_the_shipped_exports_give_the_keras_answers(runtime, keras_default, face_bgr):
    exported = EmotionModel(runtime=runtime)
    assert exported.path == BUNDLED[runtime] and exported.backend == {"litert": "litert", "onnx": "onnxruntime"}[runtime]
    assert exported.metadata == keras_default.metadata  # one metadata file for the three
    crops = _crops(face_bgr)
    a, b = exported.predict_proba(crops), keras_default.predict_proba(crops)
    assert np.abs(a - b).max() < SHIPPED_TOLERANCE[runtime]
    assert np.abs(a.sum(axis=1) - 1).max() < 1e-4  # probabilities, not a quantised softmax's steps
    assert exported.predict_batch(crops) == keras_default.predict_batch(crops)


def test_the_shipped_exports_agree_on_the_dev_photos(shared_faces, keras_default):
    """Probabilities within SHIPPED_TOLERANCE on all of test_kaggle, through the crops
    serving makes, and the same labels: LiteRT's on every photo, the int8 file's wherever
    Keras's two likeliest labels are more than 0.1 apart (near-ties may turn)."""
    from model import FaceAnalyzer, create_detector
    from model.preprocessing import crop_face

    detector = create_detector("blazeface")
    crops = []
    for path in sorted((shared_faces / "test_kaggle").iterdir()):
        image = cv2.imread(str(path))
        found = detector.detect_batch([image], [True])[0]
        crops.append(crop_face(image, found[0].box, keras_default.face_margin, found[0].landmarks) if found else image)
    expected = keras_default.predict_proba(crops)
    top_two = np.sort(expected, axis=1)[:, -2:]
    clear = top_two[:, 1] - top_two[:, 0] > 0.1
    for runtime in ("litert", "onnx"):
        got = EmotionModel(runtime=runtime).predict_proba(crops)
        assert np.abs(got - expected).max() < SHIPPED_TOLERANCE[runtime], runtime
        same = got.argmax(1) == expected.argmax(1)
        assert (same if runtime == "litert" else same | ~clear).all(), runtime
    assert len(crops) == 219 and FaceAnalyzer  # the whole set


def test_export_writes_files_that_load_and_agree(tmp_path, face_bgr, capsys):
    source = tmp_path / "m.keras"
    shutil.copy(BUNDLED["keras"], source)
    shutil.copy(BUNDLED["keras"].with_suffix(".json"), source.with_suffix(".json"))
    crops_dir = tmp_path / "crops" / "happy"
    crops_dir.mkdir(parents=True)
    for i, crop in enumerate(_crops(face_bgr)):
        cv2.imwrite(str(crops_dir / f"{i}.jpg"), crop)
    keras_model = EmotionModel(source)
    crops = _crops(face_bgr)
    expected = keras_model.predict_proba(crops)
    for fmt, quantize, tolerance in (("tflite", "none", 1e-3), ("onnx", "none", 1e-3), ("tflite", "float16", 0.05),
                                     ("tflite", "int8", 0.25), ("onnx", "int8", 0.25)):
        out = tmp_path / "out" / f"m-{quantize}.{fmt}"
        args = ["export", str(source), "--format", fmt, "--out", str(out), "--quantize", quantize]
        if quantize == "int8":
            args += ["--calibration", str(tmp_path / "crops")]
        assert main(args) == 0, (fmt, quantize)
        assert f"wrote {out}" in capsys.readouterr().out
        meta = json.loads(out.with_suffix(".json").read_text())
        assert tuple(meta["labels"]) == keras_model.metadata.labels and meta["flip_average"] == keras_model.metadata.flip_average
        assert meta["extra"]["exported_from"]["format"] == fmt and meta["extra"]["exported_from"]["quantize"] == quantize
        got = EmotionModel(out).predict_proba(crops)
        assert np.abs(got - expected).max() < tolerance, (fmt, quantize, np.abs(got - expected).max())
        # Probabilities, however the network is quantised: a quantised softmax gave
        # steps of 1/255 that did not sum to 1.
        assert np.abs(got.sum(axis=1) - 1).max() < 1e-4, (fmt, quantize, got.sum(axis=1))
    # ONNX Runtime loads the file on its own, and agrees with Keras.
    import onnxruntime

    session = onnxruntime.InferenceSession(str(tmp_path / "out" / "m-none.onnx"), providers=["CPUExecutionProvider"])
    batch = keras_model.prepare(crops)
    raw = session.run(None, {session.get_inputs()[0].name: batch})[0]
    assert np.abs(raw - keras_model._network(batch)).max() < 1e-4


def test_export_refuses_what_it_cannot_do(tmp_path, capsys):
    source = tmp_path / "m.keras"
    shutil.copy(BUNDLED["keras"], source)
    onnx = ["--format", "onnx", "--out", str(tmp_path / "x.onnx")]
    cases = [
        (source, ["--format", "onnx", "--quantize", "float16", "--out", str(tmp_path / "x.onnx")],
         "float16 ONNX is not offered"),
        (source, ["--format", "tflite", "--quantize", "int8", "--out", str(tmp_path / "x.tflite")],
         "int8 needs --calibration"),
        (source, ["--format", "tflite", "--out", str(tmp_path / "x.onnx")], "a tflite file ends in .tflite"),
        (source, ["--format", "tflite", "--out", str(tmp_path / "x.tflite")], "no metadata beside it"),
        (tmp_path / "none.keras", onnx, "none.keras: no such file"),
        (BUNDLED["onnx"], onnx, "default.onnx: not a Keras model file"),
    ]
    for model, args, error in cases:
        assert main(["export", str(model), *args]) == 1
        err = capsys.readouterr().err
        assert error in err and err.count("\n") == 1, err


def _copy_default(tmp_path: Path, suffix: str) -> Path:
    target = tmp_path / f"m{suffix}"
    shutil.copy(BUNDLED["litert" if suffix == ".tflite" else "onnx"], target)
    shutil.copy(BUNDLED["keras"].with_suffix(".json"), target.with_suffix(".json"))
    return target


@pytest.mark.parametrize("suffix", [".tflite", ".onnx"])
def test_a_bad_exported_file_is_one_line_naming_it(tmp_path, suffix):
    good = _copy_default(tmp_path, suffix)
    truncated = tmp_path / f"truncated{suffix}"
    truncated.write_bytes(good.read_bytes()[: good.stat().st_size // 3])
    shutil.copy(good.with_suffix(".json"), truncated.with_suffix(".json"))
    with pytest.raises(ModelError, match=f"truncated{suffix}: cannot load weights") as info:
        EmotionModel(truncated)
    assert "\n" not in str(info.value)
    # Metadata that disagrees with the file: another input size, another number of labels.
    meta = json.loads(good.with_suffix(".json").read_text())
    good.with_suffix(".json").write_text(json.dumps({**meta, "input_height": 48, "input_width": 48}))
    with pytest.raises(ModelError, match=f"m{suffix}: the model's input is 64x64x1 but its metadata says 48x48x1"):
        EmotionModel(good)
    good.with_suffix(".json").write_text(json.dumps({**meta, "labels": meta["labels"][:7]}))
    with pytest.raises(ModelError, match=f"m{suffix}: model has 9 outputs but 7 labels"):
        EmotionModel(good)
    with pytest.raises(ModelError, match=r"runs in (litert|onnx), not keras"):
        EmotionModel(good, runtime="keras")


def test_predict_with_a_bad_exported_file_exits_1_before_any_work(tmp_path, face_bgr):
    bad = tmp_path / "bad.tflite"
    bad.write_bytes(b"TFL3 not a flatbuffer" * 20)
    photo = tmp_path / "face.jpg"
    cv2.imwrite(str(photo), face_bgr)
    result = subprocess.run([EXE, "predict", str(photo), "--model", str(bad)], capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 1
    assert result.stderr.strip().splitlines()[-1].startswith(f"emotion-stream predict: error: {bad}: cannot load")
    assert result.stdout == ""


def test_serving_imports_no_deep_learning_framework(face_bgr, tmp_path):
    """predict (and every service: they load models the same way) on the default model
    never imports TensorFlow, Keras, JAX or PyTorch."""
    photo = tmp_path / "face.jpg"
    cv2.imwrite(str(photo), face_bgr)
    probe = ("import sys, cli; code = cli.main(['predict', sys.argv[1]]); "
             "bad = [m for m in ('tensorflow', 'keras', 'jax', 'torch') if m in sys.modules]; "
             "print('IMPORTED', bad); sys.exit(code)")
    result = subprocess.run([sys.executable, "-c", probe, str(photo)], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "IMPORTED []" in result.stdout, result.stdout
