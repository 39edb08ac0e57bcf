"""A cameras file: many cameras for one ingest process (``ingest --cameras FILE``).

One camera a line, its id and then its source, as ``ingest SOURCE --camera ID`` takes
them; blank lines and ``#`` comments are skipped::

    # id        source
    front-door  rtsp://user:secret@10.0.0.5/stream2
    desk        0
    lobby-tape  /videos/lobby.mp4
"""

from __future__ import annotations

from pathlib import Path

from emotion_stream.schema import validate_camera_id

from .sources import SourceSpec

MAX_CAMERAS = 256  # a line more is a mistake (a log file passed by accident), not a plan
MAX_BYTES = 1 << 20


def read_camera_list(path: Path) -> list[tuple[str, SourceSpec]]:
    """(camera id, source) of every line, in order. ValueError names the line at fault."""
    try:
        if path.stat().st_size > MAX_BYTES:
            raise ValueError(f"{path}: over {MAX_BYTES >> 20} MB; a cameras file has one short line a camera")
        text = path.read_text(encoding="utf-8-sig")
    except OSError as exc:
        raise ValueError(f"{path}: {exc.strerror or exc}") from None
    except UnicodeDecodeError:
        raise ValueError(f"{path}: not UTF-8 text") from None
    cameras: list[tuple[str, SourceSpec]] = []
    seen: dict[str, int] = {}
    for number, line in enumerate(text.splitlines(), start=1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        camera, source = (line.split(None, 1) + [""])[:2]
        where = f"{path}, line {number}"
        if not source:
            raise ValueError(f"{where}: a camera id and its source, separated by a space: {line[:80]!r}")
        try:
            validate_camera_id(camera)
        except ValueError as exc:
            raise ValueError(f"{where}: {exc}") from None
        if camera in seen:
            raise ValueError(f"{where}: camera {camera!r} again (first on line {seen[camera]})")
        seen[camera] = number
        cameras.append((camera, SourceSpec.parse(source)))
        if len(cameras) > MAX_CAMERAS:
            raise ValueError(f"{where}: over {MAX_CAMERAS} cameras; run more ingest processes")
    if not cameras:
        raise ValueError(f"{path}: no cameras (one a line: ID SOURCE)")
    return cameras
