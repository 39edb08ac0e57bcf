"""The WebRTC gateway: a browser's camera in, annotated video and events back.

One aiohttp app with three routes, as in aiortc's server example: ``/`` (the page),
``/client.js`` and ``/offer``. Per browser (``Session``):

  browser track --pump--> latest frame --rate limit--> FramePublisher -> Redis (like any ingest)
  Redis pub/sub events:{camera} --> Overlay (boxes, person ids, smoothed labels) + data channel "events"
  Redis pub/sub tracks:{camera} --> data channel "events" (the page's per-person timeline)
  AnnotatedTrack: latest frame + overlay --> back to the browser

Freshness over completeness: only the newest incoming frame is kept for the returned
video. Each session has its own camera id; a closed peer connection stops its tasks and
withdraws the camera.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
import secrets
import time
from dataclasses import asdict
from pathlib import Path

import cv2
import numpy as np
import redis.asyncio as aioredis
from aiohttp import web
from aiortc import (
    MediaStreamTrack,
    RTCConfiguration,
    RTCDataChannel,
    RTCIceServer,
    RTCPeerConnection,
    RTCSessionDescription,
)
from aiortc.mediastreams import MediaStreamError
from av import VideoFrame

from emotion_stream import keys, metrics
from emotion_stream.events import live_events, live_track_events
from emotion_stream.schema import FaceEvent
from emotion_stream.settings import Settings
from ingest.live_sender import LiveSender
from ingest.publisher import FramePublisher
from ingest.sources import RateLimiter

log = logging.getLogger(__name__)

STATIC = Path(__file__).with_name("static")
MAX_SDP_BYTES = 64 * 1024  # a browser's offer is a few KB
OVERLAY_TTL_S = 1.5  # boxes older than this fade out (no face any more)
COLORS = {  # BGR per emotion
    "anger": (40, 40, 230), "contempt": (160, 80, 160), "disgust": (40, 150, 60), "fear": (180, 60, 160),
    "happy": (30, 200, 250), "neutral": (200, 200, 200), "sad": (200, 120, 40), "surprise": (0, 140, 255),
    "uncertain": (128, 128, 128),
}


def ice_servers(urls: str) -> list[RTCIceServer]:
    """``stun:``/``turn:``/``turns:`` URLs, comma-separated; a TURN URL may carry
    ``user:password@``. Empty: none (aiortc would otherwise ask Google's public STUN)."""
    servers = []
    for url in filter(None, (u.strip() for u in urls.split(","))):
        scheme, _, rest = url.partition(":")
        if scheme not in ("stun", "turn", "turns") or not rest:
            raise ValueError(f"{url!r} is not a stun:, turn: or turns: URL")
        credentials, at, host = rest.rpartition("@")
        if at and scheme != "stun":
            user, _, password = credentials.partition(":")
            servers.append(RTCIceServer(f"{scheme}:{host}", username=user, credential=password))
        else:
            servers.append(RTCIceServer(url))
    return servers


def valid_offer(params: object) -> RTCSessionDescription:
    """The offer of a ``POST /offer`` body; ValueError with a one-line reason if it is not one."""
    if not isinstance(params, dict):
        raise ValueError("expected a JSON object {sdp, type}")
    sdp, kind = params.get("sdp"), params.get("type")
    if kind != "offer":
        raise ValueError("type must be 'offer'")
    if not isinstance(sdp, str) or len(sdp) > MAX_SDP_BYTES:
        raise ValueError(f"sdp must be a string of at most {MAX_SDP_BYTES} bytes")
    lines = sdp.replace("\r\n", "\n").split("\n")
    if not lines or lines[0].strip() != "v=0" or not any(line.startswith("m=video ") for line in lines):
        raise ValueError("sdp is not a session description with a video track (v=0 ... m=video)")
    return RTCSessionDescription(sdp=sdp, type="offer")


class Overlay:
    """The faces of the most recent analysed frame, drawn onto outgoing video."""

    def __init__(self) -> None:
        self._seq = -1
        self._faces: list[FaceEvent] = []
        self._updated = 0.0

    def update(self, event: FaceEvent) -> None:
        if event.seq > self._seq:
            self._seq, self._faces = event.seq, []
        if event.seq == self._seq:
            self._faces.append(event)
            self._updated = time.monotonic()

    def draw(self, image: np.ndarray, source_size: tuple[int, int]) -> None:
        if time.monotonic() - self._updated > OVERLAY_TTL_S:
            return
        sx = image.shape[1] / max(1, source_size[0])
        sy = image.shape[0] / max(1, source_size[1])
        for face in self._faces:
            x, y, w, h = face.box
            p0, p1 = (int(x * sx), int(y * sy)), (int((x + w) * sx), int((y + h) * sy))
            # A tracked face shows its person and smoothed emotion: steady, not the
            # per-frame label that flickers with noise.
            emotion = face.track_emotion or face.emotion
            color = COLORS.get(emotion, (255, 255, 255))
            cv2.rectangle(image, p0, p1, color, 2)
            label = f"#{face.track} {emotion}" if face.track is not None else f"{face.emotion} {face.confidence:.2f}"
            (tw, th), _ = cv2.getTextSize(label, cv2.FONT_HERSHEY_SIMPLEX, 0.55, 1)
            top = max(0, p0[1] - th - 8)
            cv2.rectangle(image, (p0[0], top), (p0[0] + tw + 6, top + th + 8), color, -1)
            cv2.putText(image, label, (p0[0] + 3, top + th + 3), cv2.FONT_HERSHEY_SIMPLEX, 0.55, (20, 20, 20), 1, cv2.LINE_AA)


class AnnotatedTrack(MediaStreamTrack):
    """Outgoing video: the newest incoming frame with the overlay drawn on it."""

    kind = "video"

    def __init__(self, session: Session) -> None:
        super().__init__()
        self.session = session

    async def recv(self) -> VideoFrame:
        frame = await self.session.next_display_frame()
        image = frame.to_ndarray(format="bgr24")
        self.session.overlay.draw(image, self.session.published_size)
        out = VideoFrame.from_ndarray(image, format="bgr24")
        out.pts, out.time_base = frame.pts, frame.time_base
        return out


class Session:
    """One browser: its peer connection, camera id, tasks and overlay."""

    def __init__(self, gateway: Gateway) -> None:
        self.gateway = gateway
        self.camera = f"webrtc-{secrets.token_hex(4)}"
        self.pc = RTCPeerConnection(RTCConfiguration(iceServers=gateway.ice_servers))
        self.overlay = Overlay()
        self.publisher = FramePublisher(gateway.redis, self.camera, gateway.settings)
        self.channel: RTCDataChannel | None = None
        self.published_size = (640, 480)
        self._display: asyncio.Queue[VideoFrame] = asyncio.Queue(maxsize=1)
        self._stop = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._closed = False

    def start(self, track: MediaStreamTrack) -> None:
        self._tasks.append(asyncio.create_task(self._pump(track), name=f"pump-{self.camera}"))
        self._tasks.append(asyncio.create_task(self._relay_events(), name=f"events-{self.camera}"))
        self._tasks.append(asyncio.create_task(self._relay_tracks(), name=f"tracks-{self.camera}"))

    async def next_display_frame(self) -> VideoFrame:
        return await self._display.get()

    async def _pump(self, track: MediaStreamTrack) -> None:
        """Read every incoming frame; keep the newest for display; publish at --fps (from
        a task of its own: aiortc queues the frames we have not read yet, unbounded)."""
        limiter = RateLimiter(self.gateway.fps)
        sender = LiveSender(self.publisher)
        received = 0
        try:
            while not self._stop.is_set():
                frame = await track.recv()
                if not isinstance(frame, VideoFrame):
                    continue  # a video track yields frames; anything else is not ours to show
                received += 1
                if received == 1:
                    log.info("camera %s: first frame %dx%d", self.camera, frame.width, frame.height)
                elif received % 100 == 0:
                    log.debug("camera %s: %d frames received, %d published", self.camera, received, self.publisher.seq)
                if self._display.full():
                    self._display.get_nowait()  # drop the stale one: freshness first
                self._display.put_nowait(frame)
                if limiter.ready():
                    captured_at = time.time()  # arrival at the gateway
                    # On the loop (~1 ms): PyAV frame conversion from another thread while
                    # aiortc's decoder thread runs has stalled the pump here.
                    image = frame.to_ndarray(format="bgr24")
                    self.published_size = (image.shape[1], image.shape[0])
                    sender.put(image, captured_at)
        except MediaStreamError:
            log.info("camera %s: browser track ended", self.camera)
        except Exception:
            log.exception("camera %s: ingest from the browser failed", self.camera)
            await self.close("failed")
        finally:
            try:
                await sender.close()  # the frame still waiting goes first
            except Exception:  # refused access, say: this session's writes are over either way
                log.exception("camera %s: writing the browser's frames failed", self.camera)
            await self.close("ended")

    async def _relay_events(self) -> None:
        async for event in live_events(self.gateway.redis, self.camera, self._stop):
            if isinstance(event, FaceEvent):
                self.overlay.update(event)
            if self.channel is not None and self.channel.readyState == "open":
                self.channel.send(json.dumps(asdict(event)))

    async def _relay_tracks(self) -> None:
        async for event in live_track_events(self.gateway.redis, self.camera, self._stop):
            if self.channel is not None and self.channel.readyState == "open":
                self.channel.send(event.to_json())

    async def close(self, reason: str = "ended") -> None:
        if self._closed:
            return
        self._closed = True
        metrics.WEBRTC_SESSIONS_CLOSED.labels(reason).inc()
        self._stop.set()
        current = asyncio.current_task()
        for task in self._tasks:
            if task is not current:
                task.cancel()
        await self.pc.close()
        try:
            await self.gateway.redis.srem(keys.CAMERAS, self.camera)
            await self._retire()
        except Exception:  # noqa: BLE001 - Redis down at close: the camera set is advisory
            log.warning("camera %s: Redis unavailable; the camera is not withdrawn, its frames not retired",
                        self.camera)
        self.gateway.sessions.discard(self)
        metrics.PEERS_CONNECTED.set(len(self.gateway.sessions))
        metrics.forget_camera(self.camera)  # each session is a camera: its series and label go with it
        log.info("camera %s: session closed, %s (%d open)", self.camera, reason, len(self.gateway.sessions))

    async def _retire(self) -> None:
        """Each session is a camera of its own, never seen again: its frames (up to the
        stream's bound, 15 MB at 640x480) go now, and its history expires after
        --webrtc-session-keep-s; before, every browser session stayed in Redis for good."""
        redis = self.gateway.redis
        await redis.delete(keys.frames(self.camera), keys.ingest_last_write(self.camera))
        keep = self.gateway.settings.webrtc_session_keep_s
        for key in (keys.events(self.camera), keys.tracks(self.camera), keys.stats(self.camera),
                    keys.dead_letter(self.camera), keys.analysed(self.camera)):
            await redis.expire(key, keep)

    async def close_unless_connected(self, timeout: float) -> None:
        """A peer that does not connect in time (its browser left before ICE completed)
        holds sockets and memory for nothing: close it."""
        await asyncio.sleep(timeout)
        if not self._closed and self.pc.connectionState != "connected":
            log.info("camera %s: not connected after %.0f s; closing", self.camera, timeout)
            await self.close("connect_timeout")


class Gateway:
    """The browser gateway (shaped like aiortc's server example): ``/`` serves the page,
    ``/client.js`` its script, ``/offer`` answers a WebRTC offer. Each browser is a
    ``Session``: its camera track goes to Redis as a camera of its own, and the newest
    frame comes back annotated with the workers' events, which also go to the page over a
    data channel. Peer connections are closed when a tab goes and on shutdown."""

    def __init__(self, client: aioredis.Redis, settings: Settings, *, fps: float, token: str | None) -> None:
        self.redis = client
        self.settings = settings
        self.fps = fps
        self.token = token
        self.sessions: set[Session] = set()
        self.ice_servers = ice_servers(settings.webrtc_ice_servers)
        self._watchdogs: set[asyncio.Task[None]] = set()

    def app(self) -> web.Application:
        app = web.Application(client_max_size=256 * 1024)  # SDP offers are a few KB
        app.router.add_get("/", self.index)
        app.router.add_get("/client.js", self.client_js)
        app.router.add_post("/offer", self.offer)
        app.on_shutdown.append(self.on_shutdown)
        return app

    def _authorized(self, given: object) -> bool:
        if not self.token:
            return True
        return isinstance(given, str) and hmac.compare_digest(given.encode(), self.token.encode())

    async def index(self, request: web.Request) -> web.StreamResponse:
        if not self._authorized(request.query.get("token")):
            raise web.HTTPUnauthorized(text="a valid ?token= is required\n")
        return web.FileResponse(STATIC / "index.html")

    async def client_js(self, request: web.Request) -> web.StreamResponse:
        return web.FileResponse(STATIC / "client.js")

    async def offer(self, request: web.Request) -> web.Response:
        try:
            params = await request.json()
        except ValueError:
            params = None
        bearer = request.headers.get("Authorization", "").removeprefix("Bearer ").strip() or None
        token = params.get("token") if isinstance(params, dict) else None
        if not self._authorized(token or bearer):
            metrics.WEBRTC_OFFERS_REFUSED.labels("unauthorized").inc()
            raise web.HTTPUnauthorized(text="a valid token is required\n")
        try:
            description = valid_offer(params)
        except ValueError as exc:
            metrics.WEBRTC_OFFERS_REFUSED.labels("invalid").inc()
            raise web.HTTPBadRequest(text=f"{exc}\n") from None
        if len(self.sessions) >= self.settings.webrtc_max_sessions:
            metrics.WEBRTC_OFFERS_REFUSED.labels("full").inc()
            log.warning("refused an offer: %d sessions open (--webrtc-max-sessions)", len(self.sessions))
            raise web.HTTPServiceUnavailable(text=f"{len(self.sessions)} browsers are connected, the most this "
                                             "gateway serves; try again later\n", headers={"Retry-After": "10"})
        session = Session(self)
        self.sessions.add(session)
        metrics.PEERS_CONNECTED.set(len(self.sessions))
        pc = session.pc

        @pc.on("datachannel")
        def on_datachannel(channel: RTCDataChannel) -> None:
            session.channel = channel

        @pc.on("connectionstatechange")
        async def on_state() -> None:
            log.info("camera %s: connection %s", session.camera, pc.connectionState)
            if pc.connectionState in ("failed", "closed"):
                await session.close(pc.connectionState if pc.connectionState == "failed" else "ended")

        @pc.on("track")
        def on_track(track: MediaStreamTrack) -> None:
            if track.kind != "video":
                return
            pc.addTrack(AnnotatedTrack(session))
            session.start(track)

        try:
            await pc.setRemoteDescription(description)
            await pc.setLocalDescription(await pc.createAnswer())
        except Exception as exc:  # noqa: BLE001 - a broken offer must not leave a session
            await session.close("failed")
            metrics.WEBRTC_OFFERS_REFUSED.labels("invalid").inc()
            raise web.HTTPBadRequest(text=f"cannot negotiate: {str(exc).splitlines()[0] if str(exc) else exc}\n") from None
        watchdog = asyncio.create_task(session.close_unless_connected(self.settings.webrtc_connect_timeout_s))
        self._watchdogs.add(watchdog)
        watchdog.add_done_callback(self._watchdogs.discard)
        log.info("camera %s: browser connected (%d open)", session.camera, len(self.sessions))
        return web.json_response(
            {"sdp": pc.localDescription.sdp, "type": pc.localDescription.type, "camera": session.camera}
        )

    async def on_shutdown(self, app: web.Application) -> None:
        for watchdog in list(self._watchdogs):
            watchdog.cancel()
        await asyncio.gather(*(s.close("shutdown") for s in list(self.sessions)), return_exceptions=True)
