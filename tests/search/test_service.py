"""The search service end to end: a real two-node Ray cluster and a real `mlflow server`, both on
127.0.0.1 and stopped by process id; `reset-tune search` / `sync` run as the user runs them."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import torch
import yaml

from reset_tune import names
from reset_tune.cli.main import main
from reset_tune.config import TrainConfig
from reset_tune.engine import train
from reset_tune.search.record import find_search
from reset_tune.search.spec import load_spec
from reset_tune.search.trainable import evaluation_rows
from reset_tune.search.trial_run import SUMMARY_OBJECTIVE, SUMMARY_TEST_ACC
from reset_tune.search.tune_files import read_experiment
from reset_tune.tracking import find_search_runs, metric_history, start_local_server, trial_runs
from reset_tune.tracking.server import stop_process_group

CLI = [sys.executable, "-m", "reset_tune.cli.main"]
ENV = {**os.environ, "RAY_AUTH_MODE": "disabled", "PYTHONUNBUFFERED": "1"}
ENV.pop("RAY_ADDRESS", None)
ENV.pop("MLFLOW_TRACKING_URI", None)


# The tests that interrupt a search train long enough to be interrupted mid-trial. A small
# memorisation probe (64 wrong-labelled samples per evaluation instead of all ~580) takes ~25 % off
# their training time; what they check (where a run resumes, and its result) does not depend on it.
INTERRUPTED_TRAIN = {"model": "cnn", "memorisation_samples": 64}


@pytest.fixture
def cluster(ray_cluster):
    """The session's two-node Ray cluster (tests/conftest.py): two nodes of 1 CPU each."""
    return ray_cluster


def _spec(tmp_path: Path, name: str, **changes) -> Path:
    spec = {
        "name": name,
        "train": {
            "dataset": "digits",
            "noise": "symmetric:0.4",
            "model": "mlp",
            "steps": 200,
            "eval_every": 50,
            "device": "cpu",
        },
        "objective": "val_acc",
        "trials": 3,
        "concurrency": 2,
        "seeds": [0],
        "resources": {"cpus": 1, "gpus": 0},
        "sampler": {"type": "tpe", "seed": 0, "startup_trials": 2},
        "params": {
            "reset_prob": {"type": "loguniform", "low": 0.005, "high": 0.05},
            "patience": {"type": "int", "low": 50, "high": 100, "step": 50},
            "lr": {"type": "categorical", "choices": [0.05, 0.1]},
            "batch_size": {"type": "categorical", "choices": [16, 32]},
        },
    }
    for key, value in changes.items():
        if isinstance(value, dict) and isinstance(spec.get(key), dict):
            spec[key] = {**spec[key], **value}
        else:
            spec[key] = value
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


def _search(*args: str, timeout: float = 420) -> subprocess.CompletedProcess:
    return subprocess.run(
        [*CLI, "search", *args], capture_output=True, text=True, env=ENV, timeout=timeout
    )


def _start_search(*args: str, log: Path) -> subprocess.Popen:
    with open(log, "wb") as out:
        return subprocess.Popen(
            [*CLI, "search", *args],
            stdout=out,
            stderr=subprocess.STDOUT,
            env=ENV,
            start_new_session=True,
        )


def _rows(state: Path) -> list[dict]:
    """Every row reported so far by any trial under `state` (a live search's result files)."""
    rows = []
    for results in state.glob("searches/*/tune/*/*/result.json"):
        for line in results.read_text().splitlines():
            try:
                rows.append(json.loads(line))
            except ValueError:
                pass
    return rows


def _wait_for(predicate, what: str, timeout_s: float = 240, process=None, log=None):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        if process is not None and process.poll() is not None:
            pytest.fail(f"the search ended before {what}:\n{log.read_text()[-3000:]}")
        time.sleep(0.2)
    pytest.fail(f"timed out waiting for {what}")


