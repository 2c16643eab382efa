"""Servers shared by the whole test session, started only when a test asks for them.

Starting a Ray cluster, an MLflow server or a local stack costs 10-30 s on 2 cores, so each is
started once per session; tests stay independent by using their own experiment, search name and
state directory. Everything runs on 127.0.0.1 and is stopped by process id.

The tests that use one of these servers run one after another (`pytest_collection_modifyitems`
below keeps each group together, in file order, at its first member's place), and the server
stops right after its last user rather than at the end of the session: two Ray clusters, a local
stack and MLflow servers idling side by side would take CPU from the tests that do run.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[1]
CLI = [sys.executable, "-m", "reset_tune.cli.main"]

# ----------------------------------------------------------------------------- order and early stop

# The session's servers that stop after their last user (the service tests use the Ray cluster
# and the MLflow server together: one group).
SHARED_SERVERS = ("shared_stack", "ray_cluster", "mlflow_server")
# Per server: the node id of the last test that uses it, and how to stop it (set by its fixture).
_last_user: dict[str, str] = {}
_stop_early: dict[str, Callable[[], None]] = {}


def _group_of(item: pytest.Item) -> str | None:
    names = getattr(item, "fixturenames", ())
    if "ray_cluster" in names or "mlflow_server" in names:
        return "ray_cluster"
    if "shared_stack" in names:
        return "shared_stack"
    return None


@pytest.hookimpl(trylast=True)  # after `-m` / `-k` deselection: the items that will run
def pytest_collection_modifyitems(config, items):
    """Each server's tests together, at the place of the group's first test; then note each
    server's last user, after which it stops."""
    groups: dict[str, list[pytest.Item]] = {}
    for item in items:
        group = _group_of(item)
        if group is not None:
            groups.setdefault(group, []).append(item)
    ordered: list[pytest.Item] = []
    for item in items:
        group = _group_of(item)
        if group is None:
            ordered.append(item)
        elif item is groups[group][0]:
            ordered.extend(groups[group])
    items[:] = ordered
    _last_user.clear()
    for item in items:
        for name in SHARED_SERVERS:
            if name in getattr(item, "fixturenames", ()):
                _last_user[name] = item.nodeid


@pytest.hookimpl(trylast=True)  # after the test's own fixtures are gone
def pytest_runtest_teardown(item, nextitem):
    for name, nodeid in _last_user.items():
        if item.nodeid == nodeid and name in _stop_early:
            _stop_early.pop(name)()


def _once(stop: Callable[[], None]) -> Callable[[], None]:
    done = []

    def stop_once() -> None:
        if not done:
            done.append(True)
            stop()

    return stop_once


def service_env() -> dict[str, str]:
    """The environment for `reset-tune` subprocesses: no ambient Ray or MLflow address."""
    env = {**os.environ, "RAY_AUTH_MODE": "disabled", "PYTHONUNBUFFERED": "1"}
    for key in ("RAY_ADDRESS", "MLFLOW_TRACKING_URI"):
        env.pop(key, None)
    return env


def short_state_dir() -> Path:
    """A state directory short enough for Ray's socket paths (pytest's tmp_path is not)."""
    return Path(tempfile.mkdtemp(prefix="rt-", dir="/tmp")) / "st"


# ----------------------------------------------------------------------------- Ray cluster


def _ray_start(args: list[str], log: Path) -> subprocess.Popen:
    ray = Path(sys.executable).parent / "ray"
    with open(log, "wb") as out:
        return subprocess.Popen(
            [str(ray), "start", "--block", *args],
            stdout=out,
            stderr=subprocess.STDOUT,
            env=service_env(),
            start_new_session=True,
        )


def _wait_port(port: int, process: subprocess.Popen, log: Path, timeout_s: float = 90) -> None:
    """Until the head's GCS port accepts connections (checked here: no process per poll)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"the Ray head exited:\n{log.read_text()[-3000:]}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return
        except OSError:
            time.sleep(0.2)
    pytest.fail(f"the Ray head did not listen on port {port}:\n{log.read_text()[-3000:]}")


# One driver that connects once and polls the node table itself: one Ray import per wait,
# not one per second.
_NODE_PROBE = """
import sys, time, ray
address, count, deadline = sys.argv[1], int(sys.argv[2]), time.monotonic() + float(sys.argv[3])
ray.init(address=address, logging_level="ERROR")
while sum(1 for n in ray.nodes() if n["Alive"]) != count:
    if time.monotonic() > deadline:
        sys.exit(f"{sum(1 for n in ray.nodes() if n['Alive'])} node(s) alive")
    time.sleep(0.2)
