"""``emotion-stream train DOMAIN_DIR... --out MODEL_DIR``: train the emotion classifier."""

from __future__ import annotations

import argparse
import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from emotion_stream.settings import Settings

from .common import CommandError, Subcommands, add_command, number, progress

ONEDNN_UNSAFE = ("mini_xception",)  # networks that train with TensorFlow's oneDNN kernels off


def register(sub: Subcommands) -> None:
    from training.networks import NETWORKS
    from training.options import TrainOptions

    d = TrainOptions()
    p = add_command(
        sub, "train", run, "train an emotion classifier on one or more face domains",
        description=(
            "Each DOMAIN_DIR is a folder of face crops by label (from `prepare`, which crops as "
            "serving does), or a folder with train/ and validation/ inside (the FER2013 layout). A "
            "folder without its own validation is split here, by person when its file names say who "
            "is shown (<person>_<number>.jpg). Batches are balanced over domain and class, augmented "
            "like camera frames and mixed up; the loss is label-smoothed (optionally plus distillation "
            "from the FER2013 baseline); the last epochs' weights are averaged (or the best epoch on "
            "validation is kept) and its confidences are calibrated (temperature scaling). After "
            "every epoch the run is checkpointed (MODEL_DIR/checkpoint.npz): `train --resume "
            "MODEL_DIR` continues an interrupted run to the model it would have given. Writes "
            "model.keras, model.json, report.json, curves.png and MODEL_CARD.md. The shipped default "
            "is reproduced by `make model` (see model/weights/MODEL_CARD.md)."
        ),
    )
    p.add_argument("domains", type=Path, nargs="*", metavar="DOMAIN_DIR")
    p.add_argument("--out", type=Path, default=None, metavar="MODEL_DIR", help="where the model and its card go")
    p.add_argument("--resume", type=Path, default=None, metavar="MODEL_DIR",
                   help="continue the interrupted run in MODEL_DIR with its own options and domains")
    p.add_argument("--network", default=d.network, choices=list(NETWORKS), help="default %(default)s")
    p.add_argument("--weights", default=d.weights,
                   help="keras.applications networks: imagenet (needs internet) | none | PATH (default %(default)s)")
    p.add_argument("--from-scratch", action="store_true", help="mini_xception: do not start from the FER2013 weights")
    p.add_argument("--init-from", type=Path, default=None, metavar="MODEL",
                   help="start from a trained model of the same network (e.g. model/weights/default.keras) "
                   "for a further schedule: a warm restart")
    p.add_argument("--input-size", type=number(int, 16, 1024), default=None, help="input side in pixels (default: the network's own)")
    p.add_argument("--epochs", type=number(int, 1), default=d.epochs, help="default %(default)s")
    p.add_argument("--steps", type=number(int, 1), default=d.steps_per_epoch, help="batches per epoch (default %(default)s)")
    p.add_argument("--train-batch-size", type=number(int, 1), default=d.batch_size, help="default %(default)s")
    p.add_argument("--learning-rate", type=number(float, 0, above=True), default=d.learning_rate, help="default %(default)s")
    p.add_argument("--warmup-epochs", type=number(float, 0), default=d.warmup_epochs,
                   help="linear learning-rate warm-up before the cosine decay (default %(default)s)")
    p.add_argument("--weight-decay", type=number(float, 0), default=d.weight_decay, help="AdamW (default %(default)s)")
    p.add_argument("--label-smoothing", type=number(float, 0, 0.5), default=d.label_smoothing,
                   help="over the classes some domain has (default %(default)s)")
    p.add_argument("--mixup", type=number(float, 0), default=d.mixup, metavar="ALPHA",
                   help="mix image pairs and their targets with Beta(ALPHA, ALPHA) weights; 0 = off (default %(default)s)")
    p.add_argument("--class-power", type=number(float, 0, 1), default=d.class_power,
                   help="sample classes by count**P within a domain: 0 uniform, 1 as in the data (default %(default)s)")
    p.add_argument("--domain-power", type=number(float, 0, 1), default=d.domain_power,
                   help="draw domains by size**P: 0 equally often, 1 as large as they are (default %(default)s)")
    p.add_argument("--distill", type=number(float, 0), default=d.distill_weight,
                   help="weight of distillation from the FER2013 model; 0 = off (default %(default)s)")
    p.add_argument("--no-augment", action="store_true", help="train without camera augmentation")
    p.add_argument("--average-last", type=number(int, 0), default=d.average_last, metavar="N",
                   help="serve the mean of the last N epochs' weights (stochastic weight averaging; all epochs "
                   "if there are fewer) instead of the best epoch's; 0 = the best epoch (default %(default)s)")
    p.add_argument("--val-split", type=number(float, 0, 0.9, above=True), default=d.val_split,
                   help="validation fraction of domains without their own validation/ (default %(default)s)")
    p.add_argument("--seed", type=int, default=d.seed,
                   help="seeds sampling, augmentation and weights (default %(default)s)")
    p.add_argument("--flip-average", choices=("auto", "on", "off"), default="auto",
                   help="test-time flip averaging: auto = on when it gains validation accuracy in every domain; "
                   "off keeps one classifier pass a face (default %(default)s)")
    p.add_argument("--combine", type=Path, nargs="+", default=None, metavar="MODEL",
                   help="train nothing: combine these trained models (same input; each with its model.json) "
                   "into one ensemble, calibrated and with flip averaging chosen on the DOMAIN_DIRs' validation "
                   "(give the --val-split and --seed they were trained with)")
    p.add_argument("--soup", action="store_true",
                   help="with --combine: average the members' weights into one network (a model soup: one "
                   "model's cost; members of one network trained from the same start) instead of their outputs")


