"""Whether a service is alive, for ``GET /healthz`` beside ``/metrics`` (a Kubernetes
liveness probe, say).

The metrics server runs on a thread of its own, so it answers even when the service is
hung: ``/metrics`` alone cannot tell. Alive means its event loop turns (a task of
``run_service`` ticks every second) and no stage that runs off the loop (the worker's
batch on its CPU thread) has been at one job for longer than it could take. A worker
stuck so keeps its frames pending until another reclaims them, and serves nothing more;
restarting it is the cure.
"""

from __future__ import annotations

import contextlib
import itertools
import threading
import time
from collections.abc import Iterator

TICK_S = 1.0


class Liveness:
    """The marks ``/healthz`` reads: the loop's last tick, and the jobs running off it."""

    def __init__(self, stuck_after_s: float = 60.0) -> None:
        # The loop not turning, or one job off it, this long: stuck (a micro-batch takes
        # well under 10 s, a loop turns every few milliseconds).
        self.stuck_after_s = stuck_after_s
        self._lock = threading.Lock()
        self._ticked: float | None = None  # None: no event loop ticks here (a command, not a service)
        self._busy: dict[int, tuple[str, float]] = {}
        self._jobs = itertools.count()

    def tick(self) -> None:
        self._ticked = time.monotonic()

    @contextlib.contextmanager
    def busy(self, stage: str) -> Iterator[None]:
        """Mark ``stage`` at one job for the duration of the block."""
        with self._lock:
            job = next(self._jobs)
            self._busy[job] = (stage, time.monotonic())
        try:
            yield
        finally:
            with self._lock:
                del self._busy[job]

    def problems(self, now: float | None = None) -> list[str]:
        """What is stuck, in words; empty while alive."""
        now = time.monotonic() if now is None else now
        found = []
        if self._ticked is not None and now - self._ticked > max(self.stuck_after_s, 2 * TICK_S):
            found.append(f"the event loop has not turned for {now - self._ticked:.0f} s")
        with self._lock:
            jobs = list(self._busy.values())
        found += [f"{stage}: one job for {now - started:.0f} s" for stage, started in jobs
                  if now - started > self.stuck_after_s]
        return found


LIVENESS = Liveness()  # one a process: the metrics server's thread reads what the service marks
