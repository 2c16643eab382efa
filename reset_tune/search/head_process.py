"""The local stack's Ray head as a process: its command line and ports, and stopping it whole.

The head is `python -m ray.scripts.scripts start --head --block ...` with every port `ray start`
takes picked free on the stack's host (except the worker port range), in a process group of its
own. Ray workers and job drivers run in process groups of their own, so stopping the head checks
its whole process tree, not only its group; everything is found by process id (never by name:
other Ray processes on the machine are not ours).
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import time
from collections.abc import Mapping
from pathlib import Path

from reset_tune.errors import ResetTuneError
from reset_tune.processes import (
    ProcessStopError,
    free_port,
    group_members,
    port_free,
    proc_pids,
    proc_stat,
    stop_process_group,
    wait_group_gone,
)
from reset_tune.search.stack_config import StackConfig

# Unix socket paths must stay below 108 bytes. Ray puts its sockets at
# <temp>/session_<YYYY-MM-DD_HH-MM-SS_ffffff>_<pid>/sockets/<name>; the longest name in Ray 2.60
# is dash_TaskEventsHead (19 bytes, Ray is pinned): room for 20, and for 7-digit pids.
_SOCKET_PATH_MAX = 107
_SOCKET_SUFFIX = len("/session_2026-01-01_00-00-00_000000_") + 7 + len("/sockets/") + 20

PORT_NAMES = (
    "gcs",
    "dashboard",
    "client_server",
    "agent_http",
    "agent_grpc",
    "runtime_env_agent",
    "metrics_export",
    "object_manager",
    "node_manager",
    "autoscaler_metrics",
    "dashboard_metrics",
)
# Ports that `ray start` takes no option for, but reads from the environment (Ray's fixed defaults
# 44217 and 44227 collide with any other Ray head on the machine).
PORT_ENV = {
    "autoscaler_metrics": "AUTOSCALER_METRIC_PORT",
    "dashboard_metrics": "DASHBOARD_METRIC_PORT",
}

# (pid, start time in clock ticks since boot): a process, told apart from a later one reusing pid.
Process = tuple[int, int]


class StackError(ResetTuneError):
    """The local stack could not be started or stopped; the message says why and what to do."""


def choose_temp_dir(config: StackConfig, folder: Path) -> Path | None:
    """Ray's --temp-dir for the head, or None for Ray's default (/tmp/ray)."""
    if config.temp_dir == "default":
        return None
    if config.temp_dir == "auto":
        candidate = folder / "tmp"
        return candidate if _socket_paths_fit(candidate) else None
    chosen = Path(config.temp_dir).expanduser().resolve()
    if not _socket_paths_fit(chosen):
        raise StackError(
            f"ray.temp_dir {str(chosen)!r} is too long for the Unix socket paths Ray puts under it "
            f"(they must stay below 108 bytes: use a folder of at most "
            f"{_SOCKET_PATH_MAX - _SOCKET_SUFFIX} characters, or `auto`)"
        )
    return chosen


def pick_ports(config: StackConfig) -> dict[str, int]:
    """A free port on the stack's host for each of `PORT_NAMES`; the configured ones if free."""
    fixed = {"gcs": config.ray_port, "dashboard": config.dashboard_port}
    ports: dict[str, int] = {}
    for name, port in fixed.items():
        if port is None:
            continue
        if not port_free(config.host, port):
            key = "ray.port" if name == "gcs" else "ray.dashboard_port"
            raise StackError(
                f"port {port} on {config.host} ({key}) is in use by another process; choose "
                "another in the --config file or leave it null to pick a free one"
            )
        ports[name] = port
    taken = set(ports.values())
    for name in PORT_NAMES:
        if name in ports:
            continue
        port = free_port(config.host)
        while port in taken:
            port = free_port(config.host)
        ports[name] = port
        taken.add(port)
    return ports


