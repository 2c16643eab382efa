"""A search whose every store is shared and authenticated: the Optuna study on PostgreSQL, Tune's
trial files on S3, MLflow with basic auth and its artifacts on S3, on a token-authenticated Ray
cluster. It completes, a second driver resumes it, a job submitted with the token completes, and
no credential appears in any output, search.json or MLflow param or tag."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import optuna
import pytest
import yaml

pytestmark = pytest.mark.integration
CLI = [sys.executable, "-m", "reset_tune.cli.main"]


def _spec(directory: Path, name: str) -> Path:
    spec = {
        "name": name,
        "train": {
            "dataset": "digits",
            "noise": "symmetric:0.4",
            "model": "mlp",
            "steps": 100,
            "eval_every": 50,
            "device": "cpu",
        },
        "objective": "val_acc",
        "trials": 2,
        "concurrency": 2,
        "seeds": [0],
        "resources": {"cpus": 1, "gpus": 0},
        "sampler": {"type": "tpe", "seed": 0, "startup_trials": 2},
        "params": {
            "reset_prob": {"type": "loguniform", "low": 0.005, "high": 0.05},
            "lr": {"type": "categorical", "choices": [0.05, 0.1]},
        },
    }
    path = directory / f"{name}.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


def _run(args: list[str], env: dict[str, str], timeout: float = 400) -> subprocess.CompletedProcess:
    return subprocess.run([*CLI, *args], capture_output=True, text=True, env=env, timeout=timeout)


def _assert_no_secret(stack, text: str, where: str) -> None:
    for secret in stack.secrets:
        assert secret not in text, f"a credential appears in {where}"


@pytest.fixture(scope="module")
def first_search(stack, tmp_path_factory):
    """One search on the shared stores, driven from a state directory of its own."""
    work = tmp_path_factory.mktemp("shared-search")
    state = work / "state"
    spec = _spec(work, "shared-stores")
    run = _run(
        [
            "search",
            str(spec),
            "--address",
            stack.gcs_address,
            "--state-dir",
            str(state),
            "--json",
        ],
        stack.search_env(),
    )
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-4000:]
    return {"state": state, "spec": spec, "run": run, "summary": json.loads(run.stdout)}


def test_a_search_on_shared_stores_completes_and_keeps_no_credential(stack, first_search):
    run, summary, state = first_search["run"], first_search["summary"], first_search["state"]
    assert summary["best"] is not None
    _assert_no_secret(stack, run.stdout + run.stderr, "the search's output")
    (record_path,) = state.glob("searches/*/search.json")
    record_text = record_path.read_text()
    _assert_no_secret(stack, record_text, "search.json")
    record = json.loads(record_text)
    assert record["optuna_storage"].startswith("postgresql://reset_tune:***@127.0.0.1:")
    # The study is in PostgreSQL, with every trial finished.
    study = optuna.load_study(study_name=record["search_id"], storage=stack.pg_url("optuna"))
    assert sum(t.state.name == "COMPLETE" for t in study.trials) == 2
    # Tune's trial files went to the bucket; the driver mirrored them (not checkpoints) into the
    # state directory, where the report, sync and --resume read them.
    keys = _keys(stack, f"tune/{record['search_id']}/segment-1/")
    results = [k for k in keys if k.endswith("/result.json")]
    assert len(results) == 2, keys[:20]
    mirrored = list(state.glob("searches/*/tune/segment-1/*/result.json"))
    assert sorted(p.read_bytes() for p in mirrored) == sorted(_object(stack, k) for k in results)
    assert not list(state.glob("searches/*/tune/*/*/checkpoint_*"))


def _object(stack, key: str) -> bytes:
    return stack.s3_client().get_object(Bucket="reset-tune", Key=key)["Body"].read()


def _keys(stack, prefix: str) -> list[str]:
    paginator = stack.s3_client().get_paginator("list_objects_v2")
    return [
        item["Key"]
        for page in paginator.paginate(Bucket="reset-tune", Prefix=prefix)
        for item in page.get("Contents", [])
    ]


def test_mlflow_holds_the_runs_with_artifacts_in_s3_and_no_credential(stack, first_search):
    from mlflow.tracking import MlflowClient

    os.environ["MLFLOW_TRACKING_USERNAME"] = stack.search_user
    os.environ["MLFLOW_TRACKING_PASSWORD"] = stack.search_password
    try:
        client = MlflowClient(stack.mlflow_uri)
        experiment = client.get_experiment_by_name("shared-stores")
        runs = client.search_runs([experiment.experiment_id])
        assert len(runs) >= 3  # the search's run and its trials
        for run in runs:
            _assert_no_secret(stack, json.dumps(run.data.params), "an MLflow param")
            _assert_no_secret(stack, json.dumps(run.data.tags), "an MLflow tag")
            assert run.info.artifact_uri.startswith("mlflow-artifacts:")  # served by MLflow
    finally:
        os.environ.pop("MLFLOW_TRACKING_USERNAME", None)
        os.environ.pop("MLFLOW_TRACKING_PASSWORD", None)
    assert _keys(stack, "mlflow/"), "no MLflow artifact reached the bucket"


def test_a_second_driver_resumes_the_search_from_the_shared_study(stack, first_search):
    state = first_search["state"]
    (record_path,) = state.glob("searches/*/search.json")
    search_id = json.loads(record_path.read_text())["search_id"]
    env = stack.search_env()
    # Without the database's URL the record cannot open the study: it holds no password.
    no_url = {k: v for k, v in env.items() if k != "RESET_TUNE_OPTUNA_STORAGE"}
    refused = _run(["search", "--resume", search_id, "--state-dir", str(state)], no_url)
    assert refused.returncode != 0
    assert "RESET_TUNE_OPTUNA_STORAGE" in refused.stderr
    _assert_no_secret(stack, refused.stdout + refused.stderr, "the refusal")
    run = _run(
        [
            "search",
            "--resume",
            search_id,
            "--trials",
            "3",
            "--address",
            stack.gcs_address,
            "--state-dir",
            str(state),
        ],
        env,
    )
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-4000:]
    _assert_no_secret(stack, run.stdout + run.stderr, "the resumed search's output")
    study = optuna.load_study(study_name=search_id, storage=stack.pg_url("optuna"))
    assert sum(t.state.name == "COMPLETE" for t in study.trials) == 3


def test_a_search_submitted_with_the_token_completes(stack, tmp_path):
    spec = _spec(tmp_path, "submitted-shared")
    env = stack.search_env()
    run = _run(
        [
            "submit",
            str(spec),
            "--address",
            stack.dashboard_url,
            "--mlflow-uri",
            stack.mlflow_uri,
            "--follow",
        ],
        env,
        timeout=420,
    )
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    _assert_no_secret(stack, run.stdout + run.stderr, "the job's output")
    # Its trials wrote to the shared Tune storage, under the job's own search id.
    searches = {key.split("/")[1] for key in _keys(stack, "tune/submitted-shared-")}
    assert len(searches) == 1, searches
    # Without the token the same cluster refuses the submission.
    no_token = {k: v for k, v in env.items() if k not in ("RAY_AUTH_TOKEN",)}
    no_token["RAY_AUTH_TOKEN_PATH"] = str(tmp_path / "no-token")
    refused = _run(["jobs", "--address", stack.dashboard_url], no_token, timeout=120)
    assert refused.returncode != 0
    _assert_no_secret(stack, refused.stdout + refused.stderr, "the refusal")


def test_trials_a_killed_driver_left_running_in_the_shared_study_are_recovered(stack, tmp_path):
    """The driver dies (SIGKILL: nothing of it runs after) while its trials run; the study in
    PostgreSQL says RUNNING and only the bucket has their files. A second driver resumes it:
    those trials are marked interrupted and run again, and the search reaches its target."""
    import signal
    import time

    spec = _spec(tmp_path, "killed-shared")
    data = yaml.safe_load(spec.read_text())
    data["train"]["steps"] = 3000  # long enough to be killed mid-trial on a fast machine too
    spec.write_text(yaml.safe_dump(data))
    state = tmp_path / "state"
    env = stack.search_env()
    log = tmp_path / "driver.log"
    with open(log, "wb") as out:
        driver = subprocess.Popen(
            [*CLI, "search", str(spec), "--address", stack.gcs_address, "--state-dir", str(state)],
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,
        )
    deadline = time.monotonic() + 300
    search_id = None
    while time.monotonic() < deadline:
        records = list(state.glob("searches/*/search.json"))
        if records:
            search_id = json.loads(records[0].read_text())["search_id"]
            try:
                trials = optuna.load_study(study_name=search_id, storage=stack.pg_url("optuna"))
            except KeyError:  # the record is written before the study is created
                trials = None
            running = [t for t in (trials.trials if trials else []) if t.state.name == "RUNNING"]
            # Both trials have reported (rows with their trial ids) to the bucket. (A trial killed
            # before its first row reaches the storage cannot be told apart on resume yet.)
            results = [k for k in _keys(stack, f"tune/{search_id}/") if k.endswith("result.json")]
            reported = [k for k in results if b'"trial_id"' in _object(stack, k)]
            if len(running) == 2 and len(reported) == 2:
                break
        assert driver.poll() is None, log.read_text()[-3000:]
        time.sleep(0.5)
    else:
        pytest.fail("the trials never ran:\n" + log.read_text()[-3000:])
    os.killpg(driver.pid, signal.SIGKILL)
    driver.wait(timeout=30)

    run = _run(
        [
            "search",
            "--resume",
            search_id,
            "--address",
            stack.gcs_address,
            "--state-dir",
            str(state),
        ],
        env,
        timeout=600,
    )
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-4000:]
    assert "interrupted trial(s) queued again" in run.stdout
    study = optuna.load_study(study_name=search_id, storage=stack.pg_url("optuna"))
    states = [t.state.name for t in study.trials]
    assert states.count("COMPLETE") == 2, states
    assert any(t.user_attrs.get("reset_tune.interrupted") for t in study.trials)
    _assert_no_secret(stack, run.stdout + run.stderr + log.read_text(), "the drivers' output")
