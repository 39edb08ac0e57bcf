"""Running a service until SIGINT/SIGTERM, shared by every long-running command, and
supervising its background tasks: a task that fails is logged at once and stops the
service, which then exits 1. A process that keeps running with a dead task (serving
nothing, saying nothing) is what must never happen."""

from __future__ import annotations

import asyncio
import contextlib
import faulthandler
import logging
import os
import signal
import time
from collections.abc import Awaitable, Callable, Coroutine
from pathlib import Path
from typing import Any

from .liveness import LIVENESS, TICK_S
from .settings import FAILPOINTS

log = logging.getLogger(__name__)

# Test failpoints: "EMOTION_STREAM_FAILPOINTS=tracks,reclaimer" makes those supervised
# tasks raise after FAILPOINT_DELAY_S, so the suite can check, with real processes, that
# a failing task is reported and stops its service (failpoints as in etcd's gofail).
# Two more hang a service instead, for its liveness probe: "block-loop" (a service's event
# loop) and "hang-cpu-stage" (the worker's micro-batch).
FAILPOINT_DELAY_S = 1.0
HANG_S = 3600.0
REPEAT_WINDOW_S = 1.0  # a stop signal again within this is the same request (stop_on_signals)


class TaskFailed(RuntimeError):
    """A service's background task failed; the service stopped (exit 1)."""


class Supervisor:
    """Starts a service's background tasks and watches them. When one ends with an
    exception, it is logged right away (with its traceback) and counted, ``stop`` is set
    so the service shuts down in order, and :meth:`check` raises :class:`TaskFailed`."""

    def __init__(self, service: str, stop: asyncio.Event) -> None:
        self.service = service
        self.stop = stop
        self.failure: TaskFailed | None = None
        self._failpoints = _failpoints()

    def start(self, coro: Coroutine[Any, Any, Any], name: str) -> asyncio.Task[Any]:
        if name in self._failpoints:
            coro.close()
            coro = _fail_after(FAILPOINT_DELAY_S, name)
        task = asyncio.create_task(coro, name=name)
        task.add_done_callback(self._done)
        return task

    def _done(self, task: asyncio.Task[Any]) -> None:
        if task.cancelled() or task.exception() is None:
            return
        exc = task.exception()
        if isinstance(exc, TaskFailed):  # a supervised service inside this one: reported already
            self.failure = self.failure or exc
            self.stop.set()
            return
        from . import metrics  # (metrics imports the schema: not needed before a failure)

        metrics.TASK_FAILURES.labels(self.service, task.get_name()).inc()
        log.error("%s: background task %s failed; stopping", self.service, task.get_name(), exc_info=exc)
        if self.failure is None:
            self.failure = TaskFailed(f"{self.service}: background task {task.get_name()} failed: "
                                      f"{type(exc).__name__}: {exc}")
        self.stop.set()

    async def wait(self, task: asyncio.Task[Any]) -> None:
        """Until ``task`` ends; its failure is raised by :meth:`check`, not here (it is
        logged once, by the supervisor)."""
        await asyncio.wait([task])
        self.check()

    def check(self) -> None:
        """Raise the first failure, if a task failed."""
        if self.failure is not None:
            raise self.failure


def _failpoints() -> set[str]:
    return set(filter(None, os.environ.get(FAILPOINTS, "").split(",")))


def failpoint(name: str) -> bool:
    """Whether the test failpoint ``name`` is set (module comment above)."""
    return name in _failpoints()


async def _fail_after(delay: float, name: str) -> None:
    await asyncio.sleep(delay)
    raise RuntimeError(f"failpoint {name}")


def stop_on_signals(stop: asyncio.Event) -> None:
    """Set ``stop`` on SIGINT or SIGTERM; a second signal restores the default (force quit).
    SIGUSR1 logs the asyncio tasks (:func:`log_tasks`).

    A signal within REPEAT_WINDOW_S of the first is the same request, not a second one:
    ``timeout`` and ``kill -- -PGID`` signal the process and then its process group, so it
    arrives twice at once, and forced quitting then cut every orderly stop short (no
    acks written, leases held until they expire, no summary)."""
    loop = asyncio.get_running_loop()
    first: list[float] = []

    def handler(signum: int) -> None:
        if stop.is_set():
            if first and loop.time() - first[0] < REPEAT_WINDOW_S:
                return
            loop.remove_signal_handler(signum)
            signal.raise_signal(signum)
            return
        first.append(loop.time())
        log.info("received %s; shutting down", signal.Signals(signum).name)
        stop.set()

    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, handler, signum)
    loop.add_signal_handler(signal.SIGUSR1, log_tasks)


