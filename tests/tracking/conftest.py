"""Fixtures for the tracking tests: a SQLite MLflow store per module, a dead address, and one
search scenario (`scenario.run(sink)`, `scenario.check(client, experiment)`) every sink must
record the same way."""

from __future__ import annotations

import itertools
from types import SimpleNamespace

import pytest

from reset_tune import names as metric_names
from reset_tune.config import TrainConfig
from reset_tune.tracking import config_from_params, names
from reset_tune.tracking.server import free_port
from reset_tune.tracking.sink import TrackingSink

_names = itertools.count()


@pytest.fixture(scope="module")
def sqlite_store(tmp_path_factory):
    """(tracking URI, artifact root) of one SQLite store shared by a module (creating one: ~2 s)."""
    root = tmp_path_factory.mktemp("mlflow-sqlite")
    return f"sqlite:///{root / 'mlflow.db'}", str(root / "artifacts")


@pytest.fixture
def experiment_name(request) -> str:
    """A fresh experiment name per test, so tests sharing a store never see each other's runs."""
    return f"{request.node.name[:60]}-{next(_names)}"


@pytest.fixture
def dead_uri() -> str:
    """An http address on which nothing listens (connections are refused at once)."""
    return f"http://127.0.0.1:{free_port()}"


@pytest.fixture
def client_for():
    from mlflow import MlflowClient

    return lambda uri: MlflowClient(tracking_uri=uri)


STEPS = (50, 100, 150)
PNG = b"\x89PNG\r\n\x1a\n" + bytes(range(256))


def trial_config(index: int) -> dict:
    return TrainConfig(reset_prob=0.0 if index == 0 else 0.01 * index, seed=index).to_dict()


def trial_metrics(index: int, step: int) -> dict[str, float]:
    return {
        metric_names.VAL_ACC: 0.5 + index / 10 + step / 1000,
        metric_names.VAL_LOSS: 2.0 - step / 100,
        metric_names.TRAIN_LOSS: 1.0 / step,
        metric_names.RESET_COUNT: float(index * step // 50),
    }


def run_scenario(sink: TrackingSink) -> dict[str, str]:
    """A search with three trials ending FINISHED, FAILED and KILLED; returns the handles."""
    parent = sink.start_search(
        "search-1",
        params={"num_trials": 3, "objective": "val/acc"},
        tags={names.DATASET: "digits"},
    )
    handles = {"search": parent}
    for index in range(3):
        handle = sink.start_trial(
            parent, index, params=trial_config(index), tags={names.SEED: str(index)}
        )
        handles[f"trial{index}"] = handle
        for step in STEPS:
            sink.log_metrics(handle, [(step, trial_metrics(index, step))])
    sink.finish_trial(
        handles["trial0"],
        names.FINISHED,
        summary_metrics={metric_names.TEST_ACC: 0.91},
        artifacts={"curves.png": PNG, "config.json": '{"lr": 0.05}', "plots/extra.txt": "hi"},
    )
    sink.finish_trial(
        handles["trial1"], names.FAILED, failure_reason="training loss became NaN at step 120"
    )
    sink.finish_trial(handles["trial2"], names.KILLED, summary_metrics={"pruned_at": 150})
    sink.finish_search(
        parent,
        names.FINISHED,
        summary_metrics={"best/val_acc": 0.8},
        artifacts={"spec.yaml": "trials: 3\n"},
    )
    return handles


def check_scenario(client, experiment_name: str) -> None:
    """What `run_scenario` must have left in MLflow."""
    experiment = client.get_experiment_by_name(experiment_name)
    assert experiment is not None
    runs = client.search_runs([experiment.experiment_id], max_results=100)
    by_name = {run.info.run_name: run for run in runs}
    assert sorted(by_name) == ["search-1", "trial-0000", "trial-0001", "trial-0002"]
    parent = by_name["search-1"]
    assert parent.info.status == "FINISHED"
    assert parent.data.tags[names.KIND] == names.KIND_SEARCH
    assert parent.data.tags[names.DATASET] == "digits"
    assert parent.data.params == {"num_trials": "3", "objective": "val/acc"}
    assert parent.data.metrics == {"best/val_acc": 0.8}
    assert names.MLFLOW_PARENT_RUN_ID not in parent.data.tags
    assert [a.path for a in client.list_artifacts(parent.info.run_id)] == ["spec.yaml"]

    statuses = {"trial-0000": "FINISHED", "trial-0001": "FAILED", "trial-0002": "KILLED"}
    for index in range(3):
        run = by_name[f"trial-{index:04d}"]
        tags = run.data.tags
        assert run.info.status == statuses[run.info.run_name]
        assert run.info.end_time is not None
        assert tags[names.MLFLOW_PARENT_RUN_ID] == parent.info.run_id
        assert tags[names.KIND] == names.KIND_TRIAL
        assert tags[names.TRIAL_ID] == str(index)
        assert tags[names.SEARCH_ID] == "search-1"
        assert tags[names.SEED] == str(index)
        # Params are the config's field names with str() values: they rebuild the config.
        config = trial_config(index)
        assert run.data.params == {k: str(v) for k, v in config.items()}
        assert TrainConfig.from_dict(config_from_params(run.data.params)).to_dict() == config
        for key in trial_metrics(index, STEPS[0]):
            history = client.get_metric_history(run.info.run_id, key)
            assert sorted((m.step, m.value) for m in history) == [
                (step, pytest.approx(trial_metrics(index, step)[key])) for step in STEPS
            ], key
    finished = by_name["trial-0000"]
    assert finished.data.metrics[metric_names.TEST_ACC] == pytest.approx(0.91)
    top = sorted(a.path for a in client.list_artifacts(finished.info.run_id))
    assert top == ["config.json", "curves.png", "plots"]
    assert [a.path for a in client.list_artifacts(finished.info.run_id, "plots")] == [
        "plots/extra.txt"
    ]
    local = client.download_artifacts(finished.info.run_id, "curves.png")
    assert open(local, "rb").read() == PNG
    failed = by_name["trial-0001"]
    assert failed.data.tags[names.FAILURE_REASON] == "training loss became NaN at step 120"
    killed = by_name["trial-0002"]
    assert killed.data.metrics["pruned_at"] == 150.0
    # Summary metrics are run-level values: logged once, at step 0 (MLflow charts them as bars).
    assert [
        (m.step, m.value) for m in client.get_metric_history(killed.info.run_id, "pruned_at")
    ] == [(0, 150.0)]


@pytest.fixture
def scenario():
    return SimpleNamespace(
        run=run_scenario,
        check=check_scenario,
        trial_config=trial_config,
        trial_metrics=trial_metrics,
        steps=STEPS,
        png=PNG,
    )
