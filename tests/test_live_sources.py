"""Live sources for real: RTSP against GStreamer's RTSP server, WebRTC from headless Chromium."""

from __future__ import annotations

import json
import signal
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path

import cv2
import numpy as np
import pytest

from emotion_stream import keys
from emotion_stream.embedded_redis import free_port
from ingest.samples import sample_frame, write_y4m

from .conftest import missing_system_part, require_system
from .procs import wait_for
from .test_observability import sample_value, scrape
from .test_pipeline import faces_of

ROOT = Path(__file__).resolve().parents[1]
OUTPUT = ROOT / "test-output"  # screenshots kept for review (git-ignored)


def _rtsp_server(port: int, pattern: str, log: Path) -> subprocess.Popen[bytes]:
    python = "/usr/bin/python3"  # Debian's, with python3-gi (not the venv's or pyenv's)
    if not Path(python).exists():
        missing_system_part("Debian's /usr/bin/python3 not installed")
    probe = subprocess.run([python, "-c", "import gi; gi.require_version('GstRtspServer', '1.0')"],
                           capture_output=True)
    if probe.returncode != 0:
        missing_system_part("GStreamer RTSP server bindings (python3-gi, gir1.2-gst-rtsp-server-1.0) not installed")
    server = subprocess.Popen([python, str(ROOT / "tests" / "rtsp_server.py"), str(port), pattern],
                              stdout=subprocess.PIPE, stderr=log.open("wb"))
    assert server.stdout is not None and server.stdout.readline().strip() == b"ready", log.read_text()
    return server


@pytest.mark.slow
def test_rtsp_camera_survives_the_server_going_away(redis_server, redis_client, services, tmp_path):
    frames = tmp_path / "frames"
    frames.mkdir()
    for i in range(30):
        cv2.imwrite(str(frames / f"frame_{i:03d}.jpg"), sample_frame(i / 10, faces=1))
    port, metrics_port = free_port(), free_port()
    pattern = str(frames / "frame_%03d.jpg")
    server = _rtsp_server(port, pattern, tmp_path / "rtsp-1.log")
    url = redis_server.url
    try:
        services("worker", "worker", "--redis", url, "--max-frame-age", "10")
        ingest = services("ingest", "ingest", f"rtsp://127.0.0.1:{port}/cam", "--camera", "ipcam",
                          "--redis", url, "--fps", "5", "--metrics-port", str(metrics_port))
        wait_for(lambda: len(faces_of(redis_client, "ipcam")) >= 5, 90, "events from the RTSP camera")
        emotions = [f.emotion for f in faces_of(redis_client, "ipcam")]
        assert sum(e in ("neutral", "sad", "happy") for e in emotions) >= 0.7 * len(emotions), emotions
        reconnects_before = sample_value(scrape(metrics_port), "emotion_stream_source_reconnects_total", camera="ipcam")

        server.send_signal(signal.SIGTERM)
        server.wait(10)
        time.sleep(8)  # outage: reads time out, ingest retries with backoff
        during = max(f.seq for f in faces_of(redis_client, "ipcam"))
        server = _rtsp_server(port, pattern, tmp_path / "rtsp-2.log")

        wait_for(lambda: max(f.seq for f in faces_of(redis_client, "ipcam")) >= during + 5, 90,
                 "events to resume after the RTSP server came back")
        reconnects_after = sample_value(scrape(metrics_port), "emotion_stream_source_reconnects_total", camera="ipcam")
        assert reconnects_after > reconnects_before
        assert "reconnecting" in ingest.output or "cannot open" in ingest.output
        assert ingest.alive()
    finally:
        server.kill()
        server.wait()


