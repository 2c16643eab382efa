"""A local MLflow tracking server as a real subprocess: started, found again, stopped by pid.

`start_local_server(state_dir)` runs

    mlflow server --backend-store-uri sqlite:///<state_dir>/mlflow.db
                  --artifacts-destination <state_dir>/artifacts   (uploads proxied by the server)
                  --host 127.0.0.1 --port P --workers 1

with `MLFLOW_SERVER_ENABLE_JOB_EXECUTION=false` (no job-runner processes: ~0.5 GB and ~8 s to
start instead of ~2.4 GB and ~20 s), in its own process group, logging to
`<state_dir>/server.log`. It records pid, port and URI in `<state_dir>/server.json`; a later call
reuses that server when its pid is alive and `GET /health` answers. `LocalServer.stop()` ends the
process group by pid: SIGTERM, then SIGKILL after a timeout.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from reset_tune.atomic import write_json_atomic
from reset_tune.errors import ResetTuneError
from reset_tune.processes import (
    free_port,
    pid_alive,
    port_free,
    spawn_in_own_group,
    stop_process_group,
)
from reset_tune.tracking import names

SERVER_FILE = "server.json"
LOG_FILE = "server.log"
DB_FILE = "mlflow.db"
ARTIFACTS_DIR = "artifacts"


class TrackingServerError(ResetTuneError):
    """The local MLflow server could not be started or stopped; the message says why."""


@dataclass
class LocalServer:
    """A running local tracking server. `started` is False when an existing one was reused."""

    pid: int
    host: str
    port: int
    state_dir: Path
    started: bool = True

    @property
    def uri(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def log_path(self) -> Path:
        return self.state_dir / LOG_FILE

    def is_running(self) -> bool:
        return pid_alive(self.pid) and health_ok(self.uri)

    def stop(self, timeout_s: float = 10.0) -> None:
        """SIGTERM the server's process group, SIGKILL it after `timeout_s`; forget server.json."""
        stop_process_group(self.pid, timeout_s=timeout_s, what="MLflow server process group")
        server_file = self.state_dir / SERVER_FILE
        recorded = _read_server_file(server_file)
        if recorded is not None and recorded.get("pid") == self.pid:
            server_file.unlink(missing_ok=True)


def start_local_server(
    state_dir: str | os.PathLike,
    host: str = "127.0.0.1",
    port: int | None = None,
    *,
    timeout_s: float = 90.0,
) -> LocalServer:
    """Start (or reuse) the tracking server whose state lives in `state_dir`.

    `port=None` picks a free port (or whatever port the reused server has). Raises
    `TrackingServerError` with the tail of the server's log when it does not come up within
    `timeout_s`, and when a live server of this state directory listens on another port than
    the one asked for.
    """
    state = Path(state_dir).resolve()
    state.mkdir(parents=True, exist_ok=True)
    with _state_lock(state):
        existing = _reusable(state, host)
        if existing is not None:
            if port is not None and existing.port != port:
                raise TrackingServerError(
                    f"an MLflow server for {state} already runs at {existing.uri} (pid "
                    f"{existing.pid}), not on port {port}; stop it first or use its address"
                )
            return existing
        if port is not None and not port_free(host, port):
            raise TrackingServerError(
                f"port {port} on {host} is in use by another process; choose another port "
                "or leave it out to pick a free one"
            )
        chosen = port if port is not None else free_port(host)
        server = _launch(state, host, chosen, timeout_s)
        write_json_atomic(
            state / SERVER_FILE,
            {"pid": server.pid, "host": host, "port": chosen, "uri": server.uri},
        )
        return server


def resolve_tracking_uri(
    explicit: str | None, state_dir: str | os.PathLike
) -> tuple[str, LocalServer | None]:
    """The tracking URI a command should use, and the local server behind it if there is one.

    `explicit` (e.g. `--mlflow-uri`) wins, then `$MLFLOW_TRACKING_URI`; without either, the
    local server of `state_dir` is reused or started (the embedded default).
    """
    if explicit:
        return explicit, None
    from_env = os.environ.get(names.TRACKING_URI_ENV)
    if from_env:
        return from_env, None
    server = start_local_server(state_dir)
    return server.uri, server


def find_local_server(state_dir: str | os.PathLike, host: str = "127.0.0.1") -> LocalServer | None:
    """The live server recorded in `state_dir/server.json`, or None."""
    return _reusable(Path(state_dir).resolve(), host)


def health_ok(uri: str, timeout_s: float = 2.0) -> bool:
    try:
        with urllib.request.urlopen(f"{uri}/health", timeout=timeout_s) as response:
            return response.status == 200
    except (OSError, urllib.error.URLError, ValueError):
        return False


def _reusable(state: Path, host: str) -> LocalServer | None:
    recorded = _read_server_file(state / SERVER_FILE)
    if recorded is None:
        return None
    try:
        pid, port = int(recorded["pid"]), int(recorded["port"])
        recorded_host = str(recorded.get("host", host))
    except (KeyError, TypeError, ValueError):
        (state / SERVER_FILE).unlink(missing_ok=True)
        return None
    server = LocalServer(pid=pid, host=recorded_host, port=port, state_dir=state, started=False)
    if server.is_running():
        return server
    # Stale: the pid is gone, or it is some other process now, or it no longer answers.
    (state / SERVER_FILE).unlink(missing_ok=True)
    return None


def _read_server_file(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


@contextlib.contextmanager
def _state_lock(state: Path) -> Iterator[None]:
    """One starter at a time per state directory (across processes)."""
    with open(state / ".server.lock", "a+b") as handle:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)


def server_command(state: Path, host: str, port: int) -> list[str]:
    return [
        sys.executable,
        "-m",
        "mlflow",
        "server",
        "--backend-store-uri",
        f"sqlite:///{state / DB_FILE}",
        "--artifacts-destination",
        str(state / ARTIFACTS_DIR),
        "--host",
        host,
        "--port",
        str(port),
        "--workers",
        "1",
    ]


def _launch(state: Path, host: str, port: int, timeout_s: float) -> LocalServer:
    env = dict(os.environ)
    env[names.SERVER_JOB_EXECUTION_ENV] = "false"
    env.pop(names.TRACKING_URI_ENV, None)
    log_path = state / LOG_FILE
    process = spawn_in_own_group(
        server_command(state, host, port),
        cwd=state,
        env=env,
        log_path=log_path,
        banner=f"starting MLflow server on {host}:{port}",
    )
    server = LocalServer(pid=process.pid, host=host, port=port, state_dir=state, started=True)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            stop_process_group(process.pid, timeout_s=5.0)
            raise TrackingServerError(
                f"the MLflow server exited with code {process.returncode} before answering "
                f"on {server.uri}; last lines of {log_path}:\n{_tail(log_path)}"
            )
        # Answering while still alive: a dying server never counts, whoever answers the port.
        if health_ok(server.uri, timeout_s=1.0) and process.poll() is None:
            return server
        time.sleep(0.2)
    stop_process_group(process.pid, timeout_s=5.0)
    raise TrackingServerError(
        f"the MLflow server did not answer on {server.uri}/health within {timeout_s:.0f} s; "
        f"last lines of {log_path}:\n{_tail(log_path)}"
    )


def _tail(path: Path, lines: int = 20) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"
