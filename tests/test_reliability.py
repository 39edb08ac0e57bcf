"""Faults with real processes and signals: dead workers, Redis outages, bad cameras."""

from __future__ import annotations

import csv
import re
import signal
import subprocess
import sys
import time
from datetime import datetime
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path

import cv2
import pytest

from emotion_stream import keys
from emotion_stream.embedded_redis import free_port

from ingest.samples import write_clip

from .mjpeg_camera import MJPEGCamera
from .procs import wait_for
from .test_observability import sample_value, scrape, serving
from .test_pipeline import WORKER_FLAGS, faces_of


@pytest.mark.slow
def test_batch_writes_every_row_once_when_a_worker_is_killed(redis_server, redis_client, services, tmp_path, face_bgr):
    folder = tmp_path / "images"
    folder.mkdir()
    total = 240
    for i in range(total):
        cv2.imwrite(str(folder / f"face_{i:04d}.jpg"), cv2.resize(face_bgr, (220 + i % 9 * 15, 260 + i % 4 * 20)))
    url = redis_server.url
    slow = ("--batch-size", "4", "--max-wait-ms", "0", "--claim-idle-ms", "1500")
    victim = services("victim", "worker", "--redis", url, *slow, "--name", "victim")
    services("survivor", "worker", "--redis", url, *slow, "--name", "survivor")
    out = tmp_path / "submission.csv"
    job = services("batch", "batch", str(folder), "--out", str(out), "--redis", url, "--workers", "0")

    def victim_busy() -> bool:
        for stream in redis_client.smembers(keys.CAMERAS):
            name = keys.frames(stream.decode())
            try:
                if redis_client.xpending_range(name, keys.WORKER_GROUP, "-", "+", 5, consumername="victim"):
                    return True
            except Exception:
                pass
        return False

    wait_for(victim_busy, 120, "the victim to hold in-flight images")
    victim.signal(signal.SIGKILL)
    assert job.wait(300) == 0, job.output
    assert "batch-" not in job.output  # --workers 0: no local workers, only the external two
    with out.open(newline="") as fh:
        names = [row[0] for row in list(csv.reader(fh))[1:]]
    assert names == [f"face_{i:04d}.jpg" for i in range(total)]  # every row exactly once


@pytest.mark.slow
def test_redis_outage_and_restart_pipeline_resumes(redis_server, redis_client, services):
    url = redis_server.url
    ingest_metrics, worker_metrics = free_port(), free_port()
    worker = services("worker", "worker", "--redis", url, "--metrics-port", str(worker_metrics))
    ingest = services("ingest", "ingest", "sample:1", "--camera", "lab", "--fps", "10", "--redis", url,
                      "--metrics-port", str(ingest_metrics))
    wait_for(lambda: len(faces_of(redis_client, "lab")) >= 10, 90, "events before the outage")
    before = max(f.seq for f in faces_of(redis_client, "lab"))

    redis_server.stop()  # SIGTERM: AOF flushed, like a maintenance restart
    time.sleep(10)
    assert worker.alive() and ingest.alive()
    redis_server.start()

    wait_for(lambda: max(f.seq for f in faces_of(redis_client, "lab")) >= before + 20, 90,
             "events to resume after Redis came back")
    ingest_text, worker_text = scrape(ingest_metrics), scrape(worker_metrics)
    dropped = sample_value(ingest_text, "emotion_stream_frames_dropped_total", camera="lab", reason="redis_unavailable")
    assert dropped > 0, "live frames lost during the outage must be counted"
    assert sample_value(ingest_text, "emotion_stream_redis_errors_total", component="ingest") > 0
    assert sample_value(worker_text, "emotion_stream_redis_errors_total", component="worker") > 0
    assert "Redis unavailable" in ingest.output and "Redis read failed" in worker.output
    assert worker.stop() == 0 and ingest.stop() == 0


