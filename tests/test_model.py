"""EmotionModel: default weights, a differently shaped user model, label mapping, bad weights."""

from __future__ import annotations

import json

import numpy as np
import pytest

from emotion_stream.labels import EMOTIONS, canonical
from model import EmotionModel, ModelError, ModelMetadata, Preprocessing
from model.preprocessing import crop_face


def test_canonical_label_spellings():
    assert canonical("Happiness") == "happy"
    assert canonical("angry") == "anger"
    assert canonical("SADNESS ") == "sad"
    with pytest.raises(ValueError, match="unknown emotion label 'pain'"):
        canonical("pain")


def test_default_model_has_nine_outputs(default_model, face_bgr):
    assert default_model.labels == EMOTIONS and len(default_model.metadata.labels) == 9
    face = crop_face(face_bgr, (179, 113, 172, 217), default_model.face_margin)
    probs = default_model.predict_proba([face])
    assert probs.shape == (1, 9) and abs(float(probs.sum()) - 1) < 1e-4
    assert default_model.predict(face) in ("neutral", "sad", "happy")


def test_fer2013_baseline_maps_seven_labels_to_nine(face_bgr):
    fer = EmotionModel("fer2013")
    assert fer.id.startswith("fer2013-mini-xception@") and fer.labels == EMOTIONS
    meta = fer.metadata
    assert (meta.input_height, meta.input_width, meta.channels) == (64, 64, 1)
    face = crop_face(face_bgr, (179, 113, 172, 217), fer.face_margin)
    probs = fer.predict_proba([face, face[:, ::-1]])
    assert probs.shape == (2, 9)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-4)
    # FER2013 has no contempt/uncertain class: those columns are exactly zero.
    assert probs[:, EMOTIONS.index("contempt")].max() == 0.0
    assert probs[:, EMOTIONS.index("uncertain")].max() == 0.0
    label = fer.predict(face)
    assert label == EMOTIONS[int(np.argmax(probs[0]))]
    # Grace Hopper's portrait is not smiling broadly nor angry: the model agrees.
    assert label in ("neutral", "sad", "happy")
    assert fer.predict_batch([face, face[:, ::-1]]) == [EMOTIONS[i] for i in probs.argmax(1)]


def test_batches_of_every_size_give_the_same_answers(default_model, face_bgr):
    """Batches are padded to power-of-two buckets; padding must not change results."""
    faces = [crop_face(face_bgr, (179 + i, 113, 172 - i, 217), 0.2) for i in range(70)]
    alone = np.concatenate([default_model.predict_proba([f]) for f in faces[:5]])
    for n in (5, 7, 33, 70):  # inside a bucket, across buckets, above the largest
        np.testing.assert_allclose(default_model.predict_proba(faces[:n])[:5], alone, atol=1e-5)


def test_prepared_input_is_accepted_as_is(default_model, face_bgr):
    face = crop_face(face_bgr, (179, 113, 172, 217), default_model.face_margin)
    prepared = default_model.prepare([face])
    assert prepared.dtype == np.float32 and prepared.shape == (1, 64, 64, 1)
    assert -1.0 <= prepared.min() and prepared.max() <= 1.0  # [-1, 1] scaling
    np.testing.assert_allclose(default_model.predict_proba(prepared), default_model.predict_proba([face]), atol=1e-6)


def _user_model(path, labels, logits_for_white, size=96):
    """A 96x96 RGB Keras model with [0,1] input scaling whose output is known exactly:
    logits = W * mean(input) + b, so a white image (mean 1.0 after scaling) gives
    ``logits_for_white`` and a black one gives ``b``."""
    import keras

    inputs = keras.Input((size, size, 3))
    pooled = keras.layers.GlobalAveragePooling2D()(inputs)
    mean = keras.layers.Dense(1, use_bias=False)(pooled)  # set to the channel mean below
    outputs = keras.layers.Dense(len(labels), activation="softmax")(mean)
    model = keras.Model(inputs, outputs)
    model.layers[2].set_weights([np.full((3, 1), 1 / 3, np.float32)])  # channel mean
    bias = np.zeros(len(labels), np.float32)
    model.layers[3].set_weights([np.asarray(logits_for_white, np.float32)[None, :], bias])
    model.save(path)
    return model


