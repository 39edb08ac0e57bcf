"""``emotion-stream evaluate``: accuracy, balanced accuracy, per-class recall, calibration."""

from __future__ import annotations

import argparse
import json
import logging
import time
from pathlib import Path
from typing import TYPE_CHECKING

from emotion_stream.settings import Settings

from .common import (
    CommandError,
    Subcommands,
    add_command,
    add_model_options,
    load_analyzer,
    progress,
)

if TYPE_CHECKING:
    from model.evaluation import EvaluationReport

log = logging.getLogger(__name__)


def register(sub: Subcommands) -> None:
    p = add_command(
        sub, "evaluate", run, "score a model on a labelled folder, or score a submission CSV",
        description=(
            "TARGET is a folder of images with an answers CSV (--labels, columns "
            "image_path,emotion), a folder of label folders (TARGET/<label>/*.jpg, no --labels), "
            "or a submission CSV written by `emotion-stream batch` (with --labels). Folders are "
            "classified here through the serving path, as `batch` and `predict` do: the detector, "
            "the eye-aligned crop, and the whole image where no face is found (counted). "
            "--whole-image adds a column: every image classified whole, without the detector."
        ),
    )
    p.add_argument("target", type=Path, metavar="FOLDER|SUBMISSION.csv")
    p.add_argument("--labels", type=Path, default=None, metavar="CSV", help="answers: image_path,emotion")
    p.add_argument("--whole-image", action="store_true",
                   help="also classify every image whole, without the detector, side by side with the serving path")
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    add_model_options(p)


def run(args: argparse.Namespace, settings: Settings) -> int:
    from model.evaluation import LabelsError, format_comparison, read_labels_csv, score

    if args.target.is_dir():
        if args.labels is not None:
            try:
                truth = read_labels_csv(args.labels)
            except LabelsError as exc:
                raise CommandError(str(exc)) from None
            files = {name: args.target / name for name in sorted(truth)}
        else:
            truth, files = _label_folders(args.target)
        report, whole = _evaluate_files(files, truth, settings, args.whole_image)
    elif args.target.is_file():
        whole = None
        if args.labels is None:
            raise CommandError("scoring a submission CSV needs --labels CSV")
        try:
            report = score(read_labels_csv(args.labels), read_labels_csv(args.target))
        except LabelsError as exc:
            raise CommandError(str(exc)) from None
    else:
        raise CommandError(f"{args.target}: no such folder or file")
    if args.json:
        print(json.dumps({**report.to_dict(), **({"whole_image": whole.to_dict()} if whole else {})}, indent=2))
    else:
        print(report.format_text() if whole is None else format_comparison(report, whole))
    if not report.scored:
        raise CommandError("nothing was scored: no image has both a label and a prediction")
    return 0


def _label_folders(folder: Path) -> tuple[dict[str, str], dict[str, Path]]:
    from emotion_stream.labels import EMOTIONS
    from model.evaluation import list_labelled

    try:
        paths, labels = list_labelled(folder)
    except ValueError as exc:
        raise CommandError(f"{exc} (give --labels CSV for a flat folder)") from None
    keys = [str(p.relative_to(folder)) for p in paths]
    return dict(zip(keys, (EMOTIONS[i] for i in labels))), dict(zip(keys, paths))


def _evaluate_files(files: dict[str, Path], truth: dict[str, str], settings: Settings,
                    whole_image: bool) -> tuple[EvaluationReport, EvaluationReport | None]:
    """(the serving path's report, the whole-image report when asked): the same files,
    read once."""
    import numpy as np

    from emotion_stream.images import ImageLimits
    from emotion_stream.labels import EMOTIONS
    from model.calibration import calibrated_ece, expected_calibration_error
    from model.evaluation import score
    from model.stills import analyze_files

    analyzer = load_analyzer(settings)
    model = analyzer.model
    limits = ImageLimits(settings.max_image_bytes, settings.max_image_pixels)
    key_of = {path: key for key, path in files.items()}
    predicted: dict[str, str] = {}
    whole: dict[str, str] = {}
    skipped: dict[str, str] = {}
    rows: list[tuple[np.ndarray, np.ndarray | None, int]] = []  # (path, whole, true index) for the ECE
    no_face: list[str] = []
    classify_s = 0.0
    faces = 0
    start = time.perf_counter()
    with progress(len(files), "evaluate") as bar:
        for outcome in analyze_files(analyzer, files.values(), limits=limits, keep_images=whole_image,
                                     views=settings.still_views):
            bar.update()
            key = key_of[outcome.path]
            if outcome.error:
                skipped[key] = outcome.error
                log.warning("skipped %s: %s", outcome.path, outcome.error)
                continue
            face = outcome.faces[0]
            predicted[key] = face.emotion
            if face.whole_image:
                no_face.append(key)
            whole_probs = None
            if outcome.image is not None:
                t0 = time.perf_counter()
                whole_probs = model.predict_proba([outcome.image])[0]
                classify_s += time.perf_counter() - t0
                faces += 1
                whole[key] = EMOTIONS[int(model.decide(whole_probs[None])[0])]
            rows.append((face.probabilities, whole_probs, EMOTIONS.index(truth[key])))
    elapsed = time.perf_counter() - start
    report = score(truth, predicted, skipped)
    report.seconds_per_image = elapsed / max(1, len(predicted))
    report.no_face = sorted(no_face)
    labels = np.array([t for _, _, t in rows])
    if rows:
        probabilities = np.stack([p for p, _, _ in rows])
        report.ece = expected_calibration_error(probabilities, labels)
        report.ece_noise = calibrated_ece(probabilities)
    if not whole_image:
        return report, None
    whole_report = score(truth, whole, skipped)
    if rows:
        whole_probabilities = np.stack([w for _, w, _ in rows if w is not None])
        whole_report.ece = expected_calibration_error(whole_probabilities, labels)
        whole_report.ece_noise = calibrated_ece(whole_probabilities)
    if faces:
        whole_report.classify_ms_per_face = 1000 * classify_s / faces
    return report, whole_report
