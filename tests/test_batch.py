"""Batch mode: a folder through the workers into submission.csv; bad files; resuming."""

from __future__ import annotations

import csv
import signal
from pathlib import Path

import cv2
import pytest

from cli import main
from ingest.samples import sample_frame

from .hostile import hostile_images
from .procs import wait_for


def read_rows(path: Path) -> list[list[str]]:
    with path.open(newline="") as fh:
        return list(csv.reader(fh))


@pytest.fixture()
def messy_folder(tmp_path, face_bgr):
    folder = tmp_path / "test_kaggle"
    folder.mkdir()
    readable = set()
    for name, (data, expected) in hostile_images(face_bgr).items():
        (folder / name).write_bytes(data)
        if expected is None:
            readable.add(name)
    for i in range(5):
        cv2.imwrite(str(folder / f"frame_{i}.png"), sample_frame(float(i), faces=1 + i % 2))
        readable.add(f"frame_{i}.png")
    (folder / "notes.txt").write_text("not an image")
    (folder / ".DS_Store").write_bytes(b"\x00\x01")
    (folder / "subdir").mkdir()
    (folder / "album.jpg").mkdir()  # a folder named like an image
    (folder / "link.jpg").symlink_to("/etc/passwd")
    (folder / "comma, in name.jpg").write_bytes(cv2.imencode(".jpg", face_bgr)[1].tobytes())
    readable.add("comma, in name.jpg")
    return folder, readable


def test_batch_writes_one_row_per_readable_image(messy_folder, tmp_path, capsys, redis_server, redis_client):
    folder, readable = messy_folder
    out = tmp_path / "submission.csv"
    assert main(["batch", str(folder), "--out", str(out), "--workers", "2", "--redis", redis_server.url]) == 0
    rows = read_rows(out)
    assert rows[0] == ["image_path", "emotion"]
    names = [r[0] for r in rows[1:]]
    assert names == sorted(readable)  # exactly the readable ones, sorted, with extensions
    assert all(r[1] in ("anger", "contempt", "disgust", "fear", "happy", "neutral", "sad", "surprise", "uncertain")
               for r in rows[1:])
    summary = capsys.readouterr().out
    assert f"images:               {len(readable) + 5}" in summary  # + 5 broken image files
    assert f"rows written:         {len(readable)}" in summary
    for reason in ("empty.jpg: empty", "text.jpg: undecodable image: not a recognised image format",
                   "truncated.jpg: undecodable image: truncated JPEG", "bomb.png: undecodable image: declared size",
                   "link.jpg: symbolic link", "notes.txt: not an image file extension",
                   "subdir: folder (batch mode reads only", "album.jpg: folder"):
        assert reason in summary, reason
    assert "whole-image fallback: " in summary and "faces found:" in summary
    assert not (tmp_path / "submission.csv.partial").exists()
    # Nothing of the job is left in a shared Redis: its events and dead letters stayed
    # for good before, a few MB for every folder ever labelled.
    left = list(redis_client.scan_iter("*{batch-*"))
    assert not left and not redis_client.smembers("emotion-stream:cameras"), left


def test_batch_resumes_after_being_killed(tmp_path, services, face_bgr):
    folder = tmp_path / "many"
    folder.mkdir()
    total = 400
    for i in range(total):
        image = cv2.resize(face_bgr, (200 + (i % 7) * 20, 240 + (i % 5) * 20))
        cv2.imwrite(str(folder / f"img_{i:04d}.jpg"), image)
    out = tmp_path / "submission.csv"
    journal = tmp_path / "submission.csv.partial"
    first = services("batch-1", "batch", str(folder), "--out", str(out), "--workers", "1", "--batch-size", "4")
    wait_for(lambda: journal.exists() and journal.read_text().count("\n") >= 40, 120, "some journaled results")
    # A second run of the same output while the first runs is refused: it would resume
    # from rows still being written. (It did, and both wrote the file.)
    meanwhile = services("batch-meanwhile", "batch", str(folder), "--out", str(out), "--workers", "1")
    assert meanwhile.wait(60) == 1
    assert meanwhile.output.strip().splitlines()[-1] == (
        f"emotion-stream batch: error: another batch run is writing submission.csv now ({journal} is locked): "
        "wait for it to end, or give another --out")
    first.signal(signal.SIGKILL)
    first.wait(10)
    done_before = journal.read_text().count("\n") - 1  # the first line says which job it is
    assert 40 <= done_before < total and not out.exists()

    second = services("batch-2", "batch", str(folder), "--out", str(out), "--workers", "1")
    assert second.wait(300) == 0, second.output
    rows = read_rows(out)[1:]
    names = [r[0] for r in rows]
    assert names == [f"img_{i:04d}.jpg" for i in range(total)]  # each exactly once, sorted
    assert f"rows written:         {total} ({done_before} from the interrupted run)" in second.output
    assert not journal.exists()


def test_a_batch_jobs_own_workers_leave_live_cameras_alone(tmp_path, services, redis_server, redis_client, face_bgr):
    """`batch` on a shared Redis starts workers for its job: they read every camera, so
    live cameras were analysed with the job's model and detector while it ran, and the
    workers took a share of their tracking, handed back when the job ended. (The demo's
    worker, given a REDIS_URL, is kept to its camera the same way.)"""
    from emotion_stream import keys

    folder = tmp_path / "images"
    folder.mkdir()
    for i in range(20):
        cv2.imwrite(str(folder / f"face_{i:02d}.jpg"), face_bgr)
    ingest = services("ingest", "ingest", "sample:1", "--camera", "lobby", "--fps", "10", "--redis", redis_server.url)
    wait_for(lambda: redis_client.xlen(keys.frames("lobby")) >= 3, 60, "the live camera's frames")
    job = services("batch", "batch", str(folder), "--out", str(tmp_path / "out.csv"), "--workers", "2",
                   "--redis", redis_server.url)
    assert job.wait(120) == 0, job.output[-3000:]
    assert len(read_rows(tmp_path / "out.csv")) == 21
    assert not redis_client.exists(keys.track_lease("lobby"))  # its tracking taken by nobody
    assert redis_client.hget(keys.stats("lobby"), "processed") is None  # its frames analysed by nobody
    assert "lobby" not in job.output, job.output[-3000:]
    assert ingest.stop() == 0


def test_the_demo_on_a_shared_redis_analyses_and_tracks_its_camera_alone(services, redis_server, redis_client):
    """Its worker consumed every camera, and its tracking owner took a share of them."""
    from emotion_stream import keys

    url = redis_server.url
    ingest = services("ingest", "ingest", "sample:1", "--camera", "lobby", "--fps", "10", "--redis", url)
    # The deployment's worker analyses the live camera; its tracking is left to others.
    worker = services("worker", "worker", "--redis", url, "--no-track-owner")
    wait_for(lambda: redis_client.xlen(keys.analysed("lobby")) >= 3, 60, "the live camera's frame records")
    processed = int(redis_client.hget(keys.stats("lobby"), "processed") or 0)
    demo = services("demo", "demo", "--redis", url, "--duration", "8")
    assert demo.wait(120) == 0, demo.output[-3000:]
    assert " face " in demo.output and "person 1" in demo.output  # its own camera analysed and tracked
    assert "lobby" not in demo.output
    assert not redis_client.exists(keys.track_lease("lobby"))
    assert ingest.stop() == 0 and worker.stop() == 0
    assert int(redis_client.hget(keys.stats("lobby"), "processed")) > processed  # the worker went on
