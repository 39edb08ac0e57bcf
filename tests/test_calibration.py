"""Calibration (temperature scaling, ECE), abstention and the training sampler/augmenter."""

from __future__ import annotations

import numpy as np
import pytest

from emotion_stream.labels import EMOTIONS
from model.calibration import abstain, calibrated_ece, expected_calibration_error, fit_temperature, softmax


def _overconfident(n: int = 4000, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Logits whose labels were drawn at temperature 2.5: the raw softmax is over-confident."""
    rng = np.random.default_rng(seed)
    logits = rng.normal(0, 3, (n, 9))
    truth = softmax(logits, 2.5)
    labels = np.array([rng.choice(9, p=p) for p in truth])
    return logits, labels


def test_temperature_scaling_recovers_the_temperature_and_lowers_the_ece():
    logits, labels = _overconfident()
    t = fit_temperature(logits, labels)
    assert t == pytest.approx(2.5, rel=0.1)
    before = expected_calibration_error(softmax(logits), labels)
    after = expected_calibration_error(softmax(logits, t), labels)
    assert before > 0.1 and after < 0.03 and after < before / 4


def test_calibration_changes_confidences_but_not_the_argmax():
    logits, labels = _overconfident(500)
    t = fit_temperature(logits, labels)
    raw, calibrated = softmax(logits), softmax(logits, t)
    assert (raw.argmax(1) == calibrated.argmax(1)).all()
    assert not np.allclose(raw.max(1), calibrated.max(1))
    np.testing.assert_allclose(calibrated.sum(1), 1.0, rtol=1e-9)


def test_a_calibrated_models_ece_is_the_noise_of_few_images():
    """On a few hundred images a perfectly calibrated model still measures an ECE of a
    few points: ``calibrated_ece`` says how much, and an over-confident model stands out
    of it."""
    logits, labels = _overconfident()
    calibrated, raw = softmax(logits, 2.5), softmax(logits)
    few = slice(0, 200)
    mean, p95 = calibrated_ece(calibrated[few])
    assert 0.03 < mean < p95 < 0.15
    assert expected_calibration_error(calibrated[few], labels[few]) < p95
    assert calibrated_ece(calibrated)[0] < mean / 3  # 20 times the images: a third of the noise
    assert expected_calibration_error(raw[few], labels[few]) > calibrated_ece(raw[few])[1]


def test_the_served_model_applies_the_temperature_inside(tmp_path):
    """``with_temperature`` bakes T into the saved network: EmotionModel reads calibrated
    probabilities, with the same argmax as the raw logits."""
    import keras

    from model import EmotionModel
    from model.metadata import ModelMetadata, Preprocessing
    from training.networks import with_temperature

    inputs = keras.Input((8, 8, 1))
    logits = keras.layers.Dense(9)(keras.layers.Flatten()(inputs))
    raw = keras.Model(inputs, logits)
    x = np.random.default_rng(1).uniform(0, 255, (16, 8, 8, 1)).astype(np.uint8)
    outputs = {}
    for t in (1.0, 3.0):
        path = tmp_path / f"t{t}.keras"
        with_temperature(raw, t).save(path)
        ModelMetadata(EMOTIONS, 8, 8, 1, Preprocessing.ZERO_TO_ONE).save(path.with_suffix(".json"))
        outputs[t] = EmotionModel(path).predict_proba(list(x))
    assert (outputs[1.0].argmax(1) == outputs[3.0].argmax(1)).all()
    assert outputs[3.0].max(1).mean() < outputs[1.0].max(1).mean()


def test_abstention_threshold_labels_low_confidence_uncertain():
    p = np.array([[0.9, 0.1] + [0] * 7, [0.4, 0.35, 0.25] + [0] * 6])
    uncertain = EMOTIONS.index("uncertain")
    assert abstain(p, None, uncertain).tolist() == [0, 0]
    assert abstain(p, 0.5, uncertain).tolist() == [0, uncertain]


def test_emotion_model_abstains_only_when_asked(default_model, face_bgr):
    from model import EmotionModel

    top = float(default_model.predict_proba([face_bgr]).max())
    assert default_model.predict(face_bgr) != "uncertain"
    strict = EmotionModel(uncertain_below=min(1.0, top + 0.01))
    assert strict.predict(face_bgr) == "uncertain"
    assert strict.predict_batch([face_bgr, face_bgr]) == ["uncertain", "uncertain"]
    with pytest.raises(ValueError):
        EmotionModel(uncertain_below=1.5)


def test_predict_cli_takes_the_threshold(tmp_path, face_bgr, capsys):
    import cv2

    from cli import main

    path = tmp_path / "face.jpg"
    cv2.imwrite(str(path), face_bgr)
    assert main(["predict", str(path), "--uncertain-below", "1.0"]) == 0
    assert "uncertain" in capsys.readouterr().out
    assert main(["predict", str(path), "--uncertain-below", "1.5"]) == 2


def test_balanced_sampler_draws_domains_equally_and_classes_by_tempered_counts():
    from training.domains import BalancedSampler, Domain

    small = Domain("a", np.zeros((12, 4, 4, 1), np.uint8), np.array([4] * 10 + [6] * 2))
    big = Domain("b", np.zeros((1000, 4, 4, 1), np.uint8), np.array([0] * 900 + [3] * 100))
    sampler = BalancedSampler([small, big], power=0.0)
    picks = sampler.draw(20000, np.random.default_rng(0))
    domains = np.array([d for d, _ in picks])
    assert abs(domains.mean() - 0.5) < 0.02  # each domain half the time, whatever its size
    labels_a = np.array([small.labels[i] for d, i in picks if d == 0])
    assert abs((labels_a == 6).mean() - 0.5) < 0.03  # power 0: classes uniform within a domain
    natural = BalancedSampler([big], power=1.0).class_share()["b"]
    assert natural == {"anger": 0.9, "fear": 0.1}
    # domain_power 0.5: drawn by the square root of their sizes (12 and 1000: 10 % and 90 %).
    by_size = BalancedSampler([small, big], power=0.0, domain_power=0.5)
    domains = np.array([d for d, _ in by_size.draw(20000, np.random.default_rng(0))])
    expected = np.sqrt(1000) / (np.sqrt(12) + np.sqrt(1000))
    assert abs(domains.mean() - expected) < 0.01
    prior = by_size.class_prior()  # the prior tracking divides out follows the same shares
    assert abs(prior["anger"] - expected / 2) < 1e-3 and abs(prior["happy"] - (1 - expected) / 2) < 1e-3


def test_camera_augmentation_keeps_shape_and_changes_pixels(face_bgr):
    import cv2

    from training.augment import CameraAugment

    grey = cv2.resize(cv2.cvtColor(face_bgr, cv2.COLOR_BGR2GRAY), (64, 64))[:, :, None]
    rng = np.random.default_rng(0)
    out = [CameraAugment()(grey, rng) for _ in range(20)]
    assert all(o.shape == grey.shape and o.dtype == np.uint8 for o in out)
    assert all(np.abs(o.astype(int) - grey).mean() > 2 for o in out)
    colour = CameraAugment()(cv2.resize(face_bgr, (96, 96)), rng)
    assert colour.shape == (96, 96, 3)


def test_flip_averaging_is_the_mean_of_a_face_and_its_mirror(tmp_path, face_bgr):
    """A model whose metadata asks for test-time flip averaging returns, for each face,
    the mean of its own and its mirror image's probabilities, at every batch size."""
    import json
    import shutil

    from model import EmotionModel
    from model.emotion_model import BUNDLED

    shipped = BUNDLED["keras"]
    meta = json.loads(shipped.with_suffix(".json").read_text())
    for name, flip in (("plain", False), ("flipping", True)):
        shutil.copy(shipped, tmp_path / f"{name}.keras")
        (tmp_path / f"{name}.json").write_text(json.dumps({**meta, "flip_average": flip}))
    plain = EmotionModel(tmp_path / "plain.keras")
    flipping = EmotionModel(tmp_path / "flipping.keras")
    faces = [face_bgr, np.ascontiguousarray(face_bgr[:, ::-1]), face_bgr[40:440, 60:460]] * 15  # 45: two calls
    mirrored = [np.ascontiguousarray(f[:, ::-1]) for f in faces]
    expected = (plain.predict_proba(faces) + plain.predict_proba(mirrored)) / 2
    np.testing.assert_allclose(flipping.predict_proba(faces), expected, atol=1e-5)
    np.testing.assert_allclose(flipping.predict_proba(faces[:1]), expected[:1], atol=1e-5)
