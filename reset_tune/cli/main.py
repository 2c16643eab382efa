"""`reset-tune` entry point: subcommands, and one line with exit code 2 for every usage error."""

from __future__ import annotations

import argparse
import gc
import sys
from collections.abc import Sequence

from reset_tune import __version__
from reset_tune.cli import (
    deploy_command,
    jobs_command,
    recommend_command,
    search_command,
    stack_command,
    sync_command,
    train_command,
)
from reset_tune.errors import ConfigError, DataError, ResetTuneError, TrainingDiverged
from reset_tune.redact import redact_text

USAGE_ERROR = 2


class OneLineParser(argparse.ArgumentParser):
    """argparse prints usage plus the error; we print just the error and how to get help."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(USAGE_ERROR, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(
        prog="reset-tune",
        description="Train classifiers on noisily-labelled data with stochastic resetting.",
    )
    parser.add_argument("--version", action="version", version=f"reset-tune {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=OneLineParser)
    commands.required = True
    train_command.register(commands)
    search_command.register(commands)
    sync_command.register(commands)
    stack_command.register(commands)
    jobs_command.register(commands)
    deploy_command.register(commands)
    recommend_command.register(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.handler(args) or 0)
    except (ConfigError, DataError) as error:
        _error_line(args.command, f"error: {error}")
        return USAGE_ERROR
    except TrainingDiverged as error:
        _error_line(args.command, str(error))
        return 1
    except ResetTuneError as error:
        _error_line(args.command, f"error: {error}")
        return 1
    except OSError as error:
        # The machine refused (disk full, permission, a vanished file): what and where, no trace.
        where = f" ({error.filename})" if error.filename else ""
        _error_line(args.command, f"error: {error.strerror or error}{where}")
        return 1
    except KeyboardInterrupt:
        if args.command == "search":  # its record and study are kept for --resume
            _error_line(args.command, "interrupted; `reset-tune search --resume` continues it.")
        else:
            _error_line(args.command, "interrupted; nothing was written.")
        return 130


def _error_line(command: str, text: str) -> None:
    """The error as the user sees it, with every URI's credentials masked."""
    print(f"reset-tune {command}: {redact_text(text)}", file=sys.stderr)


def console_main() -> None:
    """The `reset-tune` script (and `python -m reset_tune`): `main`, then the process exits."""
    code = main()
    # Out of the collector's reach, the objects left are not walked once more by the
    # interpreter's final collection: torch's, Ray's and MLflow's graphs cost about 1 s of exit
    # for nothing. atexit handlers, thread joins and stream flushes still run.
    gc.freeze()
    sys.exit(code)


if __name__ == "__main__":
    console_main()