@pytest.mark.integration
def test_search_on_two_nodes_records_every_trial_nested_in_mlflow(cluster, mlflow_server, tmp_path):
    lr = {"type": "categorical", "choices": [0.05, 0.1, 100.0]}
    spec = _spec(tmp_path, "two-nodes", params={"lr": lr})
    seeds = tmp_path / "seeds.yaml"
    # Known configurations, so the outcome is certain: one of them diverges (lr 100) and must
    # fail alone, with its reason, while the search goes on.
    seeds.write_text(
        yaml.safe_dump(
            [
                {"reset_prob": 0, "lr": 100.0, "batch_size": 16},
                {"reset_prob": 0.02, "patience": 50, "lr": 0.1, "batch_size": 16},
                {"reset_prob": 0, "lr": 0.05, "batch_size": 32},
            ]
        )
    )
    state = tmp_path / "state"
    done = _search(
        str(spec),
        "--address", cluster,
        "--mlflow-uri", mlflow_server.uri,
        "--state-dir", str(state),
        "--seed-configs", str(seeds),
        # No retries of the diverging trial: they would hold its node while the other trial
        # finishes, and on a loaded machine the third could then run on the same node.
        "--max-failures", "0",
        "--json",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[:6000]
    summary = json.loads(done.stdout)
    assert summary["counts"] == {"complete": 2, "failed": 1}, summary["counts"]
    failed = [t for t in summary["trials"] if t["outcome"] == "failed"]
    assert failed[0]["config"]["lr"] == 100.0 and "diverged" in failed[0]["failure_reason"]
    complete = [t for t in summary["trials"] if t["outcome"] == "complete"]
    best = max(complete, key=lambda t: t["objective"])
    assert summary["best"]["tune_trial_id"] == best["tune_trial_id"]
    assert summary["best_config"]["lr"] == best["config"]["lr"]

    # Trials ran on both nodes (each node has one CPU, each trial needs one, two run at once).
    search_dir = Path(summary["search_dir"])
    trials = read_experiment(search_dir / "tune" / "segment-1")
    assert len({row["node_id"] for t in trials for row in t.rows}) == 2

    # MLflow: one parent run for the search, one nested child run per trial.
    parents = [r for r in find_search_runs(mlflow_server.uri, "two-nodes")]
    assert [p.tags["reset_tune.search_id"] for p in parents] == [summary["search_id"]]
    parent = parents[0]
    assert parent.status == "FINISHED"
    assert parent.metrics[SUMMARY_OBJECTIVE] == pytest.approx(best["objective"])
    children = trial_runs(mlflow_server.uri, parent.run_id)
    assert len(children) == 3
    statuses = sorted(c.status for c in children)
    assert statuses == ["FAILED", "FINISHED", "FINISHED"]
    for child in children:
        assert child.parent_run_id == parent.run_id
        assert child.tags["reset_tune.dataset"] == "digits"
        assert child.tags["reset_tune.noise_kind"] == "symmetric"
        assert child.tags["reset_tune.data_fingerprint"]
        # The searched parameters and the fixed ones people filter on; an r = 0 trial has no
        # reset settings (patience is searched, but means nothing without resetting).
        for key in ("reset_prob", "lr", "batch_size", "dataset", "noise", "model", "seed"):
            assert key in child.params
        assert ("patience" in child.params) == (float(child.params["reset_prob"]) > 0)
        if child.status == "FINISHED":
            history = metric_history(mlflow_server.uri, child.run_id, names.VAL_ACC)
            assert [step for step, _ in history] == [50, 100, 150, 200]
            assert child.metrics[SUMMARY_TEST_ACC] > 0.5
        else:
            assert "diverged" in child.tags["reset_tune.failure_reason"]
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=mlflow_server.uri)
    parent_files = {f.path for f in client.list_artifacts(parent.run_id)}
    assert {"comparison.png", "best_config.json", "spec.yaml", "importances.json"} <= parent_files
    finished = next(c for c in children if c.status == "FINISHED")
    assert {"curves.png", "config.json"} <= {f.path for f in client.list_artifacts(finished.run_id)}


def _train_on_one_thread(config: TrainConfig):
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as in the trial (1 CPU): CPU float sums depend on thread count
    try:
        return train(config)
    finally:
        torch.set_num_threads(threads)