"""


def _wait_nodes(address: str, count: int, log: Path, timeout_s: float = 90) -> None:
    try:
        done = subprocess.run(
            [sys.executable, "-c", _NODE_PROBE, address, str(count), str(timeout_s)],
            capture_output=True,
            text=True,
            env=service_env(),
            timeout=timeout_s + 60,
        )
    except subprocess.TimeoutExpired:
        done = None
    if done is None or done.returncode != 0:
        said = "" if done is None else done.stderr[-2000:]
        tail = log.read_text()[-3000:]
        pytest.fail(f"the Ray cluster did not reach {count} node(s): {said}\n{tail}")


def _stop_ray_nodes(processes: list[subprocess.Popen]) -> None:
    """SIGTERM to every node's process group at once, then SIGKILL to what is left after 3 s.

    A node's `ray start --block` and its raylet end within a few seconds of SIGTERM, but the
    head's GCS and autoscaler monitor can linger for 30 s and more: a test cluster holds nothing
    worth that wait (one node after the other with 20 s each cost ~22 s per session)."""
    from reset_tune.tracking.server import stop_process_group

    for process in processes:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
    for process in reversed(processes):
        stop_process_group(process.pid, timeout_s=3)
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(timeout=5)  # reaped: no zombie left behind


@pytest.fixture(scope="session")
def ray_cluster(tmp_path_factory):
    """A Ray head (1 CPU) and a second node (1 CPU) joined to it: two nodes on one machine.

    Shared by the service and recommend tests; every search there has its own name and state
    directory. Yields the GCS address."""
    from reset_tune.tracking.server import free_port

    logs = tmp_path_factory.mktemp("ray-logs")
    port = free_port()
    common = ["--num-cpus=1", "--num-gpus=0", "--object-store-memory=100000000"]
    head = _ray_start(
        [
            "--head",
            "--node-ip-address=127.0.0.1",
            f"--port={port}",
            "--include-dashboard=false",
            f"--ray-client-server-port={free_port()}",
            f"--dashboard-agent-listen-port={free_port()}",
            *common,
        ],
        logs / "head.log",
    )
    processes = [head]
    address = f"127.0.0.1:{port}"

    def stop() -> None:
        if "ray" in sys.modules:
            import ray

            if ray.is_initialized():
                ray.shutdown()
        _stop_ray_nodes(processes)

    stop = _stop_early["ray_cluster"] = _once(stop)
    try:
        _wait_port(port, head, logs / "head.log")
        worker = _ray_start(
            [
                f"--address={address}",
                "--node-ip-address=127.0.0.1",
                f"--dashboard-agent-listen-port={free_port()}",
                *common,
            ],
            logs / "worker.log",
        )
        processes.append(worker)
        _wait_nodes(address, 2, logs / "worker.log")
        yield address
    finally:
        stop()


# ----------------------------------------------------------------------------- MLflow server


@pytest.fixture(scope="session")
def mlflow_server(tmp_path_factory):
    """One MLflow server for the session; each test logs to experiments of its own."""
    from reset_tune.tracking.server import start_local_server

    server = start_local_server(tmp_path_factory.mktemp("mlflow"))
    stop = _stop_early["mlflow_server"] = _once(server.stop)
    try:
        yield server
    finally:
        stop()


# ----------------------------------------------------------------------------- local stack

# Left out of `up`'s environment: the stack sets its own auth mode and knows its own addresses.
AMBIENT_ENV = (
    "RAY_AUTH_MODE",
    "RAY_ADDRESS",
    "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER",
    "MLFLOW_TRACKING_URI",
    "RESET_TUNE_STATE_DIR",
)


@dataclass
class SharedStack:
    """The session's local stack (`reset-tune up`, 1 CPU, 100 MB object store).

    `ensure()` starts it when it does not run (at first use, or after a test ran `down`);
    `shown` is the `up --json` output of the start, `jobs_at_start` the Jobs API's answer
    right after it."""

    state: Path
    shown: dict[str, Any] = field(default_factory=dict)
    jobs_at_start: Any = None

    def ensure(self) -> SharedStack:
        from reset_tune.search.cluster import find_local_stack

        if find_local_stack(self.state) is not None:
            return self
        env = {k: v for k, v in os.environ.items() if k not in AMBIENT_ENV}
        # Its own process: the stack must outlive the `up` that started it.
        result = subprocess.run(
            [*CLI, "up", "--state-dir", str(self.state), "--num-cpus", "1"]
            + ["--object-store-memory", "100MB", "--json"],
            capture_output=True,
            text=True,
            timeout=300,
            env=env,
            cwd=REPO,
        )
        assert result.returncode == 0, result.stderr
        self.shown = json.loads(result.stdout)
        url = f"{self.shown['dashboard_url']}/api/jobs/"
        with urllib.request.urlopen(url, timeout=5) as response:
            self.jobs_at_start = json.loads(response.read())
        return self

    @property
    def local(self):
        from reset_tune.search.cluster import find_local_stack

        return find_local_stack(self.state)


@pytest.fixture(scope="session")
def shared_stack():
    """The session's stack (not yet started: call `ensure()`); stopped by pid at the end."""
    from reset_tune.search.cluster import stop_local_stack

    stack = SharedStack(short_state_dir())

    def stop() -> None:
        stop_local_stack(stack.state, timeout_s=20)
        shutil.rmtree(stack.state.parent, ignore_errors=True)

    stop = _stop_early["shared_stack"] = _once(stop)
    try:
        yield stack
    finally:
        stop()
