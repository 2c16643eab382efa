"""MlflowSink against a SQLite MLflow store: nesting, params, step metrics, statuses, artifacts,
batch limits, truncation, refusals, outages (outbox) and replay."""

from __future__ import annotations

import shutil
import subprocess
import sys
import time

import pytest

from reset_tune.tracking import MemorySink, MlflowSink, names, replay_outbox
from reset_tune.tracking._delivery import Delivery, take_batch
from reset_tune.tracking.outbox import METRICS, PARAMS, TAGS, Op, Outbox


def make_sink(uri, experiment_name, artifact_root, tmp_path, **kwargs) -> MlflowSink:
    return MlflowSink(
        uri,
        experiment_name,
        outbox_dir=tmp_path / "outbox",
        artifact_location=f"{artifact_root}/{experiment_name}",
        **kwargs,
    )


def test_search_with_nested_trials(scenario, sqlite_store, experiment_name, tmp_path, client_for):
    uri, artifacts = sqlite_store
    sink = make_sink(uri, experiment_name, artifacts, tmp_path)
    handles = scenario.run(sink)
    assert sink.flush(timeout_s=60)
    stats = sink.stats()
    assert (stats.pending, stats.spooled, stats.rejected, stats.failed_attempts) == (0, 0, 0, 0)
    client = client_for(uri)
    parent_id = sink.mlflow_run_id(handles["search"])
    assert client.get_run(parent_id).info.run_name == "search-1"
    sink.close()
    scenario.check(client, experiment_name)
    assert Outbox(tmp_path / "outbox").run_keys() == []


def test_memory_sink_records_what_mlflow_stores(
    scenario, sqlite_store, experiment_name, tmp_path, client_for
):
    """The in-memory sink (for driver tests) agrees with MLflow on the same calls."""
    uri, artifacts = sqlite_store
    memory = MemorySink(experiment_name=experiment_name)
    handles = scenario.run(memory)
    with make_sink(uri, experiment_name, artifacts, tmp_path) as sink:
        mlflow_handles = scenario.run(sink)
        assert sink.flush(timeout_s=60)
        ids = {name: sink.mlflow_run_id(h) for name, h in mlflow_handles.items()}
    client = client_for(uri)
    for name, handle in handles.items():
        recorded = memory.runs[handle]
        run = client.get_run(ids[name])
        assert run.info.run_name == recorded.run_name
        assert run.info.status == recorded.status
        assert run.data.params == {k: str(v) for k, v in recorded.params.items()}
        assert {k: v for k, v in run.data.tags.items() if k in recorded.tags} == recorded.tags
        for key in {k for _, k, _ in recorded.metrics}:
            stored = sorted((m.step, m.value) for m in client.get_metric_history(ids[name], key))
            assert stored == sorted(memory.history(handle, key))
    assert memory.runs[handles["trial1"]].parent_run_id == handles["search"]


def test_batches_respect_mlflow_limits(
    sqlite_store, experiment_name, tmp_path, client_for, monkeypatch
):
    from mlflow import MlflowClient

    calls = []
    original = MlflowClient.log_batch

    def spy(self, run_id, metrics=(), params=(), tags=(), **kwargs):
        calls.append((len(metrics), len(params), len(tags)))
        return original(self, run_id, metrics=metrics, params=params, tags=tags, **kwargs)

    monkeypatch.setattr(MlflowClient, "log_batch", spy)
    uri, artifacts = sqlite_store
    params = {f"p{i:03d}": i for i in range(250)}
    with make_sink(uri, experiment_name, artifacts, tmp_path) as sink:
        parent = sink.start_search("limits")
        trial = sink.start_trial(parent, 1, params=params)
        # 2,500 points in one call: 25 keys x 100 steps.
        sink.log_metrics(
            trial, [(step, {f"m{k:02d}": step * k for k in range(25)}) for step in range(100)]
        )
        sink.finish_trial(trial, names.FINISHED, tags={f"t{i}": "x" for i in range(150)})
        assert sink.flush(timeout_s=60)
        run_id = sink.mlflow_run_id(trial)
    assert calls, "log_batch was never called"
    for metrics, params_n, tags_n in calls:
        assert metrics <= 1000 and params_n <= 100 and tags_n <= 100
        assert metrics + params_n + tags_n <= 1000
    assert sum(c[0] for c in calls) == 2500
    assert len(calls) < 10  # batched, not one call per report
    client = client_for(uri)
    run = client.get_run(run_id)
    assert run.data.params == {k: str(v) for k, v in params.items()}
    assert sum(1 for k in run.data.tags if k.startswith("t") and k[1:].isdigit()) == 150
    assert len(client.get_metric_history(run_id, "m24")) == 100
    assert run.data.metrics["m24"] == 99 * 24


