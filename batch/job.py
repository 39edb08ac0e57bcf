"""A batch job: a folder of still images sent through the workers as a finite stream.

Producer: lists the folder, reads each file and XADDs it to the job's frame stream
(kind=still, reply_to=the job's results stream), keeping at most ``window`` images in
flight, then writes the end-of-stream marker. Collector: reads one result per image
from the results stream into the journal. The job ends when every submitted image
has a result; then ``submission.csv`` is written from the journal.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, TypeVar, cast

import redis.asyncio as aioredis

from emotion_stream import keys
from emotion_stream.cameras import forget_camera
from emotion_stream.images import IMAGE_SUFFIXES
from emotion_stream.lifecycle import cancel_and_wait
from emotion_stream.redis_conn import ACCESS_ERRORS, TRANSIENT_ERRORS, retrying, write_confirmed
from emotion_stream.schema import (
    FrameKind,
    FrameMessage,
    FrameResult,
    MessageError,
    validate_image_name,
)
from emotion_stream.settings import Settings

from .submission import Journal, write_submission

log = logging.getLogger(__name__)
T = TypeVar("T")

STALL_WARNING_S = 30.0
UNCONFIRMED_RESENDS = 3  # with --write-replicas: sends of an image its replicas did not confirm
SEND_CHUNK = 32  # images read in one thread hop and sent in one round trip


@dataclass
class BatchSummary:
    images: int = 0  # image files found
    rows: int = 0  # rows written to the submission
    faces: int = 0  # faces detected over all images
    fallbacks: int = 0  # images classified whole (no face found)
    resumed: int = 0  # results taken from an interrupted earlier run
    skipped: dict[str, str] = field(default_factory=dict)  # file -> reason
    seconds: float = 0.0

    def format_text(self) -> str:
        rate = self.rows / self.seconds if self.seconds else 0.0
        lines = [
            f"images:               {self.images}",
            f"rows written:         {self.rows}" + (f" ({self.resumed} from the interrupted run)" if self.resumed else ""),
            f"faces found:          {self.faces}",
            f"whole-image fallback: {self.fallbacks}",
            f"skipped:              {len(self.skipped)}",
        ]
        lines += [f"  {name}: {reason}" for name, reason in sorted(self.skipped.items())]
        lines.append(f"time:                 {self.seconds:.1f} s ({rate:.1f} images/s)")
        return "\n".join(lines)


def job_key(folder: Path, settings: Settings) -> dict[str, str]:
    """What makes a job: the folder and every setting that changes its labels (the model
    file by content, so a changed file is another job). A re-run of the same job resumes it."""
    from model.emotion_model import resolve_weights

    weights, _ = resolve_weights(settings.model_path, settings.model_runtime)
    try:
        model = f"{weights.name}@{hashlib.sha256(weights.read_bytes()).hexdigest()[:12]}"
    except OSError:
        model = str(weights)  # loading it fails later, with its own error
    key = {"folder": str(folder.resolve()), "model": model, "detector": settings.detector,
           "detect_max_side": str(settings.detect_max_side), "uncertain_below": str(settings.uncertain_below)}
    if settings.still_views != 1:  # named only when set, so jobs begun before it existed still resume
        key["still_views"] = str(settings.still_views)
    return key


def job_id(key: dict[str, str]) -> str:
    return hashlib.sha1("|".join(f"{k}={v}" for k, v in sorted(key.items())).encode()).hexdigest()[:12]


def scan_folder(folder: Path) -> tuple[list[Path], dict[str, str]]:
    """Image files directly in ``folder`` sorted by name, and what was left out and why."""
    images: list[Path] = []
    skipped: dict[str, str] = {}
    for path in sorted(folder.iterdir(), key=lambda p: p.name):
        name = path.name
        if name.startswith("."):
            skipped[name] = "hidden file (name starts with '.')"
        elif path.is_symlink():
            skipped[name] = "symbolic link (not followed)"
        elif path.is_dir():
            skipped[name] = "folder (batch mode reads only the images directly in FOLDER)"
        elif not path.is_file():
            skipped[name] = "not a regular file"
        elif path.suffix.lower() not in IMAGE_SUFFIXES:
            skipped[name] = f"not an image file extension ({path.suffix or 'none'})"
        else:
            try:
                validate_image_name(name)
                images.append(path)
            except ValueError as exc:
                skipped[name] = str(exc)
    return images, skipped


class BatchStalled(RuntimeError):
    """No result arrived within the job's timeout (no worker running, or all stuck)."""


