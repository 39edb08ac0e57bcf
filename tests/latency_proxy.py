"""A TCP relay that delays every chunk each way by a fixed time: a Redis far away (a
camera site's ingest writing to a Redis in another region), on loopback."""

from __future__ import annotations

import asyncio
import threading


class LatencyProxy:
    """``with LatencyProxy(target_port, one_way_s) as port:`` relays 127.0.0.1:port to
    127.0.0.1:target_port, each chunk delivered ``one_way_s`` after it arrived, in order."""

    def __init__(self, target_port: int, one_way_s: float) -> None:
        self.target_port, self.delay = target_port, one_way_s
        self.loop = asyncio.new_event_loop()
        self.port = 0
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._serve, name="latency-proxy", daemon=True)

    def __enter__(self) -> int:
        self._thread.start()
        self._ready.wait(10)
        return self.port

    def __exit__(self, *exc: object) -> None:
        async def shut() -> None:
            relays = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for relay in relays:
                relay.cancel()
            await asyncio.gather(*relays, return_exceptions=True)

        asyncio.run_coroutine_threadsafe(shut(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(10)
        self.loop.close()

    def _serve(self) -> None:
        asyncio.set_event_loop(self.loop)
        server = self.loop.run_until_complete(asyncio.start_server(self._relay, "127.0.0.1", 0))
        self.port = server.sockets[0].getsockname()[1]
        self._ready.set()
        self.loop.run_forever()

    async def _relay(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
        await asyncio.gather(self._pipe(reader, up_writer), self._pipe(up_reader, writer), return_exceptions=True)

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        chunks: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue()

        async def deliver() -> None:
            while True:
                due, data = await chunks.get()
                await asyncio.sleep(max(0.0, due - self.loop.time()))
                if not data:
                    writer.close()
                    return
                writer.write(data)
                await writer.drain()

        delivery = asyncio.create_task(deliver())
        while True:
            data = await reader.read(65536)
            await chunks.put((self.loop.time() + self.delay, data))
            if not data:
                break
        await delivery
