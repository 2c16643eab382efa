"""Searches as Ray jobs, against a real local stack (Ray head + MLflow server on 127.0.0.1).

The session's local stack (1 CPU, 100 MB object store; tests/conftest.py), stopped by process
id. Covers what a job ships, that it runs the shipped code, `jobs` / `logs` / `stop`, the errors
for an unreachable address and a bad spec, and a whole `reset-tune submit` of a tiny search.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest
import yaml

from reset_tune.cli.main import build_parser, main
from reset_tune.search.head_process import descendants
from reset_tune.search.jobs import (
    JobNotFound,
    job_environment,
    job_logs,
    job_status,
    list_jobs,
    package_source,
    stage_package,
    submit_entrypoint,
    wait_for_job,
)
from reset_tune.search.jobs_http import stop_running_jobs
from reset_tune.tracking.server import free_port

REPO = Path(__file__).resolve().parents[2]
DEFAULT_SPEC = REPO / "search_spaces" / "default.yaml"
ENV_KEYS = ("RAY_AUTH_MODE", "RAY_ADDRESS", "MLFLOW_TRACKING_URI", "RESET_TUNE_STATE_DIR")
PROBE = (
    'python -c \'import os, reset_tune; print("FILE", reset_tune.__file__); '
    'print("CWD", os.getcwd()); print("AUTH", os.environ.get("RAY_AUTH_MODE")); '
    'print("PROBE", os.environ.get("RESET_TUNE_PROBE"))\''
)


@pytest.fixture(scope="module")
def stack(shared_stack):
    """The session's local stack (tests/conftest.py), without ambient addresses in os.environ."""
    saved = {key: os.environ.pop(key, None) for key in ENV_KEYS}
    try:
        yield shared_stack.ensure().local
    finally:
        for key, value in saved.items():
            os.environ.pop(key, None)
            if value is not None:
                os.environ[key] = value


@pytest.fixture(scope="module")
def finished_job(stack, tmp_path_factory):
    """A job that printed where `reset_tune` was imported from; (job id, its logs)."""
    staged = stage_package(tmp_path_factory.mktemp("stage") / "job", {"spec.yaml": DEFAULT_SPEC})
    job_id = submit_entrypoint(
        stack.dashboard_url, PROBE, working_dir=staged, env_vars={"RESET_TUNE_PROBE": "42"}
    )
    status = wait_for_job(stack.dashboard_url, job_id, timeout_s=120, poll_s=0.5)
    logs = "".join(job_logs(stack.dashboard_url, job_id))
    assert status == "SUCCEEDED", logs
    return job_id, logs