def test_ingest_announces_its_camera_again_when_redis_lost_it(redis_server, redis_client, services, tmp_path):
    """A Redis restarted empty (or a FLUSHDB) loses the cameras set, and workers read only
    the streams it names: a live camera and a recorded video each announced it once and
    sent their frames on to a stream nobody read (the video waiting for the workers)."""
    url = redis_server.url
    services("worker", "worker", "--redis", url, *WORKER_FLAGS)
    live = services("live", "ingest", "sample:1", "--camera", "lab", "--fps", "10", "--redis", url)
    clip = write_clip(tmp_path / "tape.avi", seconds=40.0, fps=10, faces=1)
    tape = services("tape", "ingest", str(clip), "--camera", "tape", "--redis", url, "--pace", "workers",
                    "--max-len", "16")
    for camera in ("lab", "tape"):
        wait_for(lambda: faces_of(redis_client, camera), 90, f"{camera}'s first events")
    redis_client.flushdb()
    # The video's tracking starts afresh mid-video: it waits for frames before the first
    # it sees as long as for any missing frame of a recorded video (30 s).
    for camera, within in (("lab", 30), ("tape", 60)):
        wait_for(lambda: faces_of(redis_client, camera), within, f"{camera}'s events after the FLUSHDB")
    assert redis_client.sismember(keys.CAMERAS, "lab") and redis_client.sismember(keys.CAMERAS, "tape")
    assert live.stop() == 0 and tape.stop() == 0


def _refused_writes_are_waited_out(services, redis_client, url: str, camera: str, refusal: str,
                                   refusing: Callable[[], AbstractContextManager[object]]) -> None:
    """Ingest and a worker running when Redis starts refusing writes (``refusing()``, a
    context that ends the refusal): both log ``refusal`` and wait, nobody exits, ingest
    counts the live frames it drops, and events flow again once writes are allowed."""
    ingest_metrics = free_port()
    worker = services("worker", "worker", "--redis", url, *WORKER_FLAGS)
    ingest = services("ingest", "ingest", "sample:1", "--camera", camera, "--fps", "10", "--redis", url,
                      "--metrics-port", str(ingest_metrics))
    wait_for(lambda: len(faces_of(redis_client, camera)) >= 10, 90, "events before writes are refused")

    def last_seq() -> int:
        return max((f.seq for f in faces_of(redis_client, camera)), default=-1)

    with refusing():
        before = last_seq()
        wait_for(lambda: refusal in ingest.output and refusal in worker.output, 30, "both to meet the refusal")
        time.sleep(2)
        assert worker.alive() and ingest.alive()
    wait_for(lambda: last_seq() >= before + 20, 90, "events once writes are allowed again")
    dropped = sample_value(scrape(ingest_metrics), "emotion_stream_frames_dropped_total", camera=camera,
                           reason="redis_unavailable")
    assert dropped > 0, "live frames refused meanwhile must be counted"
    assert worker.stop() == 0 and ingest.stop() == 0
    assert "Traceback" not in worker.output + ingest.output


@pytest.mark.slow
def test_redis_out_of_memory_is_waited_out_like_an_outage(redis_server, redis_client, services):
    """Redis at its maxmemory with nothing it may evict (noeviction, the default policy)
    refuses every write; it used to end ingest and workers with a traceback."""

    @contextmanager
    def full() -> Iterator[None]:
        redis_client.config_set("maxmemory-policy", "noeviction")
        redis_client.config_set("maxmemory", redis_client.info("memory")["used_memory"])
        try:
            yield
        finally:
            redis_client.config_set("maxmemory", 0)

    _refused_writes_are_waited_out(services, redis_client, redis_server.url, "full", "used memory > 'maxmemory'", full)


def test_a_redis_that_cannot_persist_is_waited_out_like_an_outage(redis_server, redis_client, services):
    """A full disk under Redis: its snapshot fails, and (stop-writes-on-bgsave-error, the
    default) it refuses every write with MISCONF until one succeeds. Ingest, the worker
    and its tracking ended with a traceback."""

    @contextmanager
    def cannot_persist() -> Iterator[None]:
        # A snapshot that cannot be written: a folder where its file must go.
        blocker = Path(redis_client.config_get("dir")["dir"]) / "blocked.rdb"
        blocker.mkdir()
        redis_client.config_set("dbfilename", blocker.name)
        redis_client.config_set("save", "3600 1")
        redis_client.bgsave()
        try:
            yield
        finally:
            blocker.rmdir()  # room again: a snapshot that succeeds allows writes again
            redis_client.bgsave()
            wait_for(lambda: redis_client.info("persistence")["rdb_last_bgsave_status"] == "ok", 30, "a snapshot")
            redis_client.config_set("save", "")

    _refused_writes_are_waited_out(services, redis_client, redis_server.url, "disk",
                                   "Redis is configured to save RDB snapshots",  # MISCONF's words on 6.2 and 7
                                   cannot_persist)


