"""Live frames written from a task of their own, so that reading a camera never waits on
Redis (``LiveSender``)."""

from __future__ import annotations

import asyncio
import time

import numpy as np

from .publisher import FramePublisher


class LiveSender:
    """Writes the frames ``put`` hands it, one at a time, the newest first.

    A camera must be read as fast as it delivers (an RTSP stream read slower than it
    plays falls further and further behind), while each write waits a Redis round trip:
    with Redis 80 ms away, a loop doing both sent 11 of a camera's 15 frames a second,
    each read later than the last, and said nothing. Now the newest frame read waits in
    one slot while a write is in flight; a frame replaced there before it could be sent
    is dropped and counted (``redis_slow``)."""

    def __init__(self, publisher: FramePublisher) -> None:
        self.publisher = publisher
        self._slot: tuple[np.ndarray, float] | None = None
        self._waiting = asyncio.Event()
        self._closing = False
        self._writing_since: float | None = None
        self._task = asyncio.create_task(self._run(), name=f"send-{publisher.camera}")

    def put(self, frame: np.ndarray, captured_at: float) -> None:
        """Hand over a frame; raises what ended the writer (refused access)."""
        if self._task.done():
            self._task.result()
        if self._slot is not None:
            started = self._writing_since
            self.publisher.superseded(0.0 if started is None else time.monotonic() - started)
        self._slot = frame, captured_at
        self._waiting.set()

    async def close(self) -> None:
        """Write the frame still waiting, then end; raises what ended the writer."""
        self._closing = True
        self._waiting.set()
        await self._task

    async def _run(self) -> None:
        while True:
            if self._slot is None:
                if self._closing:
                    return
                await self._waiting.wait()
                self._waiting.clear()
                continue
            (frame, captured_at), self._slot = self._slot, None
            self._writing_since = time.monotonic()
            try:
                await self.publisher.publish(frame, captured_at)
            finally:
                self._writing_since = None
