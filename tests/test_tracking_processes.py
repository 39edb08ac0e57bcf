"""The tracking stage as real processes on a real Redis: fenced ownership, takeover after
SIGKILL, frames finished out of order by two writers, lifecycle events exactly once."""

from __future__ import annotations

import signal
import threading
import time
from collections import Counter, defaultdict

import numpy as np

from emotion_stream import keys
from emotion_stream.schema import (
    EndOfStream,
    FaceEvent,
    FrameRecord,
    FrameStatus,
    TrackEvent,
    parse_event,
)

from .procs import wait_for
from .track_scenes import FPS, Person, records

OWNER_FLAGS = ("--track-lease-s", "1", "--track-timeout-s", "1", "--reorder-window-s", "0.5")


def scene() -> dict[str, list[Person]]:
    return {
        # Two people crossing (the second hidden behind the first for 0.4 s), and a third
        # hidden twice: 0.5 s (shorter than the 1 s timeout) and 1.6 s (longer).
        "hall": [Person("happy", 40, 200, 140), Person("sad", 560, 206, -140, hidden=(1.8, 2.2)),
                 Person("surprise", 300, 20, 0, start=0.3, hidden=((1.0, 1.5), (3.0, 4.6)))],
        "yard": [Person("anger", 200, 200, 10, hidden=(3.0, 4.6))],
    }


def feed(redis_client, cams: dict[str, list[FrameRecord]], kill_at: float, kill) -> None:
    """Write each camera's records in real time as two workers would: neighbouring frames
    finish in swapped order. Calls ``kill()`` once ``kill_at`` seconds have passed."""
    rng = np.random.default_rng(7)
    start = time.time()
    n = max(len(r) for r in cams.values())
    order = list(range(n))
    for i in range(0, n - 1, 2):
        if rng.random() < 0.5:
            order[i], order[i + 1] = order[i + 1], order[i]
    killed = False
    for step, i in enumerate(order):
        time.sleep(max(0.0, start + (step + 1) / FPS - time.time()))
        if not killed and time.time() - start >= kill_at:
            kill()
            killed = True
        for camera, recs in cams.items():
            if i < len(recs):
                redis_client.xadd(keys.analysed(camera), {"frame": recs[i].to_json()})
                redis_client.sadd(keys.TRACKED_CAMERAS, camera)
    for camera, recs in cams.items():
        end = FrameRecord(camera, len(recs), recs[-1].captured_at + 1 / FPS, FrameStatus.END)
        redis_client.xadd(keys.analysed(camera), {"frame": end.to_json()})


def who_is_who(redis_client, camera: str,
               faces: list[FaceEvent]) -> tuple[dict[str, set[int]], list[TrackEvent], Counter, Counter]:
    """(person name -> the track ids their faces got, lifecycle events, tracks started, tracks ended)."""
    ids: dict[str, set[int]] = defaultdict(set)
    for f in faces:
        ids[f.name].add(f.track)
    lifecycle = [TrackEvent.from_json(f[b"event"]) for _id, f in redis_client.xrange(keys.tracks(camera))]
    started = Counter(e.track for e in lifecycle if e.type.value == "track_started")
    finished = Counter(e.track for e in lifecycle if e.type.value == "track_ended")
    return ids, lifecycle, started, finished


def owner_of(redis_client, camera: str) -> str | None:
    token = redis_client.get(keys.track_lease(camera))
    return token.decode().split(":")[0] if token else None