def test_a_master_demoted_to_replica_is_waited_out_until_promoted(redis_server, redis_client, services, tmp_path):
    """A failover (Sentinel, a managed Redis) makes the master a replica while its name
    still leads there: every write is refused with READONLY. Ingest and workers ended
    with a traceback; now they carry on once the name leads to a master again (here the
    same server, promoted back)."""
    from emotion_stream.embedded_redis import EmbeddedRedis

    @contextmanager
    def demoted() -> Iterator[None]:
        with EmbeddedRedis(port=free_port(), data_dir=tmp_path / "new-master") as new_master:
            redis_client.execute_command("REPLICAOF", "127.0.0.1", str(new_master.port))
            try:
                yield
            finally:
                redis_client.execute_command("REPLICAOF", "NO", "ONE")  # the data is the new master's: none

    _refused_writes_are_waited_out(services, redis_client, redis_server.url, "lab", "read only replica", demoted)


def test_a_redis_that_may_evict_keys_is_warned_about(redis_server, redis_client, services):
    """A maxmemory with an evicting policy (a cache's settings, or a managed Redis'
    default) deletes frame streams, consumer groups, leases and tracker state when full,
    with nothing counted; the worker used to run on it without a word."""
    redis_client.config_set("maxmemory", 1 << 30)
    redis_client.config_set("maxmemory-policy", "allkeys-lru")
    worker_metrics = free_port()
    worker = services("worker", "worker", "--redis", redis_server.url, *WORKER_FLAGS,
                      "--metrics-port", str(worker_metrics))
    wait_for(lambda: "maxmemory-policy allkeys-lru" in worker.output, 60, "the worker's warning")
    assert "set maxmemory-policy noeviction" in worker.output
    assert sample_value(scrape(worker_metrics), "emotion_stream_redis_evicting_nodes") == 1
    assert worker.stop() == 0


def test_a_redis_that_refuses_writes_when_full_is_not_warned_about(redis_server, redis_client, services):
    redis_client.config_set("maxmemory", 1 << 30)
    redis_client.config_set("maxmemory-policy", "noeviction")
    worker_metrics = free_port()
    worker = services("worker", "worker", "--redis", redis_server.url, *WORKER_FLAGS,
                      "--metrics-port", str(worker_metrics))
    # The housekeeper's first pass sets the workers gauge, then reads the policy.
    wait_for(lambda: serving(worker_metrics), 60, "the worker's metrics")
    wait_for(lambda: sample_value(scrape(worker_metrics), "emotion_stream_workers_alive") == 1, 60,
             "the worker's first housekeeping")
    time.sleep(1)
    assert sample_value(scrape(worker_metrics), "emotion_stream_redis_evicting_nodes") == 0
    assert worker.stop() == 0
    assert "maxmemory-policy" not in worker.output


def _worker_and_ingest(services, url: str, source: str, camera: str, fps: int, metrics_port: int):
    """A worker, and an ingest of ``source`` serving its metrics on ``metrics_port``."""
    services("worker", "worker", "--redis", url, *WORKER_FLAGS)
    return services("ingest", "ingest", source, "--camera", camera, "--fps", str(fps), "--redis", url,
                    "--metrics-port", str(metrics_port))


@pytest.mark.slow
def test_camera_that_changes_resolution_sends_garbage_and_stalls(redis_server, redis_client, services):
    metrics_port = free_port()
    with MJPEGCamera(free_port()) as camera:
        ingest = _worker_and_ingest(services, redis_server.url, camera.url, "flaky", 10, metrics_port)

        def events_after(seq: int) -> bool:
            faces = faces_of(redis_client, "flaky")
            return bool(faces) and max(f.seq for f in faces) >= seq

        wait_for(lambda: events_after(5), 90, "first events")
        camera.mode = "small"  # resolution change mid-stream
        seq = max(f.seq for f in faces_of(redis_client, "flaky"))
        wait_for(lambda: events_after(seq + 10), 60, "events after the resolution change")
        camera.mode = "garbage"  # bytes that are not a JPEG
        time.sleep(3)
        camera.mode = "stall"  # connection open, nothing sent
        time.sleep(8)
        camera.mode = "normal"
        seq = max(f.seq for f in faces_of(redis_client, "flaky"))
        wait_for(lambda: events_after(seq + 10), 90, "events after garbage and a stall")
        reconnects = sample_value(scrape(metrics_port), "emotion_stream_source_reconnects_total", camera="flaky")
        assert reconnects >= 1
        assert ingest.alive() and "reconnecting" in ingest.output


