"""``emotion-stream api`` as a service: uvicorn serving the app, the live-event hub and
one task per webhook, supervised together (a failing task stops the service, exit 1)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from collections.abc import Iterator
from functools import partial

import aiohttp
import uvicorn
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol, RequestResponseCycle

from emotion_stream.lifecycle import Supervisor
from emotion_stream.redis_conn import TRANSIENT_ERRORS, connect
from emotion_stream.settings import Settings, is_loopback

from .app import WRITE_NOW, RawSend, create_app
from .auth import parse_tokens
from .hub import EventHub
from .webhooks import Receiver, Webhook, parse_urls, webhook_id

log = logging.getLogger(__name__)

SHUTDOWN_GRACE_S = 2.0  # open event streams never end by themselves
MAX_HEAD_BYTES = 16 * 1024  # a larger request head is refused before it is parsed (431)


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


class BoundedHttpTools(HttpToolsProtocol):
    """uvicorn's httptools protocol, with a cap on the request head and a synchronous
    write for event streams (``WRITE_NOW``).

    httptools rather than h11: each event an SSE client gets is one write through the
    protocol, and with 200 clients on 4 cameras httptools' writes took the API's p95
    Redis -> written from about 20 to about 16 ms (``bench --only api``). h11 caps a request
    head; httptools does not, so this does: bytes received between a request's start and
    the end of its headers, past MAX_HEAD_BYTES, get 431 and the connection is closed (a
    body sent in the head's packets counts too: every route is a GET)."""

    head_bytes = 0
    in_head = True  # between a request's first byte and the end of its headers

    def data_received(self, data: bytes) -> None:
        if self.in_head:
            self.head_bytes += len(data)
            if self.head_bytes > MAX_HEAD_BYTES:
                body = f'{{"error": "request head over {MAX_HEAD_BYTES} bytes"}}'.encode()
                self.transport.write(b"HTTP/1.1 431 Request Header Fields Too Large\r\n"
                                     b"content-type: application/json\r\nconnection: close\r\n"
                                     b"content-length: %d\r\n\r\n%s" % (len(body), body))
                self.transport.close()
                self.in_head = False
                return
        super().data_received(data)

    def on_headers_complete(self) -> None:
        self.in_head = False
        super().on_headers_complete()
        cycle = getattr(self, "cycle", None)  # uvicorn's own fields: absent, the streams take the queued path
        if cycle is not None and getattr(cycle, "scope", None) is self.scope:
            self.scope[WRITE_NOW] = partial(_write_chunk, cycle)  # our own key

    def on_message_complete(self) -> None:
        self.in_head, self.head_bytes = True, 0  # the next request on this connection
        super().on_message_complete()


def _write_chunk(cycle: RequestResponseCycle, body: bytes) -> bool:
    """One more chunk of the cycle's response, written as its own ``send`` would write it
    (chunked: an event stream has no length), if the response is under way and the
    connection takes it now; False otherwise (the caller queues it for ``send``, which
    waits for the connection). This reads uvicorn's own fields of the cycle; should a
    release rename them, every write is refused and the streams all take the queued path."""
    try:
        if (cycle.disconnected or cycle.flow.write_paused or cycle.response_complete
                or not cycle.response_started or cycle.chunked_encoding is not True):
            return False
        transport = cycle.transport
    except AttributeError:
        return False
    transport.write(b"%x\r\n%s\r\n" % (len(body), body))
    return True


class _Server(uvicorn.Server):
    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield  # the service's own handlers stop it (run_service), then should_exit


async def serve(settings: Settings, sock: socket.socket, stop: asyncio.Event) -> int:
    logging.getLogger("uvicorn.error").addFilter(_DroppedClients())
    client = connect(settings.redis_url or "", name="emotion-stream-api")
    hub = EventHub(client, settings.api_client_buffer)
    app = RawSend(create_app(settings, client, hub))
    server = _Server(uvicorn.Config(
        app, log_config=None, access_log=False, lifespan="off", http=BoundedHttpTools, ws="none",
        timeout_graceful_shutdown=int(SHUTDOWN_GRACE_S),
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
            if streams := hub.close_clients():
                log.info("ending %d event stream(s); their clients resume from their last id", streams)
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