def test_owner_killed_mid_stream_another_resumes_and_every_event_happens_once(redis_server, redis_client, services):
    url = redis_server.url
    owners = {name: services(name, "tracks", "--redis", url, "--name", name, *OWNER_FLAGS) for name in ("t1", "t2")}
    people = scene()
    t0 = time.time() + 1.0
    cams = {camera: records(camera, ps, 6.0, t0=t0, seed=i) for i, (camera, ps) in enumerate(people.items())}
    for camera in cams:  # both cameras known before the first frame: one owner each
        redis_client.sadd(keys.TRACKED_CAMERAS, camera)
    wait_for(lambda: {owner_of(redis_client, c) for c in cams} == {"t1", "t2"}, 20, "one camera per owner")
    victim = owner_of(redis_client, "hall")
    survivor = ({"t1", "t2"} - {victim}).pop()

    def kill() -> None:
        owners[victim].signal(signal.SIGKILL)

    writer = threading.Thread(target=feed, args=(redis_client, cams, 2.5, kill))
    writer.start()
    writer.join(60)
    assert owners[victim].wait(10) == -signal.SIGKILL

    def ended(camera: str) -> bool:
        return any(f[b"event"].startswith(b'{"camera"') and b'"type":"end"' in f[b"event"]
                   for _id, f in redis_client.xrange(keys.events(camera)))

    wait_for(lambda: all(ended(c) for c in cams), 30, "both cameras' end of stream")
    assert owner_of(redis_client, "hall") == survivor
    assert "resumed" in owners[survivor].output

    for camera, recs in cams.items():
        events = [parse_event(f[b"event"]) for _id, f in redis_client.xrange(keys.events(camera))]
        faces = [e for e in events if isinstance(e, FaceEvent)]
        assert isinstance(events[-1], EndOfStream)
        # Every face of every frame exactly once, in frame order, each with a track.
        expected = Counter((r.seq, f["name"]) for r in recs for f in r.faces)
        assert Counter((f.seq, f.name) for f in faces) == expected
        assert [f.seq for f in faces] == sorted(f.seq for f in faces)
        assert all(f.track is not None and f.track_emotion for f in faces)
        ids, lifecycle, started, finished = who_is_who(redis_client, camera, faces)
        all_ids = set().union(*ids.values())
        assert started == finished == Counter({t: 1 for t in all_ids}), (started, finished)
        if camera == "hall":
            assert len(ids["person0"]) == 1 and len(ids["person1"]) == 1, ids  # crossing, short occlusion
            assert len(ids["person2"]) == 2, ids  # the 1.6 s occlusion outlasts the 1 s timeout
            assert len(all_ids) == 4
            reasons = Counter(e.reason for e in lifecycle if e.type.value == "track_ended")
            assert reasons == {"timeout": 1, "end_of_stream": 3}
        else:
            assert len(ids["person0"]) == 2


def test_a_camera_silent_for_the_state_lifetime_is_let_go(redis_server, redis_client):
    """An owner stops holding a camera with nothing in flight once it has been silent
    for the state's lifetime; its frame records would announce it again."""
    import asyncio

    from emotion_stream.redis_conn import connect
    from emotion_stream.settings import Settings
    from tracks import TrackOwner

    redis_client.sadd(keys.TRACKED_CAMERAS, "quiet")

    async def main() -> None:
        client = connect(redis_server.url, "test")
        owner = TrackOwner(client, Settings(track_lease_s=1), "solo")
        await owner._balance()  # noqa: SLF001 - rounds of the lease loop, driven by hand (the first only announces)
        await owner._balance()  # noqa: SLF001
        assert "quiet" in owner.trackers and redis_client.get(keys.track_lease("quiet"))
        owner.trackers["quiet"].last_arrival -= owner.settings.track_state_ttl_s + 1
        await owner._balance()  # noqa: SLF001
        assert "quiet" not in owner.trackers
        await client.aclose()

    asyncio.run(main())
    assert not redis_client.sismember(keys.TRACKED_CAMERAS, "quiet")
    assert redis_client.get(keys.track_lease("quiet")) is None


