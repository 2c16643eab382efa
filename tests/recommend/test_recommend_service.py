"""History read from a real MLflow server (fabricated, incomplete and corrupt searches), and
`reset-tune recommend` end to end after a tiny real search."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from reset_tune.cli.main import main
from reset_tune.config import TrainConfig
from reset_tune.recommend import read_history, recommend
from reset_tune.recommend.history import DESCRIPTION_ARTIFACT, SettingDescription, _past_search
from reset_tune.tracking import find_search_runs, names, string_params
from reset_tune.tracking.queries import read_artifact_text
from reset_tune.tracking.server import start_local_server

from .fabricate import description

pytestmark = pytest.mark.integration  # a real MLflow server, and the session's Ray cluster

CLI = [sys.executable, "-m", "reset_tune.cli.main"]
ENV = {**os.environ, "RAY_AUTH_MODE": "disabled", "PYTHONUNBUFFERED": "1"}
ENV.pop("RAY_ADDRESS", None)
ENV.pop("MLFLOW_TRACKING_URI", None)


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    local = start_local_server(tmp_path_factory.mktemp("mlflow"))
    yield local
    local.stop()


@pytest.fixture(scope="module")
def client(server):
    from mlflow import MlflowClient

    return MlflowClient(tracking_uri=server.uri)


def _search(client, experiment_id, name, trials, *, status=names.FINISHED):
    parent = client.create_run(
        experiment_id, run_name=name,
        tags={names.KIND: names.KIND_SEARCH, names.SEARCH_ID: name},
    )  # fmt: skip
    client.log_param(parent.info.run_id, "objective", "val_acc")
    for i, (params, objective, test_acc, *tags) in enumerate(trials):
        child = client.create_run(
            experiment_id, run_name=f"trial-{i:04d}",
            tags={names.KIND: names.KIND_TRIAL, names.MLFLOW_PARENT_RUN_ID: parent.info.run_id,
                  **(tags[0] if tags else {})},
        )  # fmt: skip
        from mlflow.entities import Param

        client.log_batch(
            child.info.run_id,
            params=[Param(k, v) for k, v in string_params(params).items()],
        )
        client.log_metric(child.info.run_id, "objective", objective)
        client.log_metric(child.info.run_id, "test/acc", test_acc)
        client.set_terminated(child.info.run_id, names.FINISHED)
    if status != "RUNNING":
        client.set_terminated(parent.info.run_id, status)
    return parent.info.run_id


def _config(**changes):
    return TrainConfig(dataset="digits", noise="symmetric:0.4", **changes).to_dict()


def test_a_raced_search_is_read_by_configuration(server, client):
    # Seed runs of one configuration are one configuration (means over its seeds), and the
    # incumbent raced on 4 seeds outranks a challenger rejected after one lucky seed.
    experiment = client.create_experiment("fabricated-race")

    def seed_run(label, seed, objective, test_acc, **changes):
        tags = {names.CONFIGURATION: label, names.RACE_SEED: str(seed)}
        return (_config(seed=seed, **changes), objective, test_acc, tags)

    resetting = {"reset_prob": 0.004, "reset_layers": "head"}
    _search(client, experiment, "raced", [
        *(seed_run("trial-0001", s, 0.50, 0.80 + 0.01 * s, reset_prob=0.0) for s in range(4)),
        *(seed_run("trial-0002", s, o, 0.86, **resetting) for s, o in enumerate(
            [0.55, 0.57, 0.53, 0.55])),
        seed_run("trial-0003", 0, 0.62, 0.78, reset_prob=0.02, reset_layers="all"),
    ])  # fmt: skip

    [parent] = [p for p in find_search_runs(server.uri) if p.run_name == "raced"]
    search = _past_search(server.uri, parent)
    client.delete_experiment(experiment)  # the other tests read the whole server's history
    assert search.best_reset.name == "trial-0002" and search.best_reset.n_seeds == 4
    assert search.best_reset.objective == pytest.approx(0.55)
    assert search.best_baseline.test_acc == pytest.approx(0.815)  # mean over its 4 seeds
    assert search.gain == pytest.approx(0.86 - 0.815)
    assert search.trials == 3  # configurations, not seed runs
    assert search.compute_steps == 9 * _config()["steps"]


def test_history_reads_usable_searches_and_explains_the_rest(server, client):
    experiment = client.create_experiment("fabricated-history")
    good = _search(client, experiment, "good", [
        (_config(reset_prob=0.0), 0.50, 0.80),
        (_config(reset_prob=0.004, reset_layers="head"), 0.56, 0.86),
        ({**_config(reset_prob=0.01), "reset_prob": "abc"}, 0.90, 0.99),  # corrupt: ignored
    ])  # fmt: skip
    client.log_text(good, description().to_json(), DESCRIPTION_ARTIFACT)
    _search(client, experiment, "unfinished", [(_config(reset_prob=0.0), 0.5, 0.8)],
            status="RUNNING")  # fmt: skip
    _search(client, experiment, "one-arm", [(_config(reset_prob=0.01), 0.5, 0.8)])
    _search(client, experiment, "all-corrupt", [({"reset_prob": "x", "lr": "y"}, 0.5, 0.8)])
    missing = str(Path(server.state_dir) / "no-such-data")
    _search(client, experiment, "no-data", [
        (TrainConfig(dataset="cifar10", data_root=missing, reset_prob=0.0).to_dict(), 0.5, 0.8),
        (TrainConfig(dataset="cifar10", data_root=missing, reset_prob=0.01).to_dict(), 0.6, 0.9),
    ])  # fmt: skip

    history = read_history(server.uri)

    assert [s.name for s in history.searches] == ["good"]
    search = history.searches[0]
    assert search.gain == pytest.approx(0.06)
    assert search.resetting_won and search.best_reset.config["reset_layers"] == "head"
    assert search.description == SettingDescription.from_json(description().to_json())
    reasons = dict(history.skipped)
    assert "did not finish" in reasons["unfinished"]
    assert "no finished r = 0 trial" in reasons["one-arm"]
    assert "no finished trial with valid parameters" in reasons["all-corrupt"]
    assert "cannot be loaded here" in reasons["no-data"]

    # The logic runs on it, and a recommendation logs one run in `recommendations`.
    answer = recommend(
        TrainConfig(dataset="digits", noise="symmetric:0.4", steps=600, patience=100,
                    batch_size=16, device="cpu"),
        tracking_uri=server.uri, history=history,
    )  # fmt: skip
    assert answer.run_id is not None
    run = client.get_run(answer.run_id)
    assert run.data.tags[names.KIND] == names.KIND_RECOMMENDATION
    assert client.get_experiment(run.info.experiment_id).name == "recommendations"
    assert float(run.data.params["recommended.reset_prob"]) == pytest.approx(answer.reset_prob)
    logged = json.loads(read_artifact_text(server.uri, answer.run_id, "recommendation.json"))
    assert logged["recommendation"]["reset_prob"] == pytest.approx(answer.reset_prob)
    # The verdict is the same in the params, the metrics, the JSON and the table.
    assert run.data.params["verdict"] == answer.verdict == logged["recommendation"]["verdict"]
    assert run.data.params["resetting"] == str(answer.combined.resetting)
    assert run.data.metrics["recommended/resetting"] == float(answer.combined.resetting)
    assert run.data.metrics["probe/memorised"] == float(answer.memorised)
    table = read_artifact_text(server.uri, answer.run_id, "recommendation.txt")
    first = table.splitlines()[0]
    assert first.startswith("verdict ") and f" resetting {answer.verdict}: " in first
    assert [e["name"] for e in logged["evidence"]] == [e.name for e in answer.evidence]


def test_damaged_and_stale_cached_descriptions_are_computed_again(server, client):
    experiment = client.create_experiment("damaged-cache")
    config = dict(dataset="digits", noise="symmetric:0.5", steps=600, patience=100,
                  batch_size=16, device="cpu")  # fmt: skip
    trials = [
        (TrainConfig(reset_prob=0.0, **config).to_dict(), 0.5, 0.8),
        (TrainConfig(reset_prob=0.01, **config).to_dict(), 0.6, 0.85),
    ]
    damaged = _search(client, experiment, "damaged", trials)
    client.log_text(damaged, "{not json", DESCRIPTION_ARTIFACT)
    stale = _search(client, experiment, "stale", trials)
    older = json.loads(description().to_json())
    older["version"] -= 1  # well-formed, but from an older release
    client.log_text(stale, json.dumps(older), DESCRIPTION_ARTIFACT)

    said = []
    history = read_history(server.uri, say=said.append)

    for name, run_id in (("damaged", damaged), ("stale", stale)):
        search = next(s for s in history.searches if s.name == name)
        assert any(f"profiling past search {name}" in line for line in said)
        assert search.description.probe.config["batch_size"] == 16
        cached = read_artifact_text(server.uri, run_id, DESCRIPTION_ARTIFACT)
        assert SettingDescription.from_json(cached) == search.description


def _cli(*args: str, timeout: float = 420) -> subprocess.CompletedProcess:
    return subprocess.run([*CLI, *args], capture_output=True, text=True, env=ENV, timeout=timeout)


TINY = {
    "description": "tiny search for the recommend end-to-end test",
    "train": {"dataset": "digits", "noise": "symmetric:0.5", "model": "cnn", "steps": 500,
              "eval_every": 25, "patience": 100, "batch_size": 16, "device": "cpu"},
    "objective": "val_acc", "trials": 2, "concurrency": 2, "seeds": [0],
    "resources": {"cpus": 1, "gpus": 0}, "scheduler": "none",
    "sampler": {"type": "tpe", "seed": 0, "startup_trials": 2},
    "params": {"reset_prob": {"type": "loguniform", "low": 0.002, "high": 0.02,
                              "off_arm": True}},
}  # fmt: skip


def test_recommend_end_to_end_after_a_tiny_real_search(
    server, client, ray_cluster, tmp_path, capsys, monkeypatch
):
    spec = tmp_path / "tiny.yaml"
    spec.write_text(yaml.safe_dump(TINY))
    state = str(tmp_path / "state")
    # On the session's two-node cluster (tests/conftest.py) rather than a Ray of its own.
    done = _cli("search", str(spec), "--address", ray_cluster, "--mlflow-uri", server.uri,
                "--state-dir", state, "--json")  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    search_id = json.loads(done.stdout)["search_id"]

    written = tmp_path / "confirm.yaml"
    args = ["recommend", "--dataset", "digits", "--noise", "symmetric:0.5", "--batch-size", "16",
            "--steps", "500", "--patience", "100", "--eval-every", "25", "--device", "cpu",
            "--mlflow-uri", server.uri, "--state-dir", state]  # fmt: skip
    answered = _cli(*args, "--json", "--write-spec", str(written))
    assert answered.returncode == 0, answered.stderr[-3000:]
    payload = json.loads(answered.stdout)
    rec = payload["recommendation"]
    evidence = {e["name"]: e for e in payload["evidence"]}
    # The tiny search is the same setting, so it is the strongest evidence; its baseline trial
    # probed exactly this configuration on the same data, so no second probe ran.
    assert search_id in evidence and evidence[search_id]["weight"] == pytest.approx(1.0)
    assert any(f"past search {search_id}" in note for note in payload["notes"]), payload["notes"]
    assert "probing its dynamics" not in answered.stderr, answered.stderr[-2000:]
    memorisation = payload["probe"]["memorisation"]
    assert memorisation["checked"]
    if memorisation["seen"]:  # history decides, as before
        assert rec["basis"].startswith("history")
        assert rec["resetting"] == (rec["expected_gain"] > 0)
        assert rec["verdict"] == ("helps" if rec["resetting"] else "does not help")
    else:  # only history that won by a margin turns resetting on
        margin = rec["expected_gain"] > 0 and rec["probability_of_gain"] >= 0.9
        assert rec["resetting"] == margin
        assert rec["verdict"] == ("helps" if margin else "cannot act")
    assert payload["profile"]["noise_estimate"]["true_rate"] is not None
    assert payload["probe"]["figures"]["peclet"] is not None
    # Logged: a run in `recommendations`, and the past search's description cached on its run.
    run = client.get_run(payload["mlflow"]["run_id"])
    assert run.data.params["recommended.reset_prob"] == str(rec["reset_prob"])
    assert run.data.params["verdict"] == rec["verdict"]
    assert f"# Verdict: resetting {rec['verdict']} (" in written.read_text()
    parent = client.get_run(evidence[search_id]["run_id"])
    assert read_artifact_text(server.uri, parent.info.run_id, DESCRIPTION_ARTIFACT) is not None

    # The written spec is a valid search whose first trials are the recommendation and r = 0.
    from reset_tune.search.space import to_trial_params
    from reset_tune.search.spec import load_spec

    confirm = load_spec(written)
    first = confirm.first_trials
    assert {first[0]["reset_prob"], first[1]["reset_prob"]} >= {0.0}
    for i, trial in enumerate(first):
        to_trial_params(confirm, trial, where=f"first_trials[{i}]")
    r_range = confirm.params["reset_prob"]
    recommended = next(t for t in first if t["reset_prob"] > 0)["reset_prob"]
    assert r_range.low <= recommended <= r_range.high

    # The table form, and bad input: one line each, non-zero exit, nothing written.
    table = _cli(*args, "--no-log")
    assert table.returncode == 0 and "reset_prob" in table.stdout and search_id[:20] in table.stdout
    first = table.stdout.splitlines()[0]
    assert first.startswith("verdict ") and f" resetting {rec['verdict']}: " in first
    # Usage errors in-process, through the `main` the console script calls.
    for key in ("RAY_ADDRESS", "MLFLOW_TRACKING_URI"):
        monkeypatch.delenv(key, raising=False)  # as in the subprocesses' environment
    capsys.readouterr()
    assert main([*args, "--write-spec", str(written)]) == 2
    err = capsys.readouterr().err
    assert "exists" in err and err.strip().count("\n") == 0
    # An MLflow server that does not answer: the answer comes without history, with a note (on
    # the same small setting: a default-sized probe would train for minutes).
    dead = [*args[: args.index("--mlflow-uri")], "--mlflow-uri", "http://127.0.0.1:9"]
    assert main([*dead, "--json", "--no-log"]) == 0
    captured = capsys.readouterr()
    assert "no MLflow server answers at http://127.0.0.1:9" in captured.err
    assert any("did not answer" in note for note in json.loads(captured.out)["notes"])
    assert main(["recommend", "--no-history", "--no-log"]) == 2
    assert "--dataset" in capsys.readouterr().err
