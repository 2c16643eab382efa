"""Ray clusters for reset-tune: the auth mode clients use, and the local stack of `reset-tune up`.

The local stack is a Ray head and an MLflow tracking server, both on 127.0.0.1, both real
processes in their own process groups, found again and stopped by process id (never `ray stop`,
never by name: other Ray processes on the machine are not ours). The Ray head is

    python -m ray.scripts.scripts start --head --block --node-ip-address=127.0.0.1
        --port=P --dashboard-host=127.0.0.1 --dashboard-port=D ... (every port ray start takes
        picked free, except the worker port range)

logging to `<state>/ray/head.log` and recorded in `<state>/ray/head.json`. The MLflow server is
`start_local_server(<state>/mlflow)`, so a later `reset-tune search` on the same state directory
reuses it.

Authentication. Ray 2.60 turns token authentication on by default for a fresh `ray.init()` (which
writes ~/.ray/auth_token), while `ray start --head` turns it on only when a token already exists,
and clients must agree with the cluster (DESIGN.md §4). So the mode is set explicitly: the
local stack runs with RAY_AUTH_MODE=disabled unless the user set it. That is only safe because
every port of the stack is bound to the loopback interface — and Ray does not do that by itself:
`--node-ip-address=127.0.0.1` is rewritten to the machine's routable address and the GCS, raylet
and object manager listen on all interfaces. With RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0 (Ray's
"single-node cluster" switch; it also refuses `ray start --address` of a second node) the node's
address is 127.0.0.1 and every Ray port listens on 127.0.0.1 only. The head gets both variables.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from reset_tune.atomic import write_json_atomic
from reset_tune.errors import ResetTuneError
from reset_tune.processes import (
    ProcessStopError,
    free_port,
    group_members,
    pid_alive,
    port_free,
    proc_pids,
    proc_stat,
    spawn_in_own_group,
    stop_process_group,
    wait_group_gone,
)
from reset_tune.search.stack_config import StackConfig
from reset_tune.state import mlflow_dir, ray_dir
from reset_tune.tracking.server import find_local_server, start_local_server

AUTH_MODE_ENV = "RAY_AUTH_MODE"
AUTH_TOKEN_ENV = "RAY_AUTH_TOKEN"
AUTH_TOKEN_PATH_ENV = "RAY_AUTH_TOKEN_PATH"
# Ray's switch for "no multi-node clusters": the node address becomes 127.0.0.1 and every port
# (GCS, raylet, object manager, agents) binds to it instead of all interfaces.
LOOPBACK_ONLY_ENV = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"
HEAD_FILE = "head.json"
HEAD_LOG = "head.log"
LOOPBACK_HOSTS = frozenset({"127.0.0.1", "localhost", "::1"})

# Unix socket paths must stay below 108 bytes. Ray puts its sockets at
# <temp>/session_<YYYY-MM-DD_HH-MM-SS_ffffff>_<pid>/sockets/<name>; the longest name in Ray 2.60
# is dash_TaskEventsHead (19 bytes, Ray is pinned): room for 20, and for 7-digit pids.
_SOCKET_PATH_MAX = 107
_SOCKET_SUFFIX = len("/session_2026-01-01_00-00-00_000000_") + 7 + len("/sockets/") + 20


class StackError(ResetTuneError):
    """The local stack could not be started or stopped; the message says why and what to do."""


# ---------------------------------------------------------------------------------------------
# Authentication mode


def address_host(address: str) -> str | None:
    """The host of a Ray address (`h:p`, `http://h:p`, `ray://h:p`); None for `auto`."""
    if not address or address == "auto":
        return None
    parsed = urllib.parse.urlsplit(address if "://" in address else f"//{address}")
    return parsed.hostname


def is_loopback_address(address: str | None) -> bool:
    """True for no address (a cluster started here) and for addresses on 127.0.0.0/8, localhost."""
    if address is None:
        return True
    host = address_host(address)
    return host is not None and (host in LOOPBACK_HOSTS or host.startswith("127."))


def ensure_auth_mode(address: str | None) -> None:
    """Set RAY_AUTH_MODE explicitly (in `os.environ`) for talking to the cluster at `address`.

    - The user set it: respected, nothing changes.
    - `address` is None (Ray will be started here) or on loopback (the local stack): `disabled`.
      The local stack binds loopback only and runs with `disabled` (see the module docstring); for
      address None, RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0 is set too (unless the user set it), so
      that a cluster `ray.init()` starts binds loopback only as well.
    - A remote address: left to Ray, except that when a token is at hand (RAY_AUTH_TOKEN,
      RAY_AUTH_TOKEN_PATH or ~/.ray/auth_token) the mode becomes `token`. `ray.init(address=...)`
      does that by itself, but the Jobs API client (`JobSubmissionClient`) sends the token only
      when the mode is `token`.

    Ray reads the mode once per process (its cached config); when Ray is imported but not
    initialised, the cache is refreshed here. Call this before `ray.init()`.
    """
    if os.environ.get(AUTH_MODE_ENV):
        return
    if is_loopback_address(address):
        if address is None:
            os.environ.setdefault(LOOPBACK_ONLY_ENV, "0")
            if os.environ[LOOPBACK_ONLY_ENV].lower() not in ("0", "false"):
                return  # the user wants a multi-node cluster: Ray's default (token) stays
            _loopback_only_in_process()
        os.environ[AUTH_MODE_ENV] = "disabled"
    elif _token_available():
        os.environ[AUTH_MODE_ENV] = "token"
    else:
        return
    _refresh_ray_config()


def join_local_stack() -> None:
    """Prepare this process to connect to the stack of `reset-tune up` (call before `ray.init`).

    The stack's head runs with RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0, so it listens on 127.0.0.1
    only; a driver without that setting would look for it at the machine's routable address and
    never reach it. Auth follows `ensure_auth_mode` (disabled on loopback, unless set).
    """
    if os.environ.get(LOOPBACK_ONLY_ENV, "0").lower() in ("0", "false"):
        os.environ[LOOPBACK_ONLY_ENV] = "0"
        _loopback_only_in_process()
    ensure_auth_mode("127.0.0.1")


def _token_available() -> bool:
    if os.environ.get(AUTH_TOKEN_ENV):
        return True
    path = os.environ.get(AUTH_TOKEN_PATH_ENV)
    if path:
        return Path(path).expanduser().is_file()
    return (Path.home() / ".ray" / "auth_token").is_file()


def _refresh_ray_config() -> None:
    """Make an already imported Ray see the new RAY_AUTH_MODE (it caches its config)."""
    if "ray._raylet" not in sys.modules:
        return
    import ray

    if not ray.is_initialized():
        ray._raylet.Config.initialize("")


def _loopback_only_in_process() -> None:
    """RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER is read when Ray is imported; follow a later change."""
    constants = sys.modules.get("ray._private.ray_constants")
    if constants is not None:
        constants.ENABLE_RAY_CLUSTER = False


def head_environment(base: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment of the local Ray head (and so of every job and worker it starts)."""
    env = dict(os.environ if base is None else base)
    env.pop("RAY_ADDRESS", None)  # a job's driver must connect to this head, whatever the shell had
    if not env.get(AUTH_MODE_ENV):
        env[AUTH_MODE_ENV] = "disabled"
    env[LOOPBACK_ONLY_ENV] = "0"
    env["RAY_USAGE_STATS_ENABLED"] = "0"
    # A job's entrypoint says `python`: make that this interpreter, with reset-tune's packages.
    bindir = str(Path(sys.executable).parent)
    env["PATH"] = os.pathsep.join(
        [bindir, *[p for p in env.get("PATH", "").split(os.pathsep) if p]]
    )
    return env


