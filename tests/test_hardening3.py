"""What a second hostile hour found (issue 29), each against real processes."""

from __future__ import annotations

import re
import time
from datetime import datetime

import cv2

from emotion_stream import keys
from emotion_stream.schema import FrameKind, FrameMessage
from ingest.samples import sample_frame

from .procs import wait_for
from .test_pipeline import WORKER_FLAGS, faces_of

JPEG = cv2.imencode(".jpg", sample_frame(0.0))[1].tobytes()


def _live(client, camera: str, seq: int, captured_at: float) -> None:
    client.sadd(keys.CAMERAS, camera)
    client.xadd(keys.frames(camera), FrameMessage(camera, seq, captured_at, FrameKind.LIVE, JPEG, 640, 480).to_fields())


def _stamp(line: str) -> float:
    return datetime.strptime(line[:23], "%Y-%m-%d %H:%M:%S,%f").timestamp()


# ------------------------------------------------------------ 1. a capture time going backwards
def test_a_capture_time_stepping_back_leaves_tracking_alive_for_every_camera(redis_server, redis_client, services):
    """One frame stamped 0.3 s before the last (an NTP step) used to kill the tracking
    owner silently: no camera it owned got another event."""
    worker = services("worker", "worker", "--redis", redis_server.url, *WORKER_FLAGS, "--reorder-window-s", "0.2")
    wait_for(lambda: redis_client.hlen(keys.WORKERS), 90, "the worker to start")
    start = time.time()
    for seq in range(12):
        # One frame at a time (each tracked alone), the seventh stamped 0.3 s before the sixth.
        _live(redis_client, "clock-a", seq, start + seq * 0.1 - (0.4 if seq == 6 else 0.0))
        time.sleep(0.3)
    wait_for(lambda: len(faces_of(redis_client, "clock-a")) >= 12, 90, "camera a's tracked events")
    for seq in range(8):
        _live(redis_client, "clock-b", seq, time.time())
        time.sleep(0.05)
    wait_for(lambda: len([f for f in faces_of(redis_client, "clock-b") if f.track is not None]) >= 8, 60,
             "camera b's tracked events (tracking still alive)")
    assert worker.alive() and "failed" not in worker.output


def test_a_failing_background_task_is_logged_within_a_second_and_stops_the_worker(redis_server, services):
    """A task that dies (here a test failpoint in the housekeeper) is reported at once,
    with its traceback, and the worker exits 1: never a silent, half-alive process."""
    env = {"EMOTION_STREAM_FAILPOINTS": "housekeeper"}
    worker = services("worker", "worker", "--redis", redis_server.url, *WORKER_FLAGS, env=env)
    assert worker.wait(60) == 1, worker.output
    lines = worker.output.splitlines()
    started = next(line for line in lines if re.search(r"worker \S+: detector=", line))
    failed = next(line for line in lines if "background task housekeeper failed; stopping" in line)
    # The failpoint fires one second after the task starts (just after the start line).
    assert _stamp(failed) - _stamp(started) < 1.0 + 1.0, (started, failed)
    assert "RuntimeError: failpoint housekeeper" in worker.output  # the traceback
    assert lines[-1] == ("emotion-stream worker: error: worker " + started.split("worker ")[1].split(":")[0]
                         + ": background task housekeeper failed: RuntimeError: failpoint housekeeper")


def test_a_failing_tracking_owner_stops_the_tracks_service(redis_server, services):
    tracks = services("tracks", "tracks", "--redis", redis_server.url, env={"EMOTION_STREAM_FAILPOINTS": "track-leases"})
    assert tracks.wait(60) == 1, tracks.output
    assert "background task track-leases failed; stopping" in tracks.output
    assert tracks.output.splitlines()[-1].startswith("emotion-stream tracks: error: tracks ")


# ------------------------------------------------------------ 2. another job's journal
def _folder(root, name: str, count: int, face) -> object:
    folder = root / name
    folder.mkdir()
    for i in range(count):
        cv2.imwrite(str(folder / f"{name}_{i:03d}.jpg"), cv2.resize(face, (220 + 10 * (i % 5), 260)))
    return folder


