"""Hostile input through the real pipeline: frame messages and batch folders."""

from __future__ import annotations

import csv
import os
import signal

import cv2
import pytest

from cli import main
from emotion_stream import keys
from emotion_stream.schema import FrameKind, FrameMessage
from ingest.samples import sample_frame

from .hostile import hostile_images
from .procs import wait_for
from .test_observability import sample_value, scrape
from .test_pipeline import WORKER_FLAGS, faces_of


def test_hostile_frames_are_dead_lettered_and_counted(redis_server, redis_client, services, face_bgr):
    from emotion_stream.embedded_redis import free_port

    camera = "attic"
    stream = keys.frames(camera)
    redis_client.sadd(keys.CAMERAS, camera)
    limit = 200_000
    metrics_port = free_port()

    def frame(image: bytes, **overrides: object) -> dict:
        fields = FrameMessage(camera, 1, 0.0, FrameKind.STILL, image, 640, 480).to_fields()
        fields.update(overrides)
        return fields

    corpus = hostile_images(face_bgr)
    good = cv2.imencode(".jpg", sample_frame(0.0))[1].tobytes()
    hostile = {
        "oversized image": frame(os.urandom(limit + 1)),
        "empty image": frame(b""),
        "png bomb": frame(corpus["bomb.png"][0]),
        "jpeg bomb": frame(corpus["bomb.jpg"][0]),
        "truncated": frame(corpus["truncated.jpg"][0]),
        "text": frame(corpus["text.jpg"][0]),
        "wrong type seq": frame(good, seq="1e9"),
        "huge width": frame(good, width=10**9),
        "non-utf8 camera": frame(good, camera=b"\xff\xfe"),
        "unknown version": frame(good, v=99),
        "unknown kind": frame(good, kind="teleport"),
        "recorded, no position": frame(good, kind="recorded"),
        "recorded, negative position": frame(good, kind="recorded", position_s="-1.0"),
        "recorded, position not a number": frame(good, kind="recorded", position_s="soon"),
        "path traversal name": frame(good, name="../../etc/passwd"),
        "reply_to injection": frame(good, reply_to="emotion-stream:cameras"),
        "oversized field": frame(good, camera="c" * 5000),
    }
    for fields in hostile.values():
        redis_client.xadd(stream, fields)
    awkward = {name: data for name, (data, expected) in corpus.items() if expected is None}
    for seq, data in enumerate(awkward.values(), start=100):  # 16-bit, CMYK, alpha, grey...
        redis_client.xadd(stream, frame(data, seq=seq))
    worker = services("worker", "worker", "--redis", redis_server.url, *WORKER_FLAGS, "--metrics-port", str(metrics_port),
                      env={"EMOTION_STREAM_MAX_IMAGE_BYTES": str(limit)})
    wait_for(lambda: redis_client.xlen(keys.dead_letter(camera)) >= len(hostile), 90, "all hostile frames dead-lettered")
    wait_for(lambda: len({f.seq for f in faces_of(redis_client, camera)}) >= len(awkward), 60, "awkward frames processed")
    assert redis_client.xlen(keys.dead_letter(camera)) == len(hostile)
    assert redis_client.xpending(stream, keys.WORKER_GROUP)["pending"] == 0
    text = scrape(metrics_port)
    counted = sum(sample_value(text, "emotion_stream_frames_dead_lettered_total", reason=r)
                  for r in ("malformed_message", "undecodable_image", "analysis_failed"))
    assert counted == len(hostile)
    assert worker.alive()
    assert worker.stop() == 0


@pytest.mark.slow
def test_hostile_batch_folder_never_hangs_and_reports_everything(tmp_path, face_bgr, capsys):
    folder = tmp_path / "folder"
    folder.mkdir()
    for name, (data, _) in hostile_images(face_bgr).items():
        (folder / name).write_bytes(data)
    tricky = ['quote".jpg', "new\nline.jpg", "comma, semi; colon:.jpg", "ünïcode.jpg", "-rf *.jpg"]
    ok = cv2.imencode(".jpg", face_bgr)[1].tobytes()
    for name in tricky:
        (folder / name).write_bytes(ok)
    (folder / "outside.jpg").symlink_to(tmp_path.parent / "does-not-matter.jpg")
    (folder / "a\\..\\..\\evil.jpg").write_bytes(ok)  # a path on Windows: never sent as a name
    (folder / "..\\hidden.jpg").write_bytes(ok)
    os.mkfifo(folder / "pipe.jpg")  # reading a FIFO would block forever
    out = tmp_path / "submission.csv"
    signal.alarm(120)  # a hang fails the test instead of the suite
    try:
        assert main(["batch", str(folder), "--out", str(out), "--workers", "1"]) == 0
    finally:
        signal.alarm(0)
    summary = capsys.readouterr().out
    with out.open(newline="") as fh:
        names = [row[0] for row in list(csv.reader(fh))[1:]]
    for name in tricky:
        assert name in names  # quoted correctly and read back intact
    assert "pipe.jpg: not a regular file" in summary
    assert "outside.jpg: symbolic link (not followed)" in summary
    assert "a\\..\\..\\evil.jpg: invalid image name" in summary
    assert "..\\hidden.jpg: hidden file" in summary
    assert "bomb.png: undecodable image: declared size 100000x100000 is over the limit" in summary


def test_image_size_limits_are_configurable(tmp_path, face_bgr, capsys, monkeypatch):
    image = tmp_path / "face.jpg"
    cv2.imwrite(str(image), face_bgr)
    monkeypatch.setenv("EMOTION_STREAM_MAX_IMAGE_PIXELS", "10000")
    assert main(["predict", str(image)]) == 1
    assert "over the limit of 10000 pixels" in capsys.readouterr().err


def test_an_entry_delivered_too_often_is_dead_lettered_as_poison(redis_server, redis_client, services):
    """A frame that keeps killing workers must not cycle forever, nor hang a batch job."""
    from emotion_stream.schema import FrameResult

    camera = "poison-job"
    stream = keys.frames(camera)
    redis_client.sadd(keys.CAMERAS, camera)
    redis_client.xgroup_create(stream, keys.WORKER_GROUP, id="0", mkstream=True)
    image = cv2.imencode(".jpg", sample_frame(0.0))[1].tobytes()
    entry_id = redis_client.xadd(stream, FrameMessage(
        camera, 0, 0.0, FrameKind.STILL, image, name="killer.jpg", reply_to=keys.results(camera)).to_fields())
    # A consumer that takes it and "dies", four times over.
    redis_client.xreadgroup(keys.WORKER_GROUP, "ghost", {stream: ">"})
    for _ in range(3):
        redis_client.xclaim(stream, keys.WORKER_GROUP, "ghost", 0, [entry_id])
    worker = services("worker", "worker", "--redis", redis_server.url, "--claim-idle-ms", "300")
    wait_for(lambda: redis_client.xlen(keys.results(camera)) >= 1, 90, "a result for the poisoned image")
    [(_, fields)] = redis_client.xrange(keys.results(camera))
    result = FrameResult.from_json(fields[b"result"])
    assert not result.ok and result.name == "killer.jpg" and "poison" in result.error
    [(_, letter)] = redis_client.xrange(keys.dead_letter(camera))
    assert b"delivered" in letter[b"reason"] and letter[b"msg.name"] == b"killer.jpg"
    assert redis_client.xpending(stream, keys.WORKER_GROUP)["pending"] == 0
    assert worker.stop() == 0
