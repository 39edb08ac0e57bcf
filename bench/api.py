"""(h) api: the HTTP API under load, and webhooks against a receiver that fails.

``sse``: N clients hold ``/v1/events`` open on an ``emotion-stream api`` process while
K cameras' face events are written to Redis at the live rate (one face a frame, events
as workers write them), cameras at independent phases, then phase-locked (every
camera's event at the same instant). Each client notes, for every event, its arrival time minus the
event's Redis entry time (same host clock): the latency the API adds between Redis and
the client. The API process' CPU is sampled.

``webhooks``: lifecycle events on K cameras, a receiver that refuses every other POST;
every id must arrive, once after de-duplication, in order per camera.
"""

from __future__ import annotations

import asyncio
import json
import multiprocessing
import os
import random
import re
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from multiprocessing.queues import Queue
from pathlib import Path

from aiohttp import web

from emotion_stream import keys
from emotion_stream.embedded_redis import EmbeddedRedis, free_port
from emotion_stream.labels import EMOTIONS
from emotion_stream.redis_conn import as_text, connect
from emotion_stream.schema import FaceEvent

from .measure import Figures, UsageSampler, percentiles

ROOT = Path(__file__).resolve().parents[1]
TOKEN = "bench"
WEBHOOK_EVENTS_PER_CAMERA = 25
CLIENT_PROCESSES = 4  # the SSE clients are spread over this many processes
ENTRY_MS = re.compile(rb"^id: (\d+)-", re.M)


def run_api(cameras: int, fps: float, clients: int, seconds: float) -> Figures:
    sse: Figures = {}
    for phases in ("independent", "locked"):
        with tempfile.TemporaryDirectory(prefix="bench-api-") as tmp, \
                EmbeddedRedis(port=free_port(), data_dir=Path(tmp) / "redis") as server:
            sse[phases] = asyncio.run(_sse(server.url, cameras, fps, clients, seconds, phases == "locked"))
    with tempfile.TemporaryDirectory(prefix="bench-api-") as tmp, \
            EmbeddedRedis(port=free_port(), data_dir=Path(tmp) / "redis") as server:
        hooks = asyncio.run(_webhooks(server.url, cameras))
    return {"sse": sse, "webhooks": hooks}


def _start_api(url: str, port: int, *extra: str) -> subprocess.Popen[bytes]:
    command = [sys.executable, "-m", "cli", "api", "--redis", url, "--port", str(port), "--api-tokens", TOKEN,
               "--log-level", "WARNING", *extra]
    return subprocess.Popen(command, cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)},
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