def test_a_camera_let_go_while_its_state_reloads_is_not_tracked_again(redis_server, redis_client):
    """After a write that did not reach Redis, tracking reloads the camera's state; if the
    lease loop lets the camera go during that reload (its lease lost in a failover), the
    reloaded tracker must not come back without its lease (the owner then failed with a
    KeyError and stopped its worker)."""
    import asyncio

    from emotion_stream.redis_conn import connect
    from emotion_stream.settings import Settings
    from tracks import TrackOwner

    async def main() -> None:
        client = connect(redis_server.url, "test")
        owner = TrackOwner(client, Settings(track_lease_s=1), "solo")
        await owner._try_acquire("gate")  # noqa: SLF001 - the race, driven by hand
        assert "gate" in owner.trackers and "gate" in owner.tokens
        reload = owner._load  # noqa: SLF001

        async def load_while_the_lease_is_lost(camera: str):  # noqa: ANN202
            owner._drop(camera, "lease lost")  # noqa: SLF001 - what the lease loop does meanwhile
            return await reload(camera)

        owner._load = load_while_the_lease_is_lost  # noqa: SLF001
        owner._unsaved.add("gate")  # noqa: SLF001 - the last write did not reach Redis
        await owner._step()  # noqa: SLF001
        assert "gate" not in owner.trackers and "gate" not in owner.tokens
        await owner._step()  # noqa: SLF001 - and the next step runs as usual
        await client.aclose()

    asyncio.run(main())


def test_redis_restart_mid_stream_loses_no_tracked_event(redis_server, redis_client, services):
    """Redis goes away for a few seconds while the owner works: events of the step whose
    write failed are produced again from the state Redis kept, none twice."""
    owner = services("t1", "tracks", "--redis", redis_server.url, "--name", "t1", *OWNER_FLAGS)
    recs = records("gate", [Person("happy", 100, 100, 20), Person("sad", 400, 100, -20)], 4.0, t0=time.time())
    half = len(recs) // 2
    for r in recs[:half]:
        redis_client.xadd(keys.analysed("gate"), {"frame": r.to_json()})
        redis_client.sadd(keys.TRACKED_CAMERAS, "gate")
        time.sleep(1 / FPS)
    redis_server.stop()  # SIGTERM: AOF flushed, like a maintenance restart
    time.sleep(3)
    redis_server.start()
    for r in recs[half:]:
        redis_client.xadd(keys.analysed("gate"), {"frame": r.to_json()})
        time.sleep(1 / FPS)
    end = FrameRecord("gate", len(recs), recs[-1].captured_at + 1 / FPS, FrameStatus.END)
    redis_client.xadd(keys.analysed("gate"), {"frame": end.to_json()})

    def events() -> list:
        return [parse_event(f[b"event"]) for _id, f in redis_client.xrange(keys.events("gate"))]

    wait_for(lambda: any(isinstance(e, EndOfStream) for e in events()), 60, "the end of stream")
    faces = [e for e in events() if isinstance(e, FaceEvent)]
    assert Counter((f.seq, f.name) for f in faces) == Counter((r.seq, f["name"]) for r in recs for f in r.faces)
    lifecycle = [TrackEvent.from_json(f[b"event"]) for _id, f in redis_client.xrange(keys.tracks("gate"))]
    started = Counter(e.track for e in lifecycle if e.type.value == "track_started")
    assert started == Counter(e.track for e in lifecycle if e.type.value == "track_ended")
    assert owner.alive()


