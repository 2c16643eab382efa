"""Against a real `mlflow server` process on 127.0.0.1: nested runs seen through `queries`,
server reuse and stale server files, replay over HTTP, and an outage in the middle of a search
(server killed by pid, restarted on the same store and port) that loses nothing."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time

import pytest

from reset_tune.tracking import (
    MlflowSink,
    TrackingServerError,
    find_local_server,
    find_search_runs,
    metric_history,
    names,
    replay_outbox,
    resolve_tracking_uri,
    start_local_server,
    trial_runs,
)
from reset_tune.tracking.outbox import Outbox
from reset_tune.tracking.server import SERVER_FILE, pid_alive, stop_process_group

pytestmark = pytest.mark.integration  # real MLflow servers


@pytest.fixture
def server(mlflow_server):
    """The session's MLflow server (tests/conftest.py); each test logs to its own experiment."""
    return mlflow_server


def test_server_answers_and_records_itself(server):
    assert server.started and server.is_running()
    assert server.uri == f"http://127.0.0.1:{server.port}"
    recorded = json.loads((server.state_dir / SERVER_FILE).read_text())
    assert recorded == {
        "pid": server.pid,
        "host": "127.0.0.1",
        "port": server.port,
        "uri": server.uri,
    }
    assert os.getpgid(server.pid) == server.pid  # its own process group, stopped by that id
    assert (server.state_dir / "mlflow.db").exists()


def test_search_runs_are_nested_and_found_by_queries(
    server, scenario, experiment_name, tmp_path, client_for
):
    with MlflowSink(server.uri, experiment_name, outbox_dir=tmp_path / "outbox") as sink:
        handles = scenario.run(sink)
        assert sink.flush(timeout_s=60)
        parent_id = sink.mlflow_run_id(handles["search"])
    scenario.check(client_for(server.uri), experiment_name)

    searches = find_search_runs(server.uri, experiment_name)
    assert [s.run_id for s in searches] == [parent_id]
    assert searches[0].search_id == "search-1" and searches[0].status == "FINISHED"
    assert parent_id in {s.run_id for s in find_search_runs(server.uri)}  # all experiments
    trials = trial_runs(server.uri, parent_id)
    assert [t.run_name for t in trials] == ["trial-0000", "trial-0001", "trial-0002"]
    assert [t.status for t in trials] == ["FINISHED", "FAILED", "KILLED"]
    assert {t.parent_run_id for t in trials} == {parent_id}
    assert [t.trial_id for t in trials] == ["0", "1", "2"]
    assert trials[1].params["reset_prob"] == "0.01"
    history = metric_history(server.uri, trials[2].run_id, "val/acc")
    assert [step for step, _ in history] == list(scenario.steps)
    # Artifacts went through the server's proxy into its artifacts directory (under the
    # experiment's id: other tests share the server).
    experiment = client_for(server.uri).get_experiment_by_name(experiment_name)
    stored = list((server.state_dir / "artifacts" / experiment.experiment_id).rglob("curves.png"))
    assert len(stored) == 1 and stored[0].read_bytes() == scenario.png


def test_running_server_is_reused(server):
    again = start_local_server(server.state_dir)
    assert (again.started, again.pid, again.port) == (False, server.pid, server.port)
    assert find_local_server(server.state_dir).pid == server.pid
    with pytest.raises(TrackingServerError, match="already runs at"):
        start_local_server(server.state_dir, port=server.port + 1)
    assert server.is_running()


def test_tracking_uri_explicit_then_environment_then_local_server(server, monkeypatch):
    monkeypatch.setenv(names.TRACKING_URI_ENV, "http://tracking.example:5000")
    assert resolve_tracking_uri("http://given:1", server.state_dir) == ("http://given:1", None)
    assert resolve_tracking_uri(None, server.state_dir) == ("http://tracking.example:5000", None)
    monkeypatch.delenv(names.TRACKING_URI_ENV)
    uri, local = resolve_tracking_uri(None, server.state_dir)
    assert uri == server.uri and local.pid == server.pid and not local.started


def test_busy_port_is_refused_before_starting(tmp_path):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        with pytest.raises(TrackingServerError, match=f"port {port} on 127.0.0.1 is in use"):
            start_local_server(tmp_path / "state", port=port)
    assert not (tmp_path / "state" / SERVER_FILE).exists()


def test_stale_server_file_is_not_reused(server, tmp_path):
    # A pid that is dead, recorded with a port on which a (different) server does answer.
    finished = subprocess.Popen([sys.executable, "-c", "pass"])
    finished.wait()
    stale = tmp_path / "state"
    stale.mkdir()
    (stale / SERVER_FILE).write_text(json.dumps({"pid": finished.pid, "port": server.port}))
    assert find_local_server(stale) is None
    assert not (stale / SERVER_FILE).exists()
    # A live pid (this test process) whose recorded port does not answer.
    (stale / SERVER_FILE).write_text(json.dumps({"pid": os.getpid(), "port": 1}))
    assert find_local_server(stale) is None


