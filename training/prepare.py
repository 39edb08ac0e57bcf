"""``prepare``: a folder-per-label dataset into what the classifier sees in service.

Every image goes through the serving path for stills: the detector as ``batch`` runs it,
the largest face cropped by the one ``crop_face`` with the model's margin; an image
without a face is kept whole (serving classifies such a still whole) or dropped, and
reported either way. Then near-duplicates are found (see ``dedup``): copies within one
label folder keep one, copies across label folders are all removed (contradictory
labels). A domain with its own splits (``train/`` and ``validation/``, the FER2013
layout) is prepared split by split; a ``test/`` split is left alone (it is only ever
evaluated, from the raw images). The input folder is only read. Work is cached under
``OUT/.prepare`` so an interrupted run resumes, and images are processed by one process
per core.
"""

from __future__ import annotations

import csv
import json
import logging
import multiprocessing
import os
import shutil
from collections import Counter
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from functools import lru_cache
from pathlib import Path

import cv2
import numpy as np

from emotion_stream.images import IMAGE_SUFFIXES, ImageError, read_image_file
from emotion_stream.labels import EMOTIONS, canonical
from model.detection import Detection

from . import dedup
from .options import NO_FACE, PrepareOptions

log = logging.getLogger(__name__)

CACHE = ".prepare"
KEPT = ("kept", "whole")  # outcomes that are written to OUT
RECORDS = "records.jsonl"
CACHE_KEY = "options.json"  # what the cached crops were made with
CACHE_VERSION = 2  # 2: stills detected exactly as served, images without a face cropped whole
SETTINGS_FILE = "prepare.json"  # read by `train` (crop margin, detector)


@dataclass
class Record:
    """What prepare learnt about one source image (one JSON line in the cache)."""

    key: str  # label/name
    label: str
    size: int
    mtime_ns: int
    status: str  # face | no_face | unreadable
    faces: int = 0
    box: list[int] = field(default_factory=list)
    error: str = ""
    # decided after deduplication:
    outcome: str = ""  # kept | whole | no_face | unreadable | duplicate_within | duplicate_across
    group: int = -1


@dataclass
class PrepareReport:
    before: dict[str, int]
    after: dict[str, int]
    no_face: int  # kept whole or dropped, as the options say
    multi_face: int
    unreadable: int
    skipped_files: dict[str, str]
    groups: list[dict[str, object]]
    records: list[Record]
    whole: int = 0  # images without a face kept as the whole image

    def format_text(self) -> str:
        within = sum(1 for g in self.groups if g["kind"] == "within")
        across = len(self.groups) - within
        lines = [f"{'label':<10} {'before':>7} {'after':>7}"]
        for label in EMOTIONS:
            if self.before.get(label) or self.after.get(label):
                lines.append(f"{label:<10} {self.before.get(label, 0):>7} {self.after.get(label, 0):>7}")
        lines.append(f"{'total':<10} {sum(self.before.values()):>7} {sum(self.after.values()):>7}")
        lines += [
            f"no face found:        {self.no_face} ({self.whole} kept whole, as serving classifies them)",
            f"several faces:        {self.multi_face} (largest kept)",
            f"unreadable:           {self.unreadable}",
            f"not image files:      {len(self.skipped_files)}",
            f"duplicate groups:     {len(self.groups)} ({within} within one label: one copy kept; "
            f"{across} across labels: all removed)",
        ]
        return "\n".join(lines)


def crop_name(key: str) -> str:
    """Crops are JPEG: ``happy/a.jpg`` stays, ``happy/b.png`` becomes ``happy/b.png.jpg``."""
    return key if key.lower().endswith(".jpg") else key + ".jpg"


# ----------------------------------------------------------------- per-image work (pool)
_detector = None