def test_user_model_96_rgb_zero_to_one_five_labels(tmp_path):
    labels = ["happiness", "sadness", "anger", "surprise", "neutral"]
    weights = tmp_path / "mine.keras"
    _user_model(weights, labels, [4.0, 0.0, 0.0, 0.0, 0.0])
    ModelMetadata(
        labels=tuple(labels), input_height=96, input_width=96, channels=3,
        preprocessing=Preprocessing.ZERO_TO_ONE, name="mine",
    ).save(weights.with_suffix(".json"))
    model = EmotionModel(weights)
    assert model.id.startswith("mine@")
    white = np.full((200, 150, 3), 255, np.uint8)  # any size: resized to 96x96
    probs = model.predict_proba([white])[0]
    expected_happy = np.exp(4.0) / (np.exp(4.0) + 4)
    assert probs[EMOTIONS.index("happy")] == pytest.approx(expected_happy, rel=1e-4)
    for absent in ("contempt", "disgust", "fear", "uncertain"):
        assert probs[EMOTIONS.index(absent)] == 0.0
    assert model.predict(white) == "happy"
    # Black image: uniform over the five labels the model knows.
    black = np.zeros((96, 96, 3), np.uint8)
    probs = model.predict_proba([black])[0]
    for present in ("happy", "sad", "anger", "surprise", "neutral"):
        assert probs[EMOTIONS.index(present)] == pytest.approx(0.2, rel=1e-4)


def test_preprocessing_mode_changes_the_input(tmp_path):
    """The same weights read with [-1,1] scaling see white as 1.0 too, but black as -1.0."""
    labels = ["happy", "sad"]
    weights = tmp_path / "two.keras"
    _user_model(weights, labels, [2.0, -2.0])
    zero_one = EmotionModel(weights, labels, preprocessing="zero_to_one")
    minus_one = EmotionModel(weights, labels, preprocessing="minus_one_to_one")
    black = np.zeros((96, 96, 3), np.uint8)
    assert zero_one.predict(black) in ("happy", "sad")
    assert zero_one.predict_proba([black])[0, EMOTIONS.index("happy")] == pytest.approx(0.5, abs=1e-5)
    assert minus_one.predict(black) == "sad"  # logits -2, +2


def test_legacy_h5_without_metadata_loads_with_labels(tmp_path):
    weights = tmp_path / "legacy.h5"
    _user_model(weights, ["happy", "sad", "neutral"], [3.0, 0.0, 0.0], size=48)
    model = EmotionModel(weights, labels=["happy", "sad", "neutral"])
    assert (model.metadata.input_height, model.metadata.channels) == (48, 3)
    assert model.predict(np.full((48, 48, 3), 255, np.uint8)) == "happy"


def test_missing_weights_file(tmp_path):
    with pytest.raises(ModelError, match="missing.keras: weights file not found"):
        EmotionModel(tmp_path / "missing.keras")


def test_corrupt_weights_file(tmp_path):
    bad = tmp_path / "corrupt.keras"
    bad.write_bytes(b"PK\x03\x04 this is not really a keras zip" * 10)
    with pytest.raises(ModelError, match="corrupt.keras: cannot load weights") as info:
        EmotionModel(bad)
    assert "\n" not in str(info.value)
    empty = tmp_path / "empty.h5"
    empty.write_bytes(b"")
    with pytest.raises(ModelError, match="empty.h5: weights file is empty"):
        EmotionModel(empty)


def test_output_size_matching_no_label_list(tmp_path):
    weights = tmp_path / "five.keras"
    _user_model(weights, ["a", "b", "c", "d", "e"], [0.0] * 5, size=32)
    with pytest.raises(ModelError, match="5 outputs, which matches no known label list"):
        EmotionModel(weights)
    with pytest.raises(ModelError, match="5 outputs but 3 labels"):
        EmotionModel(weights, labels=["happy", "sad", "anger"])
    with pytest.raises(ModelError, match="unknown emotion label 'a'"):
        EmotionModel(weights, labels=["a", "b", "c", "d", "e"])


def test_invalid_metadata_file(tmp_path):
    weights = tmp_path / "m.keras"
    _user_model(weights, ["happy", "sad"], [1.0, 0.0], size=32)
    weights.with_suffix(".json").write_text(json.dumps({"labels": ["happy", "sad"]}))
    with pytest.raises(ModelError, match="invalid metadata"):
        EmotionModel(weights)