def test_take_batch_groups_whole_ops_within_limits():
    ops = [Op(METRICS, metrics=[("a", 1.0, 0, s) for s in range(400)]) for _ in range(3)]
    ops += [Op(PARAMS, params={f"p{i}": "v" for i in range(100)}), Op(TAGS, tags={"t": "v"})]
    assert take_batch(ops, 0) == 2  # 800 metrics; the third op would make 1,200
    assert take_batch(ops, 2) == 5  # metrics, params and tags share a call: 501 entities
    params = [Op(PARAMS, params={f"p{j}{i}": "v" for i in range(60)}) for j in range(2)]
    assert take_batch(params, 0) == 1  # 120 params would pass 100
    tags = [Op(TAGS, tags={f"t{j}{i}": "x" * 8000 for i in range(50)}) for j in range(2)]
    assert take_batch(tags, 0) == 1  # 100 tags are allowed, but 2 x 400 kB pass the size budget
    assert take_batch([Op(METRICS), *ops], 0) == 1 + 2


def test_long_values_are_truncated_with_a_marker(
    sqlite_store, experiment_name, tmp_path, client_for
):
    uri, artifacts = sqlite_store
    reason = "Traceback:\n" + "frame\n" * 1500
    with make_sink(uri, experiment_name, artifacts, tmp_path) as sink:
        parent = sink.start_search("long")
        trial = sink.start_trial(
            parent, 1, params={"spec": "y" * 7000, "layers": ["a", "b"], "short": "ok"}
        )
        sink.finish_trial(trial, names.FAILED, failure_reason=reason, tags={"note": "z" * 9000})
        assert sink.flush(timeout_s=60)
        run_id = sink.mlflow_run_id(trial)
    client = client_for(uri)
    run = client.get_run(run_id)
    spec = run.data.params["spec"]
    assert len(spec) == names.MAX_PARAM_VALUE_LENGTH
    assert spec.endswith(names.TRUNCATION_MARKER) and spec.startswith("y" * 100)
    assert run.data.params["layers"] == '["a", "b"]'
    assert run.data.params["short"] == "ok"
    note = run.data.tags["note"]
    assert len(note) == names.MAX_TAG_VALUE_LENGTH and note.endswith(names.TRUNCATION_MARKER)
    # A long failure reason is a tag and, whole, an artifact.
    assert run.data.tags[names.FAILURE_REASON].startswith("Traceback:")
    assert open(client.download_artifacts(run_id, "failure.txt")).read() == reason


def test_refused_entries_are_kept_aside_and_the_rest_delivered(
    sqlite_store, experiment_name, tmp_path, client_for
):
    uri, artifacts = sqlite_store
    with make_sink(uri, experiment_name, artifacts, tmp_path) as sink:
        parent = sink.start_search("refusals")
        trial = sink.start_trial(parent, 1)
        sink.log_metrics(trial, [(1, {"good": 1.0, "../escape": 2.0}), (2, {"good": 3.0})])
        sink.finish_trial(trial, names.FINISHED)
        assert sink.flush(timeout_s=60)
        stats = sink.stats()
        run_id = sink.mlflow_run_id(trial)
    assert stats.rejected == 1 and stats.pending == 0
    client = client_for(uri)
    assert sorted((m.step, m.value) for m in client.get_metric_history(run_id, "good")) == [
        (1, 1.0),
        (2, 3.0),
    ]
    assert client.get_run(run_id).info.status == "FINISHED"
    rejected = list((tmp_path / "outbox" / "rejected").glob("*.jsonl"))
    assert len(rejected) == 1 and "../escape" in rejected[0].read_text()


