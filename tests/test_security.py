"""Redis auth (password and ACL user) and TLS against real servers; secrets stay out of
logs and metrics; network endpoints bind to loopback unless told otherwise."""

from __future__ import annotations

import datetime
import ipaddress

import psutil
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from emotion_stream.embedded_redis import EmbeddedRedis, free_port
from emotion_stream.logs import redact
from emotion_stream.redis_conn import connect_sync

from .conftest import missing_system_part, require_system
from .procs import wait_for
from .test_observability import scrape
from .test_pipeline import WORKER_FLAGS, faces_of

PASSWORD = "s3cret-Pa55word"
USER_PASSWORD = "u5er-Pa55word"


def test_redact_hides_passwords():
    assert redact(f"redis://:{PASSWORD}@host:6379/0") == "redis://:***@host:6379/0"
    assert redact(f"rediss://app:{PASSWORD}@h:1/0") == "rediss://app:***@h:1/0"
    assert redact("redis://host:6379/0") == "redis://host:6379/0"


def _no_secret_anywhere(*texts: str) -> None:
    for text in texts:
        assert PASSWORD not in text and USER_PASSWORD not in text


@pytest.mark.slow
def test_password_and_acl_user(tmp_path, services):
    with EmbeddedRedis(port=free_port(), password=PASSWORD, data_dir=tmp_path / "redis") as server:
        admin = connect_sync(server.url)
        # The README's least-privilege user: no @dangerous command (CONFIG, KEYS, FLUSHALL...)
        # but naming a connection (@dangerous on Redis 6.2) and INFO (the eviction check),
        # and the pub/sub patterns that follow every camera named as they are.
        least = ["+@all", "-@dangerous", "+client|setname", "+info"]
        admin.execute_command("ACL", "SETUSER", "app", "on", f">{USER_PASSWORD}", "resetkeys", "~emotion-stream:*",
                              "resetchannels", "&emotion-stream:*", "&emotion-stream:events:*",
                              "&emotion-stream:tracks:*", *least)
        admin.execute_command("ACL", "SETUSER", "narrow", "on", f">{USER_PASSWORD}", "resetkeys", "~emotion-stream:*",
                              "resetchannels", "&emotion-stream:*", *least[:-1])  # nor INFO
        user_url = f"redis://app:{USER_PASSWORD}@127.0.0.1:{server.port}/0"
        metrics_port = free_port()
        worker = services("worker", "worker", "--redis", user_url, *WORKER_FLAGS, "--metrics-port", str(metrics_port))
        ingest = services("ingest", "ingest", "sample:1", "--camera", "vault", "--fps", "5", "--redis", user_url)
        wait_for(lambda: len(faces_of(admin, "vault")) >= 3, 90, "events through an ACL user")
        follow = services("subscribe", "subscribe", "--redis", user_url, "--count", "3")
        assert follow.wait(60) == 0, follow.output[-2000:]
        narrow_url = user_url.replace("app:", "narrow:")
        narrow = services("narrow", "subscribe", "--redis", narrow_url, "--count", "3")
        assert narrow.wait(60) == 1
        blind = services("blind", "worker", "--redis", narrow_url, *WORKER_FLAGS, "--duration", "3")
        assert blind.wait(60) == 0, blind.output[-2000:]
        assert "cannot read Redis' maxmemory policy (INFO refused)" in blind.output  # said once, and it works on
        assert narrow.output.strip().splitlines()[-1].endswith(
            "(to follow every camera, an ACL user needs &emotion-stream:events:* &emotion-stream:tracks:*)")
        # Wrong credentials: a clear error, retried, and never echoed.
        bad = services("bad-worker", "worker", "--redis", f"redis://app:wrong-{USER_PASSWORD}@127.0.0.1:{server.port}/0")
        no_auth = services("no-auth", "ingest", "sample:1", "--camera", "x", "--redis",
                           f"redis://127.0.0.1:{server.port}/0", "--duration", "6")
        assert bad.wait(60) == 1 and no_auth.wait(60) == 1  # fail fast: retrying cannot fix credentials
        metrics_text = scrape(metrics_port)
        for service in (worker, ingest, bad, no_auth):
            _no_secret_anywhere(service.output)
        _no_secret_anywhere(metrics_text)
        assert "error: Redis refused access: invalid username-password pair" in bad.output
        refused = no_auth.output.splitlines()[-1]
        assert refused.startswith("emotion-stream ingest: error: Redis refused access:") and "authenticat" in refused.lower()
        assert "Traceback" not in bad.output + no_auth.output
        admin.close()


def _certificates(folder):
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "emotion-stream test")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
        .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost"),
                                                    x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = folder / "server.crt", folder / "server.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL,
                                           serialization.NoEncryption()))
    return cert_path, key_path


@pytest.mark.slow
def test_tls_with_password(tmp_path, services):
    binary = require_system("redis-server", "Debian's redis-server is built with TLS")
    cert, key = _certificates(tmp_path)
    tls_port = free_port()
    config = {"tls-port": str(tls_port), "tls-cert-file": str(cert), "tls-key-file": str(key),
              "tls-ca-cert-file": str(cert), "tls-auth-clients": "no"}
    server = EmbeddedRedis(password=PASSWORD, binary=binary, data_dir=tmp_path / "redis", extra_config=config)
    try:
        server.start()
    except RuntimeError as exc:
        missing_system_part(f"{binary} cannot serve TLS: {exc}")
    with server:
        url = f"rediss://:{PASSWORD}@127.0.0.1:{tls_port}/0?ssl_ca_certs={cert}"
        services("worker", "worker", "--redis", url, *WORKER_FLAGS)
        ingest = services("ingest", "ingest", "sample:1", "--camera", "tls-cam", "--fps", "5", "--redis", url)
        admin = connect_sync(server.url)  # the private unix socket
        wait_for(lambda: len(faces_of(admin, "tls-cam")) >= 3, 90, "events over TLS")
        clients = admin.client_list()
        assert any(c.get("name") == "emotion-stream-ingest-tls-cam" for c in clients)
        _no_secret_anywhere(ingest.output)
        admin.close()


def _listening_addresses(pid: int, port: int) -> set[str]:
    return {c.laddr.ip for c in psutil.Process(pid).net_connections(kind="tcp")
            if c.status == psutil.CONN_LISTEN and c.laddr.port == port}


def test_metrics_and_webrtc_bind_to_loopback_by_default(redis_server, services):
    metrics_port, web_port = free_port(), free_port()
    worker = services("worker", "worker", "--redis", redis_server.url, "--metrics-port", str(metrics_port))
    gateway = services("webrtc", "webrtc", "--redis", redis_server.url, "--port", str(web_port))
    wait_for(lambda: _listening_addresses(worker.process.pid, metrics_port), 60, "worker metrics listening")
    wait_for(lambda: _listening_addresses(gateway.process.pid, web_port), 60, "gateway listening")
    assert _listening_addresses(worker.process.pid, metrics_port) == {"127.0.0.1"}
    assert _listening_addresses(gateway.process.pid, web_port) == {"127.0.0.1"}
