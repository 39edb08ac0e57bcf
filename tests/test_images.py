"""Safe decoding: every hostile file gets a clear one-line error; awkward ones decode."""

from __future__ import annotations

import os

import pytest

from emotion_stream.images import ImageError, ImageLimits, decode_image, read_image_file

from .hostile import hostile_images


@pytest.fixture(scope="module")
def corpus(face_bgr):
    return hostile_images(face_bgr)


def test_awkward_but_valid_images_decode_to_8bit_bgr(corpus):
    for name, (data, expected) in corpus.items():
        if expected is None:
            image = decode_image(data)
            assert image.ndim == 3 and image.shape[2] == 3 and image.dtype.name == "uint8", name
            assert image.std() > 5, f"{name} decoded to a flat image"


def test_exif_orientation_is_applied(corpus):
    upright = decode_image(corpus["ok.jpg"][0])
    rotated = decode_image(corpus["exif-rotated.jpg"][0])
    assert upright.shape[:2] == (150, 128)
    assert rotated.shape[:2] == (128, 150)  # displayed rotated by 90 degrees


@pytest.mark.parametrize(
    "name", ["empty.jpg", "text.jpg", "truncated.jpg", "bomb.png", "bomb.jpg"]
)
def test_hostile_inputs_raise_one_line_errors(corpus, name):
    data, expected = corpus[name]
    with pytest.raises(ImageError) as info:
        decode_image(data)
    message = str(info.value)
    assert expected in message and "\n" not in message


def test_limits_are_configurable(corpus):
    data = corpus["ok.jpg"][0]
    with pytest.raises(ImageError, match="over the limit of 100 pixels"):
        decode_image(data, ImageLimits(max_pixels=100))
    with pytest.raises(ImageError, match="bytes, over the limit"):
        decode_image(data, ImageLimits(max_bytes=1024))


def test_files_that_are_not_regular_files_are_refused(tmp_path):
    with pytest.raises(ImageError, match="^a folder, not an image file$"):
        read_image_file(tmp_path)
    with pytest.raises(ImageError, match="^no such file$"):
        read_image_file(tmp_path / "missing.jpg")
    os.mkfifo(tmp_path / "pipe.jpg")
    with pytest.raises(ImageError, match="^not a regular file$"):
        read_image_file(tmp_path / "pipe.jpg")
