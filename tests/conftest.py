"""Shared fixtures: real images generated in code, the real model, system-part checks."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import pytest

from model.runtime import srtp_before_tensorflow

# Tests import Keras (hence TensorFlow) directly, and later ones load aiortc in this process.
srtp_before_tensorflow()

SHARED_FACES = Path(__file__).resolve().parents[2] / "shared" / "data" / "faces"
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


def missing_system_part(message: str) -> None:
    """A system part the test needs is absent: skip locally, fail in CI."""
    message += "; run scripts/install-system-deps.sh"
    if IN_CI:
        pytest.fail(message)
    pytest.skip(message)


def require_system(binary: str, why: str) -> str:
    """Path of a system binary the test needs."""
    path = shutil.which(binary)
    if path is None:
        missing_system_part(f"{binary} not installed ({why})")
    return path  # type: ignore[return-value]


@pytest.fixture(scope="session")
def face_bgr() -> np.ndarray:
    from ingest.samples import sample_face

    return sample_face()


@pytest.fixture(scope="session")
def shared_faces() -> Path:
    """The labelled photo set in ../shared (absent on a fresh clone: those tests skip)."""
    if not (SHARED_FACES / "test_labels.csv").is_file():
        pytest.skip(f"{SHARED_FACES} not present")
    return SHARED_FACES


@pytest.fixture(scope="session")
def default_model():
    from model import EmotionModel

    return EmotionModel()


@pytest.fixture(scope="session")
def blazeface_analyzer(default_model):
    from model import FaceAnalyzer, create_detector

    return FaceAnalyzer(default_model, create_detector("blazeface"))


@pytest.fixture(scope="session")
def opencv_analyzer(default_model):
    from model import FaceAnalyzer, create_detector

    return FaceAnalyzer(default_model, create_detector("opencv"))


@pytest.fixture(scope="session")
def mtcnn_analyzer(default_model):
    from model import FaceAnalyzer, create_detector

    return FaceAnalyzer(default_model, create_detector("mtcnn"))


@pytest.fixture()
def redis_server(tmp_path):
    """A real redis-server process (the embedded binary) on a free loopback port."""
    from emotion_stream.embedded_redis import EmbeddedRedis, free_port

    server = EmbeddedRedis(port=free_port(), data_dir=tmp_path / "redis")
    server.start()
    yield server
    server.cleanup()


@pytest.fixture()
def redis_client(redis_server):
    from emotion_stream.redis_conn import connect_sync

    client = connect_sync(redis_server.url, "tests")
    yield client
    client.close()


@pytest.fixture()
def services(tmp_path):
    """Start CLI services; all are killed at teardown. Their logs are in tmp_path/logs."""
    from .procs import Service

    started: list[Service] = []
    log_dir = tmp_path / "logs"
    log_dir.mkdir()

    def start(name: str, *args: str, env: dict[str, str] | None = None) -> Service:
        service = Service(log_dir, name, *args, env=env)
        started.append(service)
        return service

    yield start
    for service in started:
        service.close()
