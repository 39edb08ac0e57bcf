"""Safe image decoding for files and frame messages.

Every image the system touches - a camera frame from Redis, a file in a batch folder,
an argument to ``predict`` - goes through :func:`decode_image`, which:

* refuses empty and oversized inputs before any work is done;
* reads the declared dimensions from the header (Pillow, no pixel decode) and refuses
  decompression bombs before allocating anything;
* refuses truncated JPEG/PNG data instead of returning a half-grey picture;
* decodes with OpenCV (fast; applies the EXIF orientation; folds 16-bit, grey, alpha and
  CMYK to 8-bit BGR), falling back to Pillow for formats OpenCV lacks.

Errors are :class:`ImageError` with a one-line reason, never a traceback.
"""

from __future__ import annotations

import io
import sys
import warnings
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from .settings import DEFAULT_MAX_BYTES, DEFAULT_MAX_PIXELS

# We enforce our own limit; Pillow's warning/exception at its default would be noise.
Image.MAX_IMAGE_PIXELS = None

IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff", ".gif"})


class ImageError(ValueError):
    """An input that is not a usable image; the message says why."""


@dataclass(frozen=True, slots=True)
class ImageLimits:
    max_bytes: int = DEFAULT_MAX_BYTES
    max_pixels: int = DEFAULT_MAX_PIXELS


def decode_image(data: bytes, limits: ImageLimits = ImageLimits()) -> np.ndarray:
    """Decode encoded image bytes to an 8-bit BGR array (H, W, 3)."""
    if not data:
        raise ImageError("empty (0 bytes)")
    if len(data) > limits.max_bytes:
        raise ImageError(f"{len(data)} bytes, over the limit of {limits.max_bytes}")
    fmt, width, height = _sniff(data)
    if width * height > limits.max_pixels:
        raise ImageError(
            f"declared size {width}x{height} is over the limit of {limits.max_pixels} pixels"
        )
    _check_complete(data, fmt)
    array = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    if array is None:
        array = _decode_with_pillow(data)
    if array.shape[0] != height or array.shape[1] != width:
        # EXIF rotation swaps the axes; anything else means the header lied.
        if (array.shape[0], array.shape[1]) != (width, height):
            raise ImageError(f"decoded size {array.shape[1]}x{array.shape[0]} != header {width}x{height}")
    return array


STDIN = "-"  # as a path: the image is read from standard input (`curl URL | predict -`)


def read_image_file(path: str | Path, limits: ImageLimits = ImageLimits()) -> np.ndarray:
    """Read and decode an image file (``-``: standard input); refuses non-regular files
    and oversized files."""
    if str(path) == STDIN:
        data = sys.stdin.buffer.read(limits.max_bytes + 1)
        if len(data) > limits.max_bytes:
            raise ImageError(f"standard input is over the limit of {limits.max_bytes} bytes")
        return decode_image(data, limits)
    path = Path(path)
    try:
        if not path.is_file():
            # Say which: a wrong path and a folder are the usual cases, pipes and devices rare.
            if not path.exists():
                raise ImageError("no such file")
            raise ImageError("a folder, not an image file" if path.is_dir() else "not a regular file")
        size = path.stat().st_size
        if size > limits.max_bytes:
            raise ImageError(f"{size} bytes, over the limit of {limits.max_bytes}")
        data = path.read_bytes()
    except OSError as exc:
        raise ImageError(f"cannot read: {exc.strerror or exc}") from None
    return decode_image(data, limits)


def _sniff(data: bytes) -> tuple[str, int, int]:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with Image.open(io.BytesIO(data)) as im:
                return str(im.format), int(im.size[0]), int(im.size[1])
    except UnidentifiedImageError:
        raise ImageError("not a recognised image format") from None
    except Exception as exc:  # Pillow raises many types for broken headers
        raise ImageError(f"unreadable image header: {exc}") from None


def _check_complete(data: bytes, fmt: str) -> None:
    tail = data[-64:]
    if fmt == "JPEG" and b"\xff\xd9" not in tail:
        raise ImageError("truncated JPEG (no end-of-image marker)")
    if fmt == "PNG" and b"IEND" not in tail:
        raise ImageError("truncated PNG (no IEND chunk)")


def _decode_with_pillow(data: bytes) -> np.ndarray:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with Image.open(io.BytesIO(data)) as opened:
                im: Image.Image = ImageOps.exif_transpose(opened)
                if im.mode in ("I;16", "I;16B", "I;16L", "I"):
                    # 16/32-bit grey: scale to 8 bits rather than clip.
                    arr = np.asarray(im, dtype=np.float64)
                    peak = arr.max() or 1.0
                    grey = (arr * (255.0 / peak)).astype(np.uint8)
                    return cv2.cvtColor(grey, cv2.COLOR_GRAY2BGR)
                rgb = np.asarray(im.convert("RGB"))
    except Exception as exc:
        raise ImageError(f"cannot decode image data: {exc}") from None
    return cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR)
