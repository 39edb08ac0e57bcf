"""``emotion-stream worker``: consume every camera's frames and publish per-face events."""

from __future__ import annotations

import argparse

from emotion_stream.settings import Settings

from .common import (
    CommandError,
    Subcommands,
    add_command,
    add_model_options,
    add_service_options,
    add_settings,
    load_analyzer,
    serve_metrics,
)


def register(sub: Subcommands) -> None:
    p = add_command(
        sub, "worker", run, "analyse frames from Redis (scale out by running more)",
        description=(
            "Join the Redis consumer group on every camera stream, micro-batch frames "
            "across cameras, detect and classify faces, publish one event per face (live "
            "frames through the tracking stage, which this worker also runs for its share of "
            "cameras). Stops cleanly on SIGTERM/SIGINT after finishing its in-flight batch."
        ),
    )
    add_service_options(p)
    add_model_options(p)
    add_settings(p, "batch_size", "max_wait_ms", "cpu_threads", "max_frame_age_s", "claim_idle_ms", "worker_name")
    add_settings(p, "tracking", "track_owner", "track_weak_score", "track_second_look", *TRACKER_SETTINGS)


# The tracker's tuning, shared by `worker` and `tracks`.
TRACKER_SETTINGS = ("track_timeout_s", "track_min_iou", "track_max_scale", "track_max_appearance", "track_smoothing_s", "track_switch_margin",
                    "track_switch_frames", "track_prior_power", "reorder_window_s", "track_lease_s",
                    "track_lookback_s")


def run(args: argparse.Namespace, settings: Settings) -> int:
    from emotion_stream.embedded_redis import redis_url_or_embedded
    from emotion_stream.lifecycle import run_service
    from worker import NameInUse, serve

    analyzer = load_analyzer(settings)
    serve_metrics(settings)
    with redis_url_or_embedded(settings.redis_url) as url:
        try:
            return run_service(lambda stop: serve(settings, url, stop, analyzer), args.duration)
        except NameInUse as exc:
            raise CommandError(str(exc)) from None
