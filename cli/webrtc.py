"""``emotion-stream webrtc``: the browser gateway."""

from __future__ import annotations

import argparse
import asyncio

from emotion_stream.settings import Settings, is_loopback

from .common import (
    CommandError,
    Subcommands,
    add_command,
    add_service_options,
    add_settings,
    number,
    serve_metrics,
)


def register(sub: Subcommands) -> None:
    p = add_command(
        sub, "webrtc", run, "serve a web page that streams the browser's camera (WebRTC)",
        description=(
            "Serve a page that sends the browser's camera over WebRTC. Frames go into the "
            "camera's Redis stream like any ingest; the workers' events come back as boxes "
            "and labels drawn on the returned video and as a live list. Each browser gets "
            "its own camera id."
        ),
    )
    p.add_argument("--host", default="127.0.0.1", help="bind address (default %(default)s; 0.0.0.0 for all)")
    p.add_argument("--port", type=number(int, 0, 65535), default=8080, help="default %(default)s")
    p.add_argument("--fps", type=number(float, 0, 1000, above=True), default=10.0, help="frames per second sent to the workers (default %(default)s)")
    add_settings(p, "webrtc_token", "webrtc_max_sessions", "webrtc_connect_timeout_s", "webrtc_ice_servers",
                 "webrtc_session_keep_s")
    add_service_options(p)


def run(args: argparse.Namespace, settings: Settings) -> int:
    import logging

    from aiohttp import web

    from emotion_stream.embedded_redis import redis_url_or_embedded
    from emotion_stream.lifecycle import run_service
    from emotion_stream.redis_conn import connect, retrying
    from ingest.webrtc import Gateway, ice_servers

    token = settings.webrtc_token
    if not token and not is_loopback(args.host):
        raise CommandError(f"--host {args.host} lets other machines in: set --token (or EMOTION_STREAM_WEBRTC_TOKEN)")
    try:
        ice_servers(settings.webrtc_ice_servers)
    except ValueError as exc:
        raise CommandError(f"--webrtc-ice-servers: {exc}") from None
    serve_metrics(settings)

    async def main(stop: asyncio.Event) -> int:
        client = connect(url, name="emotion-stream-webrtc")
        runner = web.AppRunner(Gateway(client, settings, fps=args.fps, token=token).app())
        try:
            # Redis first, as every command: a wrong password fails here, an outage waits.
            if await retrying(client.ping, what="connect", component="webrtc", stop=stop) is None:
                return 0
            await runner.setup()
            try:
                await web.TCPSite(runner, args.host, args.port).start()
            except OSError as exc:
                raise CommandError(f"--port {args.port} on {args.host!r}: {exc.strerror or exc}") from None
            logging.getLogger("emotion_stream.webrtc").info(
                "serving http://%s:%d/%s", args.host, args.port, "?token=..." if token else "")
            await stop.wait()
            return 0
        finally:
            await runner.cleanup()
            await client.aclose()

    with redis_url_or_embedded(settings.redis_url) as url:
        return run_service(main, args.duration)
