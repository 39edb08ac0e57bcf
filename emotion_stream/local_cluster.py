"""A Redis Cluster on loopback ports, for tests and ``bench --only cluster``.

Real ``redis-server`` processes (Debian's, or any on PATH; ``redis-cli`` creates the
cluster with ``--cluster create``), each in its own folder, all removed by ``stop``.
A node can be killed (SIGKILL: no goodbye, as a crashed machine) to exercise failover.
"""

from __future__ import annotations

import functools
import random
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import redis

from .embedded_redis import server_process


@dataclass
class ClusterNode:
    port: int
    folder: Path
    process: subprocess.Popen[bytes]
    ca_cert: Path | None = None  # TLS: the CA the server's certificate is checked against

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def client(self) -> redis.Redis:
        tls: dict[str, Any] = {"ssl": True, "ssl_ca_certs": str(self.ca_cert)} if self.ca_cert else {}
        return redis.Redis(port=self.port, socket_connect_timeout=1, socket_timeout=5, **tls)

    def alive(self) -> bool:
        return self.process.poll() is None


class LocalCluster:
    """``masters`` masters with ``replicas`` replicas each on 127.0.0.1. ``tls``: (certificate,
    key) for TLS only (clients, replication and the cluster bus), the certificate being its
    own CA."""

    def __init__(self, masters: int = 3, replicas: int = 1, node_timeout_ms: int = 1000,
                 server: str | None = None, cli: str | None = None, tls: tuple[Path, Path] | None = None) -> None:
        self.masters, self.replicas, self.node_timeout_ms = masters, replicas, node_timeout_ms
        self.tls = tls
        self.server = server or shutil.which("redis-server") or ""
        self.cli = cli or shutil.which("redis-cli") or ""
        if not self.server or not self.cli:
            raise RuntimeError("a local Redis Cluster needs redis-server and redis-cli on PATH "
                               "(Debian: apt-get install redis-server; scripts/install-system-deps.sh)")
        self.root = Path(tempfile.mkdtemp(prefix="es-cluster-"))
        self.nodes: list[ClusterNode] = []

    @property
    def url(self) -> str:
        if self.tls:
            return f"rediss+cluster://{self.nodes[0].address}?ssl_ca_certs={self.tls[0]}"
        return f"redis+cluster://{self.nodes[0].address}"

    def start(self, timeout: float = 30.0) -> LocalCluster:
        try:
            for _ in range(self.masters * (1 + self.replicas)):
                # A node just started may not listen yet: never pick its ports again.
                taken = frozenset(n.port for n in self.nodes)
                self.nodes.append(self._start_node(_free_cluster_port(taken)))
            for node in self.nodes:
                _wait(functools.partial(_pings, node), timeout, f"redis-server on port {node.port}")
            tls = ["--tls", "--cacert", str(self.tls[0])] if self.tls else []
            subprocess.run(
                [self.cli, *tls, "--cluster", "create", *(n.address for n in self.nodes),
                 "--cluster-replicas", str(self.replicas), "--cluster-yes"],
                check=True, capture_output=True, timeout=timeout,
            )
            _wait(self.healthy, timeout, "the cluster to be ready")
        except BaseException:
            self.stop()  # no servers left behind by a failed start
            raise
        return self

    def _start_node(self, port: int) -> ClusterNode:
        folder = self.root / str(port)
        folder.mkdir()
        listen = [f"port {port}"]
        if self.tls:
            cert, key = self.tls
            listen = ["port 0", f"tls-port {port}", "tls-cluster yes", "tls-replication yes", f"tls-cert-file {cert}",
                      f"tls-key-file {key}", f"tls-ca-cert-file {cert}", "tls-auth-clients no"]
        config = "\n".join([
            *listen, "bind 127.0.0.1", f"dir {folder}", "cluster-enabled yes",
            f"cluster-config-file {folder / 'nodes.conf'}", f"cluster-node-timeout {self.node_timeout_ms}",
            "appendonly yes", "appendfsync everysec", "save ''", "protected-mode no",
            "repl-diskless-sync-delay 0",  # replicas in sync at once, so a failover can happen
            f"logfile {folder / 'redis.log'}",
        ])
        (folder / "redis.conf").write_text(config + "\n")
        process = server_process([self.server, str(folder / "redis.conf")])
        return ClusterNode(port, folder, process, self.tls[0] if self.tls else None)

    def healthy(self, replicas_online: bool = True) -> bool:
        """Every live node says the cluster is ok, ``masters`` masters serve the slots,
        and (``replicas_online``) each has its replicas online: a replica that never
        synced cannot take over."""
        live = [n for n in self.nodes if n.alive()]
        try:
            for node in live:
                info = _command(node, "CLUSTER", "INFO")
                text = info.decode() if isinstance(info, bytes) else str(info)
                if "cluster_state:ok" not in text:
                    return False
            masters = self.master_nodes()
            if len(masters) != self.masters:
                return False
            for node in masters if replicas_online else []:
                replication = node.client().info("replication")
                online = [v for k, v in replication.items() if k.startswith("slave") and v.get("state") == "online"]
                if len(online) < min(self.replicas, len(live) - self.masters):
                    return False
            return True
        except redis.RedisError:
            return False

    def master_nodes(self) -> list[ClusterNode]:
        """The live nodes that currently serve slots."""
        masters = []
        for node in self.nodes:
            if not node.alive():
                continue
            try:
                role = _command(node, "ROLE")[0]
            except redis.RedisError:
                continue
            if (role.decode() if isinstance(role, bytes) else role) == "master":
                masters.append(node)
        return masters

    def node_of(self, key: str) -> ClusterNode:
        """The master now serving ``key``'s slot."""
        asked = self.master_nodes()[0]
        slot = int(_command(asked, "CLUSTER", "KEYSLOT", key))
        for start, end, master, *_replicas in _command(asked, "CLUSTER", "SLOTS"):
            if int(start) <= slot <= int(end):
                return next(n for n in self.nodes if n.port == int(master[1]))
        raise LookupError(f"no master serves {key!r}")

    def kill(self, node: ClusterNode) -> None:
        node.process.send_signal(signal.SIGKILL)
        node.process.wait()

    def stop(self) -> None:
        for node in self.nodes:
            if node.alive():
                node.process.terminate()
        for node in self.nodes:
            try:
                node.process.wait(10)
            except subprocess.TimeoutExpired:
                node.process.kill()
                node.process.wait()
        shutil.rmtree(self.root, ignore_errors=True)

    def __enter__(self) -> LocalCluster:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _command(node: ClusterNode, *args: str) -> Any:
    return node.client().execute_command(*args)  # type: ignore[no-untyped-call]  # unannotated in redis-py


def _free_cluster_port(taken: frozenset[int] = frozenset()) -> int:
    """A port free with its cluster-bus port (+10000), clear of the ``taken`` nodes'
    ports and bus ports; so at most 55535."""
    for _ in range(200):
        port = random.randint(20_000, 45_000)
        if taken & {port, port + 10_000, port - 10_000}:
            continue
        if _bindable(port) and _bindable(port + 10_000):
            return port
    raise RuntimeError("no free port pair for a cluster node")


def _bindable(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _pings(node: ClusterNode) -> bool:
    try:
        return bool(node.client().ping())
    except redis.RedisError:
        return False


def _wait(predicate: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(0.1)