def test_outbox_replays_into_the_server(
    server, scenario, experiment_name, tmp_path, dead_uri, client_for
):
    sink = MlflowSink(dead_uri, experiment_name, outbox_dir=tmp_path / "outbox", spool_after=1)
    scenario.run(sink)
    sink.close(timeout_s=0.2)
    assert len(Outbox(tmp_path / "outbox").run_keys()) == 4
    report = replay_outbox(tmp_path / "outbox", server.uri)
    assert (report.runs_completed, report.runs_remaining, report.errors) == (4, 0, [])
    scenario.check(client_for(server.uri), experiment_name)


def test_outage_mid_search_loses_nothing(tmp_path, client_for):
    """Kill the server (SIGKILL to its process group) while trials report, keep reporting,
    restart it on the same store and port: every point, param and status arrives once."""
    state = tmp_path / "state"
    first = start_local_server(state)
    servers = [first]
    try:
        sink = MlflowSink(
            first.uri,
            "outage",
            outbox_dir=tmp_path / "outbox",
            flush_interval_s=0.1,
            backoff_s=0.05,
            max_backoff_s=0.5,
            spool_after=3,
        )
        parent = sink.start_search("outage-search", params={"num_trials": 3})
        trials = [sink.start_trial(parent, i, params={"lr": lr}) for i, lr in enumerate((0.1, 0.2))]
        for step in range(1, 21):
            for i, trial in enumerate(trials):
                sink.log_metrics(
                    trial, [(step, {"val/acc": step / 100 + i, "train/loss": 1 / step})]
                )
        assert sink.flush(timeout_s=60)
        assert sink.stats().failed_attempts == 0

        os.killpg(first.pid, signal.SIGKILL)  # crash: server.json is left behind, stale
        stop_process_group(first.pid, timeout_s=5)
        assert not pid_alive(first.pid)

        slowest = 0.0
        late = None
        for step in range(21, 61):
            if step == 30:
                late = sink.start_trial(parent, 2, params={"lr": 0.3})  # created during the outage
                trials.append(late)
            for i, trial in enumerate(trials):
                started = time.perf_counter()
                sink.log_metrics(
                    trial, [(step, {"val/acc": step / 100 + i, "train/loss": 1 / step})]
                )
                slowest = max(slowest, time.perf_counter() - started)
            time.sleep(0.005)
        finish_started = time.perf_counter()
        sink.finish_trial(
            trials[0], names.FINISHED, summary_metrics={"test/acc": 0.9}, artifacts={"c.json": "{}"}
        )
        sink.finish_trial(trials[1], names.KILLED)
        sink.finish_trial(late, names.FAILED, failure_reason="diverged")
        sink.finish_search(parent, names.FINISHED, summary_metrics={"best": 1.0})
        slowest = max(slowest, (time.perf_counter() - finish_started) / 4)
        assert slowest < 0.25, f"a call took {slowest:.3f} s during the outage"
        assert sink.flush(timeout_s=30) is False
        deadline = time.monotonic() + 30
        while sink.stats().spooled == 0 and time.monotonic() < deadline:
            time.sleep(0.05)
        stats = sink.stats()
        assert stats.failed_attempts >= 3 and stats.spooled > 0 and stats.pending > 0

        second = start_local_server(state, port=first.port)  # the stale record is not reused
        servers.append(second)
        assert second.started and second.pid != first.pid and second.port == first.port
        assert sink.flush(timeout_s=60), sink.stats()
        stats = sink.stats()
        assert (stats.pending, stats.spooled, stats.rejected) == (0, 0, 0)
        sink.close()
        assert Outbox(tmp_path / "outbox").run_keys() == []

        searches = find_search_runs(second.uri, "outage")
        assert len(searches) == 1 and searches[0].status == "FINISHED"
        assert searches[0].metrics == {"best": 1.0}
        runs = trial_runs(second.uri, searches[0].run_id)
        assert [r.run_name for r in runs] == ["trial-0000", "trial-0001", "trial-0002"]
        assert [r.status for r in runs] == ["FINISHED", "KILLED", "FAILED"]
        assert [r.params for r in runs] == [{"lr": "0.1"}, {"lr": "0.2"}, {"lr": "0.3"}]
        assert runs[2].tags[names.FAILURE_REASON] == "diverged"
        assert runs[0].metrics["test/acc"] == 0.9
        for i, run in enumerate(runs):
            first_step = 30 if i == 2 else 1
            history = metric_history(second.uri, run.run_id, "val/acc")
            assert history == [(s, pytest.approx(s / 100 + i)) for s in range(first_step, 61)]
            assert len(metric_history(second.uri, run.run_id, "train/loss")) == 61 - first_step
        client = client_for(second.uri)
        assert [a.path for a in client.list_artifacts(runs[0].run_id)] == ["c.json"]
    finally:
        for local in servers:
            if pid_alive(local.pid):
                local.stop()
