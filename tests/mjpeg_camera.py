"""A real MJPEG-over-HTTP camera for fault tests (the protocol many IP cameras speak).

Its behaviour is switched while it runs: normal frames, a different resolution,
garbage bytes in place of a JPEG, or a stall (connection open, nothing sent).
``snapshot_url`` serves one JPEG a request, as cameras' snapshot.jpg endpoints do.
"""

from __future__ import annotations

import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import cv2

from ingest.samples import sample_frame

BOUNDARY = b"frame"


class MJPEGCamera:
    def __init__(self, port: int, fps: float = 10.0) -> None:
        self.mode = "normal"  # normal | small | garbage | stall
        self.fps = fps
        self.served = 0
        self.snapshots = 0
        camera = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                pass

            def do_GET(self) -> None:  # noqa: N802 - http.server API
                if self.path == "/snapshot.jpg":
                    body = cv2.imencode(".jpg", sample_frame(camera.snapshots / 4.0))[1].tobytes()
                    self.send_response(200)
                    self.send_header("Content-Type", "image/jpeg")
                    self.send_header("Content-Length", str(len(body)))
                    self.end_headers()
                    self.wfile.write(body)
                    camera.snapshots += 1
                    return
                self.send_response(200)
                self.send_header("Content-Type", f"multipart/x-mixed-replace; boundary={BOUNDARY.decode()}")
                self.end_headers()
                start = time.monotonic()
                try:
                    while not camera._stop.is_set():
                        if camera.mode == "stall":
                            time.sleep(0.1)
                            continue
                        t = time.monotonic() - start
                        if camera.mode == "garbage":
                            body = b"\xff\xd8 definitely not a jpeg \x00" * 50
                        else:
                            size = (320, 240) if camera.mode == "small" else (640, 480)
                            body = cv2.imencode(".jpg", sample_frame(t, size))[1].tobytes()
                        self.wfile.write(b"--" + BOUNDARY + b"\r\nContent-Type: image/jpeg\r\n"
                                         + f"Content-Length: {len(body)}\r\n\r\n".encode() + body + b"\r\n")
                        self.wfile.flush()
                        camera.served += 1
                        time.sleep(1.0 / camera.fps)
                except (BrokenPipeError, ConnectionResetError):
                    pass

        self._stop = threading.Event()
        self.server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{port}/video.mjpg"
        self.snapshot_url = f"http://127.0.0.1:{port}/snapshot.jpg"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> MJPEGCamera:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self.server.shutdown()
        self.server.server_close()
