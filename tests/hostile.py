"""A corpus of hostile and awkward image files, generated in code.

Each entry: name -> (bytes, expected outcome). ``None`` means the file must decode; a
string is a fragment the one-line error must contain.
"""

from __future__ import annotations

import io
import struct
import zlib

import cv2
import numpy as np
from PIL import Image


def _png_with_declared_size(width: int, height: int) -> bytes:
    """A tiny valid-looking PNG whose header declares an enormous image (a bomb)."""
    raw = zlib.compress(b"\x00" * 16)
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", raw) + chunk(b"IEND", b"")


def _jpeg_with_declared_size(jpeg: bytes, width: int, height: int) -> bytes:
    """Patch the SOF0 marker of a baseline JPEG to declare other dimensions."""
    i = jpeg.index(b"\xff\xc0")
    return jpeg[: i + 5] + struct.pack(">HH", height, width) + jpeg[i + 9 :]


def _pillow(image: Image.Image, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    image.save(buf, fmt, **kw)
    return buf.getvalue()


def hostile_images(face_bgr: np.ndarray) -> dict[str, tuple[bytes, str | None]]:
    small = cv2.resize(face_bgr, (128, 150))
    rgb = Image.fromarray(cv2.cvtColor(small, cv2.COLOR_BGR2RGB))
    jpeg = cv2.imencode(".jpg", small)[1].tobytes()
    grey = np.asarray(rgb.convert("L"))
    exif = rgb.getexif()
    exif[0x0112] = 6  # orientation: rotate 90 CW to display
    return {
        "ok.jpg": (jpeg, None),
        "grey.png": (_pillow(rgb.convert("L"), "PNG"), None),
        "rgba.png": (_pillow(rgb.convert("RGBA"), "PNG"), None),
        "sixteen.png": (cv2.imencode(".png", grey.astype(np.uint16) * 257)[1].tobytes(), None),
        "cmyk.jpg": (_pillow(rgb.convert("CMYK"), "JPEG"), None),
        "exif-rotated.jpg": (_pillow(rgb, "JPEG", exif=exif), None),
        "empty.jpg": (b"", "empty"),
        "text.jpg": (b"this is not an image, just text with an image extension\n", "not a recognised image"),
        "truncated.jpg": (jpeg[: len(jpeg) // 2], "truncated"),
        "bomb.png": (_png_with_declared_size(100_000, 100_000), "over the limit"),
        "bomb.jpg": (_jpeg_with_declared_size(jpeg, 60_000, 60_000), "over the limit"),
    }
