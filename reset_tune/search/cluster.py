"""The local stack of `reset-tune up`: a Ray head and an MLflow server, found, started, stopped.

Both are real processes on 127.0.0.1 in their own process groups, found again and stopped by
process id (never `ray stop`, never by name: other Ray processes on the machine are not ours). The
Ray head (`reset_tune.search.head_process`) logs to `<state>/ray/head.log` and is recorded in
`<state>/ray/head.json`; it runs with authentication off and every port on loopback
(`reset_tune.search.ray_auth`). The MLflow server is `start_local_server(<state>/mlflow)`, so a
later `reset-tune search` on the same state directory reuses it. One `up` or `down` at a time per
state directory (a file lock).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import socket
import subprocess
import time
from collections.abc import Iterator, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from reset_tune.atomic import write_json_atomic
from reset_tune.errors import ResetTuneError
from reset_tune.processes import group_members, pid_alive, spawn_in_own_group
from reset_tune.search.head_process import (
    PORT_ENV,
    StackError,
    choose_temp_dir,
    head_command,
    is_head_process,
    log_tail,
    pick_ports,
    ray_version,
    stop_head,
)
from reset_tune.search.jobs_http import dashboard_ready, stop_running_jobs
from reset_tune.search.ray_auth import AUTH_MODE_ENV, head_environment
from reset_tune.search.stack_config import StackConfig
from reset_tune.state import mlflow_dir, ray_dir
from reset_tune.tracking.server import find_local_server, start_local_server

HEAD_FILE = "head.json"
HEAD_LOG = "head.log"


@dataclass
class LocalStack:
    """A running local stack. `started` is False when `start_local_stack` found it running."""

    ray_pid: int
    gcs_address: str
    dashboard_url: str
    state_dir: Path
    mlflow_uri: str | None = None
    mlflow_pid: int | None = None
    temp_dir: str | None = None
    auth_mode: str = "disabled"
    started: bool = False

    @property
    def log_path(self) -> Path:
        return ray_dir(self.state_dir) / HEAD_LOG

    def to_dict(self) -> dict[str, Any]:
        values = asdict(self)
        values["state_dir"] = str(self.state_dir)
        values["log_path"] = str(self.log_path)
        return values


def find_local_stack(state: str | os.PathLike) -> LocalStack | None:
    """The live stack recorded in `<state>/ray/head.json`, or None.

    Live means: the recorded pid is alive and is the `ray start --head` of that record, and the
    GCS port answers (or the record says the head is still starting). A stale record is
    removed (and processes left in its group, should the head have died without them, are
    stopped).
    """
    state = Path(state).resolve()
    record = _read_head(state)
    if record is None:
        return None
    if _head_alive(record):
        return _stack_from(record, state, started=False)
    _forget_stale(state, record)
    return None


def start_local_stack(
    state: str | os.PathLike,
    *,
    num_cpus: int | None = None,
    num_gpus: int | None = None,
    object_store_memory: int | None = None,
    config: StackConfig | None = None,
) -> LocalStack:
    """Start the local stack of `state` (or return the running one, `started=False`).

    Keyword arguments override `config` (the defaults of deploy/local/stack.yaml when None).
    Raises `StackError` (with the tail of the head's log) when Ray does not come up within the
    configured timeout, and `TrackingServerError` when the MLflow server does not.
    """
    overrides = {
        "num_cpus": num_cpus,
        "num_gpus": num_gpus,
        "object_store_memory": object_store_memory,
    }
    config = (config or StackConfig()).replace(
        **{key: value for key, value in overrides.items() if value is not None}
    )
    state = Path(state).resolve()
    folder = ray_dir(state)
    folder.mkdir(parents=True, exist_ok=True)
    with _stack_lock(folder):
        record = _read_head(state)
        if record is not None and _head_alive(record):
            if not record.get("ready"):  # an earlier `up` was interrupted while Ray started
                _wait_dashboard(None, record["dashboard_url"], folder / HEAD_LOG, config)
                record["ready"] = True
                write_json_atomic(folder / HEAD_FILE, record)
            if config.mlflow:
                _start_mlflow(state, config)
            return _stack_from(record, state, started=False)
        if record is not None:
            _forget_stale(state, record)
        return _launch(state, config)


def stop_local_stack(state: str | os.PathLike, *, timeout_s: float | None = None) -> bool:
    """Stop the Ray head and the MLflow server of `state`; False when neither was running.

    The head gets SIGTERM (only the `ray start --block` process: it drains the node and stops
    its GCS, raylet, dashboard and workers); whatever of its process group is left after
    `timeout_s` (default: the `ray.stop_timeout_s` the stack was started with) gets SIGTERM then
    SIGKILL. Raises `StackError` if a process of the group survives.
    """
    state = Path(state).resolve()
    folder = ray_dir(state)
    stopped = False
    if folder.is_dir():
        with _stack_lock(folder):
            record = _read_head(state)
            if record is not None:
                pid = int(record["pid"])
                if timeout_s is None:
                    timeout_s = float(record.get("stop_timeout_s") or StackConfig.stop_timeout_s)
                if _head_alive(record):
                    # Running jobs first: they get SIGTERM (a search can close its runs), and
                    # Ray would otherwise drain the node for up to 30 s waiting on them.
                    stop_running_jobs(str(record["dashboard_url"]))
                    stop_head(pid, timeout_s)
                    stopped = True
                elif not pid_alive(pid) and group_members(pid):
                    stop_head(pid, timeout_s)
                    stopped = True
                (folder / HEAD_FILE).unlink(missing_ok=True)
    server = find_local_server(mlflow_dir(state))
    if server is not None:
        server.stop()
        stopped = True
    return stopped


def _launch(state: Path, config: StackConfig) -> LocalStack:
    folder = ray_dir(state)
    ports = pick_ports(config)
    temp_dir = choose_temp_dir(config, folder)
    env = head_environment()
    env.update({variable: str(ports[name]) for name, variable in PORT_ENV.items()})
    log_path = folder / HEAD_LOG
    process = spawn_in_own_group(
        head_command(config, ports, temp_dir),
        cwd=folder,
        env=env,
        log_path=log_path,
        banner="starting the Ray head",
    )
    host = config.host
    record: dict[str, Any] = {
        "pid": process.pid,
        "host": host,
        "gcs_address": f"{host}:{ports['gcs']}",
        "dashboard_url": f"http://{host}:{ports['dashboard']}",
        "ports": ports,
        "temp_dir": str(temp_dir) if temp_dir is not None else None,
        "log": str(log_path),
        "auth_mode": env[AUTH_MODE_ENV],
        "num_cpus": config.num_cpus,
        "num_gpus": config.num_gpus,
        "object_store_memory": config.object_store_memory,
        "stop_timeout_s": config.stop_timeout_s,
        "ray_version": ray_version(),
        "started_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "ready": False,
    }
    # Recorded at once, so that `reset-tune down` can stop a head whose start was interrupted.
    write_json_atomic(folder / HEAD_FILE, record)
    try:
        if config.mlflow:
            _start_mlflow(state, config)  # while Ray starts: both take several seconds
        _wait_dashboard(process, record["dashboard_url"], log_path, config)
    except BaseException:
        with contextlib.suppress(ResetTuneError):
            stop_head(process.pid, 10.0)
        (folder / HEAD_FILE).unlink(missing_ok=True)
        raise
    record["ready"] = True
    write_json_atomic(folder / HEAD_FILE, record)
    return _stack_from(record, state, started=True)


def _start_mlflow(state: Path, config: StackConfig) -> None:
    start_local_server(
        mlflow_dir(state), port=config.mlflow_port, timeout_s=config.mlflow_timeout_s
    )


def _wait_dashboard(
    process: subprocess.Popen | None, url: str, log_path: Path, config: StackConfig
) -> None:
    """Until the dashboard's version and Jobs endpoints answer; StackError with the log tail."""
    deadline = time.monotonic() + config.start_timeout_s
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise StackError(
                f"the Ray head exited with code {process.returncode} before its dashboard "
                f"answered on {url}; last lines of {log_path}:\n{log_tail(log_path)}"
            )
        if dashboard_ready(url):
            return
        time.sleep(0.3)
    raise StackError(
        f"the Ray dashboard did not answer on {url} within {config.start_timeout_s:.0f} s "
        f"(raise ray.start_timeout_s in a --config file on a slow machine); last lines of "
        f"{log_path}:\n{log_tail(log_path)}"
    )


def _head_alive(record: Mapping[str, Any]) -> bool:
    try:
        pid = int(record["pid"])
        host, port = str(record["gcs_address"]).rsplit(":", 1)
    except (KeyError, TypeError, ValueError):
        return False
    if not pid_alive(pid) or not is_head_process(pid, int(port)):
        return False
    if not record.get("ready"):
        return True  # still starting (another `up` is waiting for it): not stale
    try:
        with socket.create_connection((host, int(port)), timeout=2.0):
            return True
    except OSError:
        return False


def _forget_stale(state: Path, record: Mapping[str, Any]) -> None:
    """Remove a stale head.json; stop what is left of its group if its head died alone."""
    with contextlib.suppress(KeyError, TypeError, ValueError):
        pid = int(record["pid"])
        # The group id can only still exist if it is that head's group: pids are not reused
        # while a process group of that id exists.
        if not pid_alive(pid) and group_members(pid):
            with contextlib.suppress(ResetTuneError):
                stop_head(pid, 5.0)
    (ray_dir(state) / HEAD_FILE).unlink(missing_ok=True)


def _stack_from(record: Mapping[str, Any], state: Path, *, started: bool) -> LocalStack:
    server = find_local_server(mlflow_dir(state))
    return LocalStack(
        ray_pid=int(record["pid"]),
        gcs_address=str(record["gcs_address"]),
        dashboard_url=str(record["dashboard_url"]),
        state_dir=state,
        mlflow_uri=server.uri if server is not None else None,
        mlflow_pid=server.pid if server is not None else None,
        temp_dir=record.get("temp_dir"),
        auth_mode=str(record.get("auth_mode", "disabled")),
        started=started,
    )


def _read_head(state: Path) -> dict[str, Any] | None:
    path = ray_dir(state) / HEAD_FILE
    try:
        record = json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError):
        path.unlink(missing_ok=True)
        return None
    if not isinstance(record, dict) or "pid" not in record or "dashboard_url" not in record:
        path.unlink(missing_ok=True)
        return None
    return record


@contextlib.contextmanager
def _stack_lock(folder: Path) -> Iterator[None]:
    """One `up`/`down` at a time per state directory (across processes)."""
    with open(folder / ".stack.lock", "a+b") as handle:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)
