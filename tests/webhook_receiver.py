"""A webhook receiver for tests: a real HTTP server that refuses every other delivery."""

from __future__ import annotations

import hashlib
import hmac
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class Receiver(ThreadingHTTPServer):
    """A webhook receiver that refuses every other delivery and records the accepted ones."""

    def __init__(self, secret: str) -> None:
        self.secret = secret.encode()
        self.accepted: list[tuple[str, dict]] = []
        self.attempts = 0
        self.bad_signatures = 0
        self.lock = threading.Lock()
        super().__init__(("127.0.0.1", 0), _ReceiverHandler)
        threading.Thread(target=self.serve_forever, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/hook"


class _ReceiverHandler(BaseHTTPRequestHandler):
    server: Receiver

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        with self.server.lock:
            self.server.attempts += 1
            refuse = self.server.attempts % 2 == 1
            expected = "sha256=" + hmac.new(self.server.secret, body, hashlib.sha256).hexdigest()
            if self.headers["X-Emotion-Stream-Signature"] != expected:
                self.server.bad_signatures += 1
            if not refuse:
                self.server.accepted.append((self.headers["X-Emotion-Stream-Event-Id"], json.loads(body)))
        self.send_response(503 if refuse else 204)
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass
