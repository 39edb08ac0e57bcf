"""``emotion-stream api`` as a service: uvicorn serving the app, the live-event hub and
one task per webhook, supervised together (a failing task stops the service, exit 1)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from collections.abc import Iterator

import aiohttp
import uvicorn

from emotion_stream.lifecycle import Supervisor
from emotion_stream.redis_conn import TRANSIENT_ERRORS, connect
from emotion_stream.settings import Settings, is_loopback

from .app import create_app
from .auth import parse_tokens
from .hub import EventHub
from .webhooks import Receiver, Webhook, parse_urls, webhook_id

log = logging.getLogger(__name__)

SHUTDOWN_GRACE_S = 2.0  # open event streams never end by themselves
MAX_HEADER_EVENT_BYTES = 16 * 1024  # uvicorn (h11) refuses a larger request head


class ApiError(Exception):
    """A start-up refusal: one line for the user."""


def check(settings: Settings, host: str) -> None:
    """Refuse settings the API must not start with."""
    if not parse_tokens(settings.api_tokens) and not is_loopback(host):
        raise ApiError(f"--host {host} lets other machines in: set --api-tokens (or EMOTION_STREAM_API_TOKENS)")
    if parse_urls(settings.webhooks) and not settings.webhook_secret:
        raise ApiError("webhooks need --webhook-secret (receivers check each delivery's signature with it)")


def bind(host: str, port: int) -> socket.socket:
    """The listening socket; ApiError for a taken port or a host that does not resolve."""
    try:
        family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
        sock = socket.socket(family, kind, proto)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
    except OSError as exc:
        raise ApiError(f"--port {port} on {host!r}: {exc.strerror or exc}") from None
    sock.listen(1024)
    sock.setblocking(False)
    return sock


class _DroppedClients(logging.Filter):
    """uvicorn reports an event stream ended for a client that fell behind (its writes
    blocked, so the response cannot complete) as an error; the hub has logged it as what
    it is, once."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith("ASGI callable returned without completing response")


class _Server(uvicorn.Server):
    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield  # the service's own handlers stop it (run_service), then should_exit


async def serve(settings: Settings, sock: socket.socket, stop: asyncio.Event) -> int:
    logging.getLogger("uvicorn.error").addFilter(_DroppedClients())
    client = connect(settings.redis_url or "", name="emotion-stream-api")
    hub = EventHub(client, settings.api_client_buffer)
    app = create_app(settings, client, hub)
    server = _Server(uvicorn.Config(
        app, log_config=None, access_log=False, lifespan="off", http="h11", ws="none",
        timeout_graceful_shutdown=int(SHUTDOWN_GRACE_S), h11_max_incomplete_event_size=MAX_HEADER_EVENT_BYTES,
    ))
    supervisor = Supervisor("api", stop)
    receivers = [Receiver(url, webhook_id(url), settings.webhook_secret or "") for url in parse_urls(settings.webhooks)]
    try:
        await client.ping()
    except TRANSIENT_ERRORS as exc:
        log.warning("Redis unavailable (%s); /healthz answers 503 until it is back", exc)
    host, port = sock.getsockname()[:2]
    async with aiohttp.ClientSession() as session:
        webhooks = [Webhook(client, session, receiver, settings) for receiver in receivers]
        try:
            supervisor.start(hub.run(stop), "api-hub")
            for webhook in webhooks:
                supervisor.start(webhook.run(stop), f"webhook-{webhook.name}")
                log.info("webhook %s delivers to %s", webhook.name, webhook.receiver.url.split("?")[0])
            serving = supervisor.start(server.serve(sockets=[sock]), "api-server")
            serving.add_done_callback(lambda _: stop.set())
            log.info("serving http://%s:%d (OpenAPI at /docs)", host, port)
            await stop.wait()
            server.should_exit = True
            await asyncio.wait([serving])
            supervisor.check()
        finally:
            server.should_exit = True
            for webhook in webhooks:
                await webhook.aclose()
            await hub.aclose()
            await client.aclose()
    return 0
