"""Metrics, dashboards and deployment files, checked against a real Prometheus."""

from __future__ import annotations

import json
import subprocess
import sys
import urllib.parse
import urllib.request
from pathlib import Path

import pytest
import yaml

from emotion_stream import keys
from emotion_stream.embedded_redis import free_port
from ingest.samples import write_clip

from .conftest import require_system
from .procs import wait_for
from .sse import SseClient
from .webhook_receiver import Receiver

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "dashboards"))
import build as dashboards  # noqa: E402


def http_get(url: str, timeout: float = 5) -> str:
    with urllib.request.urlopen(url, timeout=timeout) as response:
        return response.read().decode()


def scrape(port: int) -> str:
    return http_get(f"http://127.0.0.1:{port}/metrics")


def serving(port: int) -> bool:
    """Whether a process serves metrics on ``port`` yet (it is up)."""
    try:
        scrape(port)
        return True
    except OSError:
        return False


def sample_value(text: str, name: str, **labels: str) -> float:
    """Sum of the samples of ``name`` whose labels include ``labels``."""
    total = 0.0
    for line in text.splitlines():
        if not line.startswith(name):
            continue
        head, _, value = line.rpartition(" ")
        if head.split("{")[0] != name:
            continue
        if all(f'{k}="{v}"' in head for k, v in labels.items()):
            total += float(value)
    return total


def test_dashboard_json_is_generated_from_the_panel_table():
    assert (ROOT / "dashboards/grafana/emotion-stream.json").read_text() == dashboards.render()
    doc = json.loads(dashboards.render())
    assert len(dashboards.all_queries(doc)) >= 15
    for rel in ("dashboards/provisioning/datasources/prometheus.yml", "dashboards/provisioning/dashboards/provider.yml",
                "dashboards/prometheus.yml"):
        assert yaml.safe_load((ROOT / rel).read_text()), rel


