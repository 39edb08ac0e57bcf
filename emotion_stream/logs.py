"""Logging set-up for services, password redaction, and a throttle for per-frame warnings."""

from __future__ import annotations

import json
import logging
import re
import sys
import time
from datetime import UTC, datetime
from typing import Any

# scheme://user:password@ in any text: Redis, RTSP, HTTP URLs all carry credentials so;
# and a URL's query parameter named *password (a Sentinel URL's sentinel_password).
_CREDENTIALS = re.compile(r"(?P<head>[A-Za-z][A-Za-z0-9+.-]*://[^\s:/@]*):(?P<secret>[^\s@/]*)@")
_QUERY_SECRET = re.compile(r"(?P<head>[?&][A-Za-z_]*password=)[^&\s'\"]*")


def redact(text: str) -> str:
    """``text`` with the password of every URL in it replaced by ***."""
    text = _CREDENTIALS.sub(lambda m: f"{m.group('head')}:***@", text)
    return _QUERY_SECRET.sub(lambda m: f"{m.group('head')}***", text)


class _Redacting(logging.Filter):
    """No log line carries a URL's password, whoever logs it."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        cleaned = redact(message)
        if cleaned != message:
            record.msg, record.args = cleaned, None
        return True


class TextLines(logging.Formatter):
    """Readable lines; a traceback is redacted too (a failed connection's may carry its URL)."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)-7s %(name)s: %(message)s")

    def formatException(self, ei: Any) -> str:  # noqa: N802 - logging's API
        return redact(super().formatException(ei))


class JsonLines(TextLines):
    """A record as one JSON object on one line (time in UTC, level, logger, message, and
    the traceback if any), for log collectors that index fields (Loki, Elasticsearch,
    Cloud Logging)."""

    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        if record.stack_info:
            entry["stack"] = self.formatStack(record.stack_info)
        return json.dumps(entry, ensure_ascii=False)


def setup_logging(level: str = "INFO", fmt: str = "text") -> None:
    """Logs to stderr at ``level``: readable lines, or JSON lines (``fmt="json"``)."""
    logging.basicConfig(level=level.upper(), stream=sys.stderr, force=True)
    for handler in logging.getLogger().handlers:
        handler.addFilter(_Redacting())
        handler.setFormatter(JsonLines() if fmt == "json" else TextLines())
    # TensorFlow/absl chatter is not ours to show at INFO.
    for noisy in ("tensorflow", "absl", "h5py", "aioice", "aiortc", "matplotlib", "PIL"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


class Throttled:
    """Log a recurring condition at most once per ``interval`` seconds, with the count since.

    Per-frame problems (stale frames, corrupt JPEGs) can happen hundreds of times a second;
    every one is counted in a metric, and this keeps the log readable while never silent.
    """

    def __init__(self, logger: logging.Logger, interval: float = 10.0) -> None:
        self._logger = logger
        self._interval = interval
        self._last: dict[str, float] = {}
        self._count: dict[str, int] = {}

    def warning(self, key: str, msg: str, *args: object) -> None:
        self._count[key] = self._count.get(key, 0) + 1
        now = time.monotonic()
        if now - self._last.get(key, -1e9) >= self._interval:
            n = self._count.pop(key)
            self._last[key] = now
            suffix = f" ({n} times since last report)" if n > 1 else ""
            self._logger.warning(msg + suffix, *args)
