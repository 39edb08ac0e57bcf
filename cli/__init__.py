"""``emotion-stream``: one command, a subcommand per job.

Each subcommand lives in its own module with ``register(subparsers)``; heavy imports
(TensorFlow, OpenCV, aiortc) happen inside the command, so ``--help`` is instant.
Exit codes: 0 success, 1 failure (the error is one line on stderr), 2 usage error,
130 interrupted, 141 the reader of stdout went away (``| head``).
"""

from __future__ import annotations

import argparse
import contextlib
import faulthandler
import importlib
import logging
import os
import signal
import sys
from typing import TYPE_CHECKING, NoReturn

from emotion_stream import __version__
from emotion_stream.logs import redact, setup_logging

from .common import CommandError, UsageError, add_settings

if TYPE_CHECKING:
    from pydantic import ValidationError

# Order shown in --help.
COMMANDS = (
    "demo",
    "ingest",
    "worker",
    "tracks",
    "subscribe",
    "cameras",
    "batch",
    "webrtc",
    "api",
    "predict",
    "evaluate",
    "prepare",
    "train",
    "export",
    "bench",
)


class _Parser(argparse.ArgumentParser):
    """Usage errors as one line on stderr, exit code 2 (subcommands inherit the class)."""

    def error(self, message: str) -> NoReturn:
        # Redacted: a mistyped value can be a URL with its password (a cameras file's line).
        self.exit(2, redact(f"{self.prog}: error: {message} (see {self.prog} --help)\n"))


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="emotion-stream",
        description="Streaming facial-emotion analytics over Redis streams.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    add_settings(parser, "log_level", "log_format")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in COMMANDS:
        importlib.import_module(f"{__name__}.{name}").register(sub)
    for command in sub.choices.values():
        # Also after the subcommand; SUPPRESS keeps an absent flag from hiding one given before.
        add_settings(command, "log_level", "log_format", absent=argparse.SUPPRESS)
    return parser


def _setting_error(parser: argparse.ArgumentParser, args: argparse.Namespace, exc: ValidationError) -> str:
    """One line naming the flag (or environment variable) that carried the bad value."""
    from emotion_stream.settings import env_name

    error = exc.errors()[0]
    field = str(error["loc"][0]) if error["loc"] else ""
    if getattr(args, field, None) is not None:
        source = _flag_of(parser, args.command, field)
    elif field.isupper():  # reported under the alias it was read from (REDIS_URL)
        source = field
    else:
        source = env_name(field)
    message = str(error["msg"]).removeprefix("Value error, ")
    return redact(f"{source}: {message} (got {error.get('input')!r})")


def _command_parser(parser: argparse.ArgumentParser, command: str) -> argparse.ArgumentParser:
    [commands] = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]  # no public walk
    found: argparse.ArgumentParser = commands.choices[command]
    return found


def _flag_of(parser: argparse.ArgumentParser, command: str, dest: str) -> str:
    for option in _command_parser(parser, command)._actions:
        if option.dest == dest and option.option_strings:
            return str(option.option_strings[0])
    for action in parser._actions:
        if action.dest == dest and action.option_strings:
            return action.option_strings[0]
    return dest


def main(argv: list[str] | None = None) -> int:
    from pydantic import ValidationError

    from emotion_stream.settings import Settings, unread_environment

    parser = build_parser()
    args, unknown = parser.parse_known_args(argv)
    if unknown:  # said by the command's parser, so the line names the command's --help
        _command_parser(parser, args.command).error(f"unrecognized arguments: {' '.join(unknown)}")
    try:
        # Flags are generated from the settings' fields (add_settings), so their dests
        # are field names; one given (not None) overrides the environment.
        given = {name: value for name, value in vars(args).items()
                 if name in Settings.model_fields and value is not None}
        settings = Settings().overridden(given)
    except ValidationError as exc:
        print(f"emotion-stream {args.command}: error: {_setting_error(parser, args, exc)}", file=sys.stderr)
        return 2
    setup_logging(settings.log_level, settings.log_format)
    for line in unread_environment():
        logging.getLogger("emotion_stream").warning("%s", line)
    # `kill -USR1 PID` prints where every thread is, for any command (one that seems
    # stuck); services also log their asyncio tasks on it (lifecycle.stop_on_signals), and
    # register this again when their event loop closes (lifecycle.dump_threads_on_usr1).
    with contextlib.suppress(ValueError, OSError):  # stderr is no file (main called in-process)
        faulthandler.register(signal.SIGUSR1, all_threads=True)
    try:
        code = int(args.run(args, settings) or 0)
        sys.stdout.flush()  # here, not at exit, so a reader gone is caught below
        return code
    except BrokenPipeError:
        # `emotion-stream predict *.jpg | head`: stop quietly with the status of a Unix
        # tool killed by SIGPIPE; stdout goes to /dev/null so that the interpreter's
        # own flush at exit does not fail a second time.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 128 + signal.SIGPIPE
    except UsageError as exc:
        print(redact(f"emotion-stream {args.command}: error: {exc} (see emotion-stream {args.command} --help)"),
              file=sys.stderr)
        return 2
    except CommandError as exc:
        print(redact(f"emotion-stream {args.command}: error: {exc}"), file=sys.stderr)
        return 1
    except Exception as exc:
        message = _known_failure(exc)
        if message is None:
            raise
        print(redact(f"emotion-stream {args.command}: error: {message}"), file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        logging.getLogger("emotion_stream").info("interrupted")
        return 130


def _known_failure(exc: Exception) -> str | None:
    """The one line for a failure the user can act on (a failed task, a model file that
    cannot be used, Redis refusing access, a cluster that is not one); None for anything
    else. Redis' and the service modules are looked up, not imported: ``predict`` never
    loads them (their import is a sixth of its start-up), and an exception of a module
    never loaded was never raised."""
    lifecycle = sys.modules.get("emotion_stream.lifecycle")
    if lifecycle is not None and isinstance(exc, lifecycle.TaskFailed):
        return str(exc)  # the failed task was logged in full when it failed
    errors = sys.modules.get("model.errors")
    if errors is not None and isinstance(exc, errors.ModelError):
        return str(exc)  # names the file and why; wherever a command loads a model
    if "redis" not in sys.modules:
        return None
    from redis.exceptions import AuthenticationError, NoPermissionError, RedisClusterException

    from emotion_stream.redis_conn import unwrap_cluster_error

    if isinstance(exc, (AuthenticationError, NoPermissionError)):
        return _refused(exc)  # wrong credentials do not heal by retrying
    if not isinstance(exc, RedisClusterException):
        return None
    reason: BaseException = unwrap_cluster_error(exc)
    if isinstance(reason, (AuthenticationError, NoPermissionError)):
        return _refused(reason)
    # e.g. a redis+cluster:// URL naming a node that is not in a cluster
    while reason.__cause__ is not None:
        reason = reason.__cause__
    # redis-py puts the node's own answer after this preamble.
    said = str(reason).splitlines()[0].split("at least one reachable node: ")[-1]
    return f"Redis Cluster: {said}"


def _refused(reason: BaseException) -> str:
    from emotion_stream.keys import EVENTS_PATTERN, TRACKS_PATTERN

    said = f"Redis refused access: {reason}"
    if "channels" in str(reason):  # an ACL lets PSUBSCRIBE use only the patterns it names, literally
        said += f" (to follow every camera, an ACL user needs &{EVENTS_PATTERN} &{TRACKS_PATTERN})"
    return said


if __name__ == "__main__":
    sys.exit(main())