class BatchJob:
    """One folder as a finite job stream: the producer sends every image as a still
    frame, the collector journals each result once, and ``run`` writes the CSV.

    ``timeout``: fail with BatchStalled after that many seconds without a result (None:
    wait for workers indefinitely, warning every 30 s). Either way, the job's camera and
    streams are removed from Redis when it ends; the journal is kept for a resume.
    """

    def __init__(self, client: aioredis.Redis, folder: Path, out: Path, settings: Settings, window: int = 256,
                 timeout: float | None = None, restart: bool = False) -> None:
        self.redis = client
        self.folder = folder
        self.out = out
        self.settings = settings
        self.window = window
        self.timeout = timeout
        key = job_key(folder, settings)
        self.id = job_id(key)
        self.camera = f"batch-{self.id}"
        self.stream = keys.frames(self.camera)
        self.results = keys.results(self.camera)
        self.journal = Journal(out.with_name(out.name + ".partial"), key)
        self.journal.hold()  # JournalBusy while another run writes this output
        if restart:
            self.journal.clear()
        self.done: dict[str, FrameResult] = {}
        self._slots = asyncio.Semaphore(window)
        self._expected: set[str] = set()
        self._remaining = 0

    async def run(self, on_result: Callable[[FrameResult], object] | None = None) -> BatchSummary:
        """Process the folder; ``on_result(result)`` is called per image (progress bars)."""
        started = time.monotonic()
        summary = BatchSummary()
        images, skipped = scan_folder(self.folder)
        summary.images = len(images)
        summary.skipped.update(skipped)
        found = {p.name for p in images}
        # Only rows of files that are in the folder now (a file removed since is not submitted).
        self.done = {name: r for name, r in self.journal.load().items() if name in found}
        summary.resumed = sum(1 for r in self.done.values() if r.ok)
        todo = [p for p in images if p.name not in self.done]
        self._expected = {p.name for p in todo}
        self._remaining = len(self._expected)
        if self.done:
            log.info("resuming: %d of %d images already done", len(images) - len(todo), len(images))
        await self._retry(self._reset_streams)
        try:
            await self._retry(lambda: self.redis.sadd(keys.CAMERAS, self.camera))
            producer = asyncio.create_task(self._produce(todo))
            collector = asyncio.create_task(self._collect(on_result))
            # If either fails (e.g. Redis refuses access), the other must not wait forever.
            done, pending = await asyncio.wait({producer, collector}, return_when=asyncio.FIRST_EXCEPTION)
            failed = [task for task in done if task.exception()]
            if failed:
                await cancel_and_wait(*pending)
                raise cast(BaseException, failed[0].exception())  # not the other's cancellation
            await asyncio.gather(producer, collector)
        finally:
            self.journal.close()
            try:
                await self._retry(self._cleanup)
            except BatchStalled:  # Redis gone: the streams stay for the next run, which resets them
                log.warning("batch: could not remove the job's streams from Redis")
        for name in (p.name for p in images):
            result = self.done.get(name)
            if result is None:
                continue
            if result.ok:
                summary.faces += result.faces
                summary.fallbacks += int(result.whole_image)
            else:
                summary.skipped[name] = result.error
        rows = {name: r.emotion for name, r in self.done.items() if r.ok}
        write_submission(self.out, rows)
        self.journal.remove()
        summary.rows = len(rows)
        summary.seconds = time.monotonic() - started
        return summary

    async def _reset_streams(self) -> None:
        # Leftovers of an interrupted run on a persistent Redis would be redone: the
        # journal is the record of what is finished, so start the streams afresh.
        await self.redis.delete(self.stream, self.results)

    async def _cleanup(self) -> None:
        # Everything of the job's camera: its events and dead letters too (the summary and
        # the submission say what they did), or each job would leave them in Redis for good.
        await forget_camera(self.redis, self.camera)

    async def _produce(self, todo: list[Path]) -> None:
        max_bytes = self.settings.max_image_bytes
        sent = 0
        while sent < len(todo):
            # As many images as the window has room for now, up to SEND_CHUNK: one
            # thread hop reads them and one round trip sends them (not a hop and a
            # round trip an image).
            await self._slots.acquire()
            count = 1
            while count < min(SEND_CHUNK, len(todo) - sent) and not self._slots.locked():
                await self._slots.acquire()
                count += 1
            chunk = list(enumerate(todo[sent : sent + count], start=sent))
            sent += count
            reads = await asyncio.to_thread(_read_all, [path for _, path in chunk], max_bytes)
            messages = []
            for (seq, path), data in zip(chunk, reads):
                if isinstance(data, Exception):
                    self._record(FrameResult(self.camera, seq, path.name, ok=False, error=str(data)))
                else:
                    messages.append(FrameMessage(self.camera, seq, time.time(), FrameKind.STILL, data,
                                                 name=path.name, reply_to=self.results))
            if messages:
                await self._send(messages)
        await self._send([FrameMessage(self.camera, len(todo), time.time(), FrameKind.END, reply_to=self.results)])

    async def _send(self, messages: list[FrameMessage]) -> None:
        """XADD the messages in one round trip; with ``write_replicas``, again until
        replicas confirm them (a master that fails before replicating loses the entries,
        and the job would wait for their results forever). A duplicate (also from a
        retried round trip) costs one analysis: results count once."""
        replicas = self.settings.write_replicas
        for _ in range(UNCONFIRMED_RESENDS if replicas else 1):
            confirmed = await self._retry(partial(self._add, messages))
            if confirmed:
                return
        log.warning("batch: %d image(s) from %s not confirmed by %d replica(s) after %d sends; going on",
                    len(messages), messages[0].name or "the end marker", replicas, UNCONFIRMED_RESENDS)

    async def _add(self, messages: list[FrameMessage]) -> bool:
        """One pipelined XADD of each message (and WAIT for the replicas asked for);
        True when confirmed."""
        async def queue(pipe: Any) -> None:
            for message in messages:
                pipe.xadd(self.stream, message.to_fields())

        replicas = self.settings.write_replicas
        if not replicas:
            pipe = self.redis.pipeline(transaction=False)
            await queue(pipe)
            await pipe.execute()
            return True
        _id, confirmed = await write_confirmed(
            self.redis, self.stream, queue, replicas, self.settings.write_replicas_timeout_ms)
        return confirmed

    async def _collect(self, on_result: Callable[[FrameResult], object] | None) -> None:
        last_id = "0-0"
        last_progress = time.monotonic()
        warned = 0
        while self._remaining > 0:
            try:
                reply = await self.redis.xread({self.results: last_id}, count=256, block=1000)
            except ACCESS_ERRORS:
                raise
            except TRANSIENT_ERRORS as exc:
                waited = time.monotonic() - last_progress
                if self.timeout is not None and waited > self.timeout:
                    raise BatchStalled(f"Redis unreachable, no result for {self.timeout:g} s ({exc}; "
                                       f"{self._remaining} images left, resumable)") from None
                log.warning("batch: Redis unavailable (%s); retrying", exc)
                await asyncio.sleep(1.0)
                continue
            for _stream, entries in cast(list[Any], reply or []):
                for entry_id, fields in entries:
                    last_id = entry_id
                    try:
                        result = FrameResult.from_json(fields[b"result"])
                    except (KeyError, MessageError) as exc:
                        log.warning("batch: ignoring malformed result %s: %s", entry_id, exc)
                        continue
                    if self._record(result) and on_result is not None:
                        on_result(result)
                    last_progress, warned = time.monotonic(), 0
            waited = time.monotonic() - last_progress
            if self.timeout is not None and waited > self.timeout:
                alive = await self.redis.hlen(keys.WORKERS)
                raise BatchStalled(f"no result for {self.timeout:g} s ({alive} workers registered; "
                                   f"{self._remaining} images left, resumable)")
            if waited > STALL_WARNING_S * (1 + warned):
                alive = await self.redis.hlen(keys.WORKERS)
                log.warning("batch: no result for %.0f s (%d workers registered); still waiting", waited, alive)
                warned += 1

    def _record(self, result: FrameResult) -> bool:
        """Journal a result once per image; duplicates (re-deliveries) are ignored."""
        if result.name in self.done or result.name not in self._expected:
            return False
        self.done[result.name] = result
        self.journal.append(result)
        self._slots.release()
        self._remaining -= 1
        return True

    async def _retry(self, operation: Callable[[], Awaitable[T]]) -> T:
        """``operation``'s result, through Redis outages; with a timeout, BatchStalled
        once Redis has been unreachable that long."""
        started = time.monotonic()

        async def attempt() -> tuple[T]:
            return (await operation(),)

        def give_up(_attempts: int) -> bool:
            return self.timeout is not None and time.monotonic() - started > self.timeout

        done = await retrying(attempt, what="batch job", component="batch", give_up=give_up)
        if done is None:
            raise BatchStalled(f"Redis unreachable for {self.timeout:g} s (the job is resumable)")
        return done[0]


def _read_all(paths: list[Path], max_bytes: int) -> list[bytes | Exception]:
    """Each file's bytes, or why it cannot be sent (reported per file)."""
    out: list[bytes | Exception] = []
    for path in paths:
        try:
            out.append(_read_limited(path, max_bytes))
        except (OSError, ValueError) as exc:
            out.append(exc)
    return out


def _read_limited(path: Path, max_bytes: int) -> bytes:
    size = path.stat().st_size
    if size > max_bytes:
        raise ValueError(f"{size} bytes, over the limit of {max_bytes}")
    if size == 0:
        raise ValueError("empty (0 bytes)")
    return path.read_bytes()
