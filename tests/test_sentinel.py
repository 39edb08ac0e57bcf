"""Redis Sentinel as the engine: a master, its replica and one Sentinel (Debian's
redis-server, on loopback); the master SIGKILLed mid-run, its replica promoted."""

from __future__ import annotations

import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from emotion_stream.embedded_redis import free_port, server_process

from .conftest import require_system
from .procs import wait_for
from .test_pipeline import WORKER_FLAGS, faces_of

GROUP = "events-master"


class Servers:
    """A master, a replica of it, and a Sentinel watching them (quorum 1); with a
    ``password``, each of the three requires it (as Bitnami's Helm chart sets them up)."""

    def __init__(self, root: Path, password: str | None = None) -> None:
        self.binary = require_system("redis-server", "the Sentinel tests run Debian's redis-server")
        self.root = root
        self.password = password
        self.ports = {role: free_port() for role in ("master", "replica", "sentinel")}
        self.processes: dict[str, subprocess.Popen[bytes]] = {}

    def start(self) -> None:
        master, replica, sentinel = (self.ports[r] for r in ("master", "replica", "sentinel"))
        auth = [f"requirepass {self.password}", f"masterauth {self.password}"] if self.password else []
        self._run("master", [f"port {master}", "appendonly yes", *auth])
        self._run("replica", [f"port {replica}", "appendonly yes", f"replicaof 127.0.0.1 {master}", *auth])
        self._run("sentinel", [f"port {sentinel}", f"sentinel monitor {GROUP} 127.0.0.1 {master} 1",
                               f"sentinel down-after-milliseconds {GROUP} 1000",
                               f"sentinel failover-timeout {GROUP} 10000",
                               *([f"sentinel auth-pass {GROUP} {self.password}", f"requirepass {self.password}"]
                                 if self.password else [])], "--sentinel")
        wait_for(lambda: self.client("replica").info("replication").get("master_link_status") == "up", 30,
                 "the replica in sync")
        wait_for(lambda: self.master_port() == master, 30, "the Sentinel to see the master")

    def _run(self, role: str, lines: list[str], *flags: str) -> None:
        folder = self.root / role
        folder.mkdir(parents=True)
        config = folder / "redis.conf"
        config.write_text("\n".join([*lines, "bind 127.0.0.1", f"dir {folder}", "save ''",
                                     "repl-diskless-sync-delay 0", f"logfile {folder / 'redis.log'}"]) + "\n")
        self.processes[role] = server_process([self.binary, str(config), *flags])
        wait_for(lambda: self._pings(role), 30, f"the {role}")

    def _pings(self, role: str) -> bool:
        try:
            return bool(self.client(role).ping())
        except redis.ConnectionError:
            return False

    def client(self, role: str) -> redis.Redis:
        return redis.Redis(port=self.ports[role], password=self.password, socket_timeout=5)

    def master_port(self) -> int:
        _, port = self.client("sentinel").execute_command("SENTINEL", "GET-MASTER-ADDR-BY-NAME", GROUP)
        return int(port)

    @property
    def url(self) -> str:
        return f"redis+sentinel://127.0.0.1:{self.ports['sentinel']}/{GROUP}"

    def stop(self) -> None:
        for process in self.processes.values():
            if process.poll() is None:
                process.kill()
                process.wait()


@pytest.fixture()
def sentinel(tmp_path: Path) -> Iterator[Servers]:
    servers = Servers(tmp_path / "servers")
    try:
        servers.start()
        yield servers
    finally:
        servers.stop()


def test_a_sentinel_url_runs_the_pipeline_through_a_failover(sentinel, services):
    """Workers, ingest and tracking find the master through Sentinel; when it dies, the
    Sentinel promotes its replica and everything carries on there, without a restart."""
    from emotion_stream.redis_conn import connect_sync

    url = sentinel.url
    worker = services("worker", "worker", "--redis", url, *WORKER_FLAGS)
    ingest = services("ingest", "ingest", "sample:1", "--camera", "hall", "--fps", "10", "--redis", url)
    client = connect_sync(url, "tests")
    wait_for(lambda: len(faces_of(client, "hall")) >= 10, 90, "events through the first master")
    wait_for(lambda: sentinel.client("replica").info("replication").get("master_repl_offset", 0)
             >= sentinel.client("master").info("replication").get("master_repl_offset", 0), 30, "the replica caught up")
    before = max(f.seq for f in faces_of(client, "hall"))
    sentinel.processes["master"].send_signal(signal.SIGKILL)
    wait_for(lambda: sentinel.master_port() == sentinel.ports["replica"], 60, "the Sentinel to promote the replica")
    wait_for(lambda: max(f.seq for f in faces_of(client, "hall")) >= before + 30, 90,
             "events through the promoted replica")
    assert worker.alive() and ingest.alive()
    cameras = services("cameras", "cameras", "--redis", url, "--json")
    assert cameras.wait(60) == 0 and '"hall"' in cameras.output, cameras.output
    assert worker.stop() == 0 and ingest.stop() == 0
    assert "Traceback" not in worker.output + ingest.output
    client.close()


def test_a_sentinel_url_that_names_no_master_group_is_a_usage_error(services):
    job = services("bad", "cameras", "--redis", "redis+sentinel://127.0.0.1:26379")
    assert job.wait(60) == 2
    assert job.output.strip().splitlines()[-1].startswith(
        "emotion-stream cameras: error: --redis: the URL's path must be the master group's name")


def test_sentinels_that_require_a_password_are_given_it(tmp_path, services):
    """Bitnami's chart protects the Sentinels with the master's password: a URL without
    ``sentinel_password`` is refused in one line, with it the pipeline runs."""
    from emotion_stream.redis_conn import connect_sync

    secret = "s3nt1nel-pass"
    servers = Servers(tmp_path / "servers", password=secret)
    try:
        servers.start()
        port = servers.ports["sentinel"]
        bare = services("bare", "cameras", "--redis", f"redis+sentinel://:{secret}@127.0.0.1:{port}/{GROUP}")
        assert bare.wait(60) == 1
        url = f"redis+sentinel://:{secret}@127.0.0.1:{port}/{GROUP}?sentinel_password={secret}"
        worker = services("worker", "worker", "--redis", url, *WORKER_FLAGS)
        ingest = services("ingest", "ingest", "sample:1", "--camera", "vault", "--fps", "5", "--redis", url)
        client = connect_sync(url, "tests")
        wait_for(lambda: len(faces_of(client, "vault")) >= 3, 90, "events through password-protected Sentinels")
        assert worker.stop() == 0 and ingest.stop() == 0
        client.close()
        for service in (bare, worker, ingest):
            assert secret not in service.output
        assert bare.output.strip().splitlines()[-1].startswith("emotion-stream cameras: error: Redis refused access")
    finally:
        servers.stop()
