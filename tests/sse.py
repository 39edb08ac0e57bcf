"""A Server-Sent Events client on a plain socket, for tests: it can read in the
background, be cut off mid-stream, or connect and never read."""

from __future__ import annotations

import json
import socket
import threading
import time
from dataclasses import dataclass


@dataclass
class Message:
    id: str
    data: dict
    received: float  # time.time()


class SseClient:
    def __init__(self, port: int, path: str, *, token: str | None = None, last_event_id: str | None = None,
                 read: bool = True, receive_buffer: int | None = None) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        if receive_buffer:
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, receive_buffer)
        self.sock.connect(("127.0.0.1", port))
        headers = [f"GET {path} HTTP/1.1", f"Host: 127.0.0.1:{port}", "Accept: text/event-stream"]
        if token:
            headers.append(f"Authorization: Bearer {token}")
        if last_event_id:
            headers.append(f"Last-Event-ID: {last_event_id}")
        self.sock.sendall(("\r\n".join(headers) + "\r\n\r\n").encode())
        self.messages: list[Message] = []
        self.comments: list[str] = []
        self.status: int | None = None
        self.closed_by_server = False
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        if read:
            self.start_reading()

    def start_reading(self) -> None:
        """Read in the background from now on (a client that stalled, then reads again)."""
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        buffer = b""
        head_done = False
        try:
            while True:
                chunk = self.sock.recv(65536)
                if not chunk:
                    self.closed_by_server = True
                    return
                buffer += chunk
                if not head_done:
                    if b"\r\n\r\n" not in buffer:
                        continue
                    head, buffer = buffer.split(b"\r\n\r\n", 1)
                    self.status = int(head.split(b" ", 2)[1])
                    head_done = True
                buffer = self._parse(buffer)
        except OSError:
            return

    def _parse(self, buffer: bytes) -> bytes:
        # Chunked transfer encoding: strip chunk-size lines, keep the payload.
        text = _dechunk(buffer)
        if text is None:
            return buffer
        payload, rest = text
        self._pending = getattr(self, "_pending", "") + payload
        while "\n\n" in self._pending:
            block, self._pending = self._pending.split("\n\n", 1)
            fields: dict[str, str] = {}
            for line in block.split("\n"):
                if line.startswith(":"):
                    with self._lock:
                        self.comments.append(line[1:].strip())
                    continue
                name, _, value = line.partition(": ")
                fields[name] = value
            if "retry" in fields:
                with self._lock:
                    self.comments.append(f"retry {fields['retry']}")
            if "data" in fields:
                with self._lock:
                    self.messages.append(Message(fields.get("id", ""), json.loads(fields["data"]), time.time()))
        return rest

    def snapshot(self) -> list[Message]:
        with self._lock:
            return list(self.messages)

    def close(self) -> None:
        """Cut the connection (a client that goes away mid-stream)."""
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.sock.close()
        if self._thread is not None:
            self._thread.join(5)


def _dechunk(buffer: bytes) -> tuple[str, bytes] | None:
    """The payload of the complete chunks at the start of ``buffer`` and what is left."""
    out = []
    while True:
        line_end = buffer.find(b"\r\n")
        if line_end < 0:
            break
        size = int(buffer[:line_end] or b"0", 16)
        if len(buffer) < line_end + 2 + size + 2:
            break
        out.append(buffer[line_end + 2: line_end + 2 + size])
        buffer = buffer[line_end + 2 + size + 2:]
        if size == 0:
            break
    return (b"".join(out).decode(), buffer) if out else None
