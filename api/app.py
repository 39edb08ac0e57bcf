"""The HTTP API's routes: live events (SSE), history pages, cameras, summaries, health.

Every route but ``/healthz`` needs a bearer token when tokens are configured (``auth``).
Errors are one JSON line, ``{"error": "..."}``: 400 for malformed input, 401, 404 for an
unknown camera, 414/431 for oversized query strings and headers.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, MutableMapping
from typing import Annotated, Any

import redis.asyncio as aioredis
from fastapi import Depends, FastAPI, Header, HTTPException, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import BaseModel
from starlette.routing import Match

from emotion_stream import metrics
from emotion_stream.redis_conn import TRANSIENT_ERRORS, clock_ms
from emotion_stream.schema import validate_camera_id
from emotion_stream.settings import Settings

from . import history
from .auth import TOKEN_PARAMETER, parse_tokens, presented, valid
from .hub import EventHub, Subscription
from .streams import TYPES, EventId, entry_id

log = logging.getLogger(__name__)

MAX_QUERY_BYTES = 2048
MAX_HEADER_BYTES = 8192
RETRY_MS = 2000  # EventSource's reconnection delay
RETRY_UNAVAILABLE_MS = 5000  # ... while Redis is unreachable
CLOSE_WRITE_S = 0.5  # the API stopping: how long a stream's last write may wait for its client
REPLAY_CHUNK = 500  # replayed events a write
ALL_TYPES = ",".join(TYPES)
RAW_SEND = "emotion_stream.send"  # scope key: the server's own send (RawSend)
# Scope key: a synchronous write of one more body chunk of the response, False when the
# connection cannot take it now (the server's protocol puts it there: service.py).
WRITE_NOW = "emotion_stream.write_now"

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


After = Annotated[str, Query(description="the ``next`` of the previous page; 0: from the oldest kept")]
Limit = Annotated[int, Query(ge=1, le=1000, description="items a page")]


# ------------------------------------------------------------------ response models
class Health(BaseModel):
    redis: str
    live: bool  # the live reader is running (false while Redis is unreachable)


class Camera(BaseModel):
    camera: str
    ingesting: bool  # an ingest process holds the camera's lease now
    last_frame_at: float | None
    fps: float | None
    active_tracks: int
    stats: dict[str, int]  # ingested, trimmed, processed, stale, dead_lettered


class Cameras(BaseModel):
    cameras: list[Camera]


class EventItem(BaseModel):
    id: str
    event: dict[str, Any]


class EventsPage(BaseModel):
    items: list[EventItem]
    next: str | None  # pass as ``after`` for the next page; null: nothing more yet


class TrackItem(BaseModel):
    id: str
    track: dict[str, Any]


class TracksPage(BaseModel):
    items: list[TrackItem]
    next: str | None


class Summary(BaseModel):
    camera: str
    window_s: float
    until: float
    people: int
    emotion_seconds: dict[str, float]


# ------------------------------------------------------------------ the app
def create_app(settings: Settings, client: aioredis.Redis, hub: EventHub) -> FastAPI:
    tokens = parse_tokens(settings.api_tokens)
    app = FastAPI(title="emotion-stream", version="1", summary="Live emotion events, tracks and summaries")

    async def authorized(request: Request) -> None:  # async: FastAPI would run a plain def on a thread
        if not tokens:
            return  # no tokens: loopback only (the service refuses any other address)
        token = presented(request.headers.get("authorization"), request.query_params.get(TOKEN_PARAMETER))
        if not valid(token, tokens):
            raise HTTPException(401, "a valid bearer token is required", headers={"WWW-Authenticate": "Bearer"})

    Auth = Depends(authorized)

    async def known_camera(camera: str) -> str:
        try:
            validate_camera_id(camera)
        except ValueError as exc:
            raise HTTPException(400, str(exc)) from None
        if not await history.known(client, camera):
            raise HTTPException(404, f"unknown camera {camera!r}")
        return camera

    @app.exception_handler(HTTPException)
    async def _http_error(_request: Request, exc: HTTPException) -> JSONResponse:
        return JSONResponse({"error": exc.detail}, exc.status_code, headers=exc.headers)

    @app.exception_handler(RequestValidationError)
    async def _bad_input(_request: Request, exc: RequestValidationError) -> JSONResponse:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first.get("loc", ())[1:]) or "request"
        return JSONResponse({"error": f"{where}: {first.get('msg', 'invalid')}"}, 400)

    async def _redis_down(_request: Request, exc: Exception) -> JSONResponse:
        metrics.REDIS_ERRORS.labels("api").inc()
        return JSONResponse({"error": f"Redis is unavailable: {exc}"}, 503, headers={"Retry-After": "5"})

    for error in TRANSIENT_ERRORS:
        app.add_exception_handler(error, _redis_down)

    @app.get("/healthz", response_model=Health, responses={503: {"description": "Redis is unreachable"}})
    async def healthz() -> Any:
        """Up when Redis answers (no token needed: for load balancers and orchestrators)."""
        try:
            await client.ping()
        except TRANSIENT_ERRORS as exc:
            return JSONResponse({"redis": f"unreachable: {exc}", "live": False}, 503)
        return {"redis": "ok", "live": hub.healthy}

    @app.get("/v1/events", dependencies=[Auth], response_class=StreamingResponse,
             responses={200: {"content": {"text/event-stream": {}}}})
    async def events(
        camera: Annotated[list[str] | None, Query(description="a camera to follow (repeatable); none: all")] = None,
        types: Annotated[str, Query(description="comma-separated event types")] = ALL_TYPES,
        last_event_id: Annotated[str | None, Header(description="resume after this event id")] = None,
    ) -> StreamingResponse:
        """Live events as Server-Sent Events. Each message's ``id`` is the event's id; a
        client that reconnects with ``Last-Event-ID`` first gets everything it missed that
        the streams still hold, in order, then live events: nothing missed, nothing twice."""
        wanted = frozenset(t.strip() for t in types.split(",") if t.strip())
        unknown = sorted(wanted - TYPES.keys())
        if unknown or not wanted:
            raise HTTPException(400, f"types: unknown {', '.join(unknown) or '(none given)'} (known: {ALL_TYPES})")
        after = None
        if last_event_id:
            try:
                after = EventId.parse(last_event_id)
            except ValueError as exc:
                raise HTTPException(400, f"Last-Event-ID: {exc}") from None
        cameras = frozenset([await known_camera(c) for c in camera]) if camera else None
        subscription = hub.subscribe(cameras, wanted)  # before the replay: nothing falls between
        return EventStreamResponse(_event_stream(client, hub, subscription, after), subscription, hub)

    @app.get("/v1/cameras", dependencies=[Auth], response_model=Cameras)
    async def cameras() -> Any:
        """Every announced camera: whether an ingest writes it, its last frame, frame rate over
        10 s, active tracks, frame counts."""
        return {"cameras": await history.cameras(client)}

    @app.get("/v1/cameras/{camera}/events", dependencies=[Auth], response_model=EventsPage)
    async def camera_events(camera: str, after: After = "0", limit: Limit = 100) -> Any:
        """Face and end-of-stream events, oldest first, as far back as the stream holds."""
        return await history.events_page(client, await known_camera(camera), _cursor(after), limit)

    @app.get("/v1/cameras/{camera}/tracks", dependencies=[Auth], response_model=TracksPage)
    async def camera_tracks(camera: str, after: After = "0", limit: Limit = 100) -> Any:
        """Ended tracks (duration, dominant emotion, seconds per emotion), oldest first."""
        return await history.tracks_page(client, await known_camera(camera), _cursor(after), limit)

    @app.get("/v1/cameras/{camera}/summary", dependencies=[Auth], response_model=Summary)
    async def camera_summary(
        camera: str, window: Annotated[float, Query(gt=0, le=86_400, description="seconds")] = 300.0,
    ) -> Any:
        """Seconds shown per emotion and people seen in the last ``window`` seconds."""
        return await history.summary(client, await known_camera(camera), window)

    if settings.api_cors_origin:
        app.add_middleware(CORSMiddleware, allow_origins=parse_tokens(settings.api_cors_origin),
                           allow_methods=["GET"], allow_headers=["Authorization", "Last-Event-ID"])
    app.add_middleware(RequestLimits)
    app.add_middleware(RequestMetrics, routes=app)
    return app


def _cursor(after: str) -> str:
    if after == "0":
        return after
    try:
        return entry_id(after)
    except ValueError as exc:
        raise HTTPException(400, f"after: {exc}") from None


# ------------------------------------------------------------------ server-sent events
async def _event_stream(client: aioredis.Redis, hub: EventHub, subscription: Subscription,
                        after: EventId | None) -> AsyncIterator[bytes]:
    try:
        yield f"retry: {RETRY_MS}\n\n".encode()
        floor = after
        if after is not None:
            try:
                # Replay below a clock reading taken first: every such event was written
                # before the replay reads, so it is in them; the hub hands out the rest.
                watermark = await clock_ms(client)
                cameras = subscription.cameras or await history.camera_names(client)
                replay = await history.missed(client, cameras, subscription.types, after, watermark)
                for start in range(0, len(replay), REPLAY_CHUNK):
                    yield b"".join(e.message for e in replay[start:start + REPLAY_CHUNK])
                floor = max(after, EventId(watermark, -1, "", ""))
            except TRANSIENT_ERRORS as exc:
                metrics.REDIS_ERRORS.labels("api").inc()
                log.warning("replay for a resuming client failed (%s); it retries in %d ms",
                            exc, RETRY_UNAVAILABLE_MS)
                yield f"retry: {RETRY_UNAVAILABLE_MS}\n: Redis is unavailable\n\n".encode()
                return
        subscription.floor = floor
        subscription.direct = True  # caught up: from now on the hub may write to the connection itself
        queue = subscription.queue
        while True:
            items = [await queue.get()]
            while not queue.empty():  # all that is queued in one write
                items.append(queue.get_nowait())
            subscription.busy = True  # until written: the hub must not write past these
            events = subscription.live([e for e in items if e is not None])  # (queued during the replay: some were in it)
            if events:
                yield b"".join(e.message for e in events)
                # Written to the connection (the next item is asked for after the send):
                # the oldest event's delay is the chunk's.
                metrics.API_SSE_DELAY_SECONDS.observe(max(0.0, (hub.redis_now_ms() - events[0].id.ms) / 1000))
            elif not hub.healthy:
                yield f"retry: {RETRY_UNAVAILABLE_MS}\n: Redis is unavailable\n\n".encode()
            elif None in items:
                yield b": keep-alive\n\n"
            subscription.busy = False
    finally:
        hub.unsubscribe(subscription)


class EventStreamResponse(StreamingResponse):
    """An SSE response written straight to the connection.

    The response head goes through the middleware like any other (metrics see it); the
    events then go to the server's own ``send`` (``RawSend``): one event is written to
    every client in turn, so each layer a write passes through delays the clients after
    it. The response ends when its client disconnects or is dropped for falling behind
    (a client that does not read blocks its writes: the hub's signal ends it)."""

    def __init__(self, body: AsyncIterator[bytes], subscription: Subscription, hub: EventHub) -> None:
        super().__init__(body, media_type="text/event-stream",
                         headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"})
        self.subscription = subscription
        self.hub = hub

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await send({"type": "http.response.start", "status": self.status_code, "headers": self.raw_headers})
        write: Send = scope.get(RAW_SEND, send)
        self.subscription.write_now = scope.get(WRITE_NOW)
        streaming = asyncio.ensure_future(self._stream(write))
        disconnected = asyncio.ensure_future(_disconnected(receive))
        closing = asyncio.ensure_future(self.subscription.closing.wait())
        tasks = [streaming, disconnected, closing, asyncio.ensure_future(self.subscription.dropped.wait())]
        ended: set[asyncio.Future[Any]] = set()
        try:
            ended, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            self.hub.unsubscribe(self.subscription)
        if closing in ended and disconnected not in ended:
            # The API stops: the response ends as a complete one, and EventSource comes
            # back after RETRY_MS with its Last-Event-ID, to this API restarted or another.
            end = {"type": "http.response.body", "body": b": the API is stopping\n\n", "more_body": False}
            with contextlib.suppress(TimeoutError, OSError):
                await asyncio.wait_for(write(end), CLOSE_WRITE_S)  # a client that reads nothing is not waited for
            return
        if not streaming.cancelled():
            streaming.result()  # the stream's own error, if it had one, for the server to log

    async def _stream(self, write: Send) -> None:
        async for chunk in self.body_iterator:
            await write({"type": "http.response.body", "body": chunk, "more_body": True})
        await write({"type": "http.response.body", "body": b"", "more_body": False})


async def _disconnected(receive: Receive) -> None:
    while (await receive())["type"] != "http.disconnect":
        pass


class RawSend:
    """Outermost: keeps the server's own ``send`` in the scope for the event streams."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        scope[RAW_SEND] = send
        await self.app(scope, receive, send)


# ------------------------------------------------------------------ middleware (plain ASGI: streams pass through)
class RequestLimits:
    """Refuses oversized query strings (414) and header blocks (431) before routing."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            if len(scope.get("query_string", b"")) > MAX_QUERY_BYTES:
                return await _refuse(send, 414, f"query string over {MAX_QUERY_BYTES} bytes")
            if sum(len(k) + len(v) for k, v in scope.get("headers", [])) > MAX_HEADER_BYTES:
                return await _refuse(send, 431, f"headers over {MAX_HEADER_BYTES} bytes")
        await self.app(scope, receive, send)


async def _refuse(send: Send, status: int, reason: str) -> None:
    body = json.dumps({"error": reason}).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})


class RequestMetrics:
    """Counts requests by route and status; times each to its response's first byte."""

    def __init__(self, app: ASGIApp, routes: FastAPI) -> None:
        self.app = app
        self.routes = routes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        route = self._route(scope)
        started = time.perf_counter()

        async def timed(message: Message) -> None:
            if message["type"] == "http.response.start":
                metrics.API_REQUEST_SECONDS.labels(route).observe(time.perf_counter() - started)
                metrics.API_REQUESTS.labels(route, str(message["status"])).inc()
            await send(message)

        await self.app(scope, receive, timed)

    def _route(self, scope: Scope) -> str:
        for candidate in self.routes.router.routes:
            match, _ = candidate.matches(scope)
            if match is Match.FULL:
                return str(getattr(candidate, "path", "other"))
        return "other"
