"""The streaming pipeline against a real redis-server with real ingest/worker processes."""

from __future__ import annotations

import json
import re
import signal
import subprocess
import time
from collections import Counter

import cv2

from emotion_stream import keys
from emotion_stream.embedded_redis import free_port
from emotion_stream.labels import EMOTIONS
from emotion_stream.schema import (
    EndOfStream,
    FaceEvent,
    FrameKind,
    FrameMessage,
    TrackEvent,
    parse_event,
)
from ingest.samples import sample_frame, write_clip

from .conftest import require_system
from .procs import EXE, wait_for
from .test_observability import scrape

WORKER_FLAGS = ("--max-frame-age", "600", "--claim-idle-ms", "1500", "--batch-size", "4")


def events_of(client, camera: str) -> list:
    return [parse_event(fields[b"event"]) for _id, fields in client.xrange(keys.events(camera))]


def faces_of(client, camera: str) -> list[FaceEvent]:
    return [e for e in events_of(client, camera) if isinstance(e, FaceEvent)]


def ended(client, camera: str) -> bool:
    return any(isinstance(e, EndOfStream) for e in events_of(client, camera))


def test_video_file_to_events(redis_server, redis_client, services, tmp_path, default_model):
    clip = write_clip(tmp_path / "two-faces.avi", seconds=2.0, fps=10, faces=2)
    url = redis_server.url
    worker = services("worker", "worker", "--redis", url, *WORKER_FLAGS)
    ingest = services("ingest", "ingest", str(clip), "--camera", "lobby", "--redis", url, "--fps", "20")
    assert ingest.wait(60) == 0, ingest.output
    wait_for(lambda: ended(redis_client, "lobby"), 90, "the end-of-stream event")

    faces = faces_of(redis_client, "lobby")
    assert sorted({f.seq for f in faces}) == list(range(20))
    calm = sum(f.emotion in ("neutral", "sad", "happy") for f in faces)
    assert calm >= 0.7 * len(faces), [f.emotion for f in faces]  # a calm portrait, mostly so
    per_frame = Counter(f.seq for f in faces)
    assert set(per_frame.values()) == {2}, per_frame  # both portraits in every frame
    for face in faces:
        assert face.camera == "lobby" and face.faces_in_frame == 2 and face.face_index in (0, 1)
        assert set(face.probabilities) == set(EMOTIONS)
        assert abs(sum(face.probabilities.values()) - 1.0) < 1e-3
        assert face.confidence == max(face.probabilities.values())
        x, y, w, h = face.box
        assert 0 <= x and 0 <= y and x + w <= 640 and y + h <= 480 and w > 60
        assert face.captured_at <= face.processed_at
        assert face.detector == "blazeface" and face.model == default_model.id
        assert not face.whole_image
        # BlazeFace's six landmarks travel with the event, inside the face's box.
        assert len(face.landmarks) == 6
        assert all(x - 10 <= px <= x + w + 10 and y - 10 <= py <= y + h + 10 for px, py in face.landmarks)
    # Tracking: two people, each one id from first frame to last, ended by the end marker
    # (which comes after their last face event).
    left = lambda f: f.box[0] + f.box[2] / 2 < 320  # noqa: E731  (the portraits sit left and right)
    by_side = {side: {f.track for f in faces if left(f) is side} for side in (True, False)}
    assert all(len(ids) == 1 for ids in by_side.values()) and by_side[True] != by_side[False], by_side
    assert all(f.track_emotion in EMOTIONS for f in faces)
    lifecycle = [TrackEvent.from_json(fields[b"event"]) for _id, fields in redis_client.xrange(keys.tracks("lobby"))]
    assert Counter(e.type.value for e in lifecycle) == {"track_started": 2, "track_ended": 2} | Counter(
        e.type.value for e in lifecycle if e.type.value == "emotion_changed")
    assert {e.reason for e in lifecycle if e.type.value == "track_ended"} == {"end_of_stream"}
    assert isinstance(events_of(redis_client, "lobby")[-1], EndOfStream)
    # Pub/sub channel name == stream name; the stream is bounded.
    assert redis_client.sismember(keys.CAMERAS, "lobby")
    assert worker.stop() == 0  # SIGTERM: clean exit
    assert redis_client.xpending(keys.frames("lobby"), keys.WORKER_GROUP)["pending"] == 0