# ---------------------------------------------------------------------------------------------
# The local stack


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
                    _stop_head(pid, timeout_s)
                    stopped = True
                elif not pid_alive(pid) and group_members(pid):
                    _stop_head(pid, timeout_s)
                    stopped = True
                (folder / HEAD_FILE).unlink(missing_ok=True)
    server = find_local_server(mlflow_dir(state))
    if server is not None:
        server.stop()
        stopped = True
    return stopped


def stop_running_jobs(dashboard_url: str, *, timeout_s: float = 15.0) -> list[str]:
    """Ask the Jobs API to stop every pending or running job; wait (bounded) until they end.

    Best effort over plain HTTP (no Ray import): returns the ids asked to stop.
    """

    def jobs() -> list[dict[str, Any]]:
        try:
            with urllib.request.urlopen(f"{dashboard_url}/api/jobs/", timeout=5.0) as response:
                listed = json.loads(response.read())
        except (OSError, ValueError):
            return []
        return [job for job in listed if isinstance(job, dict)] if isinstance(listed, list) else []

    active = ("PENDING", "RUNNING")
    asked = []
    for job in jobs():
        job_id = job.get("submission_id")
        if job_id and job.get("status") in active:
            request = urllib.request.Request(
                f"{dashboard_url}/api/jobs/{job_id}/stop", method="POST", data=b""
            )
            with contextlib.suppress(OSError, ValueError):
                urllib.request.urlopen(request, timeout=5.0).close()
                asked.append(job_id)
    deadline = time.monotonic() + timeout_s
    while asked and time.monotonic() < deadline:
        if not any(job.get("status") in active for job in jobs()):
            break
        time.sleep(0.3)
    return asked


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


def head_command(config: StackConfig, ports: Mapping[str, int], temp_dir: Path | None) -> list[str]:
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


