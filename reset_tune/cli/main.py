"""`reset-tune` entry point: subcommands, and one line with exit code 2 for every usage error."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from reset_tune import __version__
from reset_tune.cli import (
    jobs_command,
    recommend_command,
    search_command,
    stack_command,
    sync_command,
    train_command,
)
from reset_tune.errors import ConfigError, DataError, ResetTuneError, TrainingDiverged

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
    recommend_command.register(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.handler(args) or 0)
    except (ConfigError, DataError) as error:
        print(f"reset-tune {args.command}: error: {error}", file=sys.stderr)
        return USAGE_ERROR
    except TrainingDiverged as error:
        print(f"reset-tune {args.command}: {error}", file=sys.stderr)
        return 1
    except ResetTuneError as error:
        print(f"reset-tune {args.command}: error: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"reset-tune {args.command}: interrupted; nothing was written.", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
