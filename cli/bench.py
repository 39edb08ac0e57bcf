"""``emotion-stream bench``: the original path, our direct path, batch and live, side by side."""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
from pathlib import Path
from typing import TYPE_CHECKING

from emotion_stream.settings import Settings

from .common import POSITIVE_SECONDS, CommandError, Subcommands, add_command, add_settings, number

if TYPE_CHECKING:
    from bench.measure import Figures


SCENARIOS = ("original", "detector", "classifier", "direct", "batch", "live", "recorded", "tracks", "tracks-replay",
             "cluster", "runtimes", "startup", "memory", "api")
BASELINE_SCENARIOS = ("original", "direct", "batch", "live")  # run by the baseline's own bench


def register(sub: Subcommands) -> None:
    p = add_command(
        sub, "bench", run, "measure throughput, latency, CPU and memory",
        description=(
            "Run, in one invocation on the same images: (a) the original solution's path "
            "(Haar + VGG19 224, one predict per face), (b) our direct analyzer, (c) batch "
            "mode through Redis with N workers, (d) a live load of K synthetic cameras. "
            "Prints figures and ratios; asserts nothing."
        ),
    )
    p.add_argument("--images", type=Path, default=None,
                   help="folder of images, e.g. ../shared/data/faces/test_kaggle (default: 40 generated samples)")
    add_settings(p, "detector", "detect_max_side", "batch_size", "max_wait_ms")
    p.add_argument("--workers", type=number(int, 1), default=None, help="workers for (c) and (d) (default: cores)")
    p.add_argument("--cameras", type=number(int, 1), default=4,
                   help="synthetic cameras of the live load (default %(default)s)")
    p.add_argument("--fps", type=number(float, 0, 1000, above=True), default=15.0,
                   help="frames per second of each live camera (default %(default)s)")
    p.add_argument("--live-seconds", type=POSITIVE_SECONDS, default=60.0,
                   help="length of the live load (default %(default)s)")
    p.add_argument("--original-limit", type=number(int, 1), default=60, help="images timed on the slow original path")
    p.add_argument("--only", default="original,detector,direct,batch,live",
                   help=f"comma-separated subset of {','.join(SCENARIOS)} (cluster: live on one redis-server, then "
                   "on a local 3+3 Redis Cluster; runtimes: the classifier in LiteRT, ONNX Runtime and Keras; "
                   "tracks-replay: the tracks clips analysed offline frame by frame, then tracked: the same figures every run; "
                   "startup: predict against a bare import; memory: a running worker; api: SSE clients and webhooks; "
                   "recorded: a --live-seconds video file of two portraits read at the workers' pace; "
                   "default %(default)s)")
    p.add_argument("--sse-clients", type=number(int, 1), default=200, help="api: SSE clients (default %(default)s)")
    p.add_argument("--baseline", type=Path, default=None, metavar="CHECKOUT",
                   help="also measure another checkout of this project in the same run, side by side: its own bench "
                   f"for {','.join(BASELINE_SCENARIOS)}, and its predict and worker for startup and memory")
    p.add_argument("--compare-model", action="append", default=[], metavar="PATH",
                   help="classifier scenario: also time this model (repeatable); the FER2013 baseline is always timed")
    p.add_argument("--people", type=Path, default=None, metavar="DIR",
                   help="(e) tracks: labelled face photos, DIR/<label>/*.jpg or with --people-labels")
    p.add_argument("--people-labels", type=Path, default=None, metavar="CSV",
                   help="answers for --people as image_path,emotion (e.g. ../shared/data/faces/test_labels.csv)")
    p.add_argument("--tracks-seconds", type=POSITIVE_SECONDS, default=40.0, help="length of the people clip (default %(default)s)")
    p.add_argument("--idle-cameras", type=number(int, 0), default=0, metavar="N",
                   help="also run (d) with N more cameras announced that never send a frame")
    p.add_argument("--json", action="store_true", help="print the figures as JSON")
    p.add_argument("--device-check", action="store_true",
                   help="check that the accelerator does the work: classifier, direct and batch paths on the GPU, "
                        "the classifier on the CPU, GPU utilisation; exit 3 without a GPU, 4 if it stayed idle")


