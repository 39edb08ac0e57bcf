"""Overload: cameras push faster than the worker can process, for a bounded time."""

from __future__ import annotations

import json
import time
from collections import Counter

import numpy as np
import psutil
import pytest

from emotion_stream import keys
from emotion_stream.embedded_redis import free_port
from emotion_stream.schema import TrackEvent

from .procs import wait_for
from .test_observability import sample_value, scrape, serving

CAMERAS = 6
FPS = 15
SECONDS = 25
MAX_LEN = 32
MAX_AGE = 1.0


@pytest.mark.slow
def test_overload_is_bounded_and_every_frame_is_accounted_for(redis_server, redis_client, services):
    url = redis_server.url
    metrics_port = free_port()
    # MTCNN (~25 ms a frame) makes the overload certain: 90 fps offered, ~40 fps capacity.
    worker = services("worker", "worker", "--redis", url, "--detector", "mtcnn", "--max-frame-age", str(MAX_AGE),
                      "--batch-size", "8", "--metrics-port", str(metrics_port))
    wait_for(lambda: serving(metrics_port), 60, "the worker")
    ingests = [
        services(f"ingest-{i}", "ingest", "sample:1", "--camera", f"load{i}", "--fps", str(FPS), "--redis", url,
                 "--max-len", str(MAX_LEN), "--duration", str(SECONDS))
        for i in range(CAMERAS)
    ]
    redis_memory, worker_rss = [], []
    memory_detail: list[dict[str, object]] = []
    worker_process = psutil.Process(worker.process.pid)
    start = time.monotonic()
    while any(p.alive() for p in ingests):
        # The dataset, not used_memory: an automatic AOF rewrite (the frames write ~90 MB
        # of AOF here) adds a transient rewrite buffer of ~10 MB that is not growth.
        memory = redis_client.info("memory")
        redis_memory.append(int(memory["used_memory_dataset"]))
        # What the dataset figure leaves out, kept to explain a failure (a one-off ~10 MB
        # jump of the dataset was seen in a few full-suite runs, never when rerun).
        memory_detail.append({k: memory.get(k) for k in ("used_memory", "used_memory_overhead", "mem_aof_buffer",
                                                          "mem_clients_normal", "mem_clients_slaves")})
        worker_rss.append(worker_process.memory_info().rss)
        for i in range(CAMERAS):
            assert redis_client.xlen(keys.frames(f"load{i}")) <= MAX_LEN + 1  # the bound holds
        time.sleep(1.0)
        assert time.monotonic() - start < SECONDS + 60
    for p in ingests:
        assert p.wait(30) == 0, p.output

    def drained() -> bool:
        for i in range(CAMERAS):
            for info in redis_client.xinfo_groups(keys.frames(f"load{i}")):
                if info["pending"] or info.get("lag"):
                    return False
                last = info["last-delivered-id"].decode()
                if redis_client.xrange(keys.frames(f"load{i}"), min=f"({last}", max="+", count=1):
                    return False
        return True

    wait_for(drained, 60, "the streams to drain")
    totals = {field: 0 for field in keys.STAT_FIELDS}
    for i in range(CAMERAS):
        stats = {k.decode(): int(v) for k, v in redis_client.hgetall(keys.stats(f"load{i}")).items()}
        counted = sum(stats.get(f, 0) for f in ("processed", "stale", "trimmed", "dead_lettered"))
        assert stats["ingested"] == counted, (f"load{i}", stats)  # no frame unaccounted
        for field in totals:
            totals[field] += stats.get(field, 0)
    offered = CAMERAS * FPS * SECONDS
    assert totals["ingested"] >= 0.6 * offered
    assert totals["stale"] + totals["trimmed"] > 0.1 * totals["ingested"], "the worker was not overloaded"
    assert totals["processed"] > 0

    # Tracking under overload (most frames skipped as stale, so tracks time out and start
    # again): the cameras stopped without an end marker, yet every track ends exactly once
    # (by timeout, or when its camera falls silent); the tracker state expires.
    def lifecycle(i: int) -> list[TrackEvent]:
        return [TrackEvent.from_json(f[b"event"]) for _id, f in redis_client.xrange(keys.tracks(f"load{i}"))]

    def all_ended() -> bool:
        return all(Counter(e.track for e in lifecycle(i) if e.type.value == "track_started")
                   == Counter(e.track for e in lifecycle(i) if e.type.value == "track_ended") for i in range(CAMERAS))

    wait_for(all_ended, 30, "every track to end")
    every_end = []
    for i in range(CAMERAS):
        ended = [e for e in lifecycle(i) if e.type.value == "track_ended"]
        assert {e.reason for e in ended} <= {"timeout", "camera_silent"}
        # Every person in the camera's events has ended, once. (A camera can be starved of
        # analysed frames for a whole overloaded run - its backlog handed out oldest first,
        # all stale - and then has no tracks at all: the known limit in the README.)
        events = [json.loads(f[b"event"]) for _, f in redis_client.xrange(keys.events(f"load{i}"))]
        tracked = {e["track"] for e in events if e.get("type") == "face" and e.get("track") is not None}
        assert sorted(e.track for e in ended) == sorted(tracked), (f"load{i}", tracked)
        assert 0 < redis_client.pttl(keys.track_state(f"load{i}")) <= 3600 * 1000
        every_end += ended
    assert every_end

    # Worker metrics agree with the durable counts.
    text = scrape(metrics_port)
    processed_metric = sum(sample_value(text, "emotion_stream_frames_processed_total", camera=f"load{i}") for i in range(CAMERAS))
    assert processed_metric == totals["processed"]

    # Memory stays bounded: the second half of the run is not above the first by more than
    # noise (its median, and its last reading: growth would show in both); a single reading
    # may jump - a one-off ~10 MB of the dataset was seen in a few full-suite runs on a
    # loaded machine, gone at the next reading - but never past a hard cap.
    half = len(redis_memory) // 2
    peak = int(np.argmax(redis_memory))
    bound = 1.5 * max(redis_memory[:half]) + 2_000_000
    later = redis_memory[half:]
    assert float(np.median(later)) < bound and later[-1] < bound, (redis_memory, memory_detail[peak])
    assert max(later) < 3 * bound, (redis_memory, memory_detail[peak])
    assert max(worker_rss[half:]) < 1.2 * max(worker_rss[:half])

    # Freshest frames stay fresh: what is processed was at most MAX_AGE old when it started.
    latencies = [json.loads(fields[b"event"])
                 for i in range(CAMERAS) for _, fields in redis_client.xrange(keys.events(f"load{i}"))]
    lat = [e["processed_at"] - e["captured_at"] for e in latencies if e["type"] == "face"]
    p99 = float(np.percentile(lat, 99))
    assert p99 < MAX_AGE + 1.5, p99
    print(f"\nload: {json.dumps(totals)}; p99 capture->processed {p99 * 1000:.0f} ms; "
          f"redis {max(redis_memory) / 2**20:.1f} MB peak; worker RSS {max(worker_rss) / 2**20:.0f} MB peak")
    assert worker.stop() == 0