def test_a_video_file_thinned_by_fps_keeps_its_own_timeline(redis_server, redis_client, services, tmp_path):
    """A 3 s, 15 fps file at --fps 5: every third frame, sent over 3 s. (It was every
    frame at 5 fps: 9 s of slow motion, and a person on screen for 3 s tracked for 9.)"""
    clip = write_clip(tmp_path / "three-seconds.avi", seconds=3.0, fps=15, faces=1)
    url = redis_server.url
    services("worker", "worker", "--redis", url, *WORKER_FLAGS)
    ingest = services("ingest", "ingest", str(clip), "--camera", "talk", "--redis", url, "--fps", "5")
    assert ingest.wait(60) == 0, ingest.output
    assert "45 frames read, 15 sent" in ingest.output, ingest.output
    wait_for(lambda: ended(redis_client, "talk"), 90, "the end-of-stream event")
    assert sorted({f.seq for f in faces_of(redis_client, "talk")}) == list(range(15))
    tracks = [TrackEvent.from_json(f[b"event"]) for _id, f in redis_client.xrange(keys.tracks("talk"))]
    [track] = [t for t in tracks if t.type.value == "track_ended"]
    assert 2.0 <= track.duration_s <= 3.5, track  # the clip's 3 s (first to last frame sent: 2.8 s)


def test_subscribe_until_end_prints_a_files_faces_or_people_then_exits(redis_server, redis_client, services,
                                                                       tmp_path):
    """`subscribe --tracks --until-end` never ended: the end marker comes on the events channel."""
    import json

    clip = write_clip(tmp_path / "short.avi", seconds=2.0, fps=10, faces=1)
    url = redis_server.url
    services("worker", "worker", "--redis", url, *WORKER_FLAGS)

    def listening(channel: str) -> int:
        return int(redis_client.pubsub_numsub(channel)[0][1])

    faces = services("faces", "subscribe", "--camera", "clip", "--until-end", "--json", "--redis", url)
    wait_for(lambda: listening(keys.events("clip")) == 1, 60, "the faces subscriber")
    people = services("people", "subscribe", "--camera", "clip", "--tracks", "--until-end", "--json", "--redis", url)
    wait_for(lambda: listening(keys.tracks("clip")) == 1, 60, "the people subscriber")
    assert services("ingest", "ingest", str(clip), "--camera", "clip", "--redis", url).wait(60) == 0
    assert faces.wait(60) == 0 and people.wait(60) == 0

    def printed(service) -> list[dict]:
        return [json.loads(line) for line in service.output.splitlines() if line.startswith("{")]

    assert [e.get("type", "face") for e in printed(faces)] == ["face"] * 20 + ["end"]
    lifecycle = printed(people)
    assert [e["type"] for e in lifecycle] == ["track_started", "track_ended"], lifecycle
    assert lifecycle[1]["reason"] == "end_of_stream"


def test_a_recorded_video_goes_as_fast_as_the_workers_and_keeps_its_clock(redis_server, redis_client, services,
                                                                          tmp_path):
    """``--pace workers``: ingest waits for the workers instead of playing on (no worker
    yet: 4 frames written, where real time would have written 15 a second and the bound
    trimmed them), every frame is analysed, and events and tracks are on the video's clock."""
    clip = write_clip(tmp_path / "six-seconds.avi", seconds=6.0, fps=15, faces=1)
    url = redis_server.url
    ingest = services("ingest", "ingest", str(clip), "--camera", "tape", "--redis", url, "--pace", "workers",
                      "--max-len", "8")
    stream = keys.frames("tape")
    wait_for(lambda: redis_client.exists(stream) and redis_client.xlen(stream) == 4, 30, "the first 4 frames")
    time.sleep(1.5)
    assert redis_client.xlen(stream) == 4 and ingest.alive(), ingest.output  # waiting for a worker
    services("worker", "worker", "--redis", url, *WORKER_FLAGS)
    assert ingest.wait(90) == 0, ingest.output
    assert "90 frames read, 90 sent" in ingest.output and "dropped: none" in ingest.output, ingest.output
    wait_for(lambda: ended(redis_client, "tape"), 90, "the end-of-stream event")
    faces = faces_of(redis_client, "tape")
    assert sorted(f.seq for f in faces) == list(range(90))
    assert all(abs(f.position_s - f.seq / 15) < 1e-5 for f in faces)
    [start] = {round(f.captured_at - f.position_s, 4) for f in faces}  # one clock: the start + the position
    assert not redis_client.hget(keys.stats("tape"), keys.Stat.TRIMMED)
    tracks = [TrackEvent.from_json(f[b"event"]) for _id, f in redis_client.xrange(keys.tracks("tape"))]
    [track] = [t for t in tracks if t.type.value == "track_ended"]
    # On screen from 0 to 5.93 s of the video, however long the run took (over 1.5 s more).
    assert track.reason == "end_of_stream" and abs(track.duration_s - 89 / 15) < 0.01, track
    assert abs(track.at - (start + 89 / 15)) < 0.01 and abs(track.position_s - 89 / 15) < 0.01, track
    assert [t.position_s for t in tracks if t.type.value == "track_started"] == [0.0]


