"""The direct path for still images: files -> decode -> FaceAnalyzer, in batches."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from emotion_stream.images import ImageError, ImageLimits, read_image_file

from .analyzer import FaceAnalyzer, FaceResult


@dataclass(frozen=True, slots=True)
class StillOutcome:
    path: Path
    faces: list[FaceResult]  # largest face first; empty only when error is set
    error: str = ""
    image: np.ndarray | None = None  # the decoded image, when asked to keep it

    @property
    def emotion(self) -> str:
        """The image's label: the emotion of its largest face."""
        return self.faces[0].emotion if self.faces else ""


def analyze_files(
    analyzer: FaceAnalyzer,
    paths: Iterable[Path],
    *,
    limits: ImageLimits = ImageLimits(),
    batch_size: int = 32,
    keep_images: bool = False,
) -> Iterator[StillOutcome]:
    """Yield one outcome per path, in order; unreadable files yield an error outcome.
    ``keep_images``: each outcome also carries its decoded image."""
    pending: list[tuple[Path, np.ndarray]] = []

    def flush() -> Iterator[StillOutcome]:
        results = analyzer.analyze_batch([img for _, img in pending], whole_image_fallback=True)
        for (path, image), faces in zip(pending, results):
            yield StillOutcome(path, faces, image=image if keep_images else None)
        pending.clear()

    for path in paths:
        try:
            pending.append((path, read_image_file(path, limits)))
        except ImageError as exc:
            # Keep output in input order: finish the batch before reporting the error.
            yield from flush()
            yield StillOutcome(path, [], str(exc))
            continue
        if len(pending) >= batch_size:
            yield from flush()
    if pending:
        yield from flush()
