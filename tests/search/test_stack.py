"""`reset-tune up` / `stack` / `down` against real processes on 127.0.0.1, stopped by process id.

The session's stack (tests/conftest.py; about 15 s to start on 2 cores), shared with the jobs
tests; `down` is tested on it last, and it starts again for whoever needs it after. Also: stale
`head.json` records, the stack's settings file, and where Ray's temp dir goes.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest
import yaml

from reset_tune.cli.main import main
from reset_tune.errors import ConfigError
from reset_tune.processes import group_members
from reset_tune.search import ray_auth as cluster
from reset_tune.search.cluster import HEAD_FILE, StackError, find_local_stack
from reset_tune.search.head_process import choose_temp_dir, descendants
from reset_tune.search.stack_config import (
    StackConfig,
    load_stack_config,
    parse_size,
    stack_config_from_dict,
)
from reset_tune.state import mlflow_dir, ray_dir
from reset_tune.tracking.server import SERVER_FILE, free_port, health_ok, pid_alive

REPO = Path(__file__).resolve().parents[2]
AUTH_ENV = ("RAY_AUTH_MODE", "RAY_ADDRESS", "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER")


def listening_addresses(pids: set[int]) -> set[str]:
    """The local IP addresses on which the processes `pids` have listening TCP sockets."""
    inodes = set()
    for pid in pids:
        try:
            for fd in os.listdir(f"/proc/{pid}/fd"):
                target = os.readlink(f"/proc/{pid}/fd/{fd}")
                if target.startswith("socket:["):
                    inodes.add(target[8:-1])
        except OSError:
            continue
    addresses = set()
    for table, width in (("/proc/net/tcp", 8), ("/proc/net/tcp6", 32)):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            if fields[3] != "0A" or fields[9] not in inodes:  # 0A: LISTEN
                continue
            raw = bytes.fromhex(fields[1].split(":")[0])
            # /proc/net stores each 32-bit word in host (little-endian) order.
            words = [raw[i : i + 4][::-1] for i in range(0, width // 2, 4)]
            packed = b"".join(words)
            family = socket.AF_INET if width == 8 else socket.AF_INET6
            addresses.add(socket.inet_ntop(family, packed))
    return addresses


@pytest.fixture
def stack_state(shared_stack):
    """The session's stack (tests/conftest.py), started by `reset-tune up` as its own process
    (the stack must outlive it), again if a test ran `down`; (state, `up --json` output)."""
    stack = shared_stack.ensure()
    return stack.state, stack.shown


@pytest.mark.integration
def test_up_starts_a_ray_head_and_an_mlflow_server_that_answer(stack_state, shared_stack):
    state, shown = stack_state
    assert shown["started"] is True
    record = json.loads((ray_dir(state) / HEAD_FILE).read_text())
    pid = record["pid"]
    assert shown["ray_pid"] == pid and pid_alive(pid)
    assert os.getpgid(pid) == pid  # its own process group, stopped by that id
    assert record["ready"] is True and record["num_cpus"] == 1
    assert record["object_store_memory"] == 100_000_000
    assert record["auth_mode"] == "disabled"
    host, port = record["gcs_address"].split(":")
    assert host == "127.0.0.1" and int(port) == record["ports"]["gcs"]
    with socket.create_connection((host, int(port)), timeout=5):
        pass
    assert len(set(record["ports"].values())) == len(record["ports"])  # all distinct
    with urllib.request.urlopen(f"{record['dashboard_url']}/api/version", timeout=5) as response:
        assert json.loads(response.read())["ray_version"] == "2.60.0"
    with urllib.request.urlopen(f"{record['dashboard_url']}/api/jobs/", timeout=5) as response:
        assert isinstance(json.loads(response.read()), list)  # the Jobs API answers
    assert shared_stack.jobs_at_start == []  # ... and had no jobs right after `up`
    # The MLflow server is the one `reset-tune search` reuses for this state directory.
    server = json.loads((mlflow_dir(state) / SERVER_FILE).read_text())
    assert shown["mlflow_uri"] == server["uri"] and shown["mlflow_pid"] == server["pid"]
    assert health_ok(server["uri"])
    # Ray's temp dir is under the state directory (its path is short enough for the sockets).
    assert record["temp_dir"] == str(ray_dir(state) / "tmp")
    assert list((ray_dir(state) / "tmp").glob("session_*/sockets/raylet"))
    # The head (so every job and worker) runs with the auth mode set explicitly.
    environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    assert b"RAY_AUTH_MODE=disabled" in environ
    assert b"RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0" in environ


@pytest.mark.integration
def test_every_port_of_the_stack_listens_on_loopback_only(stack_state):
    state, shown = stack_state
    pids = {shown["ray_pid"], *group_members(shown["ray_pid"])}
    pids |= {pid for pid, _ in descendants(shown["ray_pid"])}
    pids |= {shown["mlflow_pid"], *group_members(shown["mlflow_pid"])}
    addresses = listening_addresses(pids)
    assert addresses, "found no listening sockets of the stack"
    assert addresses <= {"127.0.0.1", "::ffff:127.0.0.1"}, addresses


@pytest.mark.integration
def test_up_again_reuses_the_running_stack(stack_state, capsys):
    state, shown = stack_state
    assert main(["up", "--state-dir", str(state), "--json"]) == 0
    again = json.loads(capsys.readouterr().out)
    assert again["started"] is False
    assert again["ray_pid"] == shown["ray_pid"]
    assert again["mlflow_pid"] == shown["mlflow_pid"]
    assert again["dashboard_url"] == shown["dashboard_url"]

    assert main(["up", "--state-dir", str(state)]) == 0
    text = capsys.readouterr().out
    assert "already up" in text
    assert shown["dashboard_url"] in text and shown["mlflow_uri"] in text
    assert f"reset-tune down --state-dir {state}" in text

    assert main(["stack", "--state-dir", str(state)]) == 0
    assert shown["gcs_address"] in capsys.readouterr().out


@pytest.mark.integration
def test_down_stops_both_and_leaves_no_process(stack_state, capsys):
    state, shown = stack_state
    ray_pid, mlflow_pid = shown["ray_pid"], shown["mlflow_pid"]
    offspring = descendants(ray_pid)
    assert len(offspring) > 3  # GCS, raylet, dashboard, agents, ...
    assert main(["down", "--state-dir", str(state)]) == 0
    out = capsys.readouterr().out
    assert f"Ray head (pid {ray_pid})" in out and f"MLflow server (pid {mlflow_pid})" in out
    assert not pid_alive(ray_pid) and not pid_alive(mlflow_pid)
    assert group_members(ray_pid) == [] and group_members(mlflow_pid) == []
    survivors = [pid for pid, _ in offspring if pid_alive(pid)]
    assert survivors == []
    assert not (ray_dir(state) / HEAD_FILE).exists()
    assert not (mlflow_dir(state) / SERVER_FILE).exists()
    assert find_local_stack(state) is None

    assert main(["down", "--state-dir", str(state)]) == 0
    assert "nothing to stop" in capsys.readouterr().out
    assert main(["stack", "--state-dir", str(state), "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == {"running": False}


def _write_head(state: Path, pid: int) -> Path:
    port = free_port()
    path = ray_dir(state) / HEAD_FILE
    path.parent.mkdir(parents=True)
    path.write_text(
        json.dumps(
            {
                "pid": pid,
                "gcs_address": f"127.0.0.1:{port}",
                "dashboard_url": f"http://127.0.0.1:{free_port()}",
            }
        )
    )
    return path


def test_stale_record_of_a_dead_head_is_removed(tmp_path, capsys):
    gone = subprocess.Popen(["true"])
    gone.wait()
    record = _write_head(tmp_path, gone.pid)
    assert find_local_stack(tmp_path) is None
    assert not record.exists()
    shutil.rmtree(ray_dir(tmp_path))
    record = _write_head(tmp_path, gone.pid)  # the same through `down`
    assert main(["down", "--state-dir", str(tmp_path)]) == 0
    assert "nothing to stop" in capsys.readouterr().out
    assert not record.exists()


def test_stale_record_whose_pid_is_another_process_leaves_that_process_alone(tmp_path, capsys):
    other = subprocess.Popen(["sleep", "60"], start_new_session=True)
    try:
        record = _write_head(tmp_path, other.pid)
        assert find_local_stack(tmp_path) is None
        assert not record.exists()
        shutil.rmtree(ray_dir(tmp_path))
        _write_head(tmp_path, other.pid)
        assert main(["down", "--state-dir", str(tmp_path)]) == 0
        assert "nothing to stop" in capsys.readouterr().out
        assert other.poll() is None  # not ours to stop: not a `ray start --head` of that port
    finally:
        other.kill()
        other.wait()


def test_stale_record_whose_head_died_alone_stops_what_is_left_of_its_group(tmp_path):
    # A group leader that exits at once, leaving a member behind (as a crashed head would).
    leader = subprocess.Popen(["sh", "-c", "sleep 60 & exit 0"], start_new_session=True)
    leader.wait()
    assert group_members(leader.pid), "the orphan should still run"
    record = _write_head(tmp_path, leader.pid)
    assert find_local_stack(tmp_path) is None
    assert not record.exists()
    assert group_members(leader.pid) == []


def test_deploy_stack_yaml_holds_the_built_in_defaults():
    assert load_stack_config(REPO / "deploy" / "local" / "stack.yaml") == StackConfig()
    assert load_stack_config(None) == StackConfig()


@pytest.mark.parametrize(
    "settings, fragment",
    [
        ({"ray": {"num_cpu": 2}}, "ray.num_cpu: unknown key; allowed: num_cpus"),
        ({"rays": {}}, "rays: unknown key"),
        ({"host": "0.0.0.0"}, "host: must be 127.0.0.1"),
        ({"ray": {"object_store_memory": "lots"}}, "ray.object_store_memory: must be a size"),
        ({"ray": {"object_store_memory": "10MB"}}, "at least 78MiB"),
        ({"ray": {"port": 80}}, "ray.port: must be a port number"),
        ({"mlflow": {"enabled": "yes"}}, "mlflow.enabled: must be true or false"),
        ({"ray": {"num_gpus": -1}}, "ray.num_gpus: must be an integer >= 0"),
    ],
)
def test_bad_stack_settings_are_named(settings, fragment):
    with pytest.raises(ConfigError) as error:
        stack_config_from_dict(settings, source="my.yaml")
    assert fragment in str(error.value)
    assert str(error.value).startswith("my.yaml: ")


def test_stack_settings_parse():
    config = stack_config_from_dict(
        {
            "ray": {"num_cpus": 3, "object_store_memory": "512MiB", "temp_dir": "default"},
            "mlflow": {"enabled": False, "port": 5555},
        }
    )
    assert config.num_cpus == 3 and config.object_store_memory == 512 * 2**20
    assert config.temp_dir == "default" and config.mlflow is False and config.mlflow_port == 5555
    assert parse_size("1.5GB") == 1_500_000_000 and parse_size(200_000_000) == 200_000_000


def test_up_with_a_bad_config_exits_2_and_starts_nothing(tmp_path, capsys):
    bad = tmp_path / "stack.yaml"
    bad.write_text(yaml.safe_dump({"ray": {"object_store_memory": "1GB", "num_cpu": 1}}))
    state = tmp_path / "state"
    assert main(["up", "--state-dir", str(state), "--config", str(bad)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "ray.num_cpu: unknown key" in err
    assert not (ray_dir(state) / HEAD_FILE).exists()
    assert main(["up", "--state-dir", str(state), "--num-cpus", "-1"]) == 2
    assert "--num-cpus: must be an integer >= 0" in capsys.readouterr().err
    assert main(["up", "--state-dir", str(state), "--config", str(tmp_path / "nope.yaml")]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_ray_temp_dir_falls_back_to_rays_default_when_socket_paths_would_be_too_long(tmp_path):
    long_folder = tmp_path / ("x" * 60) / "ray"
    assert choose_temp_dir(StackConfig(), long_folder) is None
    assert choose_temp_dir(StackConfig(), Path("/tmp/st/ray")) == Path("/tmp/st/ray/tmp")
    assert choose_temp_dir(StackConfig(temp_dir="default"), Path("/tmp/st/ray")) is None
    with pytest.raises(StackError, match="too long for the Unix socket paths"):
        choose_temp_dir(StackConfig(temp_dir=str(long_folder)), long_folder)


@pytest.fixture
def auth_env(monkeypatch, tmp_path):
    """A clean auth environment (no token anywhere) and a record of Ray config refreshes."""
    for key in (*AUTH_ENV, "RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH"):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))  # no ~/.ray/auth_token
    refreshes = []
    monkeypatch.setattr(cluster, "_refresh_ray_config", lambda: refreshes.append(1))
    monkeypatch.setattr(cluster, "_loopback_only_in_process", lambda: None)
    return refreshes


@pytest.mark.parametrize(
    "address",
    ["127.0.0.1:6379", "http://127.0.0.1:8265", "ray://localhost:10001", "http://[::1]:8265"],
)
def test_a_loopback_cluster_gets_auth_mode_disabled(auth_env, address):
    cluster.ensure_auth_mode(address)
    assert os.environ["RAY_AUTH_MODE"] == "disabled"
    assert "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER" not in os.environ  # connecting starts nothing
    assert auth_env == [1]


def test_a_cluster_started_here_gets_auth_disabled_and_loopback_only_ports(auth_env):
    cluster.ensure_auth_mode(None)
    assert os.environ["RAY_AUTH_MODE"] == "disabled"
    assert os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] == "0"


def test_a_users_auth_mode_is_respected(auth_env, monkeypatch):
    monkeypatch.setenv("RAY_AUTH_MODE", "token")
    cluster.ensure_auth_mode(None)
    cluster.ensure_auth_mode("127.0.0.1:6379")
    assert os.environ["RAY_AUTH_MODE"] == "token" and auth_env == []


def test_a_remote_cluster_is_left_to_ray_unless_a_token_is_at_hand(auth_env, monkeypatch, tmp_path):
    cluster.ensure_auth_mode("http://10.0.0.5:8265")
    assert "RAY_AUTH_MODE" not in os.environ and auth_env == []
    token = tmp_path / ".ray" / "auth_token"
    token.parent.mkdir()
    token.write_text("secret")
    cluster.ensure_auth_mode("ray-head.internal:6379")
    assert os.environ["RAY_AUTH_MODE"] == "token"  # so the Jobs API client sends the token


def test_the_head_environment_sets_the_auth_mode_and_drops_ray_address():
    env = cluster.head_environment({"RAY_ADDRESS": "10.0.0.5:6379", "PATH": "/usr/bin"})
    assert env["RAY_AUTH_MODE"] == "disabled"
    assert env["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] == "0"
    assert "RAY_ADDRESS" not in env
    assert env["PATH"].split(os.pathsep)[0] == str(Path(sys.executable).parent)
    assert cluster.head_environment({"RAY_AUTH_MODE": "token"})["RAY_AUTH_MODE"] == "token"