def test_a_recorded_video_across_two_workers_has_every_face_tracked(redis_server, redis_client, services, tmp_path):
    """Two workers take a recorded video's frames in batches as fast as they can, and a
    batch can take longer than the live reorder window (0.5 s): its frames arrived after
    tracking had passed them and were published without a track."""
    clip = write_clip(tmp_path / "twenty-seconds.avi", seconds=20.0, fps=15, faces=2)
    url = redis_server.url
    for name, batch in (("worker-a", "64"), ("worker-b", "4")):  # a's batches hold frames for a second or more
        services(name, "worker", "--redis", url, "--claim-idle-ms", "1500", "--batch-size", batch)
    ingest = services("ingest", "ingest", str(clip), "--camera", "tape2", "--redis", url, "--pace", "workers")
    assert ingest.wait(120) == 0, ingest.output
    wait_for(lambda: ended(redis_client, "tape2"), 120, "the end-of-stream event")
    faces = faces_of(redis_client, "tape2")
    assert len(faces) == 600 and not [f.seq for f in faces if f.track is None]
    assert len({f.track for f in faces}) == 2


def test_a_phone_video_of_variable_frame_rate_keeps_its_own_timestamps(redis_server, redis_client, services,
                                                                       tmp_path):
    """30 frames at 15 fps, then 15 at 5 fps (as a phone records in low light): each
    frame's position is its timestamp in the file. The frame count over the mean rate
    OpenCV reports (9.8 fps) put frame 29 at 2.96 s instead of 1.93 s."""
    ffmpeg = require_system("ffmpeg", "makes a variable-frame-rate video")
    clip = write_clip(tmp_path / "steady.avi", seconds=3.0, fps=15, faces=1)
    phone = tmp_path / "phone.mp4"
    subprocess.run([ffmpeg, "-loglevel", "error", "-i", str(clip), "-vf",
                    "setpts='if(lt(N,30),N/15,2+(N-30)*0.2)/TB'", "-fps_mode", "vfr", "-c:v", "libx264",
                    str(phone)], check=True, timeout=120)
    url = redis_server.url
    services("worker", "worker", "--redis", url, *WORKER_FLAGS)
    ingest = services("ingest", "ingest", str(phone), "--camera", "phone", "--redis", url, "--pace", "workers")
    assert ingest.wait(90) == 0, ingest.output
    wait_for(lambda: ended(redis_client, "phone"), 90, "the end-of-stream event")
    positions = {f.seq: f.position_s for f in faces_of(redis_client, "phone")}
    assert sorted(positions) == list(range(45))
    expected = [n / 15 if n < 30 else 2 + (n - 30) * 0.2 for n in range(45)]
    assert all(abs(positions[n] - expected[n]) < 0.002 for n in range(45)), positions
    tracks = [TrackEvent.from_json(f[b"event"]) for _id, f in redis_client.xrange(keys.tracks("phone"))]
    [track] = [t for t in tracks if t.type.value == "track_ended"]
    assert abs(track.duration_s - 4.8) < 0.01, track