def test_subscribe_tracks_prints_people_arriving_and_leaving(redis_server, redis_client, services):
    url = redis_server.url
    services("t1", "tracks", "--redis", url, "--name", "t1", *OWNER_FLAGS)
    human = services("subscribe", "subscribe", "--tracks", "--camera", "lobby", "--redis", url, "--count", "4")
    as_json = services("subscribe-json", "subscribe", "--tracks", "--redis", url, "--count", "4", "--json")
    time.sleep(2)  # both subscribed before anything is published
    recs = records("lobby", [Person("happy", 100, 100, 0, end=1.0), Person("surprise", 400, 100, 0, start=0.2)],
                   2.0, t0=time.time(), noise=0.2)  # a steady classifier: no emotion changes
    for r in recs + [FrameRecord("lobby", len(recs), recs[-1].captured_at + 1 / FPS, FrameStatus.END)]:
        redis_client.xadd(keys.analysed("lobby"), {"frame": r.to_json()})
        redis_client.sadd(keys.TRACKED_CAMERAS, "lobby")
        time.sleep(1 / FPS)
    assert human.wait(30) == 0 and as_json.wait(30) == 0
    lines = human.output.strip().splitlines()[-4:]
    assert sum("appeared" in line for line in lines) == 2 and sum("left after" in line for line in lines) == 2, lines
    events = [TrackEvent.from_json(line) for line in as_json.output.strip().splitlines()[-4:]]
    assert sorted(e.type.value for e in events) == ["track_ended", "track_ended", "track_started", "track_started"]
    assert {e.reason for e in events if e.type.value == "track_ended"} == {"timeout", "end_of_stream"}


def looks_scenes() -> dict[str, tuple[list[Person], tuple[float, ...]]]:
    """Who is who, camera by camera (each person's looks differ unless said)."""
    return {
        # Two people step to each other's spot through each other.
        "swap": ([Person("happy", 0, 200, 0, path=[(0, 200, 200), (2.0, 200, 200), (2.4, 290, 200), (6, 290, 200)]),
                  Person("sad", 0, 200, 0, path=[(0, 290, 200), (2.0, 290, 200), (2.4, 200, 200), (6, 200, 200)])], ()),
        # The next person at the same spot 0.2 s after the last one left.
        "kiosk": ([Person("happy", 300, 200, 0, end=2.8), Person("anger", 300, 200, 0, start=3.0)], ()),
        # Out of sight for 0.6 s, back two face widths away.
        "door": ([Person("neutral", 0, 200, 0, hidden=(2.0, 2.6),
                         path=[(0, 300, 200), (2.0, 300, 200), (2.6, 420, 200), (6, 420, 200)])], ()),
        # A cut at 3 s to new people at the same spots.
        "film": ([Person("happy", 100, 200, 0, end=3.0), Person("sad", 400, 200, 0, end=3.0),
                  Person("fear", 100, 200, 0, start=3.0), Person("surprise", 400, 200, 0, start=3.0)], (3.0,)),
    }


def test_owners_tell_people_apart_by_their_looks_and_a_takeover_keeps_them(redis_server, redis_client, services):
    """Real owners on frame records with descriptors and scene signatures; the owner of
    half the cameras is SIGKILLed mid-stream and the other resumes from the state, galleries
    included."""
    url = redis_server.url
    owners = {name: services(name, "tracks", "--redis", url, "--name", name, *OWNER_FLAGS) for name in ("t1", "t2")}
    t0 = time.time() + 1.0
    cams = {camera: records(camera, people, 6.0, t0=t0, seed=i, describe=True, cuts=cuts)
            for i, (camera, (people, cuts)) in enumerate(looks_scenes().items())}
    for camera in cams:
        redis_client.sadd(keys.TRACKED_CAMERAS, camera)
    wait_for(lambda: {owner_of(redis_client, c) for c in cams} == {"t1", "t2"}, 20, "cameras shared by the owners")
    victim = owner_of(redis_client, "swap")
    writer = threading.Thread(target=feed, args=(redis_client, cams, 2.2, lambda: owners[victim].signal(signal.SIGKILL)))
    writer.start()
    writer.join(60)

    def ended(camera: str) -> bool:
        return any(b'"type":"end"' in f[b"event"] for _id, f in redis_client.xrange(keys.events(camera)))

    wait_for(lambda: all(ended(c) for c in cams), 30, "every camera's end of stream")
    assert "resumed" in owners[({"t1", "t2"} - {victim}).pop()].output
    state_tracks = [t for c in cams for t in __import__("json").loads(redis_client.get(keys.track_state(c)) or "{}")
                    .get("tracks", [])]
    assert all("gallery" in t for t in state_tracks)
    for camera, recs in cams.items():
        faces = [e for _id, f in redis_client.xrange(keys.events(camera))
                 if isinstance(e := parse_event(f[b"event"]), FaceEvent)]
        assert Counter((f.seq, f.name) for f in faces) == Counter((r.seq, f["name"]) for r in recs for f in r.faces)
        ids, lifecycle, started, finished = who_is_who(redis_client, camera, faces)
        assert started == finished == Counter({t: 1 for t in set().union(*ids.values())}), camera
        assert all(len(tracks) == 1 for tracks in ids.values()), (camera, ids)  # one track a person
        assert len(set().union(*ids.values())) == len(ids), (camera, ids)  # and one person a track
        reasons = Counter(e.reason for e in lifecycle if e.type.value == "track_ended")
        if camera == "kiosk":  # the next person at the same spot ends the first one's track at once
            first = [e for e in lifecycle if e.type.value == "track_ended" and e.track in ids["person0"]]
            assert first[0].reason == "replaced"
        if camera == "film":
            assert reasons["scene_cut"] == 2, reasons


