"""``emotion-stream tracks``: own cameras' tracking without analysing frames."""

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
from .worker import TRACKER_SETTINGS


def register(sub: Subcommands) -> None:
    p = add_command(
        sub, "tracks", run, "run the tracking stage alone (workers run it too by default)",
        description=(
            "Take a fair share of the cameras' tracking leases and turn their frame records "
            "into people: track ids, smoothed emotion, lifecycle events on the tracks stream. "
            "Run several for more cameras; a dead one's cameras move to the others after "
            "--track-lease-s. Use with workers started with --no-track-owner."
        ),
    )
    add_service_options(p)
    add_settings(p, "worker_name", "model_path", *TRACKER_SETTINGS)  # the model: its class prior


def run(args: argparse.Namespace, settings: Settings) -> int:
    import os
    import socket

    from emotion_stream.lifecycle import Supervisor, run_service
    from emotion_stream.redis_conn import connect, retrying
    from model.emotion_model import read_metadata
    from model.errors import ModelError
    from tracks import TrackOwner

    if not settings.redis_url:
        raise CommandError("tracks needs the Redis the workers use: set REDIS_URL or --redis")
    url = settings.redis_url
    try:  # the model's metadata (its class prior): a bad file fails here, in one line
        meta = read_metadata(settings.model_path)
    except ModelError as exc:
        raise CommandError(str(exc)) from None
    class_prior = meta.class_prior() if meta else None
    name = settings.worker_name or f"tracks-{socket.gethostname()}-{os.getpid()}"
    serve_metrics(settings)

    async def main(stop: asyncio.Event) -> int:
        client = connect(url, name=name)
        supervisor = Supervisor("tracks", stop)
        try:
            # Redis first, as every command: refused access or a wrong URL fail here, in one line.
            if await retrying(client.ping, what="connect", component="tracks", stop=stop) is None:
                return 0
            await supervisor.wait(supervisor.start(TrackOwner(client, settings, name, class_prior).run(stop), "tracks"))
        finally:
            await client.aclose()
        return 0

    return run_service(main, args.duration)
