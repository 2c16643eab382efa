"""Local server processes (the MLflow server, the Ray head): started in a process group of their
own, watched through /proc, and stopped by process id, never by name.

Other processes on the machine may be Ray or MLflow too; everything here acts only on the pids
and process groups it is given.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

from reset_tune.errors import ResetTuneError

# Processes this process started, by pid: polling them reaps them (a zombie still "exists").
_children: dict[int, subprocess.Popen] = {}


class ProcessStopError(ResetTuneError):
    """Processes that were asked to stop did not; the message names them."""


def spawn_in_own_group(
    command: Sequence[str],
    *,
    cwd: Path,
    env: Mapping[str, str],
    log_path: Path,
    banner: str,
) -> subprocess.Popen:
    """Start `command` as the leader of a new process group, appending its output to `log_path`
    after a line with `banner`."""
    with open(log_path, "ab") as log:
        log.write(f"\n--- {banner} at {time.ctime()} ---\n".encode())
        log.flush()
        process = subprocess.Popen(
            list(command),
            cwd=cwd,
            env=dict(env),
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group: stopped by pgid, never by name
        )
    _children[process.pid] = process
    return process


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


def port_free(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as servers bind
        try:
            sock.bind((host, port))
        except OSError:
            return False
        return True


def proc_pids() -> list[int]:
    try:
        return [int(entry) for entry in os.listdir("/proc") if entry.isdigit()]
    except OSError:
        return []


def proc_stat(pid: int) -> list[str] | None:
    """Fields of /proc/PID/stat after the command name: state, ppid, pgrp, ... (None if gone)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None


def reap(pid: int) -> None:
    child = _children.get(pid)
    if child is not None and child.poll() is not None:
        _children.pop(pid, None)


def pid_alive(pid: int) -> bool:
    """True while `pid` is a live process (zombies count as dead; our own ones are reaped)."""
    child = _children.get(pid)
    if child is not None:
        return child.poll() is None
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    stat = proc_stat(pid)
    return stat is None or stat[0] != "Z"


def group_members(pgid: int) -> list[int]:
    """Pids of the live (non-zombie) processes in process group `pgid`."""
    reap(pgid)
    members = []
    for pid in proc_pids():
        fields = proc_stat(pid)
        if fields is not None and int(fields[2]) == pgid and fields[0] != "Z":
            members.append(pid)
    return members


def wait_group_gone(pgid: int, timeout_s: float) -> bool:
    """Whether every process of group `pgid` has exited within `timeout_s`."""
    deadline = time.monotonic() + timeout_s
    while group_members(pgid):
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.05)
    return True


def stop_process_group(pid: int, *, timeout_s: float = 10.0, what: str = "process group") -> None:
    """End the process group led by `pid` (started by `spawn_in_own_group`): SIGTERM, then
    SIGKILL after `timeout_s`. Raises `ProcessStopError` naming `what` if it survives that."""
    try:
        os.killpg(pid, signal.SIGTERM)
    except ProcessLookupError:
        _await_reaped(pid)
        return
    if not wait_group_gone(pid, timeout_s):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pid, signal.SIGKILL)
        if not wait_group_gone(pid, 5.0):
            raise ProcessStopError(f"{what} {pid} did not exit: {group_members(pid)} remain")
    _await_reaped(pid)


def _await_reaped(pid: int, timeout_s: float = 5.0) -> None:
    """Reap our own child `pid` once its group is gone. A killed process leaves the group's
    member list (as a zombie, or while the kernel tears it down) a moment before `waitpid` can
    collect it; on a loaded machine `poll()` alone can miss that moment."""
    child = _children.get(pid)
    if child is None:
        return
    with contextlib.suppress(subprocess.TimeoutExpired):
        child.wait(timeout=timeout_s)
    reap(pid)
