"""The HTTP API as users run it: `emotion-stream api` (uvicorn) on a real Redis, fed by
a real worker or by events written to the streams, read over real sockets."""

from __future__ import annotations

import hashlib
import json
import socket
import subprocess
import time
import urllib.error
import urllib.request

import pytest

from emotion_stream import keys
from emotion_stream.embedded_redis import free_port
from ingest.samples import write_clip

from .procs import EXE, wait_for
from .sse import SseClient
from .test_observability import sample_value, scrape
from .test_pipeline import WORKER_FLAGS
from .webhook_receiver import Receiver

TOKEN = "s3cret-token"


def start_api(services, url: str, *extra: str, name: str = "api", port: int | None = None) -> tuple[object, int]:
    port = port or free_port()
    api = services(name, "api", "--redis", url, "--port", str(port), "--api-tokens", TOKEN, *extra)
    wait_for(lambda: "serving http://" in api.output or not api.alive(), 30, "the API to listen")
    assert api.alive(), api.output
    return api, port


def get(port: int, path: str, token: str | None = TOKEN, headers: dict[str, str] | None = None) -> tuple[int, dict]:
    request = urllib.request.Request(f"http://127.0.0.1:{port}{path}", headers=headers or {})
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


def unending_head(port: int) -> bytes:
    """What the API answers a request head that keeps growing (100 kB, no end in sight):
    the server must refuse it, not keep buffering for the rest."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        try:
            sock.sendall(b"GET /v1/cameras HTTP/1.1\r\nHost: x\r\nX-Padding: " + b"y" * 100_000)
            return sock.recv(100)
        except ConnectionError:
            return b"reset"  # refused while still sending: the kernel discarded the answer


def announce(client, *cameras: str) -> None:
    client.sadd(keys.CAMERAS, *cameras)


def write_track_events(client, camera: str, n: int, first_track: int = 1) -> list[str]:
    """n lifecycle events (started, ended, ...) on a camera's tracks stream; their entry ids."""
    ids = []
    for i in range(n):
        track = first_track + i // 2
        kind = "track_started" if i % 2 == 0 else "track_ended"
        doc = {"type": kind, "camera": camera, "track": track, "at": time.time(), "seq": i, "v": 1}
        if kind == "track_ended":
            doc |= {"started_at": time.time() - 1, "duration_s": 1.0, "emotion_seconds": {"happy": 1.0},
                    "dominant": "happy", "reason": "timeout"}
        ids.append(client.xadd(keys.tracks(camera), {"event": json.dumps(doc)}).decode())
    return ids


def stream_ids(client, camera: str, after_ms: int = 0) -> list[str]:
    """Every event id the API can hand out for a camera, in the API's order."""
    out = []
    for kind in ("events", "tracks"):
        stream = keys.events(camera) if kind == "events" else keys.tracks(camera)
        out += [(tuple(map(int, i.decode().split("-"))), kind, i.decode()) for i, _ in client.xrange(stream)]
    return [f"{entry}:{kind}:{camera}" for (ms, seq), kind, entry in sorted(out) if ms >= after_ms]


