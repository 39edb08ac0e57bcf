"""``emotion-stream evaluate FOLDER|SUBMISSION.csv --labels CSV``: accuracy report."""

from __future__ import annotations

import argparse
import json
import logging
import time
from pathlib import Path

from emotion_stream.settings import Settings

from .common import CommandError, add_command, add_model_options, load_analyzer, progress

log = logging.getLogger(__name__)


def register(sub: argparse._SubParsersAction) -> None:
    p = add_command(
        sub, "evaluate", run, "score a model on a labelled folder, or score a submission CSV",
        description=(
            "Score predictions against an answers CSV (columns image_path,emotion). "
            "TARGET is either a folder of images, classified here (direct path), or a "
            "submission CSV written by `emotion-stream batch`."
        ),
    )
    p.add_argument("target", type=Path, metavar="FOLDER|SUBMISSION.csv")
    p.add_argument("--labels", type=Path, required=True, metavar="CSV", help="answers: image_path,emotion")
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    add_model_options(p)


def run(args: argparse.Namespace, settings: Settings) -> int:
    from model.evaluation import LabelsError, read_labels_csv, score

    try:
        truth = read_labels_csv(args.labels)
    except LabelsError as exc:
        raise CommandError(str(exc)) from None
    if args.target.is_dir():
        report = _evaluate_folder(args.target, truth, settings)
    elif args.target.is_file():
        try:
            report = score(truth, read_labels_csv(args.target))
        except LabelsError as exc:
            raise CommandError(str(exc)) from None
    else:
        raise CommandError(f"{args.target}: no such folder or file")
    print(json.dumps(report.to_dict(), indent=2) if args.json else report.format_text())
    if not report.scored:
        raise CommandError("nothing was scored: no image has both a label and a prediction")
    return 0


def _evaluate_folder(folder: Path, truth: dict[str, str], settings: Settings):  # type: ignore[no-untyped-def]
    from emotion_stream.images import ImageLimits
    from model.evaluation import score
    from model.stills import analyze_files

    analyzer = load_analyzer(settings)
    limits = ImageLimits(settings.max_image_bytes, settings.max_image_pixels)
    names = sorted(truth)
    predicted: dict[str, str] = {}
    skipped: dict[str, str] = {}
    start = time.perf_counter()
    with progress(len(names), "evaluate") as bar:
        for outcome in analyze_files(analyzer, (folder / n for n in names), limits=limits):
            bar.update()
            if outcome.error:
                skipped[outcome.path.name] = outcome.error
                log.warning("skipped %s: %s", outcome.path, outcome.error)
            else:
                predicted[outcome.path.name] = outcome.emotion
    elapsed = time.perf_counter() - start
    report = score(truth, predicted, skipped)
    report.seconds_per_image = elapsed / max(1, len(predicted))
    return report

