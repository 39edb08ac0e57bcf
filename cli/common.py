"""Options and helpers shared by several subcommands."""

from __future__ import annotations

import argparse
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from emotion_stream.settings import Settings
    from model import FaceAnalyzer

Runner = Callable[[argparse.Namespace, "Settings"], int]


class CommandError(Exception):
    """A user-facing failure: printed as one line, exit code 1."""


def add_command(sub: Any, name: str, run: Runner, help: str, description: str | None = None) -> argparse.ArgumentParser:
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


def add_model_options(parser: argparse.ArgumentParser) -> None:
    from emotion_stream.settings import DETECTORS

    parser.add_argument(
        "--detector", choices=DETECTORS, default=None,
        help="face detector (env EMOTION_STREAM_DETECTOR; default blazeface)",
    )
    parser.add_argument(
        "--model", dest="model_path", type=Path, default=None, metavar="PATH",
        help="Keras .keras/.h5 weights (default: the bundled model; 'fer2013': the FER2013 baseline)",
    )
    parser.add_argument(
        "--detect-size", dest="detect_max_side", type=int, default=None, metavar="PX",
        help="longest side frames are analysed at for detection; larger finds smaller faces "
        "for more CPU (default per detector: blazeface 320, opencv and mtcnn 192)",
    )


def add_redis_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--redis", dest="redis_url", default=None, metavar="URL",
        help="redis://, rediss:// or unix:// URL (env REDIS_URL); unset: embedded redis-server",
    )


def add_metrics_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--metrics-port", type=int, default=None, metavar="PORT",
        help="serve Prometheus metrics on this port (0 = any free port)",
    )
    parser.add_argument(
        "--metrics-host", default=None, metavar="ADDR",
        help="bind address for metrics (default 127.0.0.1; 0.0.0.0 for all interfaces)",
    )


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