@pytest.mark.slow
def test_prometheus_scrapes_pipeline_and_every_dashboard_query_has_data(redis_server, redis_client, services, tmp_path):
    prometheus = require_system("prometheus", "dashboard queries are evaluated by a real Prometheus")
    worker_port, ingest_port, prom_port, api_port, api_metrics = (free_port() for _ in range(5))
    url = redis_server.url
    receiver = Receiver("k")  # a webhook receiver, so the webhook series move too
    api_service = services("api", "api", "--redis", url, "--port", str(api_port), "--metrics-port", str(api_metrics),
                   "--webhook", receiver.url, "--webhook-secret", "k")
    wait_for(lambda: "serving http://" in api_service.output, 30, "the API")
    sse = SseClient(api_port, "/v1/events")
    clip = write_clip(tmp_path / "clip.avi", seconds=6, fps=10, faces=2)
    worker = services("worker", "worker", "--redis", url, "--metrics-port", str(worker_port), "--batch-size", "4")
    ingest = services("ingest", "ingest", str(clip), "--camera", "cam-a", "--redis", url, "--loop",
                      "--fps", "10", "--metrics-port", str(ingest_port))
    config = tmp_path / "prometheus.yml"
    config.write_text(yaml.safe_dump({
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
        "rule_files": [str(ROOT / "dashboards/alerts.yml")],
        "scrape_configs": [
            {"job_name": "worker", "static_configs": [{"targets": [f"127.0.0.1:{worker_port}"]}]},
            {"job_name": "ingest", "static_configs": [{"targets": [f"127.0.0.1:{ingest_port}"]}]},
            {"job_name": "api", "static_configs": [{"targets": [f"127.0.0.1:{api_metrics}"]}]},
        ],
    }))
    prom = subprocess.Popen(
        [prometheus, f"--config.file={config}", f"--storage.tsdb.path={tmp_path / 'tsdb'}",
         f"--web.listen-address=127.0.0.1:{prom_port}"],
        stdout=subprocess.DEVNULL, stderr=(tmp_path / "prometheus.log").open("wb"),
    )
    try:
        wait_for(lambda: _ok(f"http://127.0.0.1:{prom_port}/-/ready"), 60, "Prometheus to be ready")
        wait_for(lambda: _ok(f"http://127.0.0.1:{worker_port}/metrics"), 60, "worker metrics endpoint")
        api = f"http://127.0.0.1:{prom_port}/api/v1/query?query="
        # A malformed message, so the dead-letter series moves too: once Prometheus holds
        # the series at 0 (the worker creates it at start), as it does long before in a
        # deployment, so the increase is seen.
        dead = 'emotion_stream_frames_dead_lettered_total{reason="malformed_message"}'
        wait_for(lambda: json.loads(http_get(api + urllib.parse.quote(dead)))["data"]["result"], 60,
                 "Prometheus to scrape the worker", interval=0.5)
        redis_client.xadd(keys.frames("cam-a"), {"v": "1", "camera": "cam-a"})

        def processed() -> float:
            return sample_value(scrape(worker_port), "emotion_stream_frames_processed_total", camera="cam-a")

        wait_for(lambda: processed() >= 30, 120, "30 processed frames")
        wait_for(lambda: sample_value(scrape(worker_port), "emotion_stream_frames_dead_lettered_total") >= 1, 30,
                 "the malformed message's dead letter")
        text = scrape(worker_port)
        # The histograms of the issue, with non-zero counts.
        assert sample_value(text, "emotion_stream_end_to_end_seconds_count") >= 30
        for stage in ("queue_wait", "decode", "detect", "classify", "publish"):
            assert sample_value(text, "emotion_stream_stage_seconds_count", stage=stage) >= 30, stage
        assert 'le="0.001"' in text and 'le="5.0"' in text  # buckets resolve 1 ms ... 5 s
        assert sample_value(text, "emotion_stream_frames_dead_lettered_total", reason="malformed_message") == 1
        assert sample_value(text, "emotion_stream_faces_detected_total", detector="blazeface") >= 60
        assert sample_value(scrape(ingest_port), "emotion_stream_frames_ingested_total", camera="cam-a") >= 30

        doc = json.loads((ROOT / "dashboards/grafana/emotion-stream.json").read_text())
        queries = dashboards.all_queries(doc)

        def empty_panels() -> list[str]:
            missing = []
            for title, expr in queries:
                reply = json.loads(http_get(api + urllib.parse.quote(expr)))
                assert reply["status"] == "success", (title, expr, reply)
                if not reply["data"]["result"]:
                    missing.append(f"{title}: {expr}")
            return missing

        # The alert rules evaluate on the real series; the malformed message fires the
        # dead-letter alert (it has no `for`), and nothing else fires.
        wait_for(lambda: "EmotionStreamDeadLetters" in _alerts(prom_port, "firing"), 60, "the dead-letter alert")
        rules = json.loads(http_get(f"http://127.0.0.1:{prom_port}/api/v1/rules"))["data"]["groups"][0]["rules"]
        defined = (Path(__file__).parents[1] / "dashboards" / "alerts.yml").read_text().count("- alert: ")
        assert len(rules) == defined and all(rule["health"] == "ok" for rule in rules), rules
        assert _alerts(prom_port, "firing") == ["EmotionStreamDeadLetters"]
        wait_for(lambda: not empty_panels(), 90, "every dashboard query to return data", interval=2)
        p50 = _scalar(api, dashboards.quantile(0.5, "end_to_end_seconds"))
        p95 = _scalar(api, dashboards.quantile(0.95, "end_to_end_seconds"))
        assert 0 < p50 <= p95 < 5
        print(f"\nend-to-end latency via Prometheus: p50 {p50 * 1000:.1f} ms, p95 {p95 * 1000:.1f} ms")
        (tmp_path / "latency.txt").write_text(f"p50 {p50}\np95 {p95}\n")
    finally:
        prom.terminate()
        prom.wait(10)
        sse.close()
        receiver.shutdown()
    assert worker.stop() == 0 and ingest.stop() == 0 and api_service.stop() == 0


def _ok(url: str) -> bool:
    try:
        http_get(url, timeout=2)
        return True
    except OSError:
        return False


def _alerts(prom_port: int, state: str) -> list[str]:
    reply = json.loads(http_get(f"http://127.0.0.1:{prom_port}/api/v1/alerts"))
    return sorted(alert["labels"]["alertname"] for alert in reply["data"]["alerts"] if alert["state"] == state)