def test_a_snapshot_url_is_polled_not_reconnected(redis_server, redis_client, services):
    """http://camera/snapshot.jpg answers one JPEG a request: it was read as a stream lost
    after every frame (two log lines, a reconnect counted, twice a second)."""
    metrics_port = free_port()
    with MJPEGCamera(free_port()) as camera:
        ingest = _worker_and_ingest(services, redis_server.url, camera.snapshot_url, "snap", 4, metrics_port)
        wait_for(lambda: len(faces_of(redis_client, "snap")) >= 8, 90, "events from 8 snapshots")
        text = scrape(metrics_port)
        assert sample_value(text, "emotion_stream_source_reconnects_total", camera="snap") == 0
        assert sample_value(text, "emotion_stream_source_up", camera="snap") == 1
        assert ingest.stop() == 0
    assert ingest.output.count("serves one image a request; polling it at 4.0 fps") == 1, ingest.output
    assert "WARNING" not in ingest.output and "reading" not in ingest.output.split("polling it")[1], ingest.output
    accepted = int(re.search(r"(\d+) frames accepted", ingest.output).group(1))
    assert 8 <= accepted <= camera.snapshots


@pytest.mark.slow
def test_sigterm_worker_finishes_in_flight_work_and_exits_0(redis_server, redis_client, services, tmp_path):
    url = redis_server.url
    worker = services("worker", "worker", "--redis", url, "--name", "w1", "--detector", "mtcnn",
                      "--batch-size", "8", "--max-frame-age", "600")
    services("ingest", "ingest", "sample:3", "--camera", "hall", "--fps", "30", "--redis", url)
    stream = keys.frames("hall")

    def w1_pending() -> int:
        try:
            return len(redis_client.xpending_range(stream, keys.WORKER_GROUP, "-", "+", 100, consumername="w1"))
        except Exception:
            return 0

    wait_for(lambda: faces_of(redis_client, "hall") and w1_pending() > 0, 120, "w1 busy with frames")
    worker.signal(signal.SIGTERM)
    assert worker.wait(60) == 0, worker.output
    assert w1_pending() == 0, "the stopped worker left entries pending for others to wait out"
    consumers = {c["name"].decode() for c in redis_client.xinfo_consumers(stream, keys.WORKER_GROUP)}
    assert "w1" not in consumers  # it left the group cleanly


def test_a_task_cancelled_inside_redis_calls_always_ends(redis_server):
    """Lease renewals every millisecond, cancelled at random moments 300 times: each ends.
    Python 3.11's wait_for, which redis-py sends every command through, loses a
    cancellation that lands as the command completes; cancel_and_wait cancels again. (A
    lost one hung ingest at the end of a file: its lease keeper never ended.)"""
    import asyncio
    import random

    from emotion_stream.leases import Lease
    from emotion_stream.lifecycle import cancel_and_wait
    from emotion_stream.redis_conn import connect

    async def rounds() -> int:
        client = connect(redis_server.url, "tests")
        lease = Lease(client, "lease:test", 3)
        rng = random.Random(0)
        again = 0
        try:
            for _ in range(300):
                stop = asyncio.Event()
                assert await lease.hold()
                keeper = asyncio.create_task(lease.keep(stop))
                await asyncio.sleep(rng.uniform(0, 0.02))
                started = time.monotonic()
                await asyncio.wait_for(cancel_and_wait(keeper, again_after=0.05), 5)
                again += time.monotonic() - started >= 0.05
                await lease.release()
        finally:
            await client.aclose()
        return again

    again = asyncio.run(rounds())
    print(f"{again} of 300 cancellations needed a second one")  # 3.11: about 1 in 10


