"""``emotion-stream api``: the HTTP API for applications."""

from __future__ import annotations

import argparse
import asyncio

from emotion_stream.settings import Settings

from .common import (
    CommandError,
    Subcommands,
    add_command,
    add_service_options,
    add_settings,
    serve_metrics,
)


def register(sub: Subcommands) -> None:
    p = add_command(
        sub, "api", run, "serve live events (SSE), history, summaries and webhooks over HTTP",
        description=(
            "Serve the pipeline's events to applications over HTTP: live events as Server-Sent "
            "Events (resumable with Last-Event-ID), pages of past events and ended tracks, "
            "per-camera summaries, and signed webhooks for track lifecycle events. OpenAPI at "
            "/docs. Needs the Redis the workers use."
        ),
    )
    add_settings(p, "api_host", "api_port", "api_tokens", "api_cors_origin", "api_client_buffer")
    p.add_argument("--webhook", action="append", default=None, metavar="URL",
                   help="POST track lifecycle events to URL (repeatable; adds to EMOTION_STREAM_WEBHOOKS)")
    add_settings(p, "webhook_secret", "webhook_face_events_s", "webhook_retry_s", "events_max_len")
    add_service_options(p)


def run(args: argparse.Namespace, settings: Settings) -> int:
    from pydantic import ValidationError

    from api.service import ApiError, bind, check, serve
    from emotion_stream.lifecycle import run_service

    if args.webhook:
        try:
            settings = settings.overridden({"webhooks": ",".join(filter(None, [settings.webhooks, *args.webhook]))})
        except ValidationError as exc:
            raise CommandError(f"--webhook: {exc.errors()[0]['msg'].removeprefix('Value error, ')}") from None
    if not settings.redis_url:
        raise CommandError("api needs the Redis the workers use: set REDIS_URL or --redis")
    try:
        check(settings, settings.api_host)
        sock = bind(settings.api_host, settings.api_port)
    except ApiError as exc:
        raise CommandError(str(exc)) from None
    serve_metrics(settings)

    async def main(stop: asyncio.Event) -> int:
        return await serve(settings, sock, stop)

    return run_service(main, args.duration)
