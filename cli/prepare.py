"""``emotion-stream prepare TRAIN_DIR --out CLEAN_DIR``: face crops without duplicates."""

from __future__ import annotations

import argparse
from pathlib import Path

from emotion_stream.settings import DETECTORS, Settings

from .common import CommandError, Subcommands, add_command, number, progress


def register(sub: Subcommands) -> None:
    p = add_command(
        sub, "prepare", run, "clean a folder-per-label dataset: face crops, no duplicates",
        description=(
            "Crop every image of TRAIN_DIR/<label>/ to its largest face, drop images "
            "without a face, and remove near-duplicates (resized/shifted/re-encoded "
            "copies): one copy kept within a label, all removed across labels. Writes "
            "CLEAN_DIR/<label>/*.jpg and report.json/report.csv. TRAIN_DIR is only read; "
            "an interrupted run resumes."
        ),
    )
    p.add_argument("train_dir", type=Path, metavar="TRAIN_DIR")
    p.add_argument("--out", type=Path, required=True, metavar="CLEAN_DIR")
    p.add_argument("--detector", choices=DETECTORS, default=Settings.model_fields["detector"].default,
                   help="face detector; use the one you will serve with (default %(default)s)")
    p.add_argument("--margin", type=number(float, 0, 1), default=0.2, help="crop margin, fraction of the face box (default %(default)s)")
    p.add_argument("--workers", type=number(int, 0), default=0, help="processes (default: one per core)")
    p.add_argument("--threshold", type=number(float, 0, 1, above=True), default=None, help="duplicate similarity threshold (default: the calibrated one in model/training/dedup.py)")


def run(args: argparse.Namespace, settings: Settings) -> int:
    from training.dedup import DEFAULT_THRESHOLD
    from training.prepare import PrepareOptions, prepare, scan

    if not args.train_dir.is_dir():
        raise CommandError(f"{args.train_dir}: not a folder")
    options = PrepareOptions(
        detector=args.detector, margin=args.margin, workers=args.workers,
        threshold=args.threshold if args.threshold is not None else DEFAULT_THRESHOLD,
    )
    try:
        total = len(scan(args.train_dir)[0])
        with progress(total, "prepare") as bar:
            def update(n: int, stage: str) -> None:
                bar.set_description(f"prepare: {stage}")
                bar.update(n) if stage == "faces" else bar.refresh()

            report = prepare(args.train_dir, args.out, options, update)
    except ValueError as exc:
        raise CommandError(str(exc)) from None
    print(report.format_text())
    print(f"wrote {args.out}/<label>/, report.json, report.csv")
    return 0