def test_sigusr1_logs_each_asyncio_task_and_where_it_waits(redis_server, services):
    ingest = services("ingest", "ingest", "sample:1", "--camera", "hall", "--fps", "5", "--redis", redis_server.url)
    wait_for(lambda: "reading sample" in ingest.output, 60, "ingest to start")
    ingest.signal(signal.SIGUSR1)
    wait_for(lambda: "asyncio tasks:" in ingest.output, 10, "the task dump")
    dump = ingest.output.split("asyncio tasks:", 1)[1]
    assert "ingest-lease-hall: keep (leases.py:" in dump  # the camera's lease keeper, and the await it is in
    assert "camera-hall: run_camera (camera.py:" in dump  # its reader
    wait_for(lambda: "most recent call first" in ingest.output, 10, "the thread dump")
    assert ingest.alive()  # a dump, not a stop
    assert ingest.stop() == 0


def test_sigusr1_makes_a_one_shot_command_print_its_threads_not_die(services, face_bgr, tmp_path):
    image = tmp_path / "face.jpg"
    cv2.imwrite(str(image), face_bgr)
    predict = services("predict", "predict", *[str(image)] * 3000)  # some seconds of work
    wait_for(lambda: "face.jpg" in predict.output, 120, "predict's first result")
    # Stopped, it cannot finish before the signal lands: SIGUSR1 waits, pending, and is
    # the first thing it handles on SIGCONT.
    predict.signal(signal.SIGSTOP)
    assert predict.alive(), "predict finished before it could be signalled"
    predict.signal(signal.SIGUSR1)
    predict.signal(signal.SIGCONT)
    wait_for(lambda: "most recent call first" in predict.output, 10, "the thread dump")
    assert predict.wait(120) == 0
    assert predict.output.count("face.jpg") == 3000


def test_sigusr1_after_a_service_loop_closed_still_dumps_threads_not_kills():
    """Closing an event loop resets the signals it handled to their defaults; SIGUSR1's
    default ends the process. A service signalled while it shuts down must not die."""
    code = (
        "import sys, time\n"
        "from emotion_stream.lifecycle import dump_threads_on_usr1, run_service\n"
        "dump_threads_on_usr1()\n"
        "async def main(stop):\n"
        "    return 0\n"
        "run_service(main)\n"
        "print('closed', flush=True)\n"
        "time.sleep(30)\n"
    )
    process = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert process.stdout is not None and process.stdout.readline().strip() == "closed"
        process.send_signal(signal.SIGUSR1)
        time.sleep(1.0)
        assert process.poll() is None, "SIGUSR1 after the loop closed ended the process"
    finally:
        process.kill()
        _, err = process.communicate()
    assert "most recent call first" in err