def test_outage_never_raises_and_replay_backfills_everything(
    scenario, sqlite_store, experiment_name, tmp_path, dead_uri, client_for
):
    """Server unreachable for the whole search: calls stay fast, everything lands in the
    outbox, and replaying it (twice, and into a different store) loses and duplicates nothing."""
    uri, artifacts = sqlite_store
    sink = make_sink(
        dead_uri,
        experiment_name,
        artifacts,
        tmp_path,
        flush_interval_s=0.05,
        backoff_s=0.02,
        max_backoff_s=0.1,
        spool_after=2,
    )
    started = time.perf_counter()
    scenario.run(sink)
    assert time.perf_counter() - started < 1.0  # 15 calls; no network on the caller's thread
    assert sink.flush(timeout_s=30) is False
    deadline = time.monotonic() + 20
    while sink.stats().spooled < sink.stats().pending and time.monotonic() < deadline:
        time.sleep(0.05)
    stats = sink.stats()
    assert stats.failed_attempts >= 2
    assert stats.spooled == stats.pending > 0
    sink.close(timeout_s=0.5)
    outbox = Outbox(tmp_path / "outbox")
    assert len(outbox.run_keys()) == 4
    copy = tmp_path / "outbox-copy"
    shutil.copytree(tmp_path / "outbox", copy)

    report = replay_outbox(tmp_path / "outbox", uri)
    assert (report.runs_completed, report.runs_remaining, report.ops_rejected) == (4, 0, 0)
    assert report.errors == []
    assert outbox.run_keys() == []
    client = client_for(uri)
    scenario.check(client, experiment_name)

    # The same records again (a replay interrupted after delivering): nothing new appears.
    again = replay_outbox(copy, uri)
    assert again.runs_completed == 4 and again.run_ids == report.run_ids
    scenario.check(client, experiment_name)
    assert replay_outbox(tmp_path / "outbox", uri).runs_completed == 0


def test_replay_into_an_unreachable_server_keeps_the_outbox(
    scenario, sqlite_store, experiment_name, tmp_path, dead_uri
):
    uri, artifacts = sqlite_store
    sink = make_sink(dead_uri, experiment_name, artifacts, tmp_path, spool_after=1)
    scenario.run(sink)
    sink.close(timeout_s=0.2)
    keys = Outbox(tmp_path / "outbox").run_keys()
    assert len(keys) == 4
    report = replay_outbox(tmp_path / "outbox", dead_uri)
    assert report.runs_completed == 0 and report.runs_remaining == 4 and report.errors
    assert Outbox(tmp_path / "outbox").run_keys() == keys


def test_experiment_created_concurrently_is_used(sqlite_store, experiment_name, monkeypatch):
    """Lookup says missing, another process creates it, our create fails: use theirs."""
    uri, _ = sqlite_store
    delivery = Delivery.for_uri(uri)
    other = Delivery.for_uri(uri)
    original = delivery.client.get_experiment_by_name
    looked = []

    def racing_lookup(name):
        if not looked:
            looked.append(name)
            other.experiment_id(name)  # the other process wins the race
            return None
        return original(name)

    monkeypatch.setattr(delivery.client, "get_experiment_by_name", racing_lookup)
    assert delivery.experiment_id(experiment_name) == other.experiment_id(experiment_name)