def _init_worker(detector_name: str) -> None:
    global _detector
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    cv2.setNumThreads(1)  # one process per core already
    from model.detectors import create_detector

    if detector_name == "mtcnn":
        from model.runtime import tensorflow

        tensorflow(threads=1)
    _detector = create_detector(detector_name)


def _detect(image: np.ndarray) -> list[Detection]:
    """Faces in the image, detected as serving detects a still photo: nothing more, so
    training sees what the classifier will be given."""
    assert _detector is not None
    return _detector.detect_batch([image], [True])[0]


def _process(task: tuple[str, str, str, str, int, int, float, int]) -> Record:
    from model.preprocessing import crop_face

    key, label, source, cache_dir, size, mtime_ns, margin, crop_size = task
    record = Record(key, label, size, mtime_ns, "unreadable")
    try:
        image = read_image_file(source)
    except ImageError as exc:
        record.error = str(exc)
        return record
    found = _detect(image)
    record.faces = len(found)
    wide = image
    if found:
        box = found[0].box  # largest
        record.status, record.box = "face", [int(v) for v in box]
        crop = crop_face(image, box, margin, found[0].landmarks, crop_size)
        wide = crop_face(image, box, 0.5)
    else:
        record.status = "no_face"
        # The whole image, as serving classifies a still without a face (shrunk, not squared).
        factor = min(1.0, crop_size / max(image.shape[:2]))
        crop = image if factor == 1.0 else cv2.resize(
            image, (max(1, round(image.shape[1] * factor)), max(1, round(image.shape[0] * factor))),
            interpolation=cv2.INTER_AREA)
    target = Path(cache_dir) / crop_name(key)
    target.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(target), crop, [cv2.IMWRITE_JPEG_QUALITY, 95])
    # Every readable image is fingerprinted, so duplicates show in the report even
    # when they are dropped for having no face.
    fp_path = Path(cache_dir) / f"{key}.npz"
    fp_path.parent.mkdir(parents=True, exist_ok=True)
    np.savez(fp_path, **dedup.fingerprint(image, wide).to_arrays())  # type: ignore[arg-type]  # numpy's stub types **kwds as allow_pickle
    return record


@lru_cache(maxsize=4096)
def _load_print(path: str) -> dedup.Fingerprint:
    with np.load(path) as arrays:
        return dedup.Fingerprint.from_arrays(dict(arrays))


def _verify(task: tuple[list[tuple[str, str]], float]) -> list[tuple[str, str, float]]:
    pairs, threshold = task
    found = []
    for a, b in pairs:
        score = dedup.similarity(_load_print(a), _load_print(b))
        if score >= threshold:
            found.append((a, b, score))
    return found