def head_command(config: StackConfig, ports: Mapping[str, int], temp_dir: Path | None) -> list[str]:
    """The `ray start --head --block` command line of the local stack's head."""
    host = config.host
    command = [
        sys.executable,
        "-m",
        "ray.scripts.scripts",
        "start",
        "--head",
        "--block",
        f"--node-ip-address={host}",
        f"--port={ports['gcs']}",
        "--include-dashboard=true",
        f"--dashboard-host={host}",
        f"--dashboard-port={ports['dashboard']}",
        f"--ray-client-server-port={ports['client_server']}",
        f"--dashboard-agent-listen-port={ports['agent_http']}",
        f"--dashboard-agent-grpc-port={ports['agent_grpc']}",
        f"--runtime-env-agent-port={ports['runtime_env_agent']}",
        f"--metrics-export-port={ports['metrics_export']}",
        f"--object-manager-port={ports['object_manager']}",
        f"--node-manager-port={ports['node_manager']}",
        "--disable-usage-stats",
        "--log-style=record",
        "--log-color=false",
    ]
    if config.num_cpus is not None:
        command.append(f"--num-cpus={config.num_cpus}")
    if config.num_gpus is not None:
        command.append(f"--num-gpus={config.num_gpus}")
    if config.object_store_memory is not None:
        command.append(f"--object-store-memory={config.object_store_memory}")
    if config.memory is not None:
        command.append(f"--memory={config.memory}")
    if temp_dir is not None:
        command.append(f"--temp-dir={temp_dir}")
    return command


def is_head_process(pid: int, gcs_port: int) -> bool:
    """Whether `pid` is the `ray start --head` of that port (and not a process reusing the pid)."""
    try:
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return True  # no /proc to ask: the live pid and the answering port must do
    return b"--head" in argv and f"--port={gcs_port}".encode() in argv


def stop_head(pid: int, timeout_s: float) -> None:
    """SIGTERM to the head; then its group, then whatever it started; StackError on survivors."""
    # Ray workers and job drivers run in process groups of their own; they end when the raylet
    # and the job supervisor do. Note them first, to check that they did.
    offspring = descendants(pid)
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    if not wait_group_gone(pid, timeout_s):
        with contextlib.suppress(ProcessStopError):
            stop_process_group(pid, timeout_s=5.0)  # SIGTERM to the whole group, then SIGKILL
        if not wait_group_gone(pid, 5.0):
            raise StackError(
                f"processes {group_members(pid)} of the Ray head's process group {pid} did not exit"
            )
    deadline = time.monotonic() + 10.0
    while still_running(offspring) and time.monotonic() < deadline:
        time.sleep(0.1)
    for child, _ in still_running(offspring):
        with contextlib.suppress(ProcessLookupError):
            os.kill(child, signal.SIGKILL)
    time.sleep(0.2)
    survivors = still_running(offspring)
    if survivors:
        raise StackError(
            f"processes {[child for child, _ in survivors]} started by the Ray head {pid} did "
            "not exit"
        )


def descendants(pid: int) -> list[Process]:
    """(pid, start time) of every live process below `pid` in the process tree."""
    children: dict[int, list[Process]] = {}
    for entry in proc_pids():
        stat = proc_stat(entry)
        if stat is None or stat[0] == "Z":
            continue
        children.setdefault(int(stat[1]), []).append((entry, int(stat[19])))
    found: list[Process] = []
    frontier = [pid]
    while frontier:
        parent = frontier.pop()
        for child in children.get(parent, []):
            found.append(child)
            frontier.append(child[0])
    return found


def still_running(processes: list[Process]) -> list[Process]:
    """Those of `processes` that still run (the same pid with the same start time)."""
    running = []
    for pid, started in processes:
        stat = proc_stat(pid)
        if stat is not None and stat[0] != "Z" and int(stat[19]) == started:
            running.append((pid, started))
    return running


def log_tail(path: Path, lines: int = 25) -> str:
    """The last `lines` lines of the head's log, for error messages."""
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def ray_version() -> str | None:
    """The installed Ray's version (recorded with the head), None when Ray is not installed."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("ray")
    except PackageNotFoundError:
        return None


def _socket_paths_fit(temp_dir: Path) -> bool:
    return len(os.fsencode(str(temp_dir))) + _SOCKET_SUFFIX <= _SOCKET_PATH_MAX