def test_live_events_from_a_real_worker_and_resume_across_a_forced_disconnect(
        redis_server, redis_client, services, tmp_path):
    url = redis_server.url
    api, port = start_api(services, url)
    announce(redis_client, "hall")  # as ingest does at start: the API follows it from now on
    time.sleep(1.5)
    first = SseClient(port, "/v1/events?camera=hall", token=TOKEN)
    services("worker", "worker", "--redis", url, *WORKER_FLAGS)
    clip = write_clip(tmp_path / "hall.avi", seconds=4.0, fps=10, faces=2)
    ingest = services("ingest", "ingest", str(clip), "--camera", "hall", "--redis", url, "--fps", "8")

    # Live: face events reach the client shortly after the worker wrote them.
    wait_for(lambda: len(first.snapshot()) >= 10, 120, "live events over SSE")
    live = first.snapshot()
    assert first.status == 200
    delays = [m.received - int(m.id.split("-")[0]) / 1000 for m in live]
    assert max(delays) < 1.0, delays  # written to Redis -> at the client (worker timing aside)
    assert all(m.received - m.data["captured_at"] < 10 for m in live if m.data["type"] == "face")

    # Cut the client off mid-stream; resume from its last id after more has happened.
    first.close()
    time.sleep(2.0)
    last = first.snapshot()[-1].id
    second = SseClient(port, "/v1/events?camera=hall", token=TOKEN, last_event_id=last)
    assert ingest.wait(120) == 0, ingest.output
    # 4 s at 10 fps, thinned to 8 fps on the video's clock (it played for 4 s, not 5)
    assert "40 frames read, 32 sent" in ingest.output and "32 frames accepted" in ingest.output, ingest.output
    wait_for(lambda: any(m.data["type"] == "end" for m in second.snapshot()), 120, "the end of the stream over SSE")
    time.sleep(3.0)  # track_ended events follow the end marker
    got = [m.id for m in first.snapshot()] + [m.id for m in second.snapshot()]
    expected = stream_ids(redis_client, "hall")
    assert len(got) == len(set(got)), "an event came twice"
    assert got == expected[expected.index(got[0]):], "missed or out of order"
    assert {m.data["type"] for m in first.snapshot() + second.snapshot()} >= {"face", "track_started", "track_ended",
                                                                               "end"}
    assert len(second.snapshot()) >= 10  # the resumed part is not trivially short
    second.close()
    assert api.stop() == 0
    assert "Traceback" not in api.output