def test_a_looped_video_keeps_one_clock_across_its_loops(redis_server, redis_client, services, tmp_path):
    clip = write_clip(tmp_path / "one-second.avi", seconds=1.0, fps=10, faces=1)
    url = redis_server.url
    services("worker", "worker", "--redis", url, *WORKER_FLAGS)
    ingest = services("ingest", "ingest", str(clip), "--camera", "loop", "--redis", url, "--pace", "workers",
                      "--loop")
    wait_for(lambda: len({f.seq for f in faces_of(redis_client, "loop")}) >= 25, 90, "two and a half loops")
    assert ingest.stop() == 0
    positions = {f.seq: f.position_s for f in faces_of(redis_client, "loop")}
    assert all(abs(position - seq / 10) < 1e-4 for seq, position in positions.items()), positions


def test_many_cameras_in_one_ingest_process(redis_server, redis_client, services, tmp_path):
    """``--cameras FILE``: two synthetic cameras and a video file in one process, each on
    its own stream; the file ends on its own, the cameras go on until SIGTERM."""
    clip = write_clip(tmp_path / "tape.avi", seconds=2.0, fps=10, faces=1)
    cameras = tmp_path / "cameras.txt"
    cameras.write_text(f"# id   source\nhall   sample:1\n\ntape\t{clip}\ndoor   sample:2\n")
    url = redis_server.url
    port = free_port()
    services("worker", "worker", "--redis", url, *WORKER_FLAGS)
    ingest = services("ingest", "ingest", "--cameras", str(cameras), "--redis", url, "--fps", "5",
                      "--metrics-port", str(port))
    wait_for(lambda: ended(redis_client, "tape"), 90, "the end of the video file's stream")
    wait_for(lambda: len({f.seq for f in faces_of(redis_client, "door")}) >= 5, 60, "the second camera's events")
    assert ingest.alive(), ingest.output  # the live cameras go on
    # The finished file is no source down (its alert would fire): its series is gone.
    up = {m[0]: float(m[1]) for m in re.findall(r'^emotion_stream_source_up\{camera="([^"]+)"\} (\S+)$',
                                                 scrape(port), re.M)}
    assert up == {"hall": 1.0, "door": 1.0}, up
    assert ingest.stop() == 0, ingest.output
    for camera, faces in (("hall", 1), ("tape", 1), ("door", 2)):
        per_frame = Counter(f.seq for f in faces_of(redis_client, camera))
        assert per_frame and set(per_frame.values()) == {faces}, (camera, per_frame)
        assert re.search(rf"camera {camera}: [1-9]\d* frames accepted, 0 unconfirmed, dropped: none", ingest.output)
    assert sorted(Counter(f.seq for f in faces_of(redis_client, "tape"))) == list(range(10))  # 2 s at 5 fps


def _last_frame(client, camera: str) -> FrameMessage | None:
    last = client.xrevrange(keys.frames(camera), count=1)
    return FrameMessage.from_fields(last[0][1], max_image_bytes=1 << 24) if last else None