def _files(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*") if p.is_file()}


def test_stage_package_ships_the_package_and_the_spec_only(tmp_path):
    staged = stage_package(tmp_path / "job", {"default.yaml": DEFAULT_SPEC})
    assert sorted(p.name for p in staged.iterdir()) == ["default.yaml", "reset_tune"]
    assert (staged / "default.yaml").read_bytes() == DEFAULT_SPEC.read_bytes()
    source = package_source()
    expected = {
        name
        for name in _files(source)
        if "__pycache__" not in name and not name.endswith((".pyc", ".pyo"))
    }
    shipped = _files(staged / "reset_tune")
    assert shipped == expected
    assert {"__init__.py", "cli/main.py", "search/jobs.py"} <= shipped
    assert (staged / "reset_tune" / "__init__.py").read_bytes() == (
        source / "__init__.py"
    ).read_bytes()


def test_stage_package_leaves_out_compiled_files(tmp_path, monkeypatch):
    fake = tmp_path / "src" / "reset_tune"
    (fake / "__pycache__").mkdir(parents=True)
    (fake / "__init__.py").write_text("")
    (fake / "__pycache__" / "x.cpython-311.pyc").write_bytes(b"\0")
    (fake / "stray.pyc").write_bytes(b"\0")
    (fake / "sub").mkdir()
    (fake / "sub" / "mod.py").write_text("x = 1\n")
    monkeypatch.setattr("reset_tune.search.jobs.package_source", lambda: fake)
    staged = stage_package(tmp_path / "job", {})
    assert _files(staged) == {"reset_tune/__init__.py", "reset_tune/sub/mod.py"}
    with pytest.raises(Exception, match="not empty"):
        stage_package(staged, {})
    with pytest.raises(Exception, match="plain file name"):
        stage_package(tmp_path / "job2", {"../spec.yaml": DEFAULT_SPEC})


@pytest.mark.integration
def test_a_job_imports_the_shipped_copy_from_its_working_dir(stack, finished_job):
    job_id, logs = finished_job
    lines = dict(
        line.split(" ", 1)
        for line in logs.splitlines()
        if line.startswith(("FILE", "CWD", "AUTH", "PROBE"))
    )
    cwd = lines["CWD"]
    assert lines["FILE"] == os.path.join(cwd, "reset_tune", "__init__.py")
    assert not lines["FILE"].startswith(str(package_source()))
    assert lines["AUTH"] == "disabled"  # the head's explicit auth mode reaches its jobs
    assert lines["PROBE"] == "42"  # runtime_env env_vars reach the entrypoint
    assert job_status(stack.dashboard_url, job_id) == "SUCCEEDED"


@pytest.mark.integration
def test_jobs_lists_the_job(stack, finished_job, capsys):
    job_id, _ = finished_job
    assert main(["jobs", "--address", stack.dashboard_url]) == 0
    rows = [line for line in capsys.readouterr().out.splitlines() if line.startswith(job_id)]
    assert len(rows) == 1 and "SUCCEEDED" in rows[0]
    # Without --address: the local stack of the state directory.
    assert main(["jobs", "--state-dir", str(stack.state_dir), "--json"]) == 0
    listed = {job["job_id"]: job for job in json.loads(capsys.readouterr().out)}
    assert listed[job_id]["status"] == "SUCCEEDED"
    assert "reset_tune.__file__" in listed[job_id]["entrypoint"]


@pytest.mark.integration
def test_logs_prints_the_jobs_output(stack, finished_job, capsys):
    job_id, logs = finished_job
    assert main(["logs", job_id, "--address", stack.dashboard_url]) == 0
    assert "PROBE 42" in capsys.readouterr().out
    assert main(["logs", "raysubmit_nosuchjob", "--address", stack.dashboard_url]) == 1
    err = capsys.readouterr().err
    assert "no job 'raysubmit_nosuchjob'" in err and "reset-tune jobs" in err
    with pytest.raises(JobNotFound):
        list(job_logs(stack.dashboard_url, "raysubmit_nosuchjob", follow=True))


@pytest.mark.integration
def test_stop_stops_a_running_job(stack, capsys):
    job_id = submit_entrypoint(stack.dashboard_url, "sleep 600")
    wait_for_job(
        stack.dashboard_url, job_id, until=frozenset({"RUNNING"}), timeout_s=60, poll_s=0.3
    )

    def sleepers() -> list[int]:
        found = []
        for pid, _ in descendants(stack.ray_pid):
            try:
                if Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[:2] == [
                    b"sleep",
                    b"600",
                ]:
                    found.append(pid)
            except OSError:
                pass
        return found

    # RUNNING can be reported while the job's shell has not yet exec'd `sleep`.
    deadline = time.monotonic() + 30
    while not sleepers() and time.monotonic() < deadline:
        time.sleep(0.2)
    try:
        assert sleepers(), "the job's process should run under the Ray head"
    finally:
        assert main(["stop", job_id, "--address", stack.dashboard_url]) == 0
    assert f"job {job_id}: STOPPED" in capsys.readouterr().out
    assert job_status(stack.dashboard_url, job_id) == "STOPPED"
    assert sleepers() == []
    assert main(["stop", job_id, "--address", stack.dashboard_url]) == 0
    assert "had already ended: STOPPED" in capsys.readouterr().out


@pytest.mark.integration
def test_down_first_stops_running_jobs(stack):
    # What `down` does before stopping the head (else Ray drains the node for up to 30 s).
    job_id = submit_entrypoint(stack.dashboard_url, "sleep 600")
    wait_for_job(
        stack.dashboard_url, job_id, until=frozenset({"RUNNING"}), timeout_s=60, poll_s=0.3
    )
    assert stop_running_jobs(stack.dashboard_url) == [job_id]
    assert job_status(stack.dashboard_url, job_id) == "STOPPED"
    assert stop_running_jobs(stack.dashboard_url) == []


@pytest.mark.parametrize(
    "command",
    [["jobs"], ["logs", "raysubmit_x"], ["stop", "raysubmit_x"], ["submit", str(DEFAULT_SPEC)]],
)
def test_an_unreachable_address_is_one_clear_error(command, capsys):
    dead = f"http://127.0.0.1:{free_port()}"
    assert main([*command, "--address", dead]) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert f"no Ray dashboard answers at {dead}" in err
    assert "reset-tune up" in err and "--address" in err


def test_no_address_and_no_local_stack_says_how_to_get_one(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    assert main(["jobs", "--state-dir", str(tmp_path)]) == 1
    err = capsys.readouterr().err
    assert "no local stack runs" in err and "reset-tune up" in err
    # A GCS address in RAY_ADDRESS is for ray.init, not the Jobs API: it is not used here.
    monkeypatch.setenv("RAY_ADDRESS", "127.0.0.1:6379")
    assert main(["jobs", "--state-dir", str(tmp_path)]) == 1
    assert "no local stack runs" in capsys.readouterr().err
    assert main(["jobs", "--address", "ray://127.0.0.1:10001"]) == 2  # not a dashboard URL
    assert "needs the dashboard's http(s) address" in capsys.readouterr().err


@pytest.mark.integration
def test_a_bad_spec_exits_2_and_submits_nothing(stack, tmp_path, capsys):
    before = len(list_jobs(stack.dashboard_url))
    bad = tmp_path / "bad.yaml"
    spec = yaml.safe_load(DEFAULT_SPEC.read_text())
    spec["trails"] = spec.pop("trials")
    bad.write_text(yaml.safe_dump(spec))
    assert main(["submit", str(bad), "--address", stack.dashboard_url]) == 2
    err = capsys.readouterr().err
    assert "trails" in err and "unknown key" in err
    assert main(["submit", str(tmp_path / "missing.yaml"), "--address", stack.dashboard_url]) == 2
    assert "no such search spec file" in capsys.readouterr().err
    assert len(list_jobs(stack.dashboard_url)) == before


def test_submit_keeps_what_follows_double_dash_for_the_search():
    args = build_parser().parse_args(
        ["submit", "s.yaml", "--address", "http://h:8265", "--", "--trials", "3", "--address", "x"]
    )
    assert args.spec == "s.yaml" and args.address == "http://h:8265"
    assert args.search_args == ["--trials", "3", "--address", "x"]
    assert build_parser().parse_args(["submit", "s.yaml", "--no-wait"]).search_args == []


@pytest.mark.integration
def test_job_environment_names_the_tracking_server(stack, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    local = job_environment(stack.dashboard_url, state=stack.state_dir)
    assert local["MLFLOW_TRACKING_URI"] == stack.mlflow_uri  # the local stack's, on this machine
    assert local["RAY_AUTH_MODE"] == "disabled"
    explicit = job_environment(
        stack.dashboard_url, mlflow_uri="http://m:5000", state=stack.state_dir
    )
    assert explicit["MLFLOW_TRACKING_URI"] == "http://m:5000"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://env:5000")
    assert job_environment(stack.dashboard_url, state=stack.state_dir)["MLFLOW_TRACKING_URI"] == (
        "http://env:5000"
    )
    monkeypatch.delenv("MLFLOW_TRACKING_URI")
    # A remote cluster cannot reach this machine's 127.0.0.1: no local URI is passed there.
    remote = job_environment("http://10.1.2.3:8265", state=stack.state_dir)
    assert "MLFLOW_TRACKING_URI" not in remote


@pytest.mark.integration
def test_submit_search_end_to_end(stack, tmp_path, capsys):
    from reset_tune.tracking import find_search_runs, trial_runs

    spec = yaml.safe_load(DEFAULT_SPEC.read_text())
    # Without racing: two configurations are two trials (racing is the service tests' concern).
    spec.update(name="tiny-submit", trials=2, concurrency=1, racing=None)
    spec["train"].update(steps=100, eval_every=50)
    spec_file = tmp_path / "tiny.yaml"
    spec_file.write_text(yaml.safe_dump(spec))
    code = main(
        [
            "submit",
            str(spec_file),
            "--address",
            stack.dashboard_url,
            "--mlflow-uri",
            stack.mlflow_uri,
            "--state-dir",
            str(stack.state_dir),
            "--follow",
            "--json",
        ]
    )
    captured = capsys.readouterr()
    assert code == 0, captured.out[-3000:] + captured.err[-3000:]
    summary = json.loads(captured.out.strip().splitlines()[-1])
    assert summary["status"] == "SUCCEEDED"
    assert "python -m reset_tune.cli.main search tiny.yaml" in captured.out  # the job's output
    # The search ran on the cluster and logged to the MLflow server it was given.
    searches = [s for s in find_search_runs(stack.mlflow_uri) if s.status == "FINISHED"]
    assert searches, "the search left no finished run in MLflow"
    trials = trial_runs(stack.mlflow_uri, searches[-1].run_id)
    assert len(trials) == 2 and {t.status for t in trials} == {"FINISHED"}
    # Its state (search record, Optuna study) went to the state directory it was given.
    assert list((stack.state_dir / "searches").glob("tiny-submit-*/search.json"))
