"""Redis connections: clients, the errors worth retrying, and the one retry policy.

The embedded server for runs without ``REDIS_URL`` is in ``embedded_redis.py``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar
from urllib.parse import urlsplit, urlunsplit

import redis
import redis.asyncio as aioredis
from redis.backoff import ExponentialBackoff

from . import metrics
from .logs import Throttled

log = logging.getLogger(__name__)
T = TypeVar("T")

# Errors after which a connection is worth retrying (Redis restarting, network blip).
TRANSIENT_ERRORS = (redis.ConnectionError, redis.TimeoutError, ConnectionError, TimeoutError, OSError)
# Refused credentials or permissions: retrying cannot help. redis-py derives
# AuthenticationError from ConnectionError, so handlers re-raise these first.
ACCESS_ERRORS = (redis.AuthenticationError, redis.exceptions.NoPermissionError)


def redact(url: str) -> str:
    """The URL with any password replaced, for logs."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    user = parts.username or ""
    host = parts.hostname or ""
    netloc = f"{user}:***@{host}" + (f":{parts.port}" if parts.port else "")
    return urlunsplit(parts._replace(netloc=netloc))


def _client_options(url: str, name: str) -> dict[str, Any]:
    options: dict[str, Any] = {
        "socket_connect_timeout": 3,
        "socket_timeout": 15,  # longer than any BLOCK we issue
        "health_check_interval": 10,
        "client_name": name,
    }
    if not url.startswith("unix:"):
        options["socket_keepalive"] = True  # TCP only
    return options


def connect(url: str, name: str = "emotion-stream") -> aioredis.Redis:
    """An asyncio client. Short internal retries; callers' loops own long outages."""
    from redis.asyncio.retry import Retry

    return aioredis.Redis.from_url(
        url, retry=Retry(ExponentialBackoff(cap=1.0, base=0.05), 3), **_client_options(url, name)
    )


def connect_sync(url: str, name: str = "emotion-stream") -> redis.Redis:
    from redis.retry import Retry

    return redis.Redis.from_url(url, retry=Retry(ExponentialBackoff(cap=1.0, base=0.05), 3), **_client_options(url, name))


class Backoff:
    """Exponential backoff with a cap, for reconnect loops: 0.1 s, 0.2 s, ... ``cap``."""

    def __init__(self, base: float = 0.1, cap: float = 5.0) -> None:
        self.base, self.cap, self.attempt = base, cap, 0

    def next_delay(self) -> float:
        delay = min(self.cap, self.base * 2.0**self.attempt)
        self.attempt += 1
        return delay

    def reset(self) -> None:
        self.attempt = 0


async def retrying(
    operation: Callable[[], Awaitable[T]],
    *,
    what: str,
    component: str,
    stop: asyncio.Event | None = None,
    give_up: Callable[[int], bool] | None = None,
    backoff: Backoff | None = None,
) -> T | None:
    """The one retry policy for Redis outages: await ``operation()`` until it succeeds.

    Outages (TRANSIENT_ERRORS) are retried with capped exponential backoff, each counted
    in ``redis_errors_total{component}`` and logged at most every 10 s; refused access
    (ACCESS_ERRORS) is raised at once, since retrying cannot heal it. Returns None when
    ``stop`` is set first or ``give_up(attempts)`` says so (the caller decides what an
    unfinished operation means); redis-py's own Retry only covers one command's short
    blips, this covers restarts that take minutes.
    """
    backoff = backoff or Backoff(0.1, 5.0)
    throttled = Throttled(log)
    while stop is None or not stop.is_set():
        try:
            return await operation()
        except ACCESS_ERRORS:
            raise
        except TRANSIENT_ERRORS as exc:
            metrics.REDIS_ERRORS.labels(component).inc()
            if give_up is not None and give_up(backoff.attempt):
                return None
            delay = backoff.next_delay()
            throttled.warning(what, "%s: Redis %s failed (%s); retrying in %.1f s", component, what, exc, delay)
            if stop is None:
                await asyncio.sleep(delay)
            else:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), delay)
    return None
