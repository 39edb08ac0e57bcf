"""Options and helpers shared by several subcommands."""

from __future__ import annotations

import argparse
import logging
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from types import UnionType
from typing import TYPE_CHECKING, Any, Literal, TypeAlias, Union, get_args, get_origin

if TYPE_CHECKING:
    from emotion_stream.schema import Event, TrackEvent
    from emotion_stream.settings import Settings
    from model import FaceAnalyzer

log = logging.getLogger("emotion_stream.cli")

Runner = Callable[[argparse.Namespace, "Settings"], int]
Subcommands: TypeAlias = "argparse._SubParsersAction[argparse.ArgumentParser]"  # what register() gets


class CommandError(Exception):
    """A user-facing failure: printed as one line, exit code 1."""


class UsageError(CommandError):
    """Flags that do not go together, found after parsing: one line, exit code 2, as
    the parser's own errors."""


def add_command(sub: Subcommands, name: str, run: Runner, help: str, description: str | None = None) -> argparse.ArgumentParser:
    parser = sub.add_parser(name, help=help, description=description or help)
    parser.set_defaults(run=run)
    return parser


def number(kind: type[int | float], low: float | None = None, high: float | None = None,
           *, above: bool = False) -> Callable[[str], float]:
    """An argparse ``type`` for flags that are not settings: a number in [low, high]
    (``above``: strictly above ``low``). A bad value exits 2 naming the flag, like a
    setting's validation does."""
    def parse(text: str) -> float:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not a{'n integer' if kind is int else ' number'}: {text!r}") from None
        if low is not None and (value <= low if above else value < low):
            raise argparse.ArgumentTypeError(f"must be {'>' if above else '>='} {low:g} (got {text})")
        if high is not None and value > high:
            raise argparse.ArgumentTypeError(f"must be <= {high:g} (got {text})")
        return value

    parse.__name__ = kind.__name__  # argparse names the type in some messages
    return parse


POSITIVE_SECONDS = number(float, 0, above=True)


