"""The direct path for still images on several threads: the outcomes of one thread, in
input order, unreadable files in their places."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from emotion_stream.settings import Settings
from ingest.samples import sample_frame
from model import EmotionModel, FaceAnalyzer
from model.stills import analyze_files


def outcomes(analyzer: FaceAnalyzer, paths: list[Path], threads: int) -> list[tuple[str, str, str, list[float]]]:
    return [(o.path.name, o.error, o.emotion, [round(float(p), 5) for p in o.faces[0].probabilities] if o.faces else [])
            for o in analyze_files(analyzer, paths, batch_size=3, threads=threads)]


def test_threads_give_the_outcomes_of_one_thread_in_input_order(tmp_path: Path, default_model: EmotionModel) -> None:
    paths = []
    for i in range(23):
        path = tmp_path / f"{i:02d}.jpg"
        frame = sample_frame(t=i * 0.37, faces=1 + i % 2)
        if i % 4 == 0:
            frame = np.ascontiguousarray(frame[:, ::-1])  # not every batch alike
        cv2.imwrite(str(path), frame)
        paths.append(path)
    (tmp_path / "05.jpg").write_bytes(b"\xff\xd8 not a jpeg")  # unreadable, mid-batch
    paths.append(tmp_path / "missing.jpg")  # and at the end
    analyzer = FaceAnalyzer.from_settings(Settings(), default_model)

    one = outcomes(analyzer, paths, threads=1)
    several = outcomes(analyzer, paths, threads=3)

    assert [name for name, *_ in several] == [p.name for p in paths]
    assert several == one
    assert one[5][1] and one[-1][1]  # the errors are reported in place
    assert sum(1 for _, error, emotion, _ in one if not error and emotion) == 22
