"""Measurement helpers: percentiles, per-process CPU and memory sampling."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import psutil

# One scenario's figures: a JSON-ready document (numbers, strings, lists, nested figures).
Figures = dict[str, Any]


def percentiles(values: list[float], qs: tuple[float, ...] = (50, 95, 99)) -> dict[str, float]:
    if not values:
        return {f"p{int(q)}": float("nan") for q in qs}
    arr = np.asarray(values)
    return {f"p{int(q)}": float(np.percentile(arr, q)) for q in qs}


@dataclass
class ProcessUsage:
    name: str
    pid: int
    cpu_seconds: float = 0.0
    peak_rss_mb: float = 0.0
    rss_mb: list[float] = field(default_factory=list)  # one sample per interval

    def summary(self, wall: float) -> Figures:
        half = len(self.rss_mb) // 2
        return {
            "process": self.name,
            "cpu_seconds": round(self.cpu_seconds, 2),
            "cpu_cores_used": round(self.cpu_seconds / wall, 2) if wall else 0.0,
            "peak_rss_mb": round(self.peak_rss_mb, 1),
            "rss_first_half_mb": round(float(np.mean(self.rss_mb[:half])), 1) if half else None,
            "rss_second_half_mb": round(float(np.mean(self.rss_mb[half:])), 1) if half else None,
        }


class UsageSampler:
    """Samples CPU time and RSS of named processes every ``interval`` seconds."""

    def __init__(self, processes: dict[str, int], interval: float = 1.0) -> None:
        self.interval = interval
        self._procs = {name: psutil.Process(pid) for name, pid in processes.items()}
        self.usage = {name: ProcessUsage(name, p.pid) for name, p in self._procs.items()}
        self._start_cpu = {name: self._cpu(p) for name, p in self._procs.items()}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self.started = time.monotonic()
        self.wall = 0.0

    @staticmethod
    def _cpu(process: psutil.Process) -> float:
        times = process.cpu_times()
        return float(times.user + times.system)

    def _sample(self) -> None:
        for name, process in self._procs.items():
            try:
                rss = process.memory_info().rss / 2**20
                usage = self.usage[name]
                usage.rss_mb.append(rss)
                usage.peak_rss_mb = max(usage.peak_rss_mb, rss)
                usage.cpu_seconds = self._cpu(process) - self._start_cpu[name]
            except psutil.Error:
                pass

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self._sample()

    def __enter__(self) -> UsageSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self._sample()
        self.wall = time.monotonic() - self.started

    def summaries(self) -> list[Figures]:
        return [u.summary(self.wall) for u in self.usage.values()]