def test_alert_rules_pass_promtool_and_each_alert_is_tested():
    promtool = require_system("promtool", "alert rules are checked and unit-tested by Prometheus' own tool")
    for args in (["check", "config", "dashboards/prometheus.yml"], ["test", "rules", "dashboards/alerts_test.yml"]):
        result = subprocess.run([promtool, *args], capture_output=True, text=True, cwd=ROOT, timeout=60)
        assert result.returncode == 0, result.stdout + result.stderr
    alerts = {rule["alert"] for group in yaml.safe_load((ROOT / "dashboards/alerts.yml").read_text())["groups"]
              for rule in group["rules"]}
    tests = yaml.safe_load((ROOT / "dashboards/alerts_test.yml").read_text())["tests"]
    firing = {case["alertname"] for test in tests for case in test["alert_rule_test"] if case["exp_alerts"]}
    quiet = {case["alertname"] for test in tests for case in test["alert_rule_test"] if not case["exp_alerts"]}
    assert alerts == firing == quiet, (alerts, firing, quiet)


def _scalar(api: str, expr: str) -> float:
    reply = json.loads(http_get(api + urllib.parse.quote(expr)))
    return float(reply["data"]["result"][0]["value"][1])


def test_compose_file_runs_real_commands_with_valid_flags():
    from cli import build_parser

    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    services = compose["services"]
    assert {"redis", "prometheus", "grafana", "worker", "ingest", "webrtc", "api"} <= set(services)
    assert services["redis"]["image"].startswith("redis:7")
    assert services["prometheus"]["image"].startswith("prom/prometheus")
    assert services["grafana"]["image"].startswith("grafana/grafana")
    assert "3000:3000" in services["grafana"]["ports"] and "9090:9090" in services["prometheus"]["ports"]
    assert services["grafana"]["environment"]["GF_AUTH_ANONYMOUS_ENABLED"] == "true"
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert 'ENTRYPOINT ["emotion-stream"]' in dockerfile
    parser = build_parser()
    # Every package the project installs is copied into the image.
    for package in ("emotion_stream", "model", "tracks", "ingest", "worker", "batch", "api", "training", "bench", "cli"):
        assert f"COPY {package} ./{package}" in dockerfile, package
    for name in ("worker", "ingest", "webrtc", "api", "worker-gpu"):
        service = services[name]
        assert service["environment"]["REDIS_URL"] == "redis://redis:6379/0"
        assert service["environment"]["EMOTION_STREAM_METRICS_HOST"] == "0.0.0.0"
        try:
            args = parser.parse_args(service["command"])
        except SystemExit:
            pytest.fail(f"compose service {name} runs an invalid command: {service['command']}")
        assert args.command == name.removesuffix("-gpu")
    # The GPU worker: its own image target, a GPU reserved, only with --profile gpu.
    gpu = services["worker-gpu"]
    assert gpu["profiles"] == ["gpu"] and gpu["build"]["target"] == "gpu" and "FROM train AS gpu" in dockerfile
    # The default image serves without TensorFlow; the train target adds it.
    serve = dockerfile[dockerfile.index("FROM base AS serve"):]
    assert 'pip install . ' in serve and "[train]" not in serve and 'pip install ".[train]"' in dockerfile
    # The gateway listens on all interfaces in its container: it gets the token variable.
    assert services["webrtc"]["environment"]["EMOTION_STREAM_WEBRTC_TOKEN"] == "${EMOTION_STREAM_WEBRTC_TOKEN:-}"
    assert services["api"]["environment"]["EMOTION_STREAM_API_TOKENS"] == "${EMOTION_STREAM_API_TOKENS:-}"
    assert gpu["deploy"]["resources"]["reservations"]["devices"][0]["capabilities"] == ["gpu"]
    # Prometheus scrapes the port the services serve metrics on; Grafana mounts real files.
    scrape = yaml.safe_load((ROOT / "dashboards/prometheus.yml").read_text())
    ports = {c["port"] for job in scrape["scrape_configs"] for c in job["dns_sd_configs"]}
    assert ports == {int(services["worker"]["environment"]["EMOTION_STREAM_METRICS_PORT"])}
    for volume in services["grafana"]["volumes"] + services["prometheus"]["volumes"]:
        assert (ROOT / volume.split(":")[0]).exists(), volume
    assert "--scale" not in json.dumps(services)  # scaling is a CLI flag, not baked in
