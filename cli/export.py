"""``emotion-stream export MODEL --format tflite|onnx --out FILE``: serve without TensorFlow."""

from __future__ import annotations

import argparse
from pathlib import Path

from emotion_stream.settings import Settings

from .common import CommandError, Subcommands, add_command


def register(sub: Subcommands) -> None:
    from training.options import EXPORT_FORMATS, QUANTIZE

    p = add_command(
        sub, "export", run, "export a Keras model for LiteRT or ONNX Runtime (serving without TensorFlow)",
        description=(
            "Write MODEL (a .keras file with its model.json) as a .tflite file for LiteRT or an .onnx "
            "file for ONNX Runtime, with its metadata (labels, input, preprocessing, calibration, flip "
            "averaging) beside it as <FILE>.json, and check it against the Keras model. Any command's "
            "--model then takes FILE. The shipped default is exported by `make export`."
        ),
    )
    p.add_argument("model", type=Path, metavar="MODEL")
    p.add_argument("--format", choices=EXPORT_FORMATS, required=True, help="tflite (LiteRT) or onnx (ONNX Runtime)")
    p.add_argument("--quantize", choices=QUANTIZE, default="none",
                   help="float16: half the file (tflite); int8: weights and activations, calibrated on "
                        "--calibration (default %(default)s)")
    p.add_argument("--calibration", type=Path, default=None, metavar="DIR",
                   help="face crops as the model sees them (e.g. prepare's output), for int8")
    p.add_argument("--out", type=Path, required=True, metavar="FILE",
                   help="the file to write; its metadata goes beside it")


def run(args: argparse.Namespace, settings: Settings) -> int:
    from training.export import export

    try:
        report = export(args.model, args.out, args.format, args.quantize, args.calibration)
    except ValueError as exc:
        raise CommandError(str(exc)) from None
    print(f"wrote {report.out} ({report.bytes / 1024:.0f} KiB, {report.format}, quantisation {report.quantize}) "
          f"and {report.metadata.name}; against the Keras model: probabilities within "
          f"{report.max_difference:.1e}, the same label on {100 * report.same_labels:.1f} % of the check batch")
    return 0