async def _listening(port: int, api: subprocess.Popen[bytes], timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if api.poll() is not None:
            raise RuntimeError(f"the api exited: {(api.stderr.read() if api.stderr else b'').decode()[-500:]}")
        try:
            _, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.close()
            return
        except OSError:
            await asyncio.sleep(0.2)
    raise RuntimeError("the api did not listen")


def _face(camera: str, seq: int) -> str:
    """A face event as a worker writes it (the size matters: it is what the API sends)."""
    probabilities = {label: round(1 / len(EMOTIONS), 4) for label in EMOTIONS}
    now = time.time()
    return FaceEvent(camera, seq, now, now, 0, 1, (210, 120, 160, 160), "neutral", 0.31, probabilities, False,
                     "blazeface", "emotion-resnet", "bench", landmarks=[[250.0, 180.0]] * 6, track=1,
                     track_emotion="neutral").to_json()


async def _listen(port: int, clients: int, until: float) -> tuple[list[float], list[int]]:
    """``clients`` connections on ``/v1/events`` until the wall-clock time ``until``; for
    every event, its arrival time minus its Redis entry time (same host clock), and the
    events each client got."""
    latencies: list[float] = []
    received = [0] * clients

    async def listen(index: int) -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(f"GET /v1/events HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {TOKEN}\r\n\r\n".encode())
        await writer.drain()
        carry = b""
        try:
            while True:
                chunk = await reader.read(1 << 16)
                if not chunk:
                    return
                now_ms = time.time() * 1000
                data = carry + chunk
                cut = data.rfind(b"\n") + 1  # whole lines only; the rest waits for the next read
                data, carry = data[:cut], data[cut:]
                for ms in ENTRY_MS.findall(data):
                    latencies.append(now_ms - int(ms))
                    received[index] += 1
        finally:
            writer.close()

    listeners = [asyncio.create_task(listen(i)) for i in range(clients)]
    await asyncio.sleep(max(0.0, until - time.time()))
    for task in listeners:
        task.cancel()
    await asyncio.gather(*listeners, return_exceptions=True)
    return latencies, received


def _client_process(port: int, clients: int, until: float, results: Queue[tuple[list[float], list[int]]]) -> None:
    results.put(asyncio.run(_listen(port, clients, until)))


async def _sse(url: str, cameras: int, fps: float, clients: int, seconds: float, locked: bool) -> Figures:
    port, metrics_port = free_port(), free_port()
    api = _start_api(url, port, "--metrics-port", str(metrics_port))
    client = connect(url, "bench-api")
    results: Queue[tuple[list[float], list[int]]] = multiprocessing.Queue()
    readers: list[multiprocessing.Process] = []
    try:
        names = [f"api-cam{i}" for i in range(cameras)]
        await client.sadd(keys.CAMERAS, *names)
        await _listening(port, api)
        await asyncio.sleep(1.5)  # the API follows the cameras

        async def camera(offset: float, name: str) -> int:
            start, seq = time.monotonic() + offset, 0
            await asyncio.sleep(offset)
            while time.monotonic() - start < seconds:
                await client.xadd(keys.events(name), {"event": _face(name, seq)}, maxlen=10_000, approximate=True)
                seq += 1
                await asyncio.sleep(max(0.0, start + seq / fps - time.monotonic()))
            return seq

        # The clients in several processes, as browsers are: one Python process reading
        # 200 sockets would add its own queueing to what it measures.
        until = time.time() + 2.0 + seconds + 1.5
        shares = [clients // CLIENT_PROCESSES + (i < clients % CLIENT_PROCESSES) for i in range(CLIENT_PROCESSES)]
        readers = [multiprocessing.Process(target=_client_process, args=(port, n, until, results), daemon=True)
                   for n in shares if n]
        for reader in readers:
            reader.start()
        await asyncio.sleep(2.0)  # every client connected
        with UsageSampler({"api": api.pid, **{f"clients{i}": r.pid or 0 for i, r in enumerate(readers)}},
                          interval=0.5) as sampler:
            # Independent cameras start at random points of a frame interval; locked ones
            # at the same instant (all their events at once: the worst case).
            offsets = [0.0] * cameras if locked else list(random.Random(0).uniform(0, 1 / fps) for _ in names)
            written = sum(await asyncio.gather(*(camera(offset, name) for offset, name in zip(offsets, names))))
            await asyncio.sleep(1.0)
        written_delays = _histogram(metrics_port, "emotion_stream_api_sse_delay_seconds")
        usage = sampler.usage["api"].summary(sampler.wall)
        clients_cpu = sum(sampler.usage[f"clients{i}"].summary(sampler.wall)["cpu_cores_used"]
                          for i in range(len(readers)))
        latencies: list[float] = []
        received: list[int] = []
        for _ in readers:
            got, counts = await asyncio.to_thread(results.get, timeout=60)
            latencies += got
            received += counts
    finally:
        for reader in readers:
            reader.join(10)
        api.terminate()
        api.wait(30)
        await client.aclose()
    return {
        "clients": clients, "cameras": cameras, "fps": fps, "seconds": seconds, "events_written": written,
        "events_received_per_client": {"min": min(received), "max": max(received)},
        # In Redis -> written to the client's connection, by the API's own histogram (its
        # buckets: quantiles interpolated within them, as Prometheus does).
        "redis_to_written_ms": {
            "p50": round(_quantile(written_delays, 0.5) * 1000, 1), "p95": round(_quantile(written_delays, 0.95) * 1000, 1),
            "within_20ms": round(_share_within(written_delays, 0.02), 4),
        },
        # ... -> read by the clients (CLIENT_PROCESSES processes on the same machine).
        "redis_to_client_ms": {k: round(v, 2) for k, v in percentiles(latencies).items()},
        "api_cpu_cores": usage["cpu_cores_used"], "api_peak_rss_mb": usage["peak_rss_mb"],
        "client_processes": len(readers), "client_processes_cpu_cores": clients_cpu,
    }


Buckets = list[tuple[float, float]]  # (upper bound, cumulative count)


def _histogram(port: int, name: str) -> Buckets:
    import urllib.request

    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
        text = response.read().decode()
    found = re.findall(rf'^{name}_bucket{{le="([^"]+)"}} (\S+)$', text, re.M)
    return [(float(le), float(count)) for le, count in found]


def _quantile(buckets: Buckets, q: float) -> float:
    total = buckets[-1][1]
    rank, lower, below = q * total, 0.0, 0.0
    for upper, count in buckets:
        if count >= rank:
            if upper == float("inf"):
                return lower
            return lower + (upper - lower) * (rank - below) / max(count - below, 1e-9)
        lower, below = upper, count
    return lower


def _share_within(buckets: Buckets, bound: float) -> float:
    return next(count for upper, count in buckets if upper >= bound) / max(buckets[-1][1], 1.0)


async def _webhooks(url: str, cameras: int) -> Figures:
    attempts = 0
    accepted: list[str] = []

    async def receive(request: web.Request) -> web.Response:
        nonlocal attempts
        await request.read()
        attempts += 1
        if attempts % 2 == 1:
            return web.Response(status=503)
        accepted.append(request.headers["X-Emotion-Stream-Event-Id"])
        return web.Response(status=204)

    app = web.Application()
    app.router.add_post("/hook", receive)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    hook_port, port = free_port(), free_port()
    await web.TCPSite(runner, "127.0.0.1", hook_port).start()
    client = connect(url, "bench-webhooks")
    names = [f"hook-cam{i}" for i in range(cameras)]
    await client.sadd(keys.CAMERAS, *names)
    api = _start_api(url, port, "--webhook", f"http://127.0.0.1:{hook_port}/hook", "--webhook-secret", "k")
    try:
        await _listening(port, api)
        await asyncio.sleep(3.0)  # the webhook follows the cameras
        written: dict[str, list[str]] = defaultdict(list)
        started = time.monotonic()
        for i in range(WEBHOOK_EVENTS_PER_CAMERA):
            for name in names:
                doc = {"type": "track_started" if i % 2 == 0 else "track_ended", "camera": name, "track": i // 2,
                       "at": time.time(), "seq": i, "v": 1}
                entry = await client.xadd(keys.tracks(name), {"event": json.dumps(doc)})
                written[name].append(f"{as_text(entry)}:tracks:{name}")
        total = sum(len(ids) for ids in written.values())
        deadline = time.monotonic() + 300
        while len(set(accepted)) < total and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
        seconds = time.monotonic() - started
    finally:
        api.terminate()
        api.wait(30)
        await runner.cleanup()
        await client.aclose()
    unique = list(dict.fromkeys(accepted))
    in_order = all([i for i in unique if i.endswith(f":{name}")] == ids for name, ids in written.items())
    return {"events": total, "attempts": attempts, "delivered_ids": len(unique),
            "duplicates": len(accepted) - len(unique), "missing": total - len(set(accepted) & {
                i for ids in written.values() for i in ids}),
            "in_order_per_camera": in_order, "seconds": round(seconds, 1)}