def test_callers_mistakes_raise_before_anything_is_recorded(tmp_path, dead_uri):
    with pytest.raises(ValueError, match="spool_after"):
        MlflowSink(dead_uri, "x", outbox_dir=tmp_path, spool_after=0)
    with pytest.raises(ValueError, match="tracking_uri"):
        MlflowSink("", "x", outbox_dir=tmp_path)
    sink = MlflowSink(dead_uri, "x", outbox_dir=tmp_path / "outbox", spool_after=1)
    parent = sink.start_search("s")
    with pytest.raises(ValueError, match="unknown run handle"):
        sink.start_trial("nope", 1)
    trial = sink.start_trial(parent, 1)
    with pytest.raises(TypeError, match="'val/acc' must be a number"):
        sink.log_metrics(trial, [(1, {"val/acc": "high"})])
    with pytest.raises(ValueError, match="`status` must be one of"):
        sink.finish_trial(trial, "DONE")
    sink.finish_trial(trial, names.KILLED)
    with pytest.raises(ValueError, match="already finished"):
        sink.finish_trial(trial, names.FINISHED)
    sink.close(timeout_s=0.2)
    with pytest.raises(RuntimeError, match="closed"):
        sink.log_metrics(trial, [(2, {"a": 1.0})])


def test_spooled_records_are_delivered_when_the_store_returns(
    scenario, sqlite_store, experiment_name, tmp_path, client_for, monkeypatch
):
    """Store unreachable long enough to spool, then back: the sink empties its own outbox,
    in order, rejecting only what MLflow refuses."""
    from reset_tune.tracking import mlflow_sink
    from reset_tune.tracking._delivery import TransientError

    real_for_uri = Delivery.for_uri
    down = [True]

    def for_uri(uri):
        if down[0]:
            raise TransientError("connection refused (simulated)")
        return real_for_uri(uri)

    monkeypatch.setattr(mlflow_sink.Delivery, "for_uri", staticmethod(for_uri))
    uri, artifacts = sqlite_store
    sink = make_sink(
        uri, experiment_name, artifacts, tmp_path, backoff_s=0.02, max_backoff_s=0.05, spool_after=2
    )
    handles = scenario.run(sink)
    sink.log_metrics(handles["trial2"], [(200, {"../refused": 1.0, "late": 2.0})])
    deadline = time.monotonic() + 20
    while sink.stats().spooled < sink.stats().pending and time.monotonic() < deadline:
        time.sleep(0.02)
    assert sink.stats().spooled == sink.stats().pending > 0
    assert len(Outbox(tmp_path / "outbox").run_keys()) == 4
    down[0] = False
    assert sink.flush(timeout_s=60), sink.stats()
    stats = sink.stats()
    assert (stats.pending, stats.spooled, stats.rejected) == (0, 0, 1)
    assert Outbox(tmp_path / "outbox").run_keys() == []
    trial2 = sink.mlflow_run_id(handles["trial2"])
    sink.close()
    client = client_for(uri)
    scenario.check(client, experiment_name)
    assert [(m.step, m.value) for m in client.get_metric_history(trial2, "late")] == [(200, 2.0)]


@pytest.mark.integration
def test_records_are_kept_when_the_process_exits_without_close(
    sqlite_store, experiment_name, tmp_path, dead_uri, client_for
):
    code = f"""
from reset_tune.tracking import MlflowSink
outbox = {str(tmp_path / "outbox")!r}
sink = MlflowSink({dead_uri!r}, {experiment_name!r}, outbox_dir=outbox, close_timeout_s=0.5)
parent = sink.start_search("forgotten")
trial = sink.start_trial(parent, 1, params={{"lr": 0.1}})
sink.log_metrics(trial, [(step, {{"val/acc": step / 10}}) for step in range(1, 11)])
raise SystemExit(3)  # no close(): the exit hook spools what is undelivered
"""
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 3, done.stderr
    assert len(Outbox(tmp_path / "outbox").run_keys()) == 2
    uri, _ = sqlite_store
    report = replay_outbox(tmp_path / "outbox", uri)
    assert report.runs_completed == 2
    client = client_for(uri)
    runs = {
        r.info.run_name: r
        for r in client.search_runs([client.get_experiment_by_name(experiment_name).experiment_id])
    }
    assert set(runs) == {"forgotten", "trial-0001"}
    trial = runs["trial-0001"]
    assert set(report.run_ids.values()) == {r.info.run_id for r in runs.values()}
    assert trial.data.params == {"lr": "0.1"}
    assert trial.data.tags[names.MLFLOW_PARENT_RUN_ID] == runs["forgotten"].info.run_id
    assert len(client.get_metric_history(trial.info.run_id, "val/acc")) == 10