def test_batch_refuses_the_journal_of_another_folder_and_restart_discards_it(tmp_path, services, face_bgr):
    """`batch bX` killed mid-way, then `batch bY` with the same --out: it used to merge
    bX's 48 rows into bY's submission and analyse nothing of bY."""
    from .test_batch import read_rows

    bx, by = _folder(tmp_path, "bx", 120, face_bgr), _folder(tmp_path, "by", 5, face_bgr)
    out = tmp_path / "s.csv"
    journal = tmp_path / "s.csv.partial"
    first = services("batch-x", "batch", str(bx), "--out", str(out), "--workers", "1", "--batch-size", "4")
    wait_for(lambda: journal.exists() and journal.read_text().count("\n") >= 10, 120, "some journaled results")
    first.signal(9)
    first.wait(10)
    second = services("batch-y", "batch", str(by), "--out", str(out), "--workers", "1")
    assert second.wait(120) == 1
    last = second.output.strip().splitlines()[-1]
    assert last.startswith(f"emotion-stream batch: error: {journal} is the journal of another batch job (folder ")
    assert "give --restart to discard it" in last and not out.exists()
    third = services("batch-y2", "batch", str(by), "--out", str(out), "--workers", "1", "--restart")
    assert third.wait(120) == 0, third.output
    assert [r[0] for r in read_rows(out)[1:]] == [f"by_{i:03d}.jpg" for i in range(5)]
    assert "rows written:         5\n" in third.output  # nothing "from the interrupted run"


def test_a_resumed_batch_submits_only_the_files_still_in_the_folder(tmp_path, services, face_bgr):
    from .test_batch import read_rows

    folder = _folder(tmp_path, "bz", 120, face_bgr)
    out = tmp_path / "s.csv"
    journal = tmp_path / "s.csv.partial"
    first = services("batch-1", "batch", str(folder), "--out", str(out), "--workers", "1", "--batch-size", "4")
    wait_for(lambda: journal.exists() and journal.read_text().count("\n") >= 10, 120, "some journaled results")
    first.signal(9)
    first.wait(10)
    import json

    done = [json.loads(line)["name"] for line in journal.read_text().splitlines()[1:] if line.endswith("}")]
    (folder / done[0]).unlink()  # a file removed between the runs
    second = services("batch-2", "batch", str(folder), "--out", str(out), "--workers", "1")
    assert second.wait(300) == 0, second.output
    names = [r[0] for r in read_rows(out)[1:]]
    assert done[0] not in names and len(names) == 119


