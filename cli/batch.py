"""``emotion-stream batch FOLDER --out submission.csv``: label a folder through the workers."""

from __future__ import annotations

import argparse
import asyncio
import os
from pathlib import Path
from typing import TYPE_CHECKING

from emotion_stream.settings import Settings

from .common import (
    POSITIVE_SECONDS,
    CommandError,
    Subcommands,
    add_command,
    add_model_options,
    add_settings,
    number,
    progress,
)

if TYPE_CHECKING:
    from batch import BatchJob, BatchSummary

CLEANUP_S = 5.0  # an interrupted job's time to remove its streams before it is cancelled again


def register(sub: Subcommands) -> None:
    p = add_command(
        sub, "batch", run, "label a folder of images into a Kaggle submission.csv",
        description=(
            "Send every image of FOLDER through the streaming workers as a finite job "
            "stream and write image_path,emotion rows sorted by file name. Without "
            "REDIS_URL an embedded Redis and local workers are used. An interrupted run "
            "resumes from OUT.partial when started again with the same folder, model and "
            "detector; another job's OUT.partial is refused (--restart discards it)."
        ),
    )
    p.add_argument("folder", type=Path, metavar="FOLDER")
    p.add_argument("--out", type=Path, default=Path("submission.csv"), help="CSV to write (default %(default)s)")
    p.add_argument("--workers", type=number(int, 0), default=None, metavar="N",
                   help="local workers to start, for this job alone (default: one per CPU core; "
                   "0 = external workers only)")
    add_settings(p, "batch_size", "write_replicas")
    p.add_argument("--timeout", type=POSITIVE_SECONDS, default=None, metavar="S",
                   help="fail when no result arrives (or Redis cannot be reached) for S seconds "
                        "(default: wait for workers)")
    p.add_argument("--restart", action="store_true", help="discard OUT.partial of an interrupted run and start over")
    add_model_options(p)
    add_settings(p, "redis_url")


def run(args: argparse.Namespace, settings: Settings) -> int:
    from emotion_stream.embedded_redis import redis_url_or_embedded
    from emotion_stream.lifecycle import dump_threads_on_usr1

    if not args.folder.is_dir():
        raise CommandError(f"{args.folder}: not a folder")
    _check_output(args.out)
    workers = (os.cpu_count() or 1) if args.workers is None else args.workers
    if workers == 0 and not settings.redis_url:
        raise CommandError("--workers 0 needs external workers: set REDIS_URL")
    with redis_url_or_embedded(settings.redis_url) as url:
        try:
            summary = asyncio.run(_run(args, settings, url, workers))
        finally:
            dump_threads_on_usr1()
    print(summary.format_text())
    print(f"wrote {args.out}")
    return 0


def _check_output(out: Path) -> None:
    """Refuse an output path that cannot be written before doing any work."""
    if out.is_dir():
        raise CommandError(f"--out {out}: is a folder; give a file path such as {out / 'submission.csv'}")
    parent = out.parent if str(out.parent) else Path(".")
    if not parent.is_dir():
        raise CommandError(f"--out {out}: folder {parent} does not exist")
    if not os.access(parent, os.W_OK):
        raise CommandError(f"--out {out}: folder {parent} is not writable")


async def _run(args: argparse.Namespace, settings: Settings, url: str, workers: int) -> BatchSummary:
    from batch import BatchJob, BatchStalled
    from batch.submission import JournalError
    from emotion_stream.lifecycle import cancel_and_wait, stop_on_signals
    from emotion_stream.redis_conn import connect
    from model import EmotionModel
    from model.runtime import share_cores
    from worker import start_in_process

    stop = asyncio.Event()
    tasks = []
    client = connect(url, name="emotion-stream-batch")
    try:
        job = BatchJob(client, args.folder, args.out, settings, timeout=args.timeout, restart=args.restart)
        job.journal.load()  # a running job's or another job's journal is refused before any work
    except JournalError as exc:
        await client.aclose()
        raise CommandError(str(exc)) from None
    if workers:
        share_cores(workers)
        model = await asyncio.to_thread(EmotionModel.from_settings, settings)
        # They serve this job alone: on a shared Redis, workers of the job's model and
        # detector analysed live cameras too, and took a share of their tracking, until
        # the job ended.
        tasks = start_in_process(settings.model_copy(update={"track_owner": False}), url, stop, workers, model,
                                 f"batch-{os.getpid()}", only_cameras={job.camera})
    job_task = asyncio.create_task(_with_progress(job))
    interrupted = asyncio.Event()
    stop_on_signals(interrupted)
    waiter = asyncio.create_task(interrupted.wait())
    try:
        done, _ = await asyncio.wait({job_task, waiter}, return_when=asyncio.FIRST_COMPLETED)
        if job_task not in done:
            # Let the job remove its camera and streams from Redis before we go.
            await cancel_and_wait(job_task, again_after=CLEANUP_S)
            raise KeyboardInterrupt
        try:
            return job_task.result()
        except BatchStalled as exc:
            raise CommandError(str(exc)) from None
    finally:
        waiter.cancel()
        stop.set()
        await asyncio.gather(*tasks, return_exceptions=True)
        await client.aclose()


async def _with_progress(job: BatchJob) -> BatchSummary:
    from batch import scan_folder

    images, _ = scan_folder(job.folder)
    with progress(len(images), "batch") as bar:
        bar.update(len(job.journal.load()))
        return await job.run(on_result=lambda _r: bar.update())
