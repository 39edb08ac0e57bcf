"""The direct path for still images: files -> decode -> FaceAnalyzer, in batches."""

from __future__ import annotations

import os
import queue
from collections import deque
from collections.abc import Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from emotion_stream.images import ImageError, ImageLimits, read_image_file

from .analyzer import FaceAnalyzer, FaceResult
from .runtime import cores_shared

# Images a batch. Batches are what threads share out: 219 images in batches of 16 kept two
# threads busier than in batches of 32 (1.3x against 1.15x the images a second of one).
BATCH = 16


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
    batch_size: int = BATCH,
    keep_images: bool = False,
    threads: int | None = None,
    views: int = 1,
) -> Iterator[StillOutcome]:
    """Yield one outcome per path, in order; unreadable files yield an error outcome.
    ``keep_images``: each outcome also carries its decoded image; ``views``: crop views
    a face (``model.views``).

    Batches are decoded and analysed on ``threads`` threads at once (default: one per
    core), each with a detector of its own (the model is shared): whole images, not the
    layers of a small network, are what parallelise well. On two cores, two such threads
    (OpenCV's own threads off meanwhile) analysed about 1.3x the images a second of one
    thread whose libraries used both cores (docs/benchmarks.md). A second detector is
    made only once a second batch is under way, and kept by the analyzer."""
    threads = threads or os.cpu_count() or 1
    batches = _batches(paths, batch_size)
    if threads == 1 or analyzer.new_detector is None:
        for batch in batches:
            yield from _analyze(analyzer, batch, limits, keep_images, views)
        return
    spare: queue.SimpleQueue[FaceAnalyzer] = queue.SimpleQueue()
    spare.put(analyzer)
    made = 0  # siblings handed out

    def analyze(batch: list[Path]) -> list[StillOutcome]:
        worker = spare.get()
        try:
            return _analyze(worker, batch, limits, keep_images, views)
        finally:
            spare.put(worker)

    with cores_shared(threads), ThreadPoolExecutor(threads, thread_name_prefix="stills") as pool:
        running: deque[Future[list[StillOutcome]]] = deque()
        for batch in batches:
            if made < min(threads - 1, len(running)):
                # Made here, not on a pool thread: loading a detector hides stderr for a
                # moment (runtime.quiet_stderr), which must not happen while others log.
                spare.put(analyzer.siblings(made + 1)[made])
                made += 1
            running.append(pool.submit(analyze, batch))
            if len(running) > threads:  # a bounded read-ahead: outcomes wait in order
                yield from running.popleft().result()
        while running:
            yield from running.popleft().result()


def _batches(paths: Iterable[Path], size: int) -> Iterator[list[Path]]:
    batch: list[Path] = []
    for path in paths:
        batch.append(path)
        if len(batch) >= size:
            yield batch
            batch = []
    if batch:
        yield batch


def _analyze(analyzer: FaceAnalyzer, paths: list[Path], limits: ImageLimits, keep_images: bool,
             views: int) -> list[StillOutcome]:
    """The batch's outcomes in order: errors for unreadable files, the rest analysed at once."""
    images: list[np.ndarray | None] = []
    errors: dict[int, str] = {}
    for i, path in enumerate(paths):
        try:
            images.append(read_image_file(path, limits))
        except ImageError as exc:
            images.append(None)
            errors[i] = str(exc)
    readable = [image for image in images if image is not None]
    results = iter(analyzer.analyze_batch(readable, whole_image_fallback=True, views=views) if readable else [])
    return [StillOutcome(path, [], errors[i]) if image is None
            else StillOutcome(path, next(results), image=image if keep_images else None)
            for i, (path, image) in enumerate(zip(paths, images))]