# ------------------------------------------------------------ 6. --timeout with Redis unreachable
def test_batch_timeout_holds_when_redis_cannot_be_reached(tmp_path, face_bgr):
    import subprocess

    from emotion_stream.embedded_redis import free_port

    from .procs import EXE

    folder = _folder(tmp_path, "bt", 3, face_bgr)
    started = time.monotonic()
    result = subprocess.run([EXE, "batch", str(folder), "--out", str(tmp_path / "s.csv"), "--workers", "0",
                             "--timeout", "3", "--redis", f"redis://127.0.0.1:{free_port()}/0"],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 1, result.stderr[-2000:]
    assert time.monotonic() - started < 15
    assert result.stderr.strip().splitlines()[-1] == ("emotion-stream batch: error: Redis unreachable for 3 s "
                                                      "(the job is resumable)")


# ------------------------------------------------------------ 3, 8, 9. the WebRTC gateway
def _offer_sdp() -> str:
    """A real browser-like offer (a video track), from aiortc; its peer never connects."""
    import asyncio

    from aiortc import RTCConfiguration, RTCPeerConnection
    from aiortc.mediastreams import VideoStreamTrack

    async def make() -> str:
        pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
        pc.addTrack(VideoStreamTrack())
        await pc.setLocalDescription(await pc.createOffer())
        sdp = pc.localDescription.sdp
        await pc.close()
        return sdp

    return asyncio.run(make())


def _post(port: int, body: object, headers: dict[str, str] | None = None) -> tuple[int, str]:
    import json
    import urllib.error
    import urllib.request

    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    request = urllib.request.Request(f"http://127.0.0.1:{port}/offer", data=data, method="POST",
                                     headers={"Content-Type": "application/json", **(headers or {})})
    try:
        with urllib.request.urlopen(request, timeout=30) as reply:
            return reply.status, reply.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def test_webrtc_refuses_junk_caps_sessions_and_closes_peers_that_never_connect(redis_server, services):
    from emotion_stream.embedded_redis import free_port

    from .test_observability import sample_value, scrape

    port, metrics_port = free_port(), free_port()
    gateway = services("webrtc", "webrtc", "--redis", redis_server.url, "--port", str(port), "--token", "t0k",
                       "--webrtc-max-sessions", "2", "--webrtc-connect-timeout-s", "3",
                       "--metrics-port", str(metrics_port))
    wait_for(lambda: "serving http://" in gateway.output, 60, "the gateway")
    sdp = _offer_sdp()
    # Junk and non-offers: 400, no session; a token that is not a string: 401, no traceback.
    for body in ({"sdp": "junk", "type": "offer", "token": "t0k"}, {"sdp": sdp, "type": "answer", "token": "t0k"},
                 [1, 2], b"{not json"):
        status, text = _post(port, body, {"Authorization": "Bearer t0k"})
        assert status == 400 and "\n" == text[-1] and text.count("\n") == 1, (body, status, text)
    assert _post(port, {"sdp": sdp, "type": "offer", "token": 12345})[0] == 401
    assert _post(port, {"sdp": sdp, "type": "offer"})[0] == 401
    assert sample_value(scrape(metrics_port), "emotion_stream_webrtc_peers") == 0
    # Two real offers fill the cap; the third is told to come back later.
    assert [_post(port, {"sdp": sdp, "type": "offer", "token": "t0k"})[0] for _ in range(2)] == [200, 200]
    status, text = _post(port, {"sdp": sdp, "type": "offer", "token": "t0k"})
    assert status == 503 and "the most this gateway serves" in text
    assert sample_value(scrape(metrics_port), "emotion_stream_webrtc_peers") == 2
    # Their browsers never connect: closed after the timeout, and room again.
    wait_for(lambda: sample_value(scrape(metrics_port), "emotion_stream_webrtc_peers") == 0, 20,
             "peers that never connected closed")
    text = scrape(metrics_port)
    assert sample_value(text, "emotion_stream_webrtc_sessions_closed_total", reason="connect_timeout") == 2
    assert sample_value(text, "emotion_stream_webrtc_offers_refused_total", reason="full") == 1
    assert _post(port, {"sdp": sdp, "type": "offer", "token": "t0k"})[0] == 200
    assert "Traceback" not in gateway.output


def test_webrtc_start_up_refusals_are_one_line(redis_server, services, tmp_path):
    import socket
    import subprocess

    from emotion_stream.embedded_redis import EmbeddedRedis, free_port

    from .procs import EXE

    def one_line(*args: str) -> str:
        result = subprocess.run([EXE, "webrtc", *args], capture_output=True, text=True, timeout=60)
        assert result.returncode == 1 and "Traceback" not in result.stderr, result.stderr[-2000:]
        return result.stderr.strip().splitlines()[-1]

    # Beyond loopback without a token.
    assert one_line("--redis", redis_server.url, "--host", "0.0.0.0").startswith(
        "emotion-stream webrtc: error: --host 0.0.0.0 lets other machines in: set --token")
    # Redis refusing the password: checked before serving anything.
    with EmbeddedRedis(port=free_port(), password="right", data_dir=tmp_path / "locked") as locked:
        url = locked.url.replace(":right@", ":wrong@")
        assert "Redis refused access" in one_line("--redis", url, "--port", str(free_port()))
    # The port taken.
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        busy = taken.getsockname()[1]
        assert one_line("--redis", redis_server.url, "--port", str(busy)).startswith(
            f"emotion-stream webrtc: error: --port {busy} on '127.0.0.1': ")


# ------------------------------------------------------------ 4. two ingests of one camera
def test_a_second_ingest_of_the_same_camera_is_refused(redis_server, redis_client, services):
    """Two writers of one camera interleave their frame numbers, and tracking drops half
    of them as duplicates: the second is refused at start, the first goes on."""
    first = services("ingest-1", "ingest", "sample:1", "--camera", "door", "--redis", redis_server.url, "--fps", "5")
    wait_for(lambda: redis_client.xlen(keys.frames("door")) >= 3, 60, "the first ingest writing")
    second = services("ingest-2", "ingest", "sample:1", "--camera", "door", "--redis", redis_server.url, "--fps", "5")
    assert second.wait(60) == 1
    assert second.output.strip().splitlines()[-1] == (
        "emotion-stream ingest: error: camera 'door' is being ingested by another process (free 6 s after it "
        "stops); give this one its own --camera")
    assert first.alive()
    assert first.stop() == 0
    # Its lease is given back at a clean stop: a new ingest takes the camera at once.
    third = services("ingest-3", "ingest", "sample:1", "--camera", "door", "--redis", redis_server.url,
                     "--duration", "2")
    assert third.wait(60) == 0, third.output


# ------------------------------------------------------------ 5. frames analysed while no owner ran
def test_frames_analysed_with_no_tracking_owner_are_warned_about_then_published(redis_server, redis_client, services):
    """`worker --no-track-owner`, frames, and `tracks` only later: the older frames used to
    vanish (the new owner started 10 s back and trimmed the rest), uncounted."""
    from emotion_stream.embedded_redis import free_port

    from .test_observability import sample_value, scrape

    url = redis_server.url
    worker_metrics, tracks_metrics = free_port(), free_port()
    worker = services("worker", "worker", "--redis", url, "--no-track-owner", "--track-lease-s", "1",
                      *WORKER_FLAGS, "--metrics-port", str(worker_metrics))
    wait_for(lambda: "detector=" in worker.output, 60, "the worker")
    for seq in range(30):
        _live(redis_client, "late-owner", seq, time.time())
        time.sleep(0.05)
    wait_for(lambda: redis_client.xlen(keys.analysed("late-owner")) >= 30, 60, "30 frame records")
    wait_for(lambda: sample_value(scrape(worker_metrics), "emotion_stream_cameras_without_tracking_owner") == 1,
             30, "the no-owner gauge")
    assert "camera late-owner: 30 analysed frame(s) waiting and no tracking owner" in worker.output
    assert faces_of(redis_client, "late-owner") == []  # nothing published: it waits for tracking
    time.sleep(2.5)
    tracks = services("tracks", "tracks", "--redis", url, "--track-lookback-s", "1",
                      "--metrics-port", str(tracks_metrics))
    wait_for(lambda: sorted({f.seq for f in faces_of(redis_client, "late-owner")}) == list(range(30)), 60,
             "every frame's faces published")
    assert all(f.track is None for f in faces_of(redis_client, "late-owner"))  # older than the look-back
    assert "camera late-owner: 30 frame(s) were analysed more than 1 s before tracking took the camera" in tracks.output
    assert sample_value(scrape(tracks_metrics), "emotion_stream_track_frames_skipped_total", reason="before_lookback") == 30
    wait_for(lambda: sample_value(scrape(worker_metrics), "emotion_stream_cameras_without_tracking_owner") == 0,
             30, "the gauge back to 0 once owned")


# ------------------------------------------------------------ 7, 8. one line, no password, no traceback
def _fails_in_one_line(*args: str, env: dict[str, str] | None = None) -> str:
    import os
    import subprocess

    from .procs import EXE

    result = subprocess.run([EXE, *args], capture_output=True, text=True, timeout=120, env={**os.environ, **(env or {})})
    assert result.returncode in (1, 2), (args, result.returncode, result.stderr[-2000:])
    assert "Traceback" not in result.stderr, result.stderr[-3000:]
    return result.stderr.strip().splitlines()[-1]


def test_no_password_in_any_setting_error():
    for args, env in ((["worker"], {"REDIS_URL": "http://alice:s3cretPW@cache.example:6379/0"}),
                      (["worker", "--redis", "ftp://bob:s3cretPW@h/"], {}),
                      (["subscribe", "--redis", "rediss://carol:s3cretPW@h:notaport/0"], {})):
        line = _fails_in_one_line(*args, env=env)
        assert "s3cretPW" not in line and ":***@" in line, line


def test_start_up_failures_are_one_line(redis_server):
    import socket

    from emotion_stream.embedded_redis import free_port

    url = redis_server.url
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        busy = str(taken.getsockname()[1])
        for command in (["worker"], ["tracks"], ["ingest", "sample", "--camera", "m"]):
            line = _fails_in_one_line(*command, "--redis", url, "--metrics-port", busy)
            assert line.startswith(f"emotion-stream {command[0]}: error: --metrics-port {busy} on '127.0.0.1': "), line
    line = _fails_in_one_line("worker", "--redis", url, "--metrics-port", str(free_port()),
                              "--metrics-host", "no-such-host.invalid")
    assert "--metrics-port" in line and "no-such-host.invalid" in line
    line = _fails_in_one_line("worker", env={"REDIS_URL": "redis://h:notaport/0"})
    assert line == ("emotion-stream worker: error: REDIS_URL: the port must be a number from 0 to 65535 "
                    "(got 'redis://h:notaport/0')")
    # A cluster URL at a plain Redis node.
    node = url.replace("redis://", "redis+cluster://")
    for command in (["worker"], ["subscribe"], ["tracks"], ["ingest", "sample", "--camera", "m"]):
        line = _fails_in_one_line(*command, "--redis", node)
        assert line == f"emotion-stream {command[0]}: error: Redis Cluster: Cluster mode is not enabled on this node"


def test_a_cluster_refusing_the_password_is_one_line():
    from emotion_stream.local_cluster import LocalCluster
    from emotion_stream.redis_conn import connect_sync

    from .conftest import require_system

    require_system("redis-server", "a local Redis Cluster")
    with LocalCluster(masters=3, replicas=0) as cluster:
        for node in cluster.nodes:
            client = connect_sync(f"redis://127.0.0.1:{node.port}/0")
            client.config_set("requirepass", "right")
            client.close()
        wrong = cluster.url.replace("redis+cluster://", "redis+cluster://:wrong@")
        for command in (["worker"], ["subscribe"]):
            line = _fails_in_one_line(*command, "--redis", wrong)
            assert line.startswith(f"emotion-stream {command[0]}: error: Redis refused access:"), line
            assert "wrong" not in line


# ------------------------------------------------------------ 10. one clock for freshness
def test_a_camera_whose_clock_is_behind_is_not_skipped_but_an_old_frame_is(redis_server, redis_client, services):
    """Freshness compared the ingest machine's clock with the worker's: a camera 2.5 s
    behind had every frame skipped as stale. Age is now time in Redis, on Redis' clock."""
    for seq in range(3):  # waiting in Redis before any worker runs: really stale
        _live(redis_client, "clock-skew", seq, time.time())
    time.sleep(3.0)
    worker = services("worker", "worker", "--redis", redis_server.url, "--max-frame-age", "2", "--no-tracking")
    wait_for(lambda: "detector=" in worker.output, 60, "the worker")
    time.sleep(0.5)
    for seq in range(3, 11):  # fresh, stamped by a camera clock 2.5 s behind
        _live(redis_client, "clock-skew", seq, time.time() - 2.5)
        time.sleep(0.1)
    wait_for(lambda: {f.seq for f in faces_of(redis_client, "clock-skew")} >= set(range(3, 11)), 60,
             "every fresh frame analysed")
    assert not {f.seq for f in faces_of(redis_client, "clock-skew")} & {0, 1, 2}
    stats = redis_client.hgetall(keys.stats("clock-skew"))
    assert int(stats[b"stale"]) == 3 and int(stats[b"processed"]) == 8, stats


# ------------------------------------------------------------ 11. one stop request, signalled twice
def test_a_stop_signal_sent_twice_at_once_stops_in_order(redis_server, redis_client, services):
    """`timeout` (and `kill -- -PGID`) signals the process and then its process group: the
    same SIGTERM twice at once. The second was taken for a second request and forced quit:
    no summary, the camera's lease held until it expired, a worker's batch unacked."""
    import signal

    ingest = services("ingest", "ingest", "sample:1", "--camera", "twice", "--fps", "5",
                      "--redis", redis_server.url)
    wait_for(lambda: redis_client.xlen(keys.frames("twice")) >= 3, 60, "frames")
    ingest.signal(signal.SIGTERM)
    ingest.signal(signal.SIGTERM)
    assert ingest.wait(30) == 0, ingest.output[-2000:]
    assert "camera twice: " in ingest.output and " frames accepted" in ingest.output
    assert not redis_client.exists(keys.ingest_lease("twice"))  # given back: a new ingest starts at once


def test_a_second_stop_signal_a_moment_later_still_forces_quit(tmp_path):
    import signal
    import subprocess
    import sys

    script = tmp_path / "stopping.py"
    script.write_text(
        "import asyncio, os, signal\n"
        "from emotion_stream import lifecycle\n"
        "async def main():\n"
        "    stop = asyncio.Event()\n"
        "    lifecycle.stop_on_signals(stop)\n"
        "    os.kill(os.getpid(), signal.SIGTERM)\n"
        "    os.kill(os.getpid(), signal.SIGTERM)\n"
        "    await stop.wait()\n"
        "    await asyncio.sleep(0.2)\n"
        "    print('stopping in order', flush=True)\n"
        "    await asyncio.sleep(lifecycle.REPEAT_WINDOW_S)\n"
        "    os.kill(os.getpid(), signal.SIGTERM)\n"  # a stop that hangs, signalled again
        "    await asyncio.sleep(5)\n"
        "    print('not forced', flush=True)\n"
        "asyncio.run(main())\n")
    done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=60)
    assert done.stdout == "stopping in order\n", done.stdout + done.stderr
    assert done.returncode == -signal.SIGTERM


