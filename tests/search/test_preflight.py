"""A search checks what it can before creating anything; what fails later ends the parent run
FAILED with the reason, leaves no record `--resume` would pick, and records no secret."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from reset_tune.errors import ConfigError
from reset_tune.search import driver
from reset_tune.search.preflight import (
    SearchFailed,
    check_arguments,
    check_optuna_storage,
    check_tracking_uri,
    check_tune_storage,
)
from reset_tune.search.record import FAILED, RECORD_FILE, find_search, list_searches
from reset_tune.tracking import MemorySink
from reset_tune.tracking.names import FAILED as RUN_FAILED

SPEC = str(Path(__file__).resolve().parents[2] / "search_spaces" / "default.yaml")


def _cluster_refuses(address, state, say) -> contextlib.AbstractContextManager[None]:
    @contextlib.contextmanager
    def refuse() -> Iterator[None]:
        raise SearchFailed("cannot connect to the Ray cluster at 127.0.0.1:1: refused")
        yield  # pragma: no cover - never reached

    return refuse()


def test_a_failure_after_the_record_exists_fails_the_parent_run_and_resume_skips_it(
    tmp_path, monkeypatch
):
    sink = MemorySink()
    monkeypatch.setattr(driver, "_ray_connection", _cluster_refuses)
    options = driver.SearchOptions(state=tmp_path / "state", tracking=sink)
    with pytest.raises(SearchFailed, match="cannot connect"):
        driver.run_search(SPEC, options)

    (record,) = list_searches(tmp_path / "state")
    assert record.status == FAILED
    (parent,) = [run for run in sink.runs.values() if run.parent_run_id is None]
    assert parent.status == RUN_FAILED
    assert "cannot connect to the Ray cluster" in (parent.failure_reason or "")
    with pytest.raises(ConfigError, match="no search .*to resume"):
        find_search(tmp_path / "state", None)


def test_the_record_keeps_the_tracking_uri_with_its_password_masked(tmp_path, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.setattr(driver, "_ray_connection", _cluster_refuses)
    monkeypatch.setattr(driver, "MlflowSink", lambda *args, **kwargs: MemorySink())
    uri = "http://alice:hunter2@127.0.0.1:5000"
    options = driver.SearchOptions(state=tmp_path / "state", mlflow_uri=uri)
    with pytest.raises(SearchFailed):
        driver.run_search(SPEC, options)
    (record,) = list_searches(tmp_path / "state")
    text = (record.path / RECORD_FILE).read_text()
    assert "hunter2" not in text
    assert json.loads(text)["tracking_uri"] == "http://alice:***@127.0.0.1:5000"


def test_a_masked_recorded_uri_is_asked_for_again_on_resume(tmp_path):
    record = driver.SearchRecord(
        search_id="s-1",
        experiment_name="s",
        spec={},
        spec_source="s.yaml",
        spec_text="",
        tracking_uri="http://alice:***@host:5000",
        optuna_storage="sqlite:///x.db",
        target_trials=1,
        tracking_explicit=True,
    )
    with pytest.raises(ConfigError, match="give that --mlflow-uri again"):
        driver._recorded_uri(record, driver.SearchOptions(state=tmp_path, resume=True))


def test_nothing_is_created_when_the_data_are_missing(tmp_path):
    spec = tmp_path / "missing-matrix.yaml"
    spec.write_text(
        Path(SPEC).read_text().replace("symmetric:0.4", f"matrix:{tmp_path / 'nope.npy'}")
    )
    state = tmp_path / "state"
    with pytest.raises(Exception, match="does not exist"):
        driver.run_search(str(spec), driver.SearchOptions(state=state, tracking=MemorySink()))
    assert not state.exists()


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"trials": 0}, r"trials must be at least 1, got 0 \(--trials\)"),
        ({"max_failures": -1}, r"max_failures must be at least 0, got -1 \(--max-failures\)"),
        ({"checkpoint_every": True}, "checkpoint_every must be an integer"),
    ],
)
def test_the_cli_and_the_api_share_one_message_per_mistake(kwargs, message, tmp_path, capsys):
    from reset_tune.cli.main import main

    arguments = {"trials": None, "max_failures": 2, "checkpoint_every": 5, **kwargs}
    with pytest.raises(ConfigError, match=message):
        check_arguments(SPEC, resume=False, search_id=None, **arguments)
    if isinstance(kwargs.get("checkpoint_every"), bool):
        return  # not expressible on the command line
    flag, value = next(iter(kwargs.items()))
    code = main(
        ["search", SPEC, "--state-dir", str(tmp_path), f"--{flag.replace('_', '-')}", str(value)]
    )
    assert code == 2
    assert capsys.readouterr().err.strip().endswith(message.replace("\\", ""))


@pytest.mark.parametrize(
    ("check", "value", "error"),
    [
        (check_optuna_storage, "postgresql+nosuchdriver://u@h/db", ConfigError),
        (check_optuna_storage, "mysql://u:pw@127.0.0.1:1/db", (ConfigError, SearchFailed)),
        (check_tune_storage, "", ConfigError),
        (check_tracking_uri, "databricks-typo", ConfigError),
        (check_tracking_uri, "https://", ConfigError),
    ],
)
def test_each_store_check_refuses_a_bad_value_in_one_line(check, value, error):
    kwargs = {"explicit": True} if check is check_optuna_storage else {}
    with pytest.raises(error) as raised:
        check(value, **kwargs)
    assert len(str(raised.value).splitlines()) == 1
    assert "pw@" not in str(raised.value)


@pytest.mark.parametrize(
    "value", ["http://127.0.0.1:5000", "https://mlflow.example.com", "./mlruns", "databricks"]
)
def test_good_tracking_uris_pass(value, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    check_tracking_uri(value)
    assert list(tmp_path.iterdir()) == []  # checking creates nothing


_JOIN_FROM_ANOTHER_STATE = """
import sys, time
from pathlib import Path
from reset_tune.search.driver import _ray_connection
started = time.monotonic()
with _ray_connection(sys.argv[1], Path(sys.argv[2]), print):
    import ray
    print("nodes", len(ray.nodes()), "after", round(time.monotonic() - started, 1), "s")
"""


@pytest.mark.integration
def test_a_loopback_only_head_of_another_state_directory_is_joined_in_seconds(
    shared_stack, tmp_path
):
    from reset_tune.search.ray_auth import head_listens_on_loopback_only

    stack = shared_stack.ensure().local
    assert stack is not None
    assert head_listens_on_loopback_only(stack.gcs_address) is True
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("RAY_ADDRESS", "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "RAY_AUTH_MODE")
    }
    # `localhost:PORT` from a state directory that knows no stack: before the fix Ray dialled
    # the machine's routable address for minutes.
    address = stack.gcs_address.replace("127.0.0.1", "localhost")
    done = subprocess.run(
        [sys.executable, "-c", _JOIN_FROM_ANOTHER_STATE, address, str(tmp_path / "other")],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert "nodes 1" in done.stdout
