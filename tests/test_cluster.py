"""Redis Cluster as the engine: 3 masters + 3 replicas of Debian's redis-server on loopback,
made with ``redis-cli --cluster create``; one master SIGKILLed mid-run."""

from __future__ import annotations

import contextlib
import csv
import re
import time
from collections import Counter

import cv2
import pytest
import redis
from redis.cluster import RedisCluster, key_slot

from emotion_stream import keys
from emotion_stream.embedded_redis import free_port
from emotion_stream.schema import FaceEvent, TrackEvent, parse_event
from emotion_stream.settings import Settings

from .conftest import require_system
from .procs import wait_for
from .test_observability import serving

CAMERAS = 12
FPS = 4
BATCH_IMAGES = 300
CAMERA_KEYS = (keys.frames, keys.events, keys.stats, keys.analysed, keys.tracks, keys.track_lease,
               keys.track_state, keys.dead_letter, keys.results)


@pytest.fixture()
def cluster():
    require_system("redis-server", "the Redis Cluster tests run Debian's redis-server")
    require_system("redis-cli", "redis-cli --cluster create makes the cluster")
    from emotion_stream.local_cluster import LocalCluster

    with LocalCluster(masters=3, replicas=1) as running:
        yield running


def client_of(cluster) -> RedisCluster:  # type: ignore[no-untyped-def]
    node = cluster.master_nodes()[0]
    return RedisCluster(host="127.0.0.1", port=node.port, socket_timeout=5)


def slot_owners(cluster) -> dict[int, int]:  # type: ignore[no-untyped-def]
    """slot -> port of the master serving it."""
    owners: dict[int, int] = {}
    for start, end, master, *_ in cluster.master_nodes()[0].client().execute_command("CLUSTER", "SLOTS"):
        owners.update({slot: int(master[1]) for slot in range(int(start), int(end) + 1)})
    return owners


def spread_cameras(cluster, n: int) -> list[str]:  # type: ignore[no-untyped-def]
    """n camera ids, as many on each master (so a failover hits some and spares others)."""
    owners = slot_owners(cluster)
    per_master: dict[int, list[str]] = {}
    for i in range(1000):
        camera = f"cam-{i:03d}"
        per_master.setdefault(owners[key_slot(keys.frames(camera).encode())], []).append(camera)
    share = n // len(per_master)
    return sorted(c for cameras in per_master.values() for c in cameras[:share])


def test_every_key_of_a_camera_shares_one_slot():
    for camera in ("lobby", "cam-001", "batch-0123456789ab", "a.b:c-d_e"):
        slots = {key_slot(make(camera).encode()) for make in CAMERA_KEYS}
        assert len(slots) == 1, (camera, slots)
    # ...and different cameras spread over the slots (the tag is the camera id, not a constant).
    assert len({key_slot(keys.frames(f"cam-{i}").encode()) for i in range(100)}) > 90


@pytest.mark.slow
def test_a_tls_cluster_url_runs_the_pipeline(tmp_path, services):
    """rediss+cluster://: TLS between clients and nodes, for replication and on the bus."""
    require_system("redis-server", "Debian's redis-server is built with TLS")
    require_system("redis-cli", "redis-cli --cluster create makes the cluster")
    from emotion_stream.local_cluster import LocalCluster

    from .test_security import _certificates

    with LocalCluster(masters=3, replicas=1, tls=_certificates(tmp_path)) as tls_cluster:
        url = tls_cluster.url
        assert url.startswith("rediss+cluster://")
        services("worker", "worker", "--redis", url, "--max-frame-age", "600")
        services("ingest", "ingest", "sample:1", "--camera", "tls-cam", "--fps", "5", "--redis", url)
        node = tls_cluster.node_of(keys.events("tls-cam"))
        wait_for(lambda: node.client().xlen(keys.events("tls-cam")) >= 3, 120, "events over a TLS cluster")
        with pytest.raises(redis.ConnectionError):  # the nodes speak TLS only
            redis.Redis(port=node.port, socket_timeout=2, socket_connect_timeout=2).ping()


