"""`reset-tune up`, `down` and `stack`: the local stack (a Ray head and an MLflow server)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from reset_tune.cli.state_option import checked_state_dir
from reset_tune.errors import ConfigError
from reset_tune.state import DEFAULT_STATE_DIR, STATE_DIR_ENV, mlflow_dir, ray_dir

if TYPE_CHECKING:  # annotations only: the CLI loads `search` when a command runs
    from reset_tune.search.cluster import LocalStack


def add_state_dir_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--state-dir",
        metavar="DIR",
        help=f"project state directory (default: ${STATE_DIR_ENV} or ./{DEFAULT_STATE_DIR})",
    )


def register(commands: argparse._SubParsersAction) -> None:
    up = commands.add_parser(
        "up",
        help="start a local Ray head and MLflow server on 127.0.0.1",
        description=(
            "Start a Ray head (with its dashboard and the Ray Jobs API) and an MLflow tracking "
            "server on 127.0.0.1, in the background, recorded in the state directory. "
            "`reset-tune search` and `reset-tune submit` use them by default. Running it again "
            "prints the running stack's addresses. Defaults: deploy/local/stack.yaml."
        ),
    )
    add_state_dir_option(up)
    up.add_argument(
        "--config", metavar="FILE", help="stack settings (YAML shaped like deploy/local/stack.yaml)"
    )
    up.add_argument("--num-cpus", type=int, help="CPUs Ray may use (default: all it detects)")
    up.add_argument("--num-gpus", type=int, help="GPUs Ray may use (default: all it detects)")
    up.add_argument(
        "--object-store-memory",
        metavar="SIZE",
        help="Ray's object store size, e.g. 500MB, 2GB (default: 1GB)",
    )
    up.add_argument("--json", action="store_true", help="print the stack as JSON")
    up.set_defaults(handler=run_up)

    down = commands.add_parser(
        "down",
        help="stop the local stack that `reset-tune up` started",
        description=(
            "Stop the Ray head and the MLflow server of the state directory, by process id "
            "(never `ray stop`: other Ray processes on the machine are left alone)."
        ),
    )
    add_state_dir_option(down)
    down.add_argument(
        "--timeout",
        type=float,
        metavar="SECONDS",
        help="how long Ray may drain before its processes are killed (default: the stack's "
        "ray.stop_timeout_s, 45)",
    )
    down.set_defaults(handler=run_down)

    status = commands.add_parser(
        "stack",
        help="show the local stack's addresses, if it runs",
        description="Show whether the local stack of the state directory runs, and where.",
    )
    add_state_dir_option(status)
    status.add_argument("--json", action="store_true", help="print the stack as JSON")
    status.set_defaults(handler=run_status)


def run_up(args: argparse.Namespace) -> int:
    from reset_tune.search.cluster import find_local_stack, start_local_stack
    from reset_tune.search.stack_config import load_stack_config, with_overrides

    config = with_overrides(
        load_stack_config(args.config),
        num_cpus=args.num_cpus,
        num_gpus=args.num_gpus,
        object_store_memory=args.object_store_memory,
    )
    state = checked_state_dir(args.state_dir, writable=True)
    if find_local_stack(state) is None:
        print(
            f"starting a Ray head{' and an MLflow server' if config.mlflow else ''} on "
            f"127.0.0.1 (log: {ray_dir(state) / 'head.log'}) ...",
            file=sys.stderr,
        )
    stack = start_local_stack(state, config=config)
    if args.json:
        print(json.dumps(stack.to_dict(), indent=2))
        return 0
    heading = "local stack up" if stack.started else "local stack already up"
    print(f"{heading} (state: {state})")
    _print_stack(stack)
    asked = args.config or any(
        value is not None for value in (args.num_cpus, args.num_gpus, args.object_store_memory)
    )
    if not stack.started and asked:
        print("note: the running stack keeps its settings; `reset-tune down` first to change them")
    print(f"stop it with: reset-tune down{_state_hint(args.state_dir)}")
    return 0


def run_down(args: argparse.Namespace) -> int:
    from reset_tune.search.cluster import find_local_stack, stop_local_stack
    from reset_tune.tracking.server import find_local_server

    if args.timeout is not None and args.timeout <= 0:
        raise ConfigError(f"--timeout must be > 0 seconds, got {args.timeout}")
    state = checked_state_dir(args.state_dir)
    stack = find_local_stack(state)
    server = find_local_server(mlflow_dir(state))
    stopped = stop_local_stack(state, timeout_s=args.timeout)
    if not stopped:
        print(f"no local stack runs for {state}; nothing to stop")
        return 0
    parts = []
    if stack is not None:
        parts.append(f"the Ray head (pid {stack.ray_pid})")
    if server is not None:
        parts.append(f"the MLflow server (pid {server.pid})")
    what = " and ".join(parts) or "what was left of the local stack"
    print(f"stopped {what} of {state}")
    return 0


def run_status(args: argparse.Namespace) -> int:
    from reset_tune.search.cluster import find_local_stack

    state = checked_state_dir(args.state_dir)
    stack = find_local_stack(state)
    if args.json:
        print(json.dumps({"running": stack is not None, **(stack.to_dict() if stack else {})}))
        return 0
    if stack is None:
        print(f"no local stack runs for {state}; start one with: reset-tune up")
        return 0
    print(f"local stack up (state: {state})")
    _print_stack(stack)
    return 0


def _print_stack(stack: LocalStack) -> None:
    rows = [
        ("Ray dashboard", stack.dashboard_url, "Ray Jobs API: reset-tune submit SPEC"),
        ("Ray GCS", stack.gcs_address, f"ray.init(address=...); head pid {stack.ray_pid}"),
    ]
    if stack.mlflow_uri:
        rows.append(("MLflow UI", stack.mlflow_uri, f"pid {stack.mlflow_pid}"))
    else:
        rows.append(("MLflow UI", "-", "not running"))
    loopback = "every port on 127.0.0.1 only"
    rows.append(("auth", f"RAY_AUTH_MODE={stack.auth_mode}", loopback))
    temp = stack.temp_dir or "Ray's default temp dir (/tmp/ray)"
    rows.append(("logs", str(stack.log_path), f"Ray's session logs under {temp}"))
    width = max(len(value) for _, value, _ in rows)
    for label, value, note in rows:
        print(f"  {label:<14} {value:<{width}}  ({note})")


def _state_hint(explicit: str | None) -> str:
    if explicit is None:
        return ""
    return f" --state-dir {Path(explicit)}"
