"""``emotion-stream prepare DOMAIN_DIR --out CLEAN_DIR``: what the classifier sees in service."""

from __future__ import annotations

import argparse
from pathlib import Path

from emotion_stream.settings import DETECTORS, Settings

from .common import CommandError, Subcommands, add_command, number, progress


def register(sub: Subcommands) -> None:
    from training.options import NO_FACE, PrepareOptions

    defaults = PrepareOptions()
    p = add_command(
        sub, "prepare", run, "a folder-per-label dataset as the classifier sees it: face crops, no duplicates",
        description=(
            "Detect every image of DOMAIN_DIR/<label>/ as a still, exactly as serving does, and crop "
            "its largest face with the model's margin; an image without a face is kept whole (serving "
            "classifies such a still whole) or dropped (--no-face drop), and counted. Near-duplicates "
            "(resized/shifted/re-encoded copies) are removed: one copy kept within a label, all removed "
            "across labels. A domain with its own train/ and validation/ splits (FER2013) is prepared "
            "split by split into CLEAN_DIR/train and CLEAN_DIR/validation; a test/ split is left alone. "
            "Writes CLEAN_DIR/[split/]<label>/*.jpg and report.json/report.csv. DOMAIN_DIR is only "
            "read; an interrupted run resumes."
        ),
    )
    p.add_argument("train_dir", type=Path, metavar="DOMAIN_DIR")
    p.add_argument("--out", type=Path, required=True, metavar="CLEAN_DIR", help="where the crops and the report go")
    p.add_argument("--detector", choices=DETECTORS, default=Settings.model_fields["detector"].default,
                   help="face detector; use the one you will serve with (default %(default)s)")
    p.add_argument("--margin", type=number(float, 0, 1), default=defaults.margin,
                   help="crop margin, fraction of the face box; the model's own (default %(default)s)")
    p.add_argument("--no-face", choices=NO_FACE, default=defaults.no_face,
                   help="images without a face: kept whole, as serving classifies them, or dropped "
                        "(default %(default)s)")
    p.add_argument("--workers", type=number(int, 0), default=0, help="processes (default: one per core)")
    p.add_argument("--threshold", type=number(float, 0, 1, above=True), default=defaults.threshold,
                   help="duplicate similarity threshold (default: the calibrated one, %(default)s)")


def run(args: argparse.Namespace, settings: Settings) -> int:
    from training.options import PrepareOptions
    from training.prepare import prepare_domain, scan, splits

    if not args.train_dir.is_dir():
        raise CommandError(f"{args.train_dir}: not a folder")
    options = PrepareOptions(detector=args.detector, margin=args.margin, workers=args.workers,
                             threshold=args.threshold, no_face=args.no_face)
    try:
        parts = [args.train_dir / name for name in splits(args.train_dir)] or [args.train_dir]
        total = sum(len(scan(part)[0]) for part in parts)
        with progress(total, "prepare") as bar:
            def update(n: int, stage: str) -> None:
                bar.set_description(f"prepare: {stage}")
                bar.update(n) if stage == "faces" else bar.refresh()

            reports = prepare_domain(args.train_dir, args.out, options, update)
    except ValueError as exc:
        raise CommandError(str(exc)) from None
    for split, report in reports.items():
        if split:
            print(f"== {split}")
        print(report.format_text())
    where = ", ".join(f"{args.out}/{split}/<label>/" for split in reports if split) or f"{args.out}/<label>/"
    print(f"wrote {where}, report.json, report.csv")
    return 0
