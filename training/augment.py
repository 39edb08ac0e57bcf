"""Camera-like augmentation of uint8 face crops, in the order a camera degrades an image.

Geometry first (a face is never perfectly centred), then light (exposure, contrast,
gamma), optics and sensor (blur, lower resolution, noise), and last the encoder (JPEG),
because that is where artefacts land on top of everything else. Everything is OpenCV
on small crops (a fraction of a millisecond each) and releases the GIL, so a thread
pool keeps up with training on two cores.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np


@dataclass(frozen=True)
class CameraAugment:
    rotation_degrees: float = 12.0
    scale: tuple[float, float] = (0.9, 1.1)
    shift: float = 0.07  # fraction of the side
    flip: float = 0.5
    brightness: float = 0.25  # +-fraction of full range
    contrast: tuple[float, float] = (0.65, 1.35)
    gamma: tuple[float, float] = (0.7, 1.4)
    greyscale: float = 0.2  # colour inputs only
    blur: float = 0.25  # probability; sigma 0.5..1.5 px
    downscale: float = 0.25  # probability of a 0.4..0.8x resolution round trip
    noise: float = 0.5  # probability; sigma 2..12 grey levels
    jpeg: float = 0.7  # probability; quality 30..95

    def __call__(self, image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """A new augmented uint8 image of the same shape (H, W, C)."""
        h, w = image.shape[:2]
        channels = image.shape[2] if image.ndim == 3 else 1
        out = image
        # Geometry: one affine warp, edges reflected so no black corners teach the model.
        angle = rng.uniform(-self.rotation_degrees, self.rotation_degrees)
        matrix = cv2.getRotationMatrix2D((w / 2, h / 2), angle, rng.uniform(*self.scale))
        matrix[:, 2] += rng.uniform(-self.shift, self.shift, 2) * np.array((w, h))
        out = cv2.warpAffine(out, matrix, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT_101)
        if rng.random() < self.flip:
            out = cv2.flip(out, 1)
        if channels == 3 and rng.random() < self.greyscale:
            out = cv2.cvtColor(cv2.cvtColor(out, cv2.COLOR_BGR2GRAY), cv2.COLOR_GRAY2BGR)
        # Light: contrast about the mean, brightness offset, then gamma, through one table.
        lut = np.arange(256, dtype=np.float32)
        mean = float(out.mean())
        lut = (lut - mean) * rng.uniform(*self.contrast) + mean + rng.uniform(-1, 1) * self.brightness * 255
        lut = 255.0 * (np.clip(lut, 0, 255) / 255.0) ** rng.uniform(*self.gamma)
        out = cv2.LUT(out, np.clip(lut + 0.5, 0, 255).astype(np.uint8))
        if rng.random() < self.blur:
            out = cv2.GaussianBlur(out, (0, 0), rng.uniform(0.5, 1.5))
        if rng.random() < self.downscale:
            k = rng.uniform(0.4, 0.8)
            small = cv2.resize(out, (max(8, round(w * k)), max(8, round(h * k))), interpolation=cv2.INTER_AREA)
            out = cv2.resize(small, (w, h), interpolation=cv2.INTER_LINEAR)
        if rng.random() < self.noise:
            noisy = out.astype(np.float32) + rng.normal(0.0, rng.uniform(2, 12), out.shape).astype(np.float32)
            out = np.clip(noisy, 0, 255).astype(np.uint8)
        if rng.random() < self.jpeg:
            ok, encoded = cv2.imencode(".jpg", out, [cv2.IMWRITE_JPEG_QUALITY, int(rng.integers(30, 96))])
            decoded = cv2.imdecode(encoded, cv2.IMREAD_GRAYSCALE if channels == 1 else cv2.IMREAD_COLOR) if ok else None
            if decoded is not None:
                out = decoded
        return out.reshape(image.shape)