def test_sighup_applies_a_changed_cameras_file_to_the_running_cameras(redis_server, redis_client, services,
                                                                      tmp_path):
    """``kill -HUP`` on ``ingest --cameras FILE``: a camera added starts, one removed stops
    (its lease and source_up series gone), one whose source changed starts over on it,
    the others go on untouched; a file that ended is not read again; a file with a
    mistake, or a camera that cannot be read, is said and changes nothing else."""
    clip = write_clip(tmp_path / "tape.avi", seconds=1.0, fps=10, faces=1)
    (tmp_path / "notes.mp4").write_text("not a video")
    cameras = tmp_path / "cameras.txt"
    cameras.write_text(f"hall sample:1\ndoor sample:1\ntape {clip}\n")
    port = free_port()
    ingest = services("ingest", "ingest", "--cameras", str(cameras), "--redis", redis_server.url, "--fps", "5",
                      "--max-len", "1000", "--metrics-port", str(port))

    def frames(camera: str) -> int:
        last = _last_frame(redis_client, camera)
        return -1 if last is None else last.seq

    def applied(times: int) -> bool:
        return ingest.output.count("cameras file applied") == times

    def up() -> dict[str, float]:
        return {m[0]: float(m[1]) for m in re.findall(r'^emotion_stream_source_up\{camera="([^"]+)"\} (\S+)$',
                                                     scrape(port), re.M)}

    def tape_ended() -> bool:
        last = _last_frame(redis_client, "tape")
        return last is not None and last.kind is FrameKind.END

    wait_for(lambda: tape_ended() and frames("door") >= 3, 60, "the cameras' frames")
    cameras.write_text(f"hall sample:1\ndesk sample:2\ntape {clip}\nnotes {tmp_path / 'notes.mp4'}\n")
    ingest.signal(signal.SIGHUP)
    wait_for(lambda: applied(1), 30, "the cameras file applied")
    assert "cameras file applied: 3 cameras running; started desk, notes; stopped door\n" in ingest.output, ingest.output
    wait_for(lambda: f"camera notes: {tmp_path / 'notes.mp4'}: cannot be opened as video; left out" in ingest.output,
             30, "the camera that cannot be read, said")
    assert not redis_client.exists(keys.ingest_lease("door")) and redis_client.exists(keys.ingest_lease("desk"))
    door, hall = frames("door"), frames("hall")
    wait_for(lambda: frames("desk") >= 3 and frames("hall") >= hall + 3, 30, "the new and the untouched camera")
    assert frames("door") == door  # stopped
    assert up() == {"hall": 1.0, "desk": 1.0, "notes": 0.0}, up()  # listed and down: its alert fires
    assert 'camera="door"' not in scrape(port)  # removed: every series of it gone, its label free
    # The untouched camera was never restarted; the ended file was not read again.
    assert ingest.output.count("camera hall: reading") == 1 and ingest.output.count("camera tape: reading") == 1
    assert redis_client.xlen(keys.frames("tape")) == 6  # 1 s at 5 fps and the end marker

    cameras.write_text("hall sample:1\nhall 0\n")
    ingest.signal(signal.SIGHUP)
    wait_for(lambda: "cameras file not applied" in ingest.output, 30, "the mistake said")
    assert "line 2: camera 'hall' again" in ingest.output and ingest.alive()
    scraped = scrape(port)  # what the alert on a refused file reads
    assert "emotion_stream_ingest_cameras_file_applied 0.0" in scraped and "emotion_stream_ingest_cameras 2.0" in scraped  # hall, desk
    cameras.write_text("hall sample:2\ndesk sample:2\n")
    ingest.signal(signal.SIGHUP)
    wait_for(lambda: applied(2), 30, "the cameras file applied again")
    assert "cameras file applied: 2 cameras running; restarted on a new source hall\n" in ingest.output, ingest.output
    wait_for(lambda: (last := _last_frame(redis_client, "hall")) is not None and last.seq < hall, 30,
             "hall's frames from its new source, numbered from 0")
    assert up() == {"hall": 1.0, "desk": 1.0}, up()  # notes is no longer listed
    assert "emotion_stream_ingest_cameras_file_applied 1.0" in scrape(port)
    assert ingest.stop() == 0, ingest.output
    assert "Traceback" not in ingest.output


def test_every_key_of_a_camera_is_one_that_forgetting_it_deletes():
    import inspect

    tagged = {name: key for name, function in inspect.getmembers(keys, inspect.isfunction)
              if not name.startswith("_") and list(inspect.signature(function).parameters) == ["camera"]
              and "{door}" in (key := function("door"))}
    assert len(tagged) >= 11 and set(tagged.values()) == set(keys.camera_keys("door")), tagged