def run(args: argparse.Namespace, settings: Settings) -> int:
    if args.soup and not args.combine:
        raise CommandError("--soup combines trained models: give them with --combine")
    if args.resume is None and (not args.domains or args.out is None):
        raise CommandError("give DOMAIN_DIR... and --out MODEL_DIR, or --resume MODEL_DIR")
    if args.resume is not None and (args.domains or args.combine):
        raise CommandError("--resume continues a run with its own domains and options: give nothing else")
    from training.checkpoint import load

    try:
        network = str(load(args.resume).state.options["network"]) if args.resume else args.network
    except ValueError as exc:
        raise CommandError(str(exc)) from None
    # TensorFlow 2.21's oneDNN kernels corrupt memory in the mini-Xception's backward passes
    # ("double free or corruption"; tensorflow/tensorflow#117700): it trains without them.
    # The ResNets train with them, asked for explicitly: TensorFlow turns them on by itself
    # only on CPUs with AVX-512 VNNI or AMX, and on this AVX2 machine a ResNet-10 step took
    # 1.97 s of CPU without them, 1.27 s with. A run a fault stopped continues with --resume.
    os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0" if network in ONEDNN_UNSAFE else "1")
    from model.errors import ModelError
    from training.options import TrainOptions
    from training.train import combine, resume, train

    flip = {"auto": None, "on": True, "off": False}[args.flip_average]
    if args.resume is not None:
        try:
            with progress(None, "train", unit="batch") as bar:
                report = resume(args.resume, _progress(bar), flip_average=flip)
        except ValueError as exc:
            raise CommandError(str(exc)) from None
        _summary(report, args.resume)
        return 0

    for folder in args.domains:
        if not folder.is_dir():
            raise CommandError(f"{folder}: not a folder")
    if args.combine:
        try:
            report = combine(args.combine, args.domains, args.out, args.val_split, args.seed, args.soup)
        except (ValueError, ModelError) as exc:
            raise CommandError(str(exc)) from None
        _summary(report, args.out)
        return 0
    margin = _prepared_margin(args.domains)
    options = TrainOptions(
        network=args.network, weights=args.weights, init_from_fer=not args.from_scratch,
        init_from=str(args.init_from) if args.init_from else None,
        input_size=args.input_size, epochs=args.epochs, steps_per_epoch=args.steps,
        batch_size=args.train_batch_size, learning_rate=args.learning_rate, warmup_epochs=args.warmup_epochs,
        weight_decay=args.weight_decay, class_power=args.class_power, domain_power=args.domain_power,
        label_smoothing=args.label_smoothing,
        mixup=args.mixup, distill_weight=args.distill, augment=not args.no_augment, val_split=args.val_split,
        seed=args.seed, face_margin=margin, average_last=args.average_last,
    )
    try:
        with progress(options.epochs * options.steps_per_epoch, "train", unit="batch") as bar:
            report = train(args.domains, args.out, options, _progress(bar), flip_average=flip)
    except ValueError as exc:
        raise CommandError(str(exc)) from None
    _summary(report, args.out)
    return 0


def _prepared_margin(domains: list[Path]) -> float:
    """The crop margin ``prepare`` cut the domains with (their prepare.json), which the
    served model must crop with too; one margin for all, 0.2 where none is recorded."""
    margins = set()
    for domain in domains:
        for found in (domain / "prepare.json", domain / "train" / "prepare.json"):
            if found.is_file():
                margins.add(float(json.loads(found.read_text()).get("margin", 0.2)))
                break
    if len(margins) > 1:
        raise CommandError(f"the domains were prepared with different crop margins: {sorted(margins)}")
    return margins.pop() if margins else 0.2


def _progress(bar: Any) -> Callable[[int, int, str], None]:
    def update(done: int, total: int, message: str) -> None:
        bar.total = total
        bar.update(done - bar.n)
        bar.set_postfix_str(message)

    return update


def _summary(report: dict[str, Any], out: Path) -> None:
    for name, scores in report["validation"].items():
        print(f"{name}: accuracy {scores['accuracy']:.4f}, balanced accuracy {scores['balanced_accuracy']:.4f}, "
              f"ECE {scores['ece_uncalibrated']:.3f} -> {scores['ece_calibrated']:.3f} (validation)")
    print(f"temperature {report['temperature']:.3f}; {report['seconds']} s")
    written = [n for n in ("model.keras", "model.json", "report.json", "curves.png", "MODEL_CARD.md") if (out / n).is_file()]
    print(f"wrote {out}/" + ", ".join(written))