_PORT_NAMES = (
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
_PORT_ENV = {
    "autoscaler_metrics": "AUTOSCALER_METRIC_PORT",
    "dashboard_metrics": "DASHBOARD_METRIC_PORT",
}


def _pick_ports(config: StackConfig) -> dict[str, int]:
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
    for name in _PORT_NAMES:
        if name in ports:
            continue
        port = free_port(config.host)
        while port in taken:
            port = free_port(config.host)
        ports[name] = port
        taken.add(port)
    return ports


def _launch(state: Path, config: StackConfig) -> LocalStack:
    folder = ray_dir(state)
    ports = _pick_ports(config)
    temp_dir = choose_temp_dir(config, folder)
    env = head_environment()
    env.update({variable: str(ports[name]) for name, variable in _PORT_ENV.items()})
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
        "ray_version": _ray_version(),
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
            _stop_head(process.pid, 10.0)
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
                f"answered on {url}; last lines of {log_path}:\n{_tail(log_path)}"
            )
        if _http_answers(f"{url}/api/version") and _http_answers(f"{url}/api/jobs/"):
            return
        time.sleep(0.3)
    raise StackError(
        f"the Ray dashboard did not answer on {url} within {config.start_timeout_s:.0f} s "
        f"(raise ray.start_timeout_s in a --config file on a slow machine); last lines of "
        f"{log_path}:\n{_tail(log_path)}"
    )


def _http_answers(url: str, timeout_s: float = 2.0) -> bool:
    """Whether an HTTP server answers `url` with success or an auth refusal (it is up)."""
    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as response:
            return response.status == 200
    except urllib.error.HTTPError as error:
        return error.code in (401, 403)
    except (OSError, ValueError):
        return False


def _stop_head(pid: int, timeout_s: float) -> None:
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
    while _still_running(offspring) and time.monotonic() < deadline:
        time.sleep(0.1)
    for child, _ in _still_running(offspring):
        with contextlib.suppress(ProcessLookupError):
            os.kill(child, signal.SIGKILL)
    time.sleep(0.2)
    survivors = _still_running(offspring)
    if survivors:
        raise StackError(
            f"processes {[child for child, _ in survivors]} started by the Ray head {pid} did "
            "not exit"
        )


def descendants(pid: int) -> list[tuple[int, int]]:
    """(pid, start time) of every live process below `pid` in the process tree."""
    children: dict[int, list[tuple[int, int]]] = {}
    for entry in proc_pids():
        stat = proc_stat(entry)
        if stat is None or stat[0] == "Z":
            continue
        children.setdefault(int(stat[1]), []).append((entry, int(stat[19])))
    found: list[tuple[int, int]] = []
    frontier = [pid]
    while frontier:
        parent = frontier.pop()
        for child in children.get(parent, []):
            found.append(child)
            frontier.append(child[0])
    return found


def _still_running(processes: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """Those of `processes` that still run (the same pid with the same start time)."""
    running = []
    for pid, started in processes:
        stat = proc_stat(pid)
        if stat is not None and stat[0] != "Z" and int(stat[19]) == started:
            running.append((pid, started))
    return running


def _head_alive(record: Mapping[str, Any]) -> bool:
    try:
        pid = int(record["pid"])
        host, port = str(record["gcs_address"]).rsplit(":", 1)
    except (KeyError, TypeError, ValueError):
        return False
    if not pid_alive(pid) or not _is_head_process(pid, int(port)):
        return False
    if not record.get("ready"):
        return True  # still starting (another `up` is waiting for it): not stale
    try:
        with socket.create_connection((host, int(port)), timeout=2.0):
            return True
    except OSError:
        return False


def _is_head_process(pid: int, gcs_port: int) -> bool:
    """Whether `pid` is the `ray start --head` of that port (and not a process reusing the pid)."""
    try:
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return True  # no /proc to ask: the live pid and the answering port must do
    return b"--head" in argv and f"--port={gcs_port}".encode() in argv


def _forget_stale(state: Path, record: Mapping[str, Any]) -> None:
    """Remove a stale head.json; stop what is left of its group if its head died alone."""
    with contextlib.suppress(KeyError, TypeError, ValueError):
        pid = int(record["pid"])
        # The group id can only still exist if it is that head's group: pids are not reused
        # while a process group of that id exists.
        if not pid_alive(pid) and group_members(pid):
            with contextlib.suppress(ResetTuneError):
                _stop_head(pid, 5.0)
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


def _socket_paths_fit(temp_dir: Path) -> bool:
    return len(os.fsencode(str(temp_dir))) + _SOCKET_SUFFIX <= _SOCKET_PATH_MAX


def _ray_version() -> str | None:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("ray")
    except PackageNotFoundError:
        return None


@contextlib.contextmanager
def _stack_lock(folder: Path) -> Iterator[None]:
    """One `up`/`down` at a time per state directory (across processes)."""
    with open(folder / ".stack.lock", "a+b") as handle:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)


def _tail(path: Path, lines: int = 25) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"
