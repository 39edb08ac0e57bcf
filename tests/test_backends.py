"""Backend neutrality: the same model gives the same answers on TensorFlow and JAX, and
the model and analyzer tests pass under JAX too (CPU; a GPU machine runs the same code)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]

_PROBE = """
import json, sys
import numpy as np
from ingest.samples import sample_face
from model import EmotionModel
face = sample_face()
crops = [face, face[::2, ::2], np.ascontiguousarray(face[:, ::-1]), face[50:450, 100:500]]
out = {}
for weights in (None, "fer2013"):
    model = EmotionModel(weights, runtime="keras")
    out[str(weights)] = {"backend": model.backend, "device": model.device,
                         "p": model.predict_proba(crops).tolist()}
print(json.dumps(out))
"""


def _probe(backend: str) -> dict:
    env = {**os.environ, "KERAS_BACKEND": backend}
    result = subprocess.run([sys.executable, "-c", _PROBE], cwd=ROOT, env=env, capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


def _has(module: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(module) is not None


@pytest.mark.skipif(not _has("jax"), reason="jax is not installed (it is in the test extra)")
def test_tensorflow_and_jax_give_the_same_probabilities():
    tf, jax = _probe("tensorflow"), _probe("jax")
    for weights in tf:
        assert tf[weights]["backend"] == "tensorflow" and jax[weights]["backend"] == "jax"
        a, b = np.array(tf[weights]["p"]), np.array(jax[weights]["p"])
        assert a.shape == (4, 9)
        np.testing.assert_allclose(a, b, atol=1e-4)
        assert (a.argmax(1) == b.argmax(1)).all()


@pytest.mark.slow
@pytest.mark.skipif(not _has("jax"), reason="jax is not installed (it is in the test extra)")
def test_model_and_analyzer_tests_pass_under_jax():
    env = {**os.environ, "KERAS_BACKEND": "jax"}
    result = subprocess.run(
        # (test_blazeface is not here: the detector runs in LiteRT, whatever Keras' backend.)
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests/test_model.py",
         "tests/test_calibration.py"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=900,
    )
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    assert " passed" in result.stdout and "failed" not in result.stdout


def test_device_check_fails_when_forced_onto_the_cpu():
    """The GPU check must not pass on a run that used no accelerator."""
    exe = str(Path(sys.executable).with_name("emotion-stream"))
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": ""}
    result = subprocess.run([exe, "bench", "--device-check"], env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 3, result.stdout + result.stderr[-2000:]
    report = json.loads(result.stdout)
    assert report["device"] == "cpu" and "no GPU" in report["verdict"]


def test_cpu_pool_and_one_classifier_call_per_micro_batch_under_load(redis_server, redis_client, services):
    """Three cameras of two faces each, queued up, then one worker with a pool of CPU
    threads: every frame is analysed once, and the classifier sees the faces of many
    frames in each call (the batch an accelerator needs)."""
    from emotion_stream import keys
    from emotion_stream.embedded_redis import free_port

    from .procs import wait_for
    from .test_observability import sample_value, scrape

    url = redis_server.url
    cameras = ("pool-a", "pool-b", "pool-c")
    for camera in cameras:  # a backlog first, so micro-batches fill up
        feeder = services(f"ingest-{camera}", "ingest", "sample:2", "--camera", camera, "--redis", url,
                          "--fps", "30", "--duration", "3")
        assert feeder.wait(60) == 0, feeder.output
    port = free_port()
    worker = services("worker", "worker", "--redis", url, "--cpu-threads", "2", "--batch-size", "16",
                      "--max-frame-age", "600", "--metrics-port", str(port))

    def stats() -> list[tuple[int, int]]:
        return [(int(redis_client.hget(keys.stats(c), "ingested") or 0), int(redis_client.hget(keys.stats(c), "processed") or 0))
                for c in cameras]

    wait_for(lambda: all(p == i > 30 for i, p in stats()), 180, "every queued frame analysed")
    text = scrape(port)
    calls = sample_value(text, "emotion_stream_classify_batch_faces_count")
    faces = sample_value(text, "emotion_stream_classify_batch_faces_sum")
    frames = sum(i for i, _ in stats())
    assert faces >= 2 * frames * 0.9  # two faces a frame, found
    assert faces / calls >= 8, (faces, calls)  # many frames' faces per classifier call
    assert sample_value(text, "emotion_stream_cpu_stage_queue_frames") == 0
    assert worker.stop() == 0


@pytest.mark.parametrize("detector", ["keras", "mtcnn"])
def test_the_webrtc_stack_loads_after_tensorflow(detector):
    """A gateway or worker that loaded TensorFlow (a Keras model, MTCNN) can still load
    aiortc: TensorFlow's global BoringSSL symbols used to crash libsrtp's self-test."""
    load = ("EmotionModel(runtime='keras')" if detector == "keras"
            else "__import__('model.mtcnn_detector').mtcnn_detector.MTCNNDetector()")
    code = f"from model import EmotionModel\n{load}\nimport aiortc\nprint('loaded')"
    env = {**os.environ, "KERAS_BACKEND": "tensorflow"}
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 0 and result.stdout.strip() == "loaded", (result.returncode, result.stderr[-2000:])
