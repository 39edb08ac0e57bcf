"""Real processes for tests: CLI services started as users start them."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

EXE = str(Path(sys.executable).with_name("emotion-stream"))


def wait_for(predicate: Callable[[], object], timeout: float, what: str, interval: float = 0.1) -> object:
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(interval)


class Service:
    """An ``emotion-stream`` subcommand in its own process, output captured to a file."""

    def __init__(self, log_dir: Path, name: str, *args: str, env: dict[str, str] | None = None) -> None:
        self.name = name
        self.log_path = log_dir / f"{name}.log"
        self._log = self.log_path.open("wb")
        # faulthandler: a service that hangs is made to print every thread's stack (wait).
        full_env = {**os.environ, "PYTHONUNBUFFERED": "1", "PYTHONFAULTHANDLER": "1", **(env or {})}
        # A process group of its own, as a shell starts a job: interrupt() is a terminal's Ctrl-C.
        self.process = subprocess.Popen([EXE, *args], stdout=self._log, stderr=subprocess.STDOUT, env=full_env,
                                        start_new_session=True)

    @property
    def output(self) -> str:
        self._log.flush()
        return self.log_path.read_text(errors="replace")

    def alive(self) -> bool:
        return self.process.poll() is None

    def signal(self, signum: int) -> None:
        if self.alive():
            self.process.send_signal(signum)

    def interrupt(self) -> None:
        """Ctrl-C at a terminal: SIGINT to every process of the job, children included."""
        if self.alive():
            os.killpg(self.process.pid, signal.SIGINT)

    def wait(self, timeout: float = 60) -> int:
        try:
            return self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            # Every command prints its threads on SIGUSR1 (services their asyncio tasks
            # too), and faulthandler again on SIGABRT, which ends it.
            self.process.send_signal(signal.SIGUSR1)
            time.sleep(1.0)
            self.signal(signal.SIGABRT)
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                pass
            raise AssertionError(f"{self.name} did not exit within {timeout} s:\n{self.output[-6000:]}") from None

    def stop(self, timeout: float = 30) -> int:
        self.signal(signal.SIGTERM)
        return self.wait(timeout)

    def close(self) -> None:
        if self.alive():
            self.process.kill()
            self.process.wait()
        self._log.close()