def _status(url: str, data: bytes | None = None, token: str | None = None) -> int:
    headers = {"Content-Type": "application/json", **({"Authorization": f"Bearer {token}"} if token else {})}
    request = urllib.request.Request(url, data=data, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return response.status
    except urllib.error.HTTPError as exc:
        return exc.code
    except OSError:
        return 0  # not listening (yet)


@pytest.mark.slow
def test_browser_camera_over_webrtc_gets_annotated_video_and_events(redis_server, redis_client, services, tmp_path):
    chromium = require_system("chromium", "the WebRTC test drives a real browser")
    from playwright.sync_api import sync_playwright

    clip = write_y4m(tmp_path / "faces.y4m", seconds=4, fps=15, faces=2)
    port, metrics_port = free_port(), free_port()
    token = "t0ken-for-tests"
    url = redis_server.url
    services("worker", "worker", "--redis", url, "--max-frame-age", "5")
    gateway = services("webrtc", "webrtc", "--redis", url, "--port", str(port), "--token", token,
                       "--fps", "8", "--metrics-port", str(metrics_port))
    base = f"http://127.0.0.1:{port}"
    wait_for(lambda: _status(f"{base}/client.js") == 200, 60, "the gateway to listen")
    # The token protects the page and the offer endpoint.
    assert _status(f"{base}/") == 401
    assert _status(f"{base}/?token=wrong") == 401
    assert _status(f"{base}/offer", json.dumps({"sdp": "x", "type": "offer"}).encode()) == 401
    # Authentication comes first: junk from a stranger is 401, from a token holder 400.
    assert _status(f"{base}/offer", b"not json") == 401
    assert _status(f"{base}/offer", b"not json", token) == 400

    OUTPUT.mkdir(exist_ok=True)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium, args=[
            "--no-sandbox", "--disable-gpu", "--use-fake-device-for-media-stream", "--use-fake-ui-for-media-stream",
            f"--use-file-for-fake-video-capture={clip}", "--disable-background-networking", "--disable-component-update",
            "--disable-sync", "--no-first-run",
        ])
        page = browser.new_page(viewport={"width": 1100, "height": 900})
        page.goto(f"{base}/?token={token}&autostart=1")
        page.wait_for_function("document.querySelectorAll('#events li').length >= 10", timeout=120_000)
        # The page's latency is a median of the last 50 events: read it once warm-up has passed.
        page.wait_for_function("Number(document.getElementById('count').textContent) >= 150", timeout=120_000)
        page.wait_for_function(
            "(() => { const v = document.getElementById('remote'); return v.videoWidth > 0 && v.currentTime > 1; })()",
            timeout=60_000)
        time.sleep(1.0)  # let a few annotated frames arrive
        # People: the two portraits are tracked; the timeline draws a row per person.
        page.wait_for_function("Number(document.getElementById('timeline').dataset.rows) >= 2", timeout=30_000)
        camera = page.text_content("#camera")
        emotions = page.eval_on_selector_all("#events li", "els => els.map(e => e.dataset.emotion)")
        tracked = page.eval_on_selector_all("#events li", "els => els.map(e => [e.dataset.track, e.dataset.trackEmotion])")
        arrivals = page.eval_on_selector_all("#people li", "els => els.map(e => e.dataset.type)")
        latency_ms = float(page.text_content("#latency") or "nan")
        page.screenshot(path=str(OUTPUT / "webrtc-page.png"), full_page=True)
        remote_png = page.locator("#remote").screenshot(path=str(OUTPUT / "webrtc-annotated-video.png"))
        # The gateway restarts (a deploy): the page says so and comes back by itself, on a
        # new session, with the camera it already has. Before, it showed "connected" and a
        # frozen video until reloaded.
        assert gateway.stop() == 0 and "Traceback" not in gateway.output
        page.wait_for_function("document.getElementById('status').textContent.startsWith("
                               "'the gateway ended the session; connecting again')", timeout=30_000)
        seen = int(page.text_content("#count") or 0)
        gateway = services("webrtc-2", "webrtc", "--redis", url, "--port", str(port), "--token", token,
                           "--fps", "8", "--metrics-port", str(metrics_port))
        page.wait_for_function(f"document.getElementById('camera').textContent !== '{camera}' && "
                               f"Number(document.getElementById('count').textContent) >= {seen + 5}", timeout=90_000)
        again = page.text_content("#camera")
        assert again and again.startswith("webrtc-") and page.text_content("#status") == "connected"
        page.close()
        browser.close()

    assert camera and camera.startswith("webrtc-")
    assert all(track and emotion for track, emotion in tracked), tracked
    assert len({track for track, _ in tracked}) >= 2 and arrivals.count("track_started") >= 2, (tracked, arrivals)
    # A calm portrait: most events say so (video compression makes single frames noisy).
    calm = sum(e in ("neutral", "sad", "happy") for e in emotions)
    assert len(emotions) >= 10 and calm >= 0.7 * len(emotions), emotions
    video = cv2.imdecode(np.frombuffer(remote_png, np.uint8), cv2.IMREAD_COLOR)
    assert video is not None and video.shape[0] > 100
    assert video.std() > 20, "the returned video area is blank"
    faces = faces_of(redis_client, camera)
    assert len(faces) >= 10 and all(f.camera == camera for f in faces)
    assert 0 < latency_ms < 5000
    (OUTPUT / "webrtc-latency.txt").write_text(f"gateway-to-page median latency: {latency_ms:.0f} ms\n")
    print(f"\nWebRTC: {len(faces)} face events for {camera}; gateway-to-page median latency {latency_ms:.0f} ms")

    # Closing the tab frees the session: the camera is withdrawn, no peer left.
    wait_for(lambda: not redis_client.sismember(keys.CAMERAS, again), 60, "the camera to be withdrawn")
    wait_for(lambda: sample_value(scrape(metrics_port), "emotion_stream_webrtc_peers") == 0, 30, "no open peers")
    # Each session is a camera: its series go with it (they kept a camera label each, and
    # after 64 browser sessions every new one was "other").
    assert 'camera="webrtc-' not in scrape(metrics_port)
    # ... and so do its frames, and its history expires (each session stayed in Redis for good).
    assert not redis_client.exists(keys.frames(again)) and 0 < redis_client.ttl(keys.events(again)) <= 86_400
    assert gateway.alive() and "session closed" in gateway.output
