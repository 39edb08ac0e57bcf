"""The cameras of one ingest process, each with its lease, publisher and reader task.

A cameras file read again (SIGHUP) is applied as a change, not a restart: cameras added
start, cameras removed stop and free their lease, a camera whose source changed starts
over on the new one, and every other camera goes on untouched, frame numbers and all.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass
from pathlib import Path

import redis.asyncio as aioredis

from emotion_stream import keys, metrics
from emotion_stream.leases import Lease
from emotion_stream.lifecycle import Supervisor, TaskFailed, cancel_and_wait
from emotion_stream.redis_conn import TRANSIENT_ERRORS, retrying
from emotion_stream.settings import Settings

from .camera import IngestOptions, Pace, run_camera
from .camera_list import read_camera_list
from .publisher import FramePublisher
from .sources import SourceSpec, file_problem

log = logging.getLogger(__name__)

LEASE_MS = 6000  # a camera's ingest lease: free this long after its process died


class CameraBusy(RuntimeError):
    """Another process ingests this camera (holds its lease)."""


def camera_problem(spec: SourceSpec, options: IngestOptions) -> str | None:
    """Why ``spec`` cannot be ingested with ``options`` at all (None: it can be tried)."""
    if options.pace is Pace.WORKERS and not spec.is_file:
        return f"--pace workers reads a video file; {spec.describe()} is a live source"
    problem = file_problem(spec)
    return f"{spec.describe()}: {problem}" if problem else None


@dataclass
class _Running:
    spec: SourceSpec
    publisher: FramePublisher
    lease: Lease
    stop: asyncio.Event
    reader: asyncio.Task[None]
    keeper: asyncio.Task[None]
    # Started with the process: a source that cannot be read stops the process (the
    # user is there to see it). One added by a reload is left out instead, and the
    # cameras already running go on.
    essential: bool


class CameraSet:
    """Starts, stops and watches the cameras of one ingest process."""

    def __init__(self, client: aioredis.Redis, settings: Settings, options: IngestOptions,
                 supervisor: Supervisor) -> None:
        self._redis = client
        self._settings = settings
        self._options = options
        self._supervisor = supervisor
        self._running: dict[str, _Running] = {}
        # Video files read to their end: listed again unchanged, they are not read again.
        self._finished: dict[str, SourceSpec] = {}
        # Cameras a reload added whose source cannot be read: source_up 0 (its alert
        # fires) until the cameras file drops them or they are tried again.
        self._failed: set[str] = set()

    async def start(self, cameras: list[tuple[str, SourceSpec]], *, essential: bool = True) -> bool:
        """Take every camera's lease, then start reading them all (none is read while
        another is still busy elsewhere). False when the process is stopped while Redis
        does not answer; CameraBusy while another process has one of them."""
        leases: list[Lease] = []
        try:
            for camera, _ in cameras:
                lease = Lease(self._redis, keys.ingest_lease(camera), LEASE_MS)
                held = await retrying(lease.hold, what="connect", component="ingest", stop=self._supervisor.stop)
                if held is None:
                    return False
                if not held:
                    raise CameraBusy(f"camera {camera!r} is being ingested by another process (free "
                                     f"{LEASE_MS / 1000:.0f} s after it stops); give this one its own --camera")
                leases.append(lease)
            for (camera, spec), lease in zip(cameras, leases):
                publisher = FramePublisher(self._redis, camera, self._settings)
                stop = asyncio.Event()
                reader = asyncio.create_task(run_camera(spec, publisher, self._options, stop), name=f"camera-{camera}")
                keeper = self._supervisor.start(lease.keep(stop), f"ingest-lease-{camera}")
                self._running[camera] = _Running(spec, publisher, lease, stop, reader, keeper, essential)
                self._finished.pop(camera, None)
            metrics.INGEST_CAMERAS.set(len(self._running))
            leases.clear()  # held by their cameras now
            return True
        finally:
            for lease in leases:
                with contextlib.suppress(*TRANSIENT_ERRORS):
                    await lease.release()

    async def run(self, reload: asyncio.Event, cameras_file: Path | None) -> list[tuple[str, BaseException]]:
        """Until every camera has ended (video files) or the process stops; ``reload``
        set: ``cameras_file`` is read again and applied. Returns the cameras started with
        the process whose source failed, with the error (the process has been stopped)."""
        stop = self._supervisor.stop
        failures: list[tuple[str, BaseException]] = []
        while self._running and not stop.is_set():
            readers = {running.reader: camera for camera, running in self._running.items()}
            stopping = asyncio.ensure_future(stop.wait())
            reloading = asyncio.ensure_future(reload.wait())
            await asyncio.wait({*readers, stopping, reloading}, return_when=asyncio.FIRST_COMPLETED)
            await cancel_and_wait(stopping, reloading)
            for task, camera in readers.items():
                if not task.done():
                    continue
                running = self._running[camera]
                await self._forget(camera)
                error = _error(task)
                if error is None:
                    self._finished[camera] = running.spec
                elif running.essential or not isinstance(error, RuntimeError) or isinstance(error, TaskFailed):
                    failures.append((camera, error))
                    stop.set()
                else:
                    self._failed.add(camera)
                    log.error("camera %s: %s; left out until the cameras file is read again", camera, error)
            if reload.is_set() and not stop.is_set():
                reload.clear()
                if cameras_file is not None:
                    await self._reload(cameras_file)
        failures += await self.stop_all()
        return failures

    async def stop_all(self) -> list[tuple[str, BaseException]]:
        """Stop every camera and free its lease; the essential ones that failed meanwhile."""
        for running in self._running.values():
            running.stop.set()
        failures = []
        for camera in list(self._running):
            essential = self._running[camera].essential
            if (error := await self._end(camera)) is not None and essential:
                failures.append((camera, error))
        return failures

    async def stop(self, camera: str) -> None:
        """Stop one camera (removed from the cameras file), its lease freed."""
        running = self._running[camera]
        running.stop.set()
        if (error := await self._end(camera)) is not None and running.essential:
            log.error("camera %s: %s", camera, error)  # removed: nobody else says it
        metrics.forget_camera(camera)  # no longer a source here: no source-down alert for it

    async def _end(self, camera: str) -> BaseException | None:
        """Wait for a stopped camera's reader, then forget it; its reader's error, logged
        here unless the camera started with the process (the caller says those)."""
        running = self._running[camera]
        await asyncio.wait({running.reader})
        error = _error(running.reader)
        if error is not None and not running.essential:
            log.error("camera %s: %s", camera, error)
        await self._forget(camera)
        return error

    async def _reload(self, path: Path) -> None:
        log.info("reading the cameras file %s again", path)
        try:
            wanted = dict(read_camera_list(path))
        except ValueError as exc:
            metrics.CAMERAS_FILE_APPLIED.set(0)
            log.error("cameras file not applied, the cameras go on as they were: %s", exc)
            return
        metrics.CAMERAS_FILE_APPLIED.set(1)
        added = [camera for camera, spec in wanted.items()
                 if camera not in self._running and self._finished.get(camera) != spec]
        removed = [camera for camera in self._running if camera not in wanted]
        changed = [camera for camera, running in self._running.items()
                   if camera in wanted and wanted[camera] != running.spec]
        for camera in removed + changed:
            await self.stop(camera)
        for camera in (self._failed | self._finished.keys()) - wanted.keys():
            metrics.forget_camera(camera)  # dropped from the file: its series go
        self._failed.clear()  # the others are tried again now
        self._finished = {camera: spec for camera, spec in self._finished.items() if camera in wanted}
        started = []
        for camera in changed + added:
            spec = wanted[camera]
            if problem := camera_problem(spec, self._options):
                log.error("camera %s: %s; left out", camera, problem)
                continue
            try:
                if not await self.start([(camera, spec)], essential=False):
                    return  # stopped while Redis did not answer
            except CameraBusy as exc:
                log.error("%s; left out", exc)
                continue
            started.append(camera)
        changes = [f"{what} {', '.join(names)}" for what, names in (
            ("started", [camera for camera in started if camera not in changed]),
            ("stopped", removed),
            ("restarted on a new source", [camera for camera in changed if camera in started])) if names]
        log.info("cameras file applied: %d cameras running; %s", len(self._running), "; ".join(changes) or "no change")

    async def _forget(self, camera: str) -> None:
        """A camera whose reader has ended: its lease freed, what became of its frames logged."""
        running = self._running.pop(camera)
        metrics.INGEST_CAMERAS.set(len(self._running))
        await cancel_and_wait(running.keeper)
        with contextlib.suppress(*TRANSIENT_ERRORS):  # Redis gone: the lease expires on its own
            await running.lease.release()
        log.info("%s", running.publisher.summary())


def _error(task: asyncio.Task[None]) -> BaseException | None:
    return None if task.cancelled() else task.exception()