def test_a_frame_write_whose_reply_is_lost_is_stored_once_and_its_number_never_reused(redis_server):
    """A TCP proxy between ingest's publisher and a real Redis passes a frame's write
    on and cuts the connection before the reply. redis-py sends the write again: the
    frame must not be appended twice. If Redis then stays unreachable the frame counts
    as dropped, and its number must not go to the next frame (tracking would drop that
    one as a copy)."""
    import asyncio

    import numpy as np

    from emotion_stream.redis_conn import connect
    from emotion_stream.settings import Settings
    from ingest.publisher import FramePublisher

    cut_reply, refuse = asyncio.Event(), asyncio.Event()
    host, port = redis_server.url.removeprefix("redis://").split("/")[0].split(":")

    async def relay(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if refuse.is_set():
            writer.close()
            return
        up_reader, up_writer = await asyncio.open_connection(host, int(port))
        dropping = False

        async def upstream() -> None:
            nonlocal dropping
            while data := await reader.read(65536):
                if cut_reply.is_set() and b"EVALSHA" in data:
                    cut_reply.clear()
                    dropping = True
                up_writer.write(data)
                await up_writer.drain()
            up_writer.close()

        async def downstream() -> None:
            while data := await up_reader.read(65536):
                if dropping:
                    break  # Redis ran the write; its reply is lost with the connection
                writer.write(data)
                await writer.drain()
            writer.close()
            up_writer.close()

        await asyncio.gather(upstream(), downstream(), return_exceptions=True)

    async def scenario() -> list[int]:
        proxy = await asyncio.start_server(relay, "127.0.0.1", 0)
        client = connect(f"redis://127.0.0.1:{proxy.sockets[0].getsockname()[1]}", "tests")
        publisher = FramePublisher(client, "door", Settings())
        frame = np.full((48, 64, 3), 128, np.uint8)
        assert await publisher.publish(frame, time.time())  # frame 0
        cut_reply.set()
        assert await publisher.publish(frame, time.time())  # frame 1: sent again, stored once
        cut_reply.set()
        refuse.set()
        assert not await publisher.publish(frame, time.time())  # frame 2: landed, reply lost, Redis gone
        refuse.clear()
        assert await publisher.publish(frame, time.time())  # frame 3
        assert publisher.dropped == {"redis_unavailable": 1} and publisher.accepted == 3
        entries = await client.xrange(keys.frames("door"))
        await client.aclose()
        proxy.close()
        await asyncio.sleep(0.2)  # the relays see their connections close
        return [int(fields[b"seq"]) for _, fields in entries]

    assert asyncio.run(scenario()) == [0, 1, 2, 3]


def test_workers_long_dead_leave_the_workers_hash_and_the_consumer_groups(redis_server, redis_client, services):
    """A worker's name is its host and pid, so every worker ever killed (a pod replaced)
    stayed in the workers hash and in every camera's consumer group for good. Silent for
    an hour, it is removed, once it holds no entry (those are reclaimed first)."""
    stream = keys.frames("door")
    redis_client.sadd(keys.CAMERAS, "door")
    redis_client.xgroup_create(stream, keys.WORKER_GROUP, id="0", mkstream=True)
    for seq in range(2):
        redis_client.xadd(stream, {"junk": seq})
    [[_, [(first, _)]]] = redis_client.xreadgroup(keys.WORKER_GROUP, "ghost", {stream: ">"}, count=1)
    redis_client.xack(stream, keys.WORKER_GROUP, first)  # ghost: nothing pending
    redis_client.xreadgroup(keys.WORKER_GROUP, "holding", {stream: ">"}, count=1)  # holding: one entry
    now = time.time()
    redis_client.hset(keys.WORKERS, mapping={"ghost": now - 7200, "holding": now - 7200, "resting": now - 600})
    worker = services("worker", "worker", "--redis", redis_server.url, *WORKER_FLAGS, "--name", "live")

    def consumers() -> set[str]:
        return {c["name"].decode() for c in redis_client.xinfo_consumers(stream, keys.WORKER_GROUP)}

    # The held entry is reclaimed (and dead-lettered: it is no frame), then its holder goes too.
    wait_for(lambda: consumers() == {"live"}, 60, "the dead workers' consumers removed")
    assert set(redis_client.hkeys(keys.WORKERS)) == {b"live", b"resting"}  # silent 10 min: still listed
    assert "worker ghost silent for 7" in worker.output and "worker holding silent for 7" in worker.output


def test_a_camera_is_read_in_real_time_however_far_away_redis_is(redis_server, services, tmp_path):
    """Ingest near the cameras, Redis in another region: each frame's write waits a round
    trip. Reading waited on it, so a 15 fps file through 120 ms round trips played in
    slow motion (every frame sent, 90 frames in 11 s) and a live camera fell further
    behind, with no word. Now the reader keeps the camera's pace; frames it reads while
    the last is being written are dropped, newest kept, and counted."""
    from .latency_proxy import LatencyProxy

    clip = write_clip(tmp_path / "far.avi", seconds=6.0, fps=15, faces=1)
    port = int(redis_server.url.rsplit(":", 1)[1].split("/")[0])
    with LatencyProxy(port, 0.06) as far:
        ingest = services("ingest", "ingest", str(clip), "--camera", "far", "--redis", f"redis://127.0.0.1:{far}/0")
        assert ingest.wait(90) == 0, ingest.output[-2000:]
    output = ingest.output
    summary = re.search(r"camera far: (\d+) frames accepted, 0 unconfirmed, dropped: redis_slow (\d+)", output)
    assert summary, output[-2000:]
    accepted, slow = int(summary[1]), int(summary[2])
    assert accepted + slow == 90 and slow > 0  # every frame of the file accounted for
    stamps = [datetime.strptime(line[:23], "%Y-%m-%d %H:%M:%S,%f") for line in output.splitlines()
              if "camera far: reading " in line or "camera far: end of " in line]
    assert len(stamps) == 2 and (stamps[1] - stamps[0]).total_seconds() < 8.0, stamps  # played in about 6 s
    assert "Redis round trips slower than the camera" in output
