"""``emotion-stream train CLEAN_DIR --out MODEL_DIR``: fine-tune an emotion classifier."""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

from emotion_stream.settings import Settings

from .common import CommandError, add_command, number


def register(sub: argparse._SubParsersAction) -> None:
    p = add_command(
        sub, "train", run, "train an emotion model on a prepared dataset",
        description=(
            "Transfer learning on CLEAN_DIR/<label>/ (from `prepare`): backbone + pooling + "
            "dense head, frozen then fine-tuned, class-weighted, best epoch kept. Writes "
            "model.keras, model.json (metadata for EmotionModel), curves.png, MODEL_CARD.md."
        ),
    )
    p.add_argument("clean_dir", type=Path, metavar="CLEAN_DIR")
    p.add_argument("--out", type=Path, required=True, metavar="MODEL_DIR")
    p.add_argument("--backbone", default="mini_xception",
                   choices=["mini_xception", "mobilenetv2", "vgg19", "resnet50", "efficientnetb0"])
    p.add_argument("--weights", default="none", help="imagenet (needs internet) | none | PATH (default %(default)s)")
    p.add_argument("--init", choices=["default"], default=None,
                   help="start from the shipped face-expression weights (offline)")
    p.add_argument("--epochs", type=number(int, 1), default=40, help="fine-tuning epochs (default %(default)s; early stopping)")
    p.add_argument("--frozen-epochs", type=number(int, 0), default=5, help="head-only epochs first (default %(default)s)")
    p.add_argument("--train-batch-size", dest="train_batch_size", type=number(int, 1), default=32)
    p.add_argument("--input-size", type=number(int, 16, 1024), default=None, help="input side in pixels (default: the backbone's own)")
    p.add_argument("--monitor", choices=["balanced", "accuracy"], default="balanced",
                   help="validation metric that picks the best epoch (default %(default)s)")
    p.add_argument("--adapt-batchnorm", action="store_true",
                   help="let BatchNorm statistics adapt while fine-tuning (large domain shifts)")
    p.add_argument("--val-split", type=number(float, 0, 0.9), default=0.2,
                   help="validation fraction (default %(default)s); 0 = refit on all data for the given epochs")
    p.add_argument("--seed", type=int, default=42)


def run(args: argparse.Namespace, settings: Settings) -> int:
    # TensorFlow 2.21's oneDNN kernels corrupt memory in backward passes here ("double
    # free or corruption" when the backbone is unfrozen; tensorflow/tensorflow#117700).
    # Training runs without them; inference keeps them (stable, and faster).
    os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")
    from model.training.train import TrainOptions, train

    if not args.clean_dir.is_dir():
        raise CommandError(f"{args.clean_dir}: not a folder")
    margin = 0.2
    prepared = args.clean_dir / "prepare.json"
    if prepared.is_file():
        margin = float(json.loads(prepared.read_text()).get("margin", margin))
    options = TrainOptions(
        backbone=args.backbone, weights=args.weights, init=args.init, input_size=args.input_size,
        frozen_epochs=args.frozen_epochs, epochs=args.epochs, batch_size=args.train_batch_size,
        seed=args.seed, monitor=args.monitor, face_margin=margin, adapt_batchnorm=args.adapt_batchnorm,
        val_split=args.val_split,
    )
    try:
        report = train(args.clean_dir, args.out, options)
    except ValueError as exc:
        raise CommandError(str(exc)) from None
    print(f"accuracy {report['accuracy']:.4f}, balanced accuracy {report['balanced_accuracy']:.4f} "
          f"({report['evaluated_on']})")
    print(f"wrote {args.out}/model.keras, model.json, curves.png, MODEL_CARD.md")
    return 0