# ------------------------------------------------------------ 12. liveness
def _health(port: int) -> tuple[int, str]:
    import urllib.error
    import urllib.request

    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=5) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def test_healthz_on_the_metrics_port_says_when_a_worker_is_stuck(redis_server, redis_client, services):
    """A hung worker kept answering /metrics (its own thread) with `up` 1: nothing could
    tell it from a working one, and a liveness probe had nothing to ask."""
    from emotion_stream.embedded_redis import free_port

    from .test_observability import sample_value, scrape, serving

    url = redis_server.url
    healthy, hung, blocked = free_port(), free_port(), free_port()
    services("ingest", "ingest", "sample:1", "--camera", "desk", "--fps", "5", "--redis", url)
    services("healthy", "worker", "--redis", url, *WORKER_FLAGS, "--metrics-port", str(healthy))
    stuck = services("hung", "worker", "--redis", url, *WORKER_FLAGS, "--metrics-port", str(hung),
                     "--stuck-after-s", "3", env={"EMOTION_STREAM_FAILPOINTS": "hang-cpu-stage"})
    frozen = services("blocked", "tracks", "--redis", url, "--metrics-port", str(blocked), "--stuck-after-s", "3",
                      env={"EMOTION_STREAM_FAILPOINTS": "block-loop"})
    for port in (healthy, hung, blocked):
        wait_for(lambda: serving(port), 60, "the metrics port")
    wait_for(lambda: _health(hung)[0] == 503, 60, "the hung worker's /healthz to say so")
    body = _health(hung)[1]
    assert body.startswith("worker cpu stage: one job for "), body
    assert sample_value(scrape(hung), "emotion_stream_liveness_problems") == 1
    wait_for(lambda: _health(blocked)[0] == 503, 60, "the blocked loop's /healthz to say so")
    assert _health(blocked)[1].startswith("the event loop has not turned for "), _health(blocked)
    assert _health(healthy) == (200, "ok\n")
    assert sample_value(scrape(healthy), "emotion_stream_liveness_problems") == 0
    wait_for(lambda: len(faces_of(redis_client, "desk")) >= 3, 60, "the healthy worker's events")
    for process in (stuck, frozen):
        process.process.kill()