def dump_threads_on_usr1() -> None:
    """SIGUSR1 writes every thread's stack to stderr (``kill -USR1 PID`` on a command
    that seems stuck). Again after an event loop that handled SIGUSR1 closes: closing
    resets the signal to its default, which would kill a process signalled while it
    shuts down."""
    with contextlib.suppress(ValueError, OSError):  # stderr is no file (main called in-process)
        # faulthandler installs its handler only when the signal is not registered yet.
        faulthandler.unregister(signal.SIGUSR1)
        faulthandler.register(signal.SIGUSR1, all_threads=True)


def log_tasks() -> None:
    """SIGUSR1: log every asyncio task and the chain of awaits it is suspended in, then
    write every thread's stack to stderr. A service that seems stuck shows which await
    never returns (``Task.get_stack`` gives only a suspended task's outermost coroutine)."""
    tasks = asyncio.all_tasks()
    lines = [f"{len(tasks)} asyncio tasks:"]
    for task in sorted(tasks, key=lambda t: t.get_name()):
        lines.append(f"  {task.get_name()}: {' -> '.join(_awaits(task.get_coro()))}")
    log.warning("\n".join(lines))
    with contextlib.suppress(ValueError, OSError):  # stderr closed, or not a real file
        faulthandler.dump_traceback(all_threads=True)


def _awaits(awaitable: object) -> list[str]:
    chain = []
    while awaitable is not None:
        frame = getattr(awaitable, "cr_frame", None) or getattr(awaitable, "gi_frame", None)
        if frame is None:  # a future, or a finished coroutine
            chain.append(type(awaitable).__name__)
            break
        chain.append(f"{frame.f_code.co_name} ({Path(frame.f_code.co_filename).name}:{frame.f_lineno})")
        awaitable = getattr(awaitable, "cr_await", None) or getattr(awaitable, "gi_yieldfrom", None)
    return chain


async def cancel_and_wait(*tasks: asyncio.Future[Any], again_after: float = 0.5) -> None:
    """Cancel ``tasks`` and wait until every one has ended, cancelling again any still
    running ``again_after`` seconds later. Python 3.11's ``asyncio.wait_for`` loses a
    cancellation that lands as the future it waits on completes (CPython gh-86296, fixed
    in 3.12), and redis-py sends every command through it: a task cancelled once inside
    a Redis call can carry on as if it never was, and whoever awaits it waits forever."""
    pending = {task for task in tasks if not task.done()}
    while pending:
        for task in pending:
            task.cancel()
        _, pending = await asyncio.wait(pending, timeout=again_after)


async def sleep_or_stop(stop: asyncio.Event, seconds: float) -> None:
    """Sleep, but wake up as soon as ``stop`` is set."""
    try:
        await asyncio.wait_for(stop.wait(), seconds)
    except TimeoutError:
        pass


async def keep_ticking(stop: asyncio.Event) -> None:
    """Tick ``LIVENESS`` every TICK_S until ``stop``: proof that the loop turns."""
    while not stop.is_set():
        LIVENESS.tick()
        await sleep_or_stop(stop, TICK_S)


def run_service(main: Callable[[asyncio.Event], Awaitable[int | None]], duration: float | None = None) -> int:
    """``asyncio.run`` a service coroutine that stops when the event is set."""

    async def runner() -> int:
        stop = asyncio.Event()
        stop_on_signals(stop)
        if duration is not None:
            asyncio.get_running_loop().call_later(duration, stop.set)
        ticker = asyncio.create_task(keep_ticking(stop), name="liveness")
        if failpoint("block-loop"):
            asyncio.get_running_loop().call_later(FAILPOINT_DELAY_S, time.sleep, HANG_S)
        try:
            return int(await main(stop) or 0)
        finally:
            await cancel_and_wait(ticker)

    try:
        return asyncio.run(runner())
    finally:
        dump_threads_on_usr1()
