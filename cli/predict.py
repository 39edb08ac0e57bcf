"""``emotion-stream predict IMAGE...``: per-face emotions of still images."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from emotion_stream.settings import Settings

from .common import Subcommands, add_command, add_model_options, load_analyzer

# Files a user may hand to predict that are videos: said so, with the command for them.
VIDEO_SUFFIXES = frozenset({".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg", ".wmv", ".3gp", ".ts"})


def register(sub: Subcommands) -> None:
    p = add_command(sub, "predict", run, "print the emotion of every face in image files")
    p.add_argument("images", nargs="+", type=Path, metavar="IMAGE", help="image files; - reads one from standard input")
    p.add_argument("--json", action="store_true", help="one JSON object per image (JSON lines)")
    add_model_options(p)


def run(args: argparse.Namespace, settings: Settings) -> int:
    from emotion_stream.images import ImageLimits
    from model.stills import analyze_files

    if settings.model_path is None and settings.model_runtime == "auto":
        from model.emotion_model import ONE_SHOT_RUNTIME

        settings = settings.overridden({"model_runtime": ONE_SHOT_RUNTIME})
    analyzer = load_analyzer(settings)
    limits = ImageLimits(settings.max_image_bytes, settings.max_image_pixels)
    failures = 0
    width = max(len("image"), *(len(str(path)) for path in args.images))  # the columns line up
    if not args.json:
        print(f"{'image':<{width}} {'face':>4}  {'box (x,y,w,h)':<20} {'emotion':<9} {'conf':>5}  note")
    for outcome in analyze_files(analyzer, args.images, limits=limits, views=settings.still_views):
        if outcome.error:
            failures += 1
            hint = (f" (a video: `emotion-stream ingest {outcome.path} --camera ID --pace workers` beside a worker "
                    "analyses every frame)" if outcome.path.suffix.lower() in VIDEO_SUFFIXES else "")
            print(f"emotion-stream predict: {outcome.path}: {outcome.error}{hint}", file=sys.stderr)
            if args.json:
                print(json.dumps({"image": str(outcome.path), "error": outcome.error}))
            continue
        if args.json:
            faces = [
                {
                    "box": list(face.box),
                    "emotion": face.emotion,
                    "confidence": round(face.confidence, 5),
                    "probabilities": face.probabilities_dict(),
                    "whole_image": face.whole_image,
                }
                for face in outcome.faces
            ]
            print(json.dumps({"image": str(outcome.path), "faces": faces}))
            continue
        for index, face in enumerate(outcome.faces):
            box = ",".join(map(str, face.box))
            note = "no face found: whole image" if face.whole_image else ""
            row = f"{str(outcome.path):<{width}} {index:>4}  {box:<20} {face.emotion:<9} {face.confidence:5.2f}  {note}"
            print(row.rstrip())
    return 1 if failures else 0