# ----------------------------------------------------------------- orchestration
def scan(train_dir: Path) -> tuple[list[tuple[str, str, Path]], dict[str, str]]:
    """(key, canonical label, path) for every image, and non-image files with reasons."""
    items, skipped = [], {}
    folders = sorted(p for p in train_dir.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not folders:
        raise ValueError(f"{train_dir}: no label folders (expected TRAIN_DIR/<label>/*.jpg)")
    for folder in folders:
        label = canonical(folder.name)  # ValueError names an unknown folder
        for path in sorted(folder.iterdir()):
            key = f"{label}/{path.name}"
            if path.name.startswith("."):
                continue
            if path.is_symlink() or not path.is_file():
                skipped[key] = "not a regular file"
            elif path.suffix.lower() not in IMAGE_SUFFIXES:
                skipped[key] = f"not an image file extension ({path.suffix or 'none'})"
            else:
                items.append((key, label, path))
    return items, skipped


SPLITS = ("train", "validation", "val")  # prepared; a "test" split never is


def splits(folder: Path) -> list[str]:
    """The split folders of a domain with its own splits (``train`` and a validation
    split), in order; empty for a plain folder of label folders."""
    found = [name for name in SPLITS if (folder / name).is_dir()]
    return found if "train" in found and len(found) > 1 else []


def prepare_domain(
    domain_dir: Path,
    out_dir: Path,
    options: PrepareOptions = PrepareOptions(),
    progress: Callable[[int, str], None] | None = None,
) -> dict[str, PrepareReport]:
    """A domain's reports by split ("" for a plain folder): ``prepare`` of each split into
    ``OUT/<split>``, or of the folder itself."""
    parts = splits(domain_dir)
    if not parts:
        return {"": prepare(domain_dir, out_dir, options, progress)}
    return {name: prepare(domain_dir / name, out_dir / name, options, progress) for name in parts}


def prepare(
    train_dir: Path,
    out_dir: Path,
    options: PrepareOptions = PrepareOptions(),
    progress: Callable[[int, str], None] | None = None,
) -> PrepareReport:
    """Prepare one folder of label folders; ``progress(n, stage)`` reports n finished units."""
    if options.no_face not in NO_FACE:
        raise ValueError(f"unknown no-face policy {options.no_face!r}; choose one of {', '.join(NO_FACE)}")
    train_dir, out_dir = train_dir.resolve(), out_dir.resolve()
    if out_dir == train_dir or train_dir in out_dir.parents or out_dir in train_dir.parents:
        raise ValueError("the output folder must not contain, or be inside, the input folder")
    items, skipped = scan(train_dir)
    cache_dir = out_dir / CACHE
    cache_dir.mkdir(parents=True, exist_ok=True)
    # The cache holds crops of one detector, margin and size: other options start afresh.
    made_with = json.dumps({"version": CACHE_VERSION, "detector": options.detector, "margin": options.margin,
                            "crop_size": options.crop_size}, sort_keys=True)
    if (cache_dir / CACHE_KEY).is_file() and (cache_dir / CACHE_KEY).read_text() != made_with:
        log.info("prepare: %s was made with other options; starting afresh", cache_dir)
        shutil.rmtree(cache_dir)
        cache_dir.mkdir(parents=True)
    (cache_dir / CACHE_KEY).write_text(made_with)
    records = _load_records(cache_dir / RECORDS)
    todo = []
    for key, label, path in items:
        stat = path.stat()
        old = records.get(key)
        if old is None or (old.size, old.mtime_ns) != (stat.st_size, stat.st_mtime_ns):
            todo.append((key, label, str(path), str(cache_dir / "crops"), stat.st_size, stat.st_mtime_ns,
                         options.margin, options.crop_size))
    workers = options.workers or os.cpu_count() or 1
    context = multiprocessing.get_context("spawn")  # TensorFlow is not fork-safe
    with context.Pool(workers, initializer=_init_worker, initargs=(options.detector,)) as pool:
        if todo:
            log.info("prepare: %d of %d images to process (%d cached)", len(todo), len(items), len(items) - len(todo))
            with (cache_dir / RECORDS).open("a") as journal:
                for record in pool.imap_unordered(_process, todo, chunksize=4):
                    records[record.key] = record
                    journal.write(json.dumps(asdict(record)) + "\n")
                    journal.flush()
                    if progress:
                        progress(1, "faces")
        current = [records[key] for key, _, _ in items]
        readable = [r for r in current if r.status != "unreadable"]
        prints = {r.key: str(cache_dir / "crops" / f"{r.key}.npz") for r in readable}
        fingerprints = [_load_print(prints[r.key]) for r in readable]
        pairs = sorted(dedup.candidate_pairs(fingerprints, options.neighbours))
        keyed = [(prints[readable[i].key], prints[readable[j].key]) for i, j in pairs]
        chunks = [(keyed[i : i + 256], options.threshold) for i in range(0, len(keyed), 256)]
        index = {prints[r.key]: n for n, r in enumerate(readable)}
        edges = []
        for found in pool.imap_unordered(_verify, chunks):
            edges += [(index[a], index[b], s) for a, b, s in found]
            if progress:
                progress(256, "duplicates")
    groups = _decide(current, readable, edges, keep_whole=options.no_face == "whole")
    _materialise(out_dir, cache_dir, current)
    report = _report(current, skipped, groups)
    _write_reports(out_dir, report, options)
    return report


def _load_records(path: Path) -> dict[str, Record]:
    records: dict[str, Record] = {}
    if path.exists():
        for line in path.read_text().splitlines():
            try:
                record = Record(**json.loads(line))
            except (ValueError, TypeError):
                continue  # torn last line of an interrupted run
            records[record.key] = record
    return records


def _decide(current: list[Record], readable: list[Record], edges: list[tuple[int, int, float]],
            keep_whole: bool) -> list[dict[str, object]]:
    """Outcome per image. Duplicates are judged over all readable images; an image
    without a face is ``whole`` (kept whole) or ``no_face`` (dropped)."""
    no_face = "whole" if keep_whole else "no_face"
    for record in current:
        record.outcome = {"face": "kept", "no_face": no_face}.get(record.status, "unreadable")
        record.group = -1
    scores = {(i, j): s for i, j, s in edges}
    groups = []
    for number, members in enumerate(dedup.group(len(readable), [(i, j) for i, j, _ in edges])):
        labels = {readable[i].label for i in members}
        kind = "within" if len(labels) == 1 else "across"
        keeper = next((i for i in sorted(members, key=lambda m: readable[m].key)
                       if readable[i].outcome in KEPT), None)
        for i in members:
            record = readable[i]
            record.group = number
            if record.outcome not in KEPT:
                continue
            if kind == "across":
                record.outcome = "duplicate_across"
            elif i != keeper:
                record.outcome = "duplicate_within"
        groups.append({
            "group": number,
            "kind": kind,
            "members": sorted(readable[i].key for i in members),
            "min_score": round(min(s for (i, j), s in scores.items() if i in members and j in members), 4),
        })
    return groups


def _materialise(out_dir: Path, cache_dir: Path, current: list[Record]) -> None:
    """OUT/<label>/<name>.jpg for kept images; anything else there is removed."""
    keep = {crop_name(r.key) for r in current if r.outcome in KEPT}
    for label_dir in (out_dir / label for label in EMOTIONS):
        if label_dir.is_dir():
            for path in label_dir.iterdir():
                if f"{label_dir.name}/{path.name}" not in keep:
                    path.unlink()  # left over from an earlier run with other results
    for key in keep:
        source = cache_dir / "crops" / key
        target = out_dir / key
        target.parent.mkdir(exist_ok=True)
        if not target.exists():
            try:
                os.link(source, target)
            except OSError:
                shutil.copy2(source, target)


def _report(current: list[Record], skipped: dict[str, str], groups: list[dict[str, object]]) -> PrepareReport:
    before = Counter(r.label for r in current)
    after = Counter(r.label for r in current if r.outcome in KEPT)
    return PrepareReport(
        before=dict(before),
        after=dict(after),
        no_face=sum(r.status == "no_face" for r in current),
        multi_face=sum(r.faces > 1 for r in current),
        unreadable=sum(r.status == "unreadable" for r in current),
        whole=sum(r.outcome == "whole" for r in current),
        skipped_files=skipped,
        groups=groups,
        records=current,
    )


def _write_reports(out_dir: Path, report: PrepareReport, options: PrepareOptions) -> None:
    summary = {k: v for k, v in asdict(report).items() if k != "records"}
    (out_dir / "report.json").write_text(json.dumps(summary, indent=2) + "\n")
    with (out_dir / "report.csv").open("w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["image", "label", "outcome", "faces", "duplicate_group", "error"])
        for r in report.records:
            writer.writerow([r.key, r.label, r.outcome, r.faces, r.group if r.group >= 0 else "", r.error])
    (out_dir / SETTINGS_FILE).write_text(json.dumps(asdict(options), indent=2) + "\n")