def test_stopping_the_api_ends_each_event_stream_as_a_complete_response(redis_server, redis_client, services):
    """SIGTERM with browsers connected: each stream ends cleanly (their EventSource comes
    back with its last id), and the API exits at once. Before, uvicorn waited out its
    grace for streams that never end, then cancelled them: two ERROR lines and a
    traceback on every stop."""
    announce(redis_client, "door")  # before the API starts: its streams are read from the first
    api, port = start_api(services, redis_server.url)
    raw = socket.create_connection(("127.0.0.1", port), timeout=30)
    raw.sendall(f"GET /v1/events?access_token={TOKEN} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
    watching = SseClient(port, "/v1/events", token=TOKEN)
    wait_for(lambda: watching.status == 200, 30, "the second stream")
    write_track_events(redis_client, "door", 2)
    wait_for(lambda: len(watching.snapshot()) == 2, 30, "live events")
    assert api.stop() == 0, api.output
    received = b""
    while chunk := raw.recv(65536):
        received += chunk
    raw.close()
    assert received.startswith(b"HTTP/1.1 200") and b": the API is stopping" in received, received[-300:]
    assert received.endswith(b"\r\n0\r\n\r\n"), received[-100:]  # the chunked body's end: a complete response
    assert "ending 2 event stream(s)" in api.output
    assert "ERROR" not in api.output and "Traceback" not in api.output, api.output


def test_a_withdrawn_cameras_last_events_still_reach_live_clients(redis_server, redis_client, services):
    """A browser's WebRTC session closes: its camera leaves the cameras set at once, and
    its people's track_ended come after the tracker's timeout. Before, the API stopped
    reading the camera's streams at its next look at the set (every second), and live
    clients never saw those people leave."""
    announce(redis_client, "webrtc-1")
    api, port = start_api(services, redis_server.url)
    watching = SseClient(port, "/v1/events", token=TOKEN)
    wait_for(lambda: watching.status == 200, 30, "the stream")
    write_track_events(redis_client, "webrtc-1", 1)
    wait_for(lambda: len(watching.snapshot()) == 1, 30, "the person's arrival")
    redis_client.srem(keys.CAMERAS, "webrtc-1")  # the session closed
    time.sleep(2.5)  # the API has looked at the cameras set twice since
    write_track_events(redis_client, "webrtc-1", 2, first_track=2)
    wait_for(lambda: len(watching.snapshot()) == 3, 30, "events after the withdrawal")
    assert [m.data["type"] for m in watching.snapshot()] == ["track_started", "track_started", "track_ended"]


def test_tokens_and_bad_input_get_one_line_answers(redis_server, redis_client, services):
    api, port = start_api(services, redis_server.url)
    announce(redis_client, "door")
    write_track_events(redis_client, "door", 2)
    wait_for(lambda: get(port, "/healthz", token=None) == (200, {"redis": "ok", "live": True}), 10, "healthz")
    assert get(port, "/v1/cameras", token=None)[0] == 401
    assert get(port, "/v1/cameras", token="wrong")[0] == 401
    assert get(port, f"/v1/cameras?access_token={TOKEN}", token=None)[0] == 200  # EventSource's way
    status, body = get(port, "/v1/cameras")
    assert status == 200 and [c["camera"] for c in body["cameras"]] == ["door"]
    assert get(port, "/v1/cameras/nobody/tracks") == (404, {"error": "unknown camera 'nobody'"})
    for path, reason in [
        ("/v1/cameras/door/events?after=yesterday", "after: not a stream entry id"),
        ("/v1/cameras/door/events?limit=0", "limit: Input should be greater than or equal to 1"),
        ("/v1/cameras/door/tracks?limit=many", "limit: Input should be a valid integer"),
        ("/v1/cameras/door/summary?window=-5", "window: Input should be greater than 0"),
        ("/v1/cameras/bad%20id/summary", "invalid camera id"),
        ("/v1/events?types=face,smiles", "types: unknown smiles"),
    ]:
        status, body = get(port, path)
        assert status == 400 and body["error"].startswith(reason) and "\n" not in body["error"], (path, body)
    status, body = get(port, "/v1/events", headers={"Last-Event-ID": "12-x:events:door"})
    assert status == 400 and body["error"].startswith("Last-Event-ID: not an event id")
    assert get(port, "/v1/cameras?" + "x" * 5000)[0] == 414
    assert get(port, "/v1/cameras", headers={"X-Padding": "y" * 9000})[0] == 431
    assert unending_head(port).startswith((b"HTTP/1.1 431 ", b"reset")) and get(port, "/v1/cameras")[0] == 200
    status, body = get(port, "/v1/cameras/door/summary?window=60")
    assert status == 200 and body["people"] == 1 and body["emotion_seconds"] == {"happy": 1.0}
    assert get(port, "/openapi.json", token=None)[0] == 200

    # Redis down: /healthz says so, a resuming client is told to retry, nothing crashes.
    redis_server.stop()
    status, body = get(port, "/healthz", token=None)
    assert status == 503 and body["redis"].startswith("unreachable")
    assert get(port, "/v1/cameras")[0] == 503
    resuming = SseClient(port, "/v1/events", token=TOKEN, last_event_id="1-0:tracks:door")
    wait_for(lambda: "retry 5000" in resuming.comments, 20, "a retry hint")
    resuming.close()
    redis_server.start()
    wait_for(lambda: get(port, "/healthz", token=None)[0] == 200, 30, "healthz to recover")
    assert api.stop() == 0
    assert "Traceback" not in api.output

    # Refused at start, in one line each.
    for args, message in [
        (["--host", "0.0.0.0"], "--host 0.0.0.0 lets other machines in: set --api-tokens"),
        (["--webhook", "ftp://example.org/in", "--webhook-secret", "k"], "is not an http:// or https:// URL"),
        (["--webhook", "http://127.0.0.1:9/in"], "webhooks need --webhook-secret"),
    ]:
        result = subprocess.run([EXE, "api", "--redis", redis_server.url, "--port", str(free_port()), *args],
                                capture_output=True, text=True, timeout=60)
        assert result.returncode in (1, 2) and message in result.stderr, result.stderr
        assert len(result.stderr.strip().splitlines()) == 1, result.stderr


def test_the_camera_list_gives_each_cameras_frame_rate_over_10_s(redis_server, redis_client, services):
    """Counted inside Redis from the frame numbers (the API read every frame of the last
    10 s to count them: 9 MB a 15 fps camera, 75 ms for four)."""
    from emotion_stream.schema import FrameKind, FrameMessage

    api, port = start_api(services, redis_server.url)
    announce(redis_client, "door", "hall", "attic")
    old = int(time.time() * 1000) - 60_000  # a minute ago: out of the window
    redis_client.xadd(keys.frames("door"), FrameMessage("door", 0, 0.0, FrameKind.LIVE, b"x", 8, 8).to_fields(),
                      id=f"{old}-0")
    for seq in range(1, 31):
        redis_client.xadd(keys.frames("door"), FrameMessage("door", seq, 0.0, FrameKind.LIVE, b"x", 8, 8).to_fields())
    for seq in [*range(100, 120), *range(5)]:  # an ingest restarted: its numbers start again
        redis_client.xadd(keys.frames("hall"), FrameMessage("hall", seq, 0.0, FrameKind.LIVE, b"x", 8, 8).to_fields())
    redis_client.set(keys.ingest_lease("door"), "an ingest's token", px=60_000)
    wait_for(lambda: get(port, "/healthz", token=None)[0] == 200, 10, "healthz")
    status, body = get(port, "/v1/cameras")
    assert status == 200, body
    cameras = {c["camera"]: c for c in body["cameras"]}
    assert [cameras[c]["ingesting"] for c in ("door", "hall", "attic")] == [True, False, False]
    assert cameras["door"]["fps"] == 3.0 and abs(cameras["door"]["last_frame_at"] - time.time()) < 5
    assert 0.5 <= cameras["hall"]["fps"] <= 2.5  # from the restart on, at least
    assert cameras["attic"]["fps"] == 0 and cameras["attic"]["last_frame_at"] is None


def test_history_pages_have_no_gap_or_duplicate_while_events_arrive(redis_server, redis_client, services):
    api, port = start_api(services, redis_server.url)
    announce(redis_client, "desk")
    written = write_track_events(redis_client, "desk", 250)
    faces = [redis_client.xadd(keys.events("desk"), {"event": json.dumps({"type": "face", "seq": i})}).decode()
             for i in range(120)]
    seen, after = [], "0"
    while True:
        status, page = get(port, f"/v1/cameras/desk/tracks?after={after}&limit=40")
        assert status == 200
        seen += [item["id"] for item in page["items"]]
        assert all(item["track"]["type"] == "track_ended" for item in page["items"])
        if len(seen) == 40:  # more arrive between pages
            written += write_track_events(redis_client, "desk", 30, first_track=1000)
        if page["next"] is None:
            break
        after = page["next"]
    assert seen == [i for n, i in enumerate(written) if n % 2 == 1 or n >= 250 and (n - 250) % 2 == 1]
    got, after = [], "0"
    while after is not None:
        page = get(port, f"/v1/cameras/desk/events?after={after}&limit=50")[1]
        got += [item["id"] for item in page["items"]]
        after = page["next"]
    assert got == faces
    api.stop()


def test_webhooks_survive_a_failing_receiver_and_an_api_restart_exactly_once_in_order(
        redis_server, redis_client, services):
    receiver = Receiver("hook-key")
    url = redis_server.url
    flags = ("--webhook", receiver.url, "--webhook-secret", "hook-key", "--webhook-retry-s", "120")
    api, port = start_api(services, url, *flags)
    announce(redis_client, "cam-a", "cam-b")
    time.sleep(3.0)  # the webhook follows both cameras
    expected = {"cam-a": write_track_events(redis_client, "cam-a", 20),
                "cam-b": write_track_events(redis_client, "cam-b", 20)}
    wait_for(lambda: len(receiver.accepted) >= 8, 60, "some deliveries")
    api.signal(9)  # killed mid-retry: the cursor in Redis says where it was
    api.wait(10)
    more = {"cam-a": write_track_events(redis_client, "cam-a", 6, first_track=500)}
    api, port = start_api(services, url, *flags, name="api-again", port=port)
    total = 46
    wait_for(lambda: len({i for i, _ in receiver.accepted}) >= total, 120, "every event delivered")
    time.sleep(2.0)
    ids = [i for i, _ in receiver.accepted]
    unique = list(dict.fromkeys(ids))  # de-duplicated on the id header, as a receiver does
    assert len(unique) == total and len(ids) - len(unique) <= 1, ids  # at most the one in flight at the kill
    for camera in ("cam-a", "cam-b"):
        delivered = [i.split(":")[0] for i in unique if i.endswith(f":tracks:{camera}")]
        assert delivered == expected[camera] + more.get(camera, []), camera  # all, in order
    assert receiver.bad_signatures == 0
    assert receiver.attempts >= 2 * total - 1  # every other refused, every one retried
    api.stop()
    receiver.shutdown()


def test_a_receiver_that_never_answers_goes_to_dead_letters_without_holding_up_another(
        redis_server, redis_client, services):
    good = Receiver("k")
    good.attempts = 1  # accept every other starting with the first: still retries half
    url = redis_server.url
    dead = f"http://127.0.0.1:{free_port()}/nobody-listens"
    metrics_port = free_port()
    api, _ = start_api(services, url, "--webhook", dead, "--webhook", good.url, "--webhook-secret", "k",
                       "--webhook-retry-s", "2", "--metrics-port", str(metrics_port))
    announce(redis_client, "gate")
    time.sleep(3.0)
    ids = write_track_events(redis_client, "gate", 6)
    wait_for(lambda: len({i for i, _ in good.accepted}) == 6, 30, "the live receiver's deliveries")
    dead_id = hashlib.sha256(dead.encode()).hexdigest()[:12]
    wait_for(lambda: redis_client.xlen(keys.webhook_dead_letter(dead_id)) == 6, 60, "dead letters")
    letters = redis_client.xrange(keys.webhook_dead_letter(dead_id))
    assert [f[b"id"].decode().split(":")[0] for _, f in letters] == ids
    assert b"ClientConnectorError" in letters[0][1][b"error"] or b"Connect" in letters[0][1][b"error"]
    assert sample_value(scrape(metrics_port), "emotion_stream_webhook_deliveries_total",
                        webhook=dead_id, result="dead_lettered") == 6
    api.stop()
    good.shutdown()


def test_a_client_that_never_reads_is_dropped_while_others_keep_flowing(redis_server, redis_client, services):
    metrics_port = free_port()
    api, port = start_api(services, redis_server.url, "--api-client-buffer", "100", "--metrics-port", str(metrics_port))
    announce(redis_client, "busy")
    time.sleep(1.5)
    reader = SseClient(port, "/v1/events", token=TOKEN)
    stuck = SseClient(port, "/v1/events", token=TOKEN, read=False, receive_buffer=4096)
    padding = "x" * 32_000  # big events fill the socket buffers (the server's grow to 4 MB) quickly
    written = []
    for i in range(600):
        doc = {"type": "face", "camera": "busy", "seq": i, "captured_at": time.time(), "pad": padding}
        written.append(redis_client.xadd(keys.events("busy"), {"event": json.dumps(doc)}).decode())
        if i % 10 == 9:
            time.sleep(0.05)  # bursts below the buffer: a client that reads keeps up
    wait_for(lambda: len(reader.snapshot()) == 600, 60, "the reading client to get every event")
    assert [m.id.split(":")[0] for m in reader.snapshot()] == written
    wait_for(lambda: sample_value(scrape(metrics_port), "emotion_stream_api_sse_clients_dropped_total") == 1, 30,
             "the stuck client to be dropped")
    wait_for(lambda: sample_value(scrape(metrics_port), "emotion_stream_api_sse_clients") == 1, 30,
             "one client left")
    assert "fell 100 events behind; dropped" in api.output
    stuck.close()
    reader.close()
    assert api.stop() == 0
    assert "Traceback" not in api.output and "ASGI callable" not in api.output


def test_a_client_that_stalls_then_reads_again_gets_every_event_once_in_order(redis_server, redis_client, services):
    # A caught-up client gets events written by the hub itself; one whose connection is
    # full gets them through its queue. Events keep coming while the stalled client
    # drains its queue: any event written past the queued ones shows up out of order.
    api, port = start_api(services, redis_server.url)
    announce(redis_client, "stall")
    time.sleep(1.5)
    stalled = SseClient(port, "/v1/events", token=TOKEN, read=False, receive_buffer=4096)
    padding = "x" * 32_000
    written: list[str] = []

    def write(n: int, pause: float) -> None:
        for _ in range(n):
            doc = {"type": "face", "camera": "stall", "seq": len(written), "captured_at": time.time(), "pad": padding}
            written.append(redis_client.xadd(keys.events("stall"), {"event": json.dumps(doc)}).decode())
            time.sleep(pause)

    write(300, 0.002)  # about 10 MB: more than the socket buffers hold (4 MB), less than its queue
    stalled.start_reading()
    write(200, 0.005)
    wait_for(lambda: len(stalled.snapshot()) >= 500, 60, "the stalled client to catch up")
    time.sleep(0.5)
    assert [m.id.split(":")[0] for m in stalled.snapshot()] == written
    assert not stalled.closed_by_server
    stalled.close()
    assert api.stop() == 0
    assert "Traceback" not in api.output


@pytest.fixture(autouse=True)
def _quiet_proxies(monkeypatch):
    # urllib honours proxy variables; the API is on loopback.
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
