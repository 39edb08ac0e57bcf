"""``emotion-stream``: one command, a subcommand per job.

Each subcommand lives in its own module with ``register(subparsers)``; heavy imports
(TensorFlow, OpenCV, aiortc) happen inside the command, so ``--help`` is instant.
Exit codes: 0 success, 1 failure (the error is one line on stderr), 2 usage error,
130 interrupted.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

from emotion_stream import __version__
from emotion_stream.logs import setup_logging

from .common import CommandError

# Order shown in --help.
COMMANDS = (
    "demo",
    "ingest",
    "worker",
    "subscribe",
    "batch",
    "webrtc",
    "predict",
    "evaluate",
    "prepare",
    "train",
    "bench",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="emotion-stream",
        description="Streaming facial-emotion analytics over Redis streams.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    parser.add_argument(
        "--log-level", default=None, choices=["DEBUG", "INFO", "WARNING", "ERROR"],
        help="log verbosity (env EMOTION_STREAM_LOG_LEVEL; default INFO)",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in COMMANDS:
        importlib.import_module(f"{__name__}.{name}").register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    from emotion_stream.settings import load_settings

    args = build_parser().parse_args(argv)
    try:
        settings = load_settings(args)
    except ValueError as exc:  # pydantic ValidationError is a ValueError
        print(f"emotion-stream: error: invalid setting: {exc}", file=sys.stderr)
        return 2
    setup_logging(settings.log_level)
    from redis.exceptions import AuthenticationError, NoPermissionError

    try:
        return int(args.run(args, settings) or 0)
    except CommandError as exc:
        print(f"emotion-stream {args.command}: error: {exc}", file=sys.stderr)
        return 1
    except (AuthenticationError, NoPermissionError) as exc:
        # Wrong credentials do not heal by retrying: say so and stop.
        print(f"emotion-stream {args.command}: error: Redis refused access: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        logging.getLogger("emotion_stream").info("interrupted")
        return 130


if __name__ == "__main__":
    sys.exit(main())