def test_a_worker_tracks_a_real_clip_and_ends_every_track_at_a_cut(redis_server, redis_client, services, tmp_path):
    """Real frames through a real worker: descriptors and scene signatures made from the
    pixels; a hard cut (another room) ends the tracks, which the next scene's faces do not
    inherit."""
    import cv2

    from ingest.samples import sample_frame

    clip = tmp_path / "cut.avi"
    writer = cv2.VideoWriter(str(clip), cv2.VideoWriter.fourcc(*"MJPG"), 15, (640, 480))
    for i in range(60):
        frame = sample_frame(i / 15)
        if i >= 30:  # the cut: another room (mirrored, darker, a green cast), another face
            frame = np.clip(frame[:, ::-1].astype(np.float32) * (0.35, 0.9, 0.4), 0, 255).astype(np.uint8)
        writer.write(frame)
    writer.release()
    services("worker", "worker", "--redis", redis_server.url, "--max-frame-age", "600", "--batch-size", "4")
    ingest = services("ingest", "ingest", str(clip), "--camera", "film", "--redis", redis_server.url, "--fps", "15")
    assert ingest.wait(60) == 0, ingest.output

    def lifecycle() -> list[TrackEvent]:
        return [TrackEvent.from_json(f[b"event"]) for _id, f in redis_client.xrange(keys.tracks("film"))]

    wait_for(lambda: any(e.reason == "end_of_stream" for e in lifecycle()), 90, "the end of the clip")
    ended = [e for e in lifecycle() if e.type.value == "track_ended"]
    assert [e.reason for e in ended] == ["scene_cut", "end_of_stream"], ended
    assert ended[0].seq in (30, 31)  # at the cut
    faces = [e for _id, f in redis_client.xrange(keys.events("film")) if isinstance(e := parse_event(f[b"event"]), FaceEvent)]
    before, after = {f.track for f in faces if f.seq < 30}, {f.track for f in faces if f.seq >= 31}
    assert len(before) == 1 and len(after) == 1 and before != after


def test_a_worker_stopped_hands_its_cameras_on_at_once(redis_server, redis_client, services):
    """SIGTERM: the worker's tracks owner releases its camera leases before it exits, so
    another owner takes over now rather than when the leases expire (60 s here)."""
    worker = services("w1", "worker", "--redis", redis_server.url, "--name", "w1", "--track-lease-s", "60")
    redis_client.sadd(keys.TRACKED_CAMERAS, "porch")
    wait_for(lambda: owner_of(redis_client, "porch") == "w1", 60, "the worker to own the camera")
    assert worker.stop() == 0
    assert redis_client.get(keys.track_lease("porch")) is None
    assert not redis_client.hexists(keys.TRACK_OWNERS, "w1")