def test_subscribers_move_to_another_node_when_theirs_dies(cluster):
    """Pub/sub on a cluster: a PUBLISH reaches every node, so a subscriber whose node is
    SIGKILLed re-subscribes on another and keeps receiving."""
    import asyncio

    from emotion_stream.events import live_events
    from emotion_stream.redis_conn import connect
    from emotion_stream.schema import EndOfStream

    async def scenario() -> tuple[int, int]:
        client, publisher = connect(cluster.url, "sub"), connect(cluster.url, "pub")
        stop, got = asyncio.Event(), []

        async def subscribe() -> None:
            async for event in live_events(client, None, stop):
                got.append(event)

        task = asyncio.create_task(subscribe())
        node = None
        while node is None:  # the node holding the pattern subscription
            await asyncio.sleep(0.1)
            node = next((n for n in cluster.nodes if n.alive()
                         and b"psub=1" in n.client().execute_command("CLIENT", "LIST")), None)
        seq = 0

        async def publish_until(count: int) -> None:
            nonlocal seq
            deadline = time.monotonic() + 30
            while len(got) < count and time.monotonic() < deadline:
                seq += 1
                with contextlib.suppress(redis.RedisError):
                    await publisher.publish(keys.events("door"), EndOfStream("door", seq).to_json())
                await asyncio.sleep(0.2)

        await publish_until(1)
        before = len(got)
        cluster.kill(node)
        await publish_until(before + 3)
        stop.set()
        await asyncio.wait_for(task, 10)
        await client.aclose()
        await publisher.aclose()
        return before, len(got)

    before, after = asyncio.run(scenario())
    assert before >= 1 and after >= before + 3, (before, after)


def test_each_master_that_may_evict_keys_is_named(cluster):
    """A cluster's masters are configured one by one: one of them set to evict is enough
    to lose a camera's keys (all of them on its slot)."""
    import asyncio

    from emotion_stream.redis_conn import connect, evicting_nodes

    first, second, third = cluster.master_nodes()
    first.client().config_set("maxmemory", 1 << 30)
    first.client().config_set("maxmemory-policy", "allkeys-lru")
    second.client().config_set("maxmemory-policy", "volatile-lru")  # no maxmemory: nothing evicted
    third.client().config_set("maxmemory", 1 << 30)  # noeviction: a full node refuses writes

    async def read() -> dict[str, str] | None:
        client = connect(cluster.url, "policy")
        try:
            return await evicting_nodes(client)
        finally:
            await client.aclose()

    assert asyncio.run(read()) == {first.address: "allkeys-lru"}


