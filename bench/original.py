"""The original solution's inference path, rebuilt for timing only.

Haar cascade box (``detectMultiScale(gray, 1.3, 5)``), the face resized to 224x224 RGB,
VGG19 + GlobalAveragePooling2D + Dense(9) with random weights (speed does not depend on
the weights), and one ``model.predict`` call per face - as the notebooks did.
"""

from __future__ import annotations

import os
import time

import cv2
import numpy as np

from .config import BenchConfig
from .measure import Figures, UsageSampler


class OriginalPath:
    def __init__(self) -> None:
        from model.haar import cascade_path
        from model.runtime import tensorflow

        tensorflow()
        import keras

        base = keras.applications.VGG19(include_top=False, weights=None, input_shape=(224, 224, 3))
        x = keras.layers.GlobalAveragePooling2D()(base.output)
        self.model = keras.Model(base.input, keras.layers.Dense(9, activation="softmax")(x))
        self.cascade = cv2.CascadeClassifier(cascade_path("haarcascade_frontalface_default.xml"))

    def predict_file(self, path: str) -> list[int]:
        image = cv2.imread(path)
        if image is None:
            raise ValueError(f"{path}: unreadable image")
        grey = cv2.cvtColor(image, cv2.COLOR_BGR2GRAY)
        faces = self.cascade.detectMultiScale(grey, 1.3, 5)
        boxes = list(faces) if len(faces) else [(0, 0, image.shape[1], image.shape[0])]
        labels = []
        for x, y, w, h in boxes:
            face = cv2.resize(image[y : y + h, x : x + w], (224, 224))[:, :, ::-1].astype(np.float32) / 255.0
            labels.append(int(np.argmax(self.model.predict(face[None], verbose=0))))
        return labels


def run_original(config: BenchConfig) -> Figures:
    path = OriginalPath()
    images = config.images[: config.original_limit]
    path.predict_file(str(images[0]))  # warm-up (graph build)
    with UsageSampler({"bench": os.getpid()}) as usage:
        start = time.perf_counter()
        for image in images:
            path.predict_file(str(image))
        wall = time.perf_counter() - start
    return {
        "images": len(images),
        "ms_per_image": 1000 * wall / len(images),
        "images_per_s": len(images) / wall,
        "processes": usage.summaries(),
    }