@pytest.mark.integration
def test_a_killed_worker_resumes_from_its_checkpoint_with_the_same_result(
    cluster, mlflow_server, tmp_path
):
    steps = 3000  # long enough that the kill lands mid-trial on a faster machine too
    spec = _spec(
        tmp_path,
        "killed-worker",
        train={**INTERRUPTED_TRAIN, "steps": steps},
        trials=1,
        concurrency=1,
    )
    chosen = {"reset_prob": 0.02, "patience": 50, "lr": 0.1, "batch_size": 16}
    seeds = tmp_path / "seeds.yaml"
    seeds.write_text(yaml.safe_dump([chosen]))
    state = tmp_path / "state"
    log = tmp_path / "search.log"
    # The uninterrupted run of the same configuration, trained here while the search runs (on
    # 2 cores the two overlap; one after the other cost ~20 s more). Checked below to be the
    # configuration the trial ran.
    config = load_spec(spec).config_for(chosen)
    replay = ThreadPoolExecutor(max_workers=1)
    direct_run = replay.submit(_train_on_one_thread, config)
    search = _start_search(
        str(spec),
        "--address", cluster,
        "--mlflow-uri", mlflow_server.uri,
        "--state-dir", str(state),
        "--seed-configs", str(seeds),
        "--checkpoint-every", "2",
        "--json",
        log=log,
    )  # fmt: skip
    try:
        row = _wait_for(
            lambda: next((r for r in _rows(state) if r.get("step", 0) >= 300), None),
            "the trial to pass step 300",
            process=search,
            log=log,
        )
        assert row["step"] < steps, "the trial finished before it could be interrupted"
        os.kill(int(row["pid"]), signal.SIGKILL)
        search.wait(timeout=420)
    finally:
        if search.poll() is None:
            stop_process_group(search.pid)
        replay.shutdown(wait=True)
    output = log.read_text()
    assert search.returncode == 0, output[-3000:]
    summary = json.loads(output[output.index("{\n") :])
    assert summary["counts"] == {"complete": 1}

    # A new worker took the trial over and went on from a checkpoint, not from step 50.
    trial = read_experiment(Path(summary["search_dir"]) / "tune" / "segment-1")[0]
    evaluations = [r for r in trial.rows if "step" in r and "objective" not in r]
    killed = int(row["pid"])
    after = [int(r["step"]) for r in evaluations if r["pid"] != killed]
    assert after and min(after) > 50, [(r["pid"], r["step"]) for r in evaluations]
    reported = [int(r["step"]) for row in trial.rows for r in evaluation_rows(row)]
    assert reported.count(50) == 1

    # ... and ended exactly where an uninterrupted run of the same configuration ends.
    assert TrainConfig.from_dict(summary["best"]["config"]) == config
    direct = direct_run.result()
    final = trial.final_row
    assert final[names.TEST_ACC] == direct.test_acc
    assert final[names.BEST_VAL_ACC] == direct.best_val_acc
    assert final[names.RESET_COUNT] == direct.num_resets > 0


@pytest.mark.integration
def test_resume_after_the_driver_was_killed(cluster, mlflow_server, tmp_path):
    spec = _spec(
        tmp_path,
        "killed-driver",
        train={**INTERRUPTED_TRAIN, "steps": 2000},
        trials=2,
        concurrency=1,
    )
    state = tmp_path / "state"
    log = tmp_path / "search.log"
    args = ["--address", cluster, "--mlflow-uri", mlflow_server.uri, "--state-dir", str(state)]
    driver = _start_search(str(spec), *args, "--checkpoint-every", "2", log=log)
    try:
        _wait_for(
            lambda: any(r.get("step", 0) >= 300 for r in _rows(state)),
            "the first trial to pass step 300",
            process=driver,
            log=log,
        )
    finally:
        os.killpg(driver.pid, signal.SIGKILL)
        driver.wait()
    search_id = find_search(state, None).search_id

    resumed = _search(str(spec), *args, "--resume", "--json")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "continue from a checkpoint" in resumed.stderr
    summary = json.loads(resumed.stdout)
    assert summary["search_id"] == search_id
    assert summary["counts"] == {"complete": 2}
    # The interrupted trial went on from its checkpoint: its new run never reported step 50.
    second = read_experiment(Path(summary["search_dir"]) / "tune" / "segment-2")
    first_steps = [int(t.evaluation_rows[0]["step"]) for t in second]
    assert max(first_steps) >= 200, first_steps

    parent = next(r for r in find_search_runs(mlflow_server.uri, "killed-driver"))
    children = trial_runs(mlflow_server.uri, parent.run_id)
    assert sorted(c.status for c in children) == ["FINISHED", "FINISHED", "KILLED"]
    assert parent.status == "FINISHED"

    # --resume of a finished search with a higher target adds trials to the same study.
    more = _search(*args, "--resume", search_id, "--trials", "3", "--json")
    assert more.returncode == 0, more.stderr[-3000:]
    assert json.loads(more.stdout)["counts"] == {"complete": 3}


