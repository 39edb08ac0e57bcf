"""The submission CSV and the journal that makes batch runs resumable."""

from __future__ import annotations

import csv
import fcntl
import json
import logging
import os
from collections.abc import Mapping
from pathlib import Path
from typing import TextIO

from emotion_stream.schema import FrameResult, MessageError

log = logging.getLogger(__name__)


def write_submission(path: Path, rows: Mapping[str, str]) -> None:
    """``image_path,emotion`` sorted by file name, written atomically (tmp + rename)."""
    tmp = path.with_name(f".{path.name}.tmp")
    with tmp.open("w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["image_path", "emotion"])
        for name in sorted(rows):
            writer.writerow([name, rows[name]])
    os.replace(tmp, path)


class JournalError(ValueError):
    """The journal at the output path cannot be used by this run; the message says why."""


class JournalMismatch(JournalError):
    """The journal left at the output path belongs to another job: resuming from it would
    put another folder's or another model's rows in this submission."""


class JournalBusy(JournalError):
    """Another run is writing the same output now: resuming from its journal would take
    rows still being written, and both would write the file."""


class Journal:
    """Append-only JSON lines of FrameResults, flushed per line, after a first line that
    says which job they belong to (``job``: the folder and what decides the labels).

    An interrupted run leaves it behind; the next run of the same job with the same
    output path reads it and submits only the images not yet in it. Another job's
    journal is refused (:class:`JournalMismatch`) rather than merged, and so is one that
    a running job holds (:class:`JournalBusy`: ``hold`` locks it until ``close``; the
    lock goes with the process, so a killed run's journal is free at once).
    """

    def __init__(self, path: Path, job: Mapping[str, str]) -> None:
        self.path = path
        self.job = dict(job)
        self._fh: TextIO | None = None
        self._held: TextIO | None = None

    def hold(self) -> None:
        """Lock the journal for this run (created empty if there is none)."""
        held = self.path.open("a")
        try:
            fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            held.close()
            raise JournalBusy(f"another batch run is writing {self.path.name.removesuffix('.partial')} now "
                              f"({self.path} is locked): wait for it to end, or give another --out") from None
        self._held = held

    def load(self) -> dict[str, FrameResult]:
        done: dict[str, FrameResult] = {}
        if not self.path.exists() or self.path.stat().st_size == 0:
            return done
        with self.path.open() as fh:
            header = fh.readline()
            try:
                theirs = json.loads(header).get("job") if header.strip() else None
            except (ValueError, AttributeError):
                theirs = None
            if theirs != self.job:
                raise JournalMismatch(self._mismatch(theirs))
            for number, line in enumerate(fh, start=2):
                try:
                    result = FrameResult.from_json(line)
                except MessageError:
                    # A torn last line from a kill mid-write: that image is redone.
                    log.warning("%s:%d: ignoring unreadable journal line", self.path, number)
                    continue
                done.setdefault(result.name, result)
        return done

    def _mismatch(self, theirs: object) -> str:
        if not isinstance(theirs, dict):
            what = "no job it belongs to (an older or foreign file)"
        else:
            what = "; ".join(f"{key} {theirs.get(key)!r} here, {value!r} now"
                             for key, value in self.job.items() if theirs.get(key) != value)
        return (f"{self.path} is the journal of another batch job ({what}): give --restart to discard it, "
                "or another --out")

    def append(self, result: FrameResult) -> None:
        if self._fh is None:
            new = not self.path.exists() or self.path.stat().st_size == 0
            self._fh = self.path.open("a")
            if new:
                self._fh.write(json.dumps({"job": self.job}) + "\n")
        self._fh.write(result.to_json() + "\n")
        self._fh.flush()

    def clear(self) -> None:
        """Start over (``--restart``): emptied in place, so the lock held on it stays."""
        self.close_writer()
        self.path.open("w").close()

    def close_writer(self) -> None:
        if self._fh is not None:
            self._fh.close()
            self._fh = None

    def close(self) -> None:
        """Stop writing and let go of the journal; an empty one is not left behind."""
        self.close_writer()
        if self._held is not None:
            if self.path.exists() and self.path.stat().st_size == 0:
                self.path.unlink()
            self._held.close()  # releases the lock
            self._held = None

    def remove(self) -> None:
        self.close()
        self.path.unlink(missing_ok=True)