@pytest.mark.slow
def test_live_and_batch_survive_a_master_failover(cluster, services, tmp_path, face_bgr):
    url = cluster.url
    cameras = spread_cameras(cluster, CAMERAS)
    folder = tmp_path / "stills"
    folder.mkdir()
    for i in range(BATCH_IMAGES):
        cv2.imwrite(str(folder / f"face_{i:04d}.jpg"), cv2.resize(face_bgr, (200 + i % 7 * 20, 240 + i % 5 * 20)))
    from batch.job import job_id, job_key

    batch_camera = f"batch-{job_id(job_key(folder, Settings()))}"
    victim = cluster.node_of(keys.frames(batch_camera))
    hit = [c for c in cameras if cluster.node_of(keys.frames(c)) is victim]
    assert 0 < len(hit) < CAMERAS

    # 2 workers (their tracking owners too), 12 cameras, then a batch job of 300 stills.
    replicated = ("--write-replicas", "1")
    worker_ports = [free_port(), free_port()]
    workers = [
        services(f"worker-{i}", "worker", "--redis", url, "--name", f"w{i}", "--claim-idle-ms", "2000",
                 "--metrics-port", str(port))
        for i, port in enumerate(worker_ports)
    ]
    wait_for(lambda: all(serving(p) for p in worker_ports), 120, "both workers")
    ingests = {
        camera: services(f"ingest-{camera}", "ingest", "sample:2", "--camera", camera, "--fps", str(FPS),
                         "--redis", url, "--duration", "40", *replicated)
        for camera in cameras
    }
    client = client_of(cluster)
    wait_for(lambda: all(client.xlen(keys.events(c)) for c in cameras), 90, "events from every camera")
    out = tmp_path / "submission.csv"
    job = services("batch", "batch", str(folder), "--out", str(out), "--redis", url, "--workers", "0", *replicated)
    wait_for(lambda: _xlen(client, keys.results(batch_camera)) >= 30, 120, "the batch under way")

    # SIGKILL the master holding the batch job and some cameras; its replica takes over.
    killed_at = time.monotonic()
    cluster.kill(victim)
    wait_for(lambda: cluster.healthy(replicas_online=False), 60, "the replica to be promoted", interval=0.2)
    promoted_after = time.monotonic() - killed_at
    client = client_of(cluster)
    # Counted now, while the cameras still send: the batch below may outlast them on a
    # loaded machine, and events that resumed during it count.
    after_kill = {c: client.xlen(keys.events(c)) for c in hit}

    # The batch finishes by itself: every row exactly once.
    assert job.wait(300) == 0, job.output[-3000:]
    with out.open(newline="") as fh:
        names = [row[0] for row in list(csv.reader(fh))[1:]]
    assert sorted(names) == [f"face_{i:04d}.jpg" for i in range(BATCH_IMAGES)]

    # Live: events resume on the promoted master's cameras.
    wait_for(lambda: all(client.xlen(keys.events(c)) > after_kill[c] for c in hit), 60,
             "events from the failed-over cameras")
    for camera, ingest in ingests.items():
        assert ingest.wait(120) == 0, ingest.output[-2000:]
    wait_for(lambda: all(_drained(client, c) for c in cameras), 90, "every frame stream to drain")

    # Accounting, per camera: Redis' own counts add up, and cover what ingest was told
    # was accepted (confirmed by a replica); frames lost are those never acknowledged.
    rows = []
    for camera, ingest in ingests.items():
        told = _ingest_summary(ingest.output)
        stats = {k.decode(): int(v) for k, v in client.hgetall(keys.stats(camera)).items()}
        done = sum(stats.get(f, 0) for f in ("processed", "stale", "trimmed", "dead_lettered"))
        assert stats["ingested"] == done, (camera, stats)
        # A write whose reply was lost (the connection broke after the master ran it) is
        # one ingest counts as dropped (redis_unavailable) and Redis as ingested.
        ceiling = told["accepted"] + told["unconfirmed"] + told["redis_unavailable"]
        assert told["accepted"] <= stats["ingested"] <= ceiling, (camera, told, stats)
        faces = [e for e in _events(client, camera) if isinstance(e, FaceEvent)]
        twice = [k for k, n in Counter((f.seq, f.face_index) for f in faces).items() if n > 1]
        assert not twice, (camera, twice[:5])  # each frame's events exactly once
        rows.append((camera, "killed" if camera in hit else "", told, stats, len({f.seq for f in faces})))

    # Tracks: every track that started ends exactly once (the cameras stopped, no end marker).
    def lifecycle(camera: str) -> list[TrackEvent]:
        return [TrackEvent.from_json(f[b"event"]) for _id, f in client.xrange(keys.tracks(camera))]

    def balanced() -> bool:
        for camera in cameras:
            events = lifecycle(camera)
            if Counter(e.track for e in events if e.type.value == "track_started") != Counter(
                    e.track for e in events if e.type.value == "track_ended"):
                return False
        return True

    wait_for(balanced, 60, "every track to end exactly once")
    _print_table(rows, promoted_after)
    for worker in workers:
        assert worker.stop(60) == 0, worker.output[-3000:]


def _xlen(client: RedisCluster, key: str) -> int:
    try:
        return int(client.xlen(key))
    except redis.RedisError:
        return 0


def _drained(client: RedisCluster, camera: str) -> bool:
    for info in client.xinfo_groups(keys.frames(camera)):
        if info["pending"] or info.get("lag"):
            return False
    return True


def _events(client: RedisCluster, camera: str) -> list[object]:
    return [parse_event(fields[b"event"]) for _id, fields in client.xrange(keys.events(camera))]


def _ingest_summary(output: str) -> dict[str, int]:
    match = re.search(r"(\d+) frames accepted, (\d+) unconfirmed, dropped: (.*)", output)
    assert match, output[-2000:]
    reasons = {reason: int(n) for reason, n in re.findall(r"(\w+) (\d+)", match.group(3))}
    return {"accepted": int(match.group(1)), "unconfirmed": int(match.group(2)), "dropped": sum(reasons.values()),
            "redis_unavailable": reasons.get("redis_unavailable", 0)}


def _print_table(rows: list[tuple[str, str, dict[str, int], dict[str, int], int]], promoted_after: float) -> None:
    print(f"\nfailover: replica promoted {promoted_after:.1f} s after SIGKILL")
    print("| camera | master | ingest accepted | unconfirmed | refused (Redis down) | Redis ingested "
          "| processed | stale | trimmed | dead-lettered | frames with events |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for camera, killed, told, stats, with_events in rows:
        print(f"| {camera} | {killed or 'kept'} | {told['accepted']} | {told['unconfirmed']} | {told['dropped']} "
              f"| {stats['ingested']} | {stats.get('processed', 0)} | {stats.get('stale', 0)} "
              f"| {stats.get('trimmed', 0)} | {stats.get('dead_lettered', 0)} | {with_events} |")