def camera_id(text: str) -> str:
    """An argparse ``type`` for ``--camera``: an id workers accept (they refuse others,
    so a camera named otherwise would be analysed by no one)."""
    from emotion_stream.schema import validate_camera_id

    try:
        return validate_camera_id(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


# Flags whose name is not the setting's name with dashes.
FLAG_NAMES = {
    "redis_url": "--redis",
    "model_path": "--model",
    "detect_max_side": "--detect-size",
    "max_frame_age_s": "--max-frame-age",
    "worker_name": "--name",
    "frames_max_len": "--max-len",
    "webrtc_token": "--token",
    "api_host": "--host",
    "api_port": "--port",
    "api_cors_origin": "--cors-origin",
}


def add_settings(parser: argparse.ArgumentParser, *names: str, absent: Any = None) -> None:
    """One flag per setting, generated from its field in ``emotion_stream.settings``: the
    help is the field's description with its default and environment variable, choices
    come from a ``Literal`` type, and the value is validated by the settings model itself
    (a bad one exits 2 naming the flag). Nothing here restates a default. ``absent`` is
    the value when the flag is not given (None: the settings' own value applies)."""
    from emotion_stream.settings import Settings, env_name

    for name in names:
        field = Settings.model_fields[name]
        kind, choices = _flag_type(field.annotation)
        default = field.get_default()
        flag = FLAG_NAMES.get(name, "--" + name.replace("_", "-"))
        if kind is bool:  # --tracking / --no-tracking
            help = f"{field.description} (default {'on' if default else 'off'}; env {env_name(name)})"
            parser.add_argument(flag, dest=name, action=argparse.BooleanOptionalAction, default=absent, help=help)
            continue
        shown = "" if default in (None, "") else f"default {default}; "  # the description says what unset means
        help = f"{field.description} ({shown}env {env_name(name)})".replace("%", "%%")
        metavar = None if choices else METAVARS.get(name, _TYPE_METAVARS.get(kind, "VALUE"))
        parser.add_argument(
            flag, dest=name, type=kind, choices=choices,
            default=absent, metavar=metavar, help=help,
        )


METAVARS = {"redis_url": "URL", "metrics_host": "ADDR", "metrics_port": "PORT", "detect_max_side": "PX",
            "still_detect_size": "PX", "max_frame_age_s": "S", "max_wait_ms": "MS", "claim_idle_ms": "MS",
            "worker_name": "NAME", "api_host": "ADDR", "api_port": "PORT", "api_cors_origin": "ORIGINS",
            "api_tokens": "TOKENS", "stuck_after_s": "S"}
_TYPE_METAVARS: dict[object, str] = {int: "N", float: "X", Path: "PATH", str: "TEXT"}


def _flag_type(annotation: Any) -> tuple[Callable[[str], Any], tuple[str, ...] | None]:
    """(argparse type, choices) of a field annotation such as ``int | None`` or a Literal."""
    optional = get_origin(annotation) in (UnionType, Union)
    [kind] = [a for a in get_args(annotation) if a is not type(None)] if optional else [annotation]
    if get_origin(kind) is Literal:
        choices: tuple[str, ...] = get_args(kind)
        by_case = {c.casefold(): c for c in choices}
        return (lambda value: by_case.get(value.casefold(), value)), choices  # DEBUG or debug
    return kind, None


def add_model_options(parser: argparse.ArgumentParser) -> None:
    add_settings(parser, "detector", "model_path", "model_runtime", "detect_max_side", "still_detect_size",
                 "uncertain_below", "still_views")


def add_service_options(parser: argparse.ArgumentParser, *, metrics: bool = True) -> None:
    """What every long-running command takes: ``--duration``, the Redis URL and (with
    ``metrics``) the metrics endpoint."""
    parser.add_argument("--duration", type=POSITIVE_SECONDS, default=None, metavar="S", help="stop after S seconds")
    add_settings(parser, "redis_url", *(("metrics_port", "metrics_host", "stuck_after_s") if metrics else ()))


def load_analyzer(settings: Settings) -> FaceAnalyzer:
    """Model + detector from settings, with load failures as one-line errors."""
    from model import FaceAnalyzer, ModelError

    try:
        return FaceAnalyzer.from_settings(settings)
    except ModelError as exc:
        raise CommandError(str(exc)) from None


@contextmanager
def progress(total: int | None, desc: str, unit: str = "img") -> Iterator[Any]:
    """A tqdm bar on stderr (hidden when stderr is not a terminal)."""
    from tqdm import tqdm

    bar = tqdm(total=total, desc=desc, unit=unit, disable=None, leave=False, dynamic_ncols=True)
    try:
        yield bar
    finally:
        bar.close()


def serve_metrics(settings: Settings) -> int | None:
    """Start the /metrics (and /healthz) HTTP server of ``--metrics-port``; returns the
    bound port (port 0 = any free one)."""
    port, host = settings.metrics_port, settings.metrics_host
    if port is None:
        return None
    from emotion_stream import metrics_http
    from emotion_stream.liveness import LIVENESS

    LIVENESS.stuck_after_s = settings.stuck_after_s
    try:
        bound = metrics_http.serve(host, port)
    except OSError as exc:  # in use, not ours to bind, or a host that does not resolve
        raise CommandError(f"--metrics-port {port} on {host!r}: {exc.strerror or exc}") from None
    log.info("metrics on http://%s:%d/metrics (liveness: /healthz)", host, bound)
    return bound


def format_event(event: Event) -> str:
    """One human-readable line per event."""
    from emotion_stream.schema import EndOfStream, FaceEvent  # here: most commands never format events

    if isinstance(event, EndOfStream):
        return f"{event.camera:<12} end of stream after seq {event.seq}"
    assert isinstance(event, FaceEvent)
    clock = time.strftime("%H:%M:%S", time.localtime(event.captured_at))
    x, y, w, h = event.box
    note = " (whole image)" if event.whole_image else " (weak)" if event.weak else ""
    name = f" {event.name}" if event.name else ""
    track = f"  person {event.track} {event.track_emotion}" if event.track is not None else ""
    # A recorded video's frame: where it is in the video (its capture time is the video's clock).
    when = f"{event.latency_s * 1000:6.1f} ms" if event.position_s is None else f"at {event.position_s:7.2f} s"
    return (
        f"{clock} {event.camera:<12} #{event.seq:<6} face {event.face_index}/{event.faces_in_frame} "
        f"{event.emotion:<9} {event.confidence:4.2f}  box {x},{y},{w},{h}  {when}{name}{note}{track}"
    )


def format_track_event(event: TrackEvent) -> str:
    """One human-readable line per track lifecycle event."""
    from emotion_stream.schema import TrackEventType

    clock = time.strftime("%H:%M:%S", time.localtime(event.at))
    where = "" if event.position_s is None else f" at {event.position_s:7.2f} s"  # in a recorded video
    head = f"{clock} {event.camera:<12} person {event.track:<5}{where}"
    if event.type is TrackEventType.STARTED:
        return f"{head} appeared, {event.emotion}"
    if event.type is TrackEventType.EMOTION_CHANGED:
        return f"{head} {event.previous} -> {event.emotion}"
    seconds = ", ".join(f"{k} {v:.1f}s" for k, v in sorted(event.emotion_seconds.items(), key=lambda kv: -kv[1]))
    return f"{head} left after {event.duration_s:.1f} s ({event.reason}); mostly {event.emotion}: {seconds or '-'}"