@pytest.mark.integration
def test_a_tracking_outage_loses_nothing_after_sync(cluster, tmp_path, capsys):
    server = start_local_server(tmp_path / "mlflow")
    port = server.port
    spec = _spec(tmp_path, "outage", trials=3, train={"steps": 300})
    state = tmp_path / "state"
    log = tmp_path / "search.log"
    args = ["--address", cluster, "--mlflow-uri", server.uri, "--state-dir", str(state)]
    search = _start_search(str(spec), *args, "--json", log=log)
    try:
        _wait_for(
            lambda: find_search_runs(server.uri, "outage"),
            "the parent run",
            process=search,
            log=log,
        )
        server.stop()
        search.wait(timeout=420)
    finally:
        if search.poll() is None:
            stop_process_group(search.pid)
    output = log.read_text()
    assert search.returncode == 0, output[-3000:]
    search_id = json.loads(output[output.index("{\n") :])["search_id"]
    # What the server could not take waited on disk.
    assert any((state / "searches" / search_id / "outbox").iterdir())

    server = start_local_server(tmp_path / "mlflow", port=port)
    try:
        # `sync` in-process (the `main` the console script calls): no torch/MLflow import again.
        sync = ["sync", search_id, "--mlflow-uri", server.uri, "--state-dir", str(state)]
        capsys.readouterr()
        code = main(sync)
        assert code == 0, capsys.readouterr().err[-3000:]
        parent = next(r for r in find_search_runs(server.uri, "outage"))
        assert parent.status == "FINISHED"
        children = trial_runs(server.uri, parent.run_id)
        assert len(children) == 3 and all(c.status == "FINISHED" for c in children)
        for child in children:
            history = metric_history(server.uri, child.run_id, names.VAL_LOSS)
            assert [s for s, _ in history] == [50, 100, 150, 200, 250, 300]
            assert SUMMARY_TEST_ACC in child.metrics
        capsys.readouterr()
        code = main(sync)
        again = capsys.readouterr().out
        assert code == 0 and "3 already complete" in again, again
    finally:
        server.stop()


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"epochs": 3}, "epochs"),
        ({"params": {"lr": {"type": "loguniform", "low": 0.1, "high": 0.01}}}, "params.lr"),
        (
            {"params": {"reset_prob": {"type": "loguniform", "low": 0.01, "high": 2.0}}},
            "params.reset_prob",
        ),
        (
            {"params": {"reset_layers": {"type": "categorical", "choices": ["head", "block9"]}}},
            "block9",
        ),
    ],
    ids=["unknown-key", "empty-range", "r-outside-0-1", "unknown-layer-group"],
)
def test_bad_specs_stop_before_anything_starts(tmp_path, capsys, change, message):
    spec = _spec(tmp_path, "bad")
    data = yaml.safe_load(spec.read_text())
    for key, value in change.items():
        if key == "params":
            data["params"].update(value)
        else:
            data[key] = value
    spec.write_text(yaml.safe_dump(data))
    state = tmp_path / "state"
    # In-process: the same `main` the console script calls (one subprocess would cost ~5 s).
    assert main(["search", str(spec), "--state-dir", str(state)]) == 2
    stderr = capsys.readouterr().err
    lines = stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0] and str(spec) in lines[0], stderr
    assert not (state / "searches").exists()  # no search record, no Ray, no MLflow server
    assert not (state / "mlflow").exists()