def run(args: argparse.Namespace, settings: Settings) -> int:
    import tempfile

    from bench.batch_mode import run_batch
    from bench.config import BenchConfig
    from bench.detectors import run_detectors
    from bench.direct import run_direct
    from bench.live import run_live
    from bench.original import run_original
    from bench.report import format_text, summarize
    from emotion_stream.images import IMAGE_SUFFIXES
    from model import EmotionModel, FaceAnalyzer, create_detector

    chosen = {s.strip() for s in args.only.split(",") if s.strip()}
    unknown = chosen - set(SCENARIOS)
    if unknown:
        raise CommandError(f"unknown scenario(s): {', '.join(sorted(unknown))}")
    if args.baseline is not None and not (args.baseline / "cli" / "__init__.py").is_file():
        raise CommandError(f"{args.baseline}: not a checkout of this project (no cli/)")
    if args.images is not None and not args.images.is_dir():
        raise CommandError(f"--images {args.images}: not a folder")
    people = _people(args) if chosen & {"tracks", "tracks-replay"} else []
    with tempfile.TemporaryDirectory(prefix="bench-images-") as tmp:
        folder = args.images or _sample_images(Path(tmp))
        images = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        if not images:
            raise CommandError(f"{folder}: no images")
        config = BenchConfig(
            images=images, detector=settings.detector, workers=args.workers or os.cpu_count() or 1,
            cameras=args.cameras, fps=args.fps, live_seconds=args.live_seconds, original_limit=args.original_limit,
            detect_max_side=settings.detect_max_side, batch_size=settings.batch_size, max_wait_ms=settings.max_wait_ms,
        )
        if args.device_check:
            from bench import device_check

            code, report = device_check.run(config, settings)
            print(device_check.format_text(report))
            return code
        model = EmotionModel.from_settings(settings)
        results: dict[str, Figures] = {"config": {
            "images": str(folder), "count": len(images), "detector": config.detector, "model": model.id}}
        if args.baseline is not None and chosen & set(BASELINE_SCENARIOS):
            # The other checkout's own bench first, on the same images, in this run.
            results["baseline"] = _baseline(args, folder, sorted(chosen & set(BASELINE_SCENARIOS)))
        if "runtimes" in chosen:
            from bench.runtimes import run_runtimes

            results["runtimes"] = run_runtimes(str(settings.model_path) if settings.model_path else None)
        if "startup" in chosen:
            from bench.footprint import run_startup

            results["startup"] = run_startup(images[0], args.baseline)
        if "memory" in chosen:
            from bench.footprint import run_worker_memory

            results["memory"] = run_worker_memory(args.baseline)
        if "original" in chosen:
            results["original"] = run_original(config)
        if "detector" in chosen:
            results["detector"] = run_detectors(config)
        if "classifier" in chosen:
            from bench.classifier import run_classifiers

            compared = {"configured": model}
            if importlib.util.find_spec("keras") is not None:  # the baseline is a Keras file
                compared["fer2013"] = EmotionModel("fer2013")
            for path in args.compare_model:
                compared[str(path)] = EmotionModel(path)
            results["classifier"] = run_classifiers(compared)
        if "direct" in chosen:
            def analyzer(name: str, max_side: int | None) -> FaceAnalyzer:
                return FaceAnalyzer(model, create_detector(name, max_side), lambda: create_detector(name, max_side))

            results["direct"] = run_direct(config, analyzer(config.detector, config.detect_max_side))
            if config.detector != "opencv":
                # The Haar path that was the default before BlazeFace, for a same-run ratio.
                results["direct_opencv"] = run_direct(config, analyzer("opencv", None))
        if "batch" in chosen:
            results["batch"] = run_batch(config, model)
        if "live" in chosen:
            results["live"] = run_live(config, model)
            if args.idle_cameras:
                results["live_idle"] = run_live(config, model, idle_cameras=args.idle_cameras)
        if "recorded" in chosen:
            from bench.recorded import run_recorded

            results["recorded"] = run_recorded(config, model)
        if "cluster" in chosen:
            # Side by side in one run: one redis-server, then a 3-master 3-replica cluster.
            results["live_single_redis"] = run_live(config, model, engine="single")
            results["live_cluster"] = run_live(config, model, engine="cluster")
        if "tracks" in chosen:
            from bench.tracking import run_tracking

            try:
                results["tracks"] = run_tracking(config, people, args.tracks_seconds, args.baseline)
            except ValueError as exc:
                raise CommandError(str(exc)) from None
        if "tracks-replay" in chosen:
            from bench.tracking import run_replay

            try:
                results["tracks_replay"] = run_replay(config, people, args.tracks_seconds, model)
            except ValueError as exc:
                raise CommandError(str(exc)) from None
        if "api" in chosen:
            from bench.api import run_api

            results["api"] = run_api(config.cameras, config.fps, args.sse_clients, min(config.live_seconds, 30.0))
    summary = summarize(results)
    print(json.dumps(summary, indent=2) if args.json else format_text(summary))
    return 0


def _baseline(args: argparse.Namespace, folder: Path, scenarios: list[str]) -> Figures:
    """Figures of another checkout's bench for ``scenarios``, run here, now."""
    import subprocess
    import sys

    command = [sys.executable, "-m", "cli", "bench", "--json", "--only", ",".join(scenarios), "--images", str(folder.resolve()),
               "--cameras", str(args.cameras), "--fps", str(args.fps), "--live-seconds", str(args.live_seconds),
               "--original-limit", str(args.original_limit), "--log-level", "WARNING"]
    if args.workers:
        command += ["--workers", str(args.workers)]
    result = subprocess.run(command, cwd=args.baseline, capture_output=True, text=True, timeout=3600)
    if result.returncode != 0:
        raise CommandError(f"the baseline's bench failed: {(result.stderr.strip().splitlines() or ['?'])[-1]}")
    figures: Figures = json.loads(result.stdout)
    figures["tree"] = str(args.baseline)
    return figures


def _people(args: argparse.Namespace) -> list[tuple[Path, str]]:
    """(photo, label) pairs for the tracks scenario."""
    from emotion_stream.images import IMAGE_SUFFIXES
    from emotion_stream.labels import EMOTIONS
    from model.evaluation import LabelsError, list_labelled, read_labels_csv

    folder = args.people
    if folder is None or not folder.is_dir():
        raise CommandError("the tracks scenario needs --people DIR of labelled face photos "
                           "(e.g. --people ../shared/data/faces/test_kaggle --people-labels ../shared/data/faces/test_labels.csv)")
    if args.people_labels is not None:
        try:
            truth = read_labels_csv(args.people_labels)
        except LabelsError as exc:
            raise CommandError(str(exc)) from None
        return [(folder / name, label) for name, label in sorted(truth.items())
                if (folder / name).suffix.lower() in IMAGE_SUFFIXES and (folder / name).is_file()]
    try:
        paths, labels = list_labelled(folder)
    except ValueError as exc:
        raise CommandError(str(exc)) from None
    return [(p, EMOTIONS[i]) for p, i in zip(paths, labels)]


def _sample_images(folder: Path) -> Path:
    import cv2

    from ingest.samples import sample_frame

    for i in range(40):
        cv2.imwrite(str(folder / f"sample_{i:03d}.jpg"), sample_frame(i * 0.37, size=(350, 350)))
    return folder