def test_cameras_lists_them_and_forgets_a_retired_one(redis_server, redis_client, services, tmp_path):
    """``emotion-stream cameras``: what Redis knows of each camera; ``--forget`` deletes
    everything of a retired one (refused while an ingest writes it), the workers carry
    on, and the id can be used afresh."""
    url = redis_server.url
    clip = write_clip(tmp_path / "tape.avi", seconds=1.0, fps=10, faces=1)
    port = free_port()
    worker = services("worker", "worker", "--redis", url, *WORKER_FLAGS, "--metrics-port", str(port))
    hall = services("hall", "ingest", "sample:2", "--camera", "hall", "--fps", "5", "--redis", url)
    tape = services("tape", "ingest", str(clip), "--camera", "tape", "--redis", url)
    assert tape.wait(60) == 0, tape.output
    wait_for(lambda: ended(redis_client, "tape") and len(faces_of(redis_client, "hall")) >= 4, 90, "both cameras")

    def cameras(*flags: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([EXE, "cameras", "--redis", url, *flags], capture_output=True, text=True, timeout=60)

    listed = {c["camera"]: c for c in map(json.loads, cameras("--json").stdout.splitlines())}
    assert listed.keys() == {"hall", "tape"}, listed
    assert listed["hall"]["ingesting"] and not listed["tape"]["ingesting"]
    assert listed["tape"]["stats"]["ingested"] == listed["tape"]["stats"]["processed"] == 10
    table = cameras().stdout.splitlines()
    assert table[0].split()[:3] == ["camera", "ingest", "last"] and table[1].split()[:2] == ["hall", "yes"], table

    down = subprocess.run([EXE, "cameras", "--redis", f"redis://127.0.0.1:{free_port()}"], capture_output=True,
                          text=True, timeout=60)
    assert down.returncode == 1 and len(down.stderr.splitlines()) == 1, down.stderr
    assert down.stderr.startswith("emotion-stream cameras: error: Redis does not answer: Error 111"), down.stderr
    refused = cameras("--forget", "hall", "tape", "nope")
    assert refused.returncode == 1, refused
    assert refused.stderr.splitlines() == ["emotion-stream cameras: camera hall is being ingested now; stop its "
                                           "ingest first", "emotion-stream cameras: no camera nope in this Redis"]
    assert re.fullmatch(r"forgot camera tape: \d+ keys deleted\n", refused.stdout), refused.stdout
    redis_client.xadd(keys.results("batch-0f"), {"result": "{}"})  # a batch job's result, just written
    running = cameras("--forget", "batch-0f")
    assert running.returncode == 1 and "is a batch job's, with a result in the last 60 s" in running.stderr
    assert not list(redis_client.scan_iter("*{tape}*")) and not redis_client.sismember(keys.CAMERAS, "tape")
    seen = len(faces_of(redis_client, "hall"))
    wait_for(lambda: len(faces_of(redis_client, "hall")) >= seen + 4, 60, "the worker going on with the others")
    assert hall.stop() == 0
    wait_for(lambda: cameras("--forget", "hall").returncode == 0, 30, "hall forgotten once its ingest stopped")
    time.sleep(2)  # a tracking owner or worker writing to it again would show now
    assert not list(redis_client.scan_iter("*{hall}*")), list(redis_client.scan_iter("*{hall}*"))
    # The same id later: a camera like any new one.
    again = services("again", "ingest", str(clip), "--camera", "tape", "--redis", url)
    assert again.wait(60) == 0, again.output
    wait_for(lambda: ended(redis_client, "tape"), 60, "the new tape's events")
    assert sorted({f.seq for f in faces_of(redis_client, "tape")}) == list(range(10))
    # A batch job through the same worker forgets its camera at the end, as --forget does.
    folder = tmp_path / "stills"
    folder.mkdir()
    cv2.imwrite(str(folder / "a.png"), sample_frame(0.0))
    batch = subprocess.run([EXE, "batch", str(folder), "--out", str(tmp_path / "out.csv"), "--workers", "0",
                            "--redis", url], capture_output=True, text=True, timeout=120)
    assert batch.returncode == 0, batch.stderr
    time.sleep(1)
    # Streams withdrawn with their cameras are no Redis errors (the alert on them fired
    # after every batch run and every forget) and no warning.
    assert re.search(r'^emotion_stream_redis_errors_total\{component="worker"\} 0\.0$', scrape(port), re.M)
    assert "WARNING" not in worker.output, worker.output[-3000:]
    # Withdrawn cameras' series and labels go (each batch job kept one for good: after 64
    # of them, every new camera was "other").
    labelled = set(re.findall(r'camera="([^"]+)"', scrape(port)))
    assert labelled == {"tape"}, labelled
    assert "stopped tracking camera hall: withdrawn" in worker.output, worker.output[-3000:]
    assert worker.alive() and "Traceback" not in worker.output


def test_two_workers_one_killed_every_frame_exactly_once(redis_server, redis_client, services, tmp_path):
    url = redis_server.url
    frames = 80
    clip = write_clip(tmp_path / "one-face.avi", seconds=frames / 10, fps=10, faces=1)
    slow = ("--batch-size", "2", "--max-wait-ms", "0")
    victim = services("victim", "worker", "--redis", url, *WORKER_FLAGS, *slow, "--name", "victim")
    survivor = services("survivor", "worker", "--redis", url, *WORKER_FLAGS, *slow, "--name", "survivor")
    # Real time (10 fps for 8 s): frames keep arriving while the victim works, so it can be
    # caught holding some.
    ingest = services("ingest", "ingest", str(clip), "--camera", "door", "--redis", url, "--fps", "10")

    def victim_frozen_holding_frames():
        # Once the victim has finished a frame, freeze it; keep it frozen only if it
        # holds unacknowledged frames, so the kill is sure to leave some behind.
        done = any(f.worker == "victim" for f in faces_of(redis_client, "door"))
        if not done:
            return False
        victim.signal(signal.SIGSTOP)
        held = redis_client.xpending_range(keys.frames("door"), keys.WORKER_GROUP, "-", "+", 10, consumername="victim")
        if not held:
            victim.signal(signal.SIGCONT)
        return bool(held)

    wait_for(victim_frozen_holding_frames, 120, "the victim worker to hold in-flight frames", interval=0.02)
    victim.signal(signal.SIGKILL)
    assert victim.wait(10) == -signal.SIGKILL
    assert ingest.wait(60) == 0, ingest.output
    wait_for(lambda: ended(redis_client, "door") and
             len({f.seq for f in faces_of(redis_client, "door")}) == frames, 120, "all frames processed")

    faces = faces_of(redis_client, "door")
    per_frame = Counter(f.seq for f in faces)
    assert sorted(per_frame) == list(range(frames))
    assert set(per_frame.values()) == {1}, "a frame produced duplicate or missing events"
    by_worker = Counter(f.worker for f in faces)
    assert by_worker["victim"] > 0 and by_worker["survivor"] > 0
    assert "reclaimed" in survivor.output  # the dead worker's pending entries were taken over
    assert redis_client.xpending(keys.frames("door"), keys.WORKER_GROUP)["pending"] == 0
    assert survivor.stop() == 0


def test_malformed_messages_go_to_dead_letter_and_worker_keeps_serving(redis_server, redis_client, services):
    camera = "hostile"
    stream = keys.frames(camera)
    redis_client.sadd(keys.CAMERAS, camera)
    good = FrameMessage(camera, 0, 0.0, FrameKind.STILL,
                        cv2.imencode(".jpg", sample_frame(0.0))[1].tobytes(), 640, 480).to_fields()
    bad_messages = {
        "missing field 'seq'": {k: v for k, v in good.items() if k != "seq"},
        "unknown message version 9": {**good, "v": 9},
        "field 'seq' is not an integer": {**good, "seq": "seven"},
        "undecodable image: truncated JPEG": {**good, "image": good["image"][:2000]},
        "undecodable image: not a recognised image format": {**good, "image": b"GIF? no, text"},
        "invalid camera id": {**good, "camera": "../../etc"},
        "is not the results stream": {**good, "reply_to": "some:other:key"},
    }
    for fields in bad_messages.values():
        redis_client.xadd(stream, fields)
    redis_client.xadd(stream, {**good, "seq": 1})  # a good frame after the bad ones
    worker = services("worker", "worker", "--redis", redis_server.url, *WORKER_FLAGS)

    wait_for(lambda: redis_client.xlen(keys.dead_letter(camera)) >= len(bad_messages), 90, "dead letters")
    wait_for(lambda: faces_of(redis_client, camera), 30, "the good frame's event")
    letters = [fields for _id, fields in redis_client.xrange(keys.dead_letter(camera))]
    reasons = [f[b"reason"].decode() for f in letters]
    for expected in bad_messages:
        assert any(expected in r for r in reasons), (expected, reasons)
    for letter in letters:  # the original message is kept for replay
        assert letter[b"stream"].decode() == stream and any(k.startswith(b"msg.") for k in letter)
    assert [f.seq for f in faces_of(redis_client, camera)] == [1]
    assert redis_client.xpending(stream, keys.WORKER_GROUP)["pending"] == 0
    assert worker.alive() and "dead-lettered" in worker.output
    assert worker.stop() == 0