@pytest.mark.integration
def test_asha_stops_poor_trials_and_they_count_as_pruned(cluster, tmp_path):
    import optuna

    from reset_tune.search.driver import SearchOptions, run_search
    from reset_tune.tracking import MemorySink

    spec = _spec(
        tmp_path,
        "asha",
        trials=3,
        concurrency=1,
        train={"steps": 400},
        scheduler={"type": "asha", "grace_period": 100, "reduction_factor": 2},
        params={"lr": {"type": "categorical", "choices": [0.0001, 0.1]}},
    )
    seeds = tmp_path / "seeds.yaml"
    # One trial that learns, then two that cannot (lr 1e-4): ASHA must stop those at a rung.
    good = {"reset_prob": 0, "lr": 0.1, "batch_size": 16}
    poor = {"reset_prob": 0, "lr": 0.0001, "batch_size": 16}
    seeds.write_text(yaml.safe_dump([good, poor, {**poor, "batch_size": 32}]))
    sink = MemorySink()
    state = tmp_path / "state"
    outcome = run_search(
        spec,
        SearchOptions(
            state=state, address=cluster, seed_configs=str(seeds), tracking=sink, stream=sys.stderr
        ),
    )
    report = outcome.report
    assert report.counts() == {"complete": 1, "pruned": 2}
    assert report.best.config["lr"] == 0.1
    for trial in report.trials:
        if trial.outcome == "pruned":
            assert trial.steps_reported < 400 // 50
    study = optuna.load_study(
        study_name=outcome.record.search_id, storage=outcome.record.optuna_storage
    )
    states = sorted(t.state.name for t in study.get_trials())
    assert states == ["COMPLETE", "PRUNED", "PRUNED"]
    runs = [r for r in sink.runs.values() if r.kind == "trial"]
    assert sorted(r.status for r in runs) == ["FINISHED", "KILLED", "KILLED"]


def _racing_spec(tmp_path: Path, name: str, **changes) -> Path:
    return _spec(tmp_path, name, racing={"max_seeds": 3}, **changes)


@pytest.mark.integration
def test_a_raced_search_ends_with_a_paired_verdict_on_both_incumbents(
    cluster, mlflow_server, tmp_path
):
    import optuna
    from mlflow import MlflowClient

    from reset_tune.search.verdict import WORDS

    spec = _racing_spec(tmp_path, "raced", trials=4, train={"steps": 300})
    seeds = tmp_path / "seeds.yaml"
    # One configuration per arm first, so both arms have an incumbent whatever TPE draws next.
    seeds.write_text(
        yaml.safe_dump(
            [
                {"reset_prob": 0.02, "patience": 50, "lr": 0.1, "batch_size": 16},
                {"reset_prob": 0, "lr": 0.1, "batch_size": 16},
            ]
        )
    )
    state = tmp_path / "state"
    done = _search(
        str(spec),
        "--address", cluster,
        "--mlflow-uri", mlflow_server.uri,
        "--state-dir", str(state),
        "--seed-configs", str(seeds),
        "--json",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-6000:]
    summary = json.loads(done.stdout)
    assert summary["racing"] is True
    configurations = summary["trials"]
    assert len(configurations) == 4 and all(c["outcome"] == "complete" for c in configurations)
    incumbents = [c for c in configurations if c["race_status"] == "incumbent"]
    assert sorted(c["config"]["reset_prob"] > 0 for c in incumbents) == [False, True]
    for incumbent in incumbents:  # both arms end on every race seed: the verdict is paired
        assert sorted(int(s) for s in incumbent["per_seed"]) == [0, 1, 2]
        assert incumbent["n_seeds"] == 3
    # Every configuration's runs are seed runs on a prefix of the race seeds, one Tune trial each.
    runs = summary["runs"]
    assert len(runs) == sum(c["n_seeds"] for c in configurations)
    for configuration in configurations:
        ran = sorted(r["config"]["seed"] for r in runs if r["label"] in configuration["runs"])
        assert ran == list(range(configuration["n_seeds"]))
    # The configuration's objective is the mean of its seed runs' objectives.
    for incumbent in incumbents:
        values = [r["objective"] for r in runs if r["label"] in incumbent["runs"]]
        assert incumbent["objective"] == pytest.approx(sum(values) / len(values))

    verdict = summary["verdict"]
    assert verdict["word"] in WORDS and verdict["seeds"] == [0, 1, 2]
    resetting = next(c for c in incumbents if c["config"]["reset_prob"] > 0)
    baseline = next(c for c in incumbents if c["config"]["reset_prob"] == 0)
    paired = [
        resetting["per_seed"][s]["objective"] - baseline["per_seed"][s]["objective"]
        for s in resetting["per_seed"]
    ]
    assert verdict["objective"]["mean"] == pytest.approx(sum(paired) / 3)
    assert (
        verdict["objective"]["low"] <= verdict["objective"]["mean"] <= verdict["objective"]["high"]
    )
    assert summary["verdict_line"].startswith("verdict:")

    # Optuna learned one value per configuration: its first-seed objective.
    study = optuna.load_study(
        study_name=summary["search_id"], storage=f"sqlite:///{state}/optuna.db"
    )
    first = {r["label"].split()[0]: r["objective"] for r in runs if r["config"]["seed"] == 0}
    told = sorted(t.value for t in study.get_trials() if t.state.name == "COMPLETE")
    assert told == pytest.approx(sorted(first.values()))

    # MLflow: the verdict on the parent run, every seed run tagged with its configuration.
    parent = next(r for r in find_search_runs(mlflow_server.uri, "raced"))
    assert parent.tags["reset_tune.verdict"] == verdict["word"]
    assert parent.metrics["verdict/n_seeds"] == 3
    assert parent.metrics["verdict/objective_diff"] == pytest.approx(verdict["objective"]["mean"])
    children = trial_runs(mlflow_server.uri, parent.run_id)
    assert len(children) == len(runs)
    for incumbent in incumbents:
        mine = [c for c in children if c.tags["reset_tune.configuration"] == incumbent["label"]]
        assert sorted(c.tags["reset_tune.race_seed"] for c in mine) == ["0", "1", "2"]
        assert {c.params["seed"] for c in mine} == {"0", "1", "2"}
    client = MlflowClient(tracking_uri=mlflow_server.uri)
    assert {"verdict.json", "race.json"} <= {f.path for f in client.list_artifacts(parent.run_id)}


