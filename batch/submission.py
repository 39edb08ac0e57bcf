"""The submission CSV and the journal that makes batch runs resumable."""

from __future__ import annotations

import csv
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


class Journal:
    """Append-only JSON lines of FrameResults, flushed per line.

    An interrupted run leaves it behind; the next run with the same output path reads
    it and submits only the images not yet in it.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self._fh: TextIO | None = None

    def load(self) -> dict[str, FrameResult]:
        done: dict[str, FrameResult] = {}
        if not self.path.exists():
            return done
        with self.path.open() as fh:
            for number, line in enumerate(fh, start=1):
                try:
                    result = FrameResult.from_json(line)
                except MessageError:
                    # A torn last line from a kill mid-write: that image is redone.
                    log.warning("%s:%d: ignoring unreadable journal line", self.path, number)
                    continue
                done.setdefault(result.name, result)
        return done

    def append(self, result: FrameResult) -> None:
        if self._fh is None:
            self._fh = self.path.open("a")
        self._fh.write(result.to_json() + "\n")
        self._fh.flush()

    def close(self) -> None:
        if self._fh is not None:
            self._fh.close()
            self._fh = None

    def remove(self) -> None:
        self.close()
        self.path.unlink(missing_ok=True)