@pytest.mark.integration
def test_an_interrupted_race_resumes_where_it_stopped(cluster, mlflow_server, tmp_path):
    spec = _spec(
        tmp_path,
        "raced-killed",
        train={**INTERRUPTED_TRAIN, "steps": 2000},
        trials=2,
        concurrency=1,
        racing={"max_seeds": 2},
    )
    seeds = tmp_path / "seeds.yaml"
    seeds.write_text(
        yaml.safe_dump(
            [
                {"reset_prob": 0.02, "patience": 50, "lr": 0.1, "batch_size": 16},
                {"reset_prob": 0, "lr": 0.1, "batch_size": 16},
            ]
        )
    )
    state = tmp_path / "state"
    log = tmp_path / "search.log"
    args = ["--address", cluster, "--mlflow-uri", mlflow_server.uri, "--state-dir", str(state)]
    driver = _start_search(
        str(spec), *args, "--seed-configs", str(seeds), "--checkpoint-every", "2", log=log
    )
    try:
        # Both configurations are their arm's incumbent after one seed; the race then tops them
        # up to seed 1. Stop the driver in the middle of that seed run.
        _wait_for(
            lambda: any(r.get("seed") == 1 and r.get("step", 0) >= 300 for r in _rows(state)),
            "a seed-1 run to pass step 300",
            process=driver,
            log=log,
        )
    finally:
        os.killpg(driver.pid, signal.SIGKILL)
        driver.wait()
    record = find_search(state, None)
    stopped = [c["config_id"] for c in record.race["contenders"] if 1 in c["running"]]
    assert len(stopped) == 1, record.race

    resumed = _search(str(spec), *args, "--resume", "--json")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "resuming the race" in resumed.stderr
    summary = json.loads(resumed.stdout)
    assert summary["search_id"] == record.search_id
    configurations = summary["trials"]
    assert len(configurations) == 2  # no configuration was lost or started twice
    assert all(sorted(int(s) for s in c["per_seed"]) == [0, 1] for c in configurations)
    assert summary["verdict"]["seeds"] == [0, 1]
    # The interrupted seed run went on from its checkpoint: its new attempt never reported step 50.
    second = read_experiment(Path(summary["search_dir"]) / "tune" / "segment-2")
    resumed_run = next(t for t in second if t.params.get("race_config") == stopped[0])
    assert int(resumed_run.evaluation_rows[0]["step"]) >= 200
    parent = next(r for r in find_search_runs(mlflow_server.uri, "raced-killed"))
    statuses = sorted(c.status for c in trial_runs(mlflow_server.uri, parent.run_id))
    assert statuses == ["FINISHED"] * 4 + ["KILLED"]
