"""Where a search's stores come from (flag, else environment), and that no credential is
recorded or shown: unit checks of reset_tune.search.stores, no server."""

from __future__ import annotations

import json
import socket
from pathlib import Path

import pytest

from reset_tune.errors import ConfigError
from reset_tune.search import stores

REPO = Path(__file__).resolve().parents[2]


def test_flags_win_over_the_environment(monkeypatch):
    monkeypatch.setenv(stores.OPTUNA_STORAGE_ENV, "postgresql://u:pw@db/from-env")
    monkeypatch.setenv(stores.TUNE_STORAGE_ENV, "s3://bucket/from-env")
    assert stores.optuna_storage_url(None) == "postgresql://u:pw@db/from-env"
    assert stores.optuna_storage_url("sqlite:///flag.db") == "sqlite:///flag.db"
    assert stores.tune_storage_uri(None) == "s3://bucket/from-env"
    assert stores.tune_storage_uri("s3://other/x", "S1") == "s3://other/x/S1"
    monkeypatch.delenv(stores.OPTUNA_STORAGE_ENV)
    assert stores.optuna_storage_url(None) is None


def test_a_recorded_storage_url_has_no_password_and_cannot_be_opened_without_one():
    recorded = stores.recorded_storage("postgresql://reset_tune:s3cr3t@db:5432/optuna")
    assert recorded == "postgresql://reset_tune:***@db:5432/optuna"
    with pytest.raises(stores.StoreUnavailable, match=stores.OPTUNA_STORAGE_ENV) as error:
        stores.open_optuna_storage(recorded)
    assert "s3cr3t" not in str(error.value)


def test_an_unreachable_database_is_reported_without_its_password():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again: nothing listens there
    url = f"postgresql://reset_tune:s3cr3t@127.0.0.1:{port}/optuna"
    with pytest.raises(stores.StoreUnavailable) as error:
        stores.open_optuna_storage(url)
    message = str(error.value)
    assert "s3cr3t" not in message and f"reset_tune:***@127.0.0.1:{port}" in message


def test_s3_tune_storage_gets_its_endpoint_and_a_path_without_scheme(monkeypatch):
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIDEXAMPLE")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "s3cr3t")
    monkeypatch.delenv("AWS_ENDPOINT_URL_S3", raising=False)
    monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)
    path, filesystem = stores.tune_run_storage(
        "s3://reset-tune/tune?endpoint_override=http://127.0.0.1:8333", Path("/unused")
    )
    assert path == "reset-tune/tune"
    assert filesystem is not None and filesystem.type_name == "s3"
    # What Tune pickles to every worker: the endpoint, never the credentials (each worker reads
    # its own from the environment).
    options = filesystem.__reduce__()[1][0]
    assert (options["endpoint_override"], options["scheme"]) == ("127.0.0.1:8333", "http")
    assert options["access_key"] is None and options["secret_key"] is None
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", "http://127.0.0.1:9000")
    _, from_env = stores.tune_run_storage("s3://reset-tune/tune", Path("/unused"))
    assert from_env is not None and from_env.type_name == "s3"
    assert stores.tune_run_storage(None, Path("/state/tune")) == ("/state/tune", None)
    assert stores.tune_run_storage("/nfs/tune", Path("/state")) == ("/nfs/tune", None)


@pytest.mark.parametrize(
    "uri,message",
    [("s3://bucket/x?region=eu", "unknown option"), ("s3:///no-bucket", "give a bucket")],
)
def test_a_bad_s3_uri_is_refused(uri, message):
    with pytest.raises(ConfigError, match=message):
        stores.tune_run_storage(uri, Path("/unused"))


def test_tune_files_are_mirrored_from_shared_storage_without_checkpoints(tmp_path):
    shared = tmp_path / "shared" / "S1" / "segment-1" / "trial_a"
    (shared / "checkpoint_000001").mkdir(parents=True)
    (shared / "result.json").write_text('{"step": 1}\n')
    (shared / "params.json").write_text("{}")
    (shared / "checkpoint_000001" / "model.pt").write_bytes(b"weights")
    local = tmp_path / "state" / "tune"
    uri = stores.tune_storage_uri(str(tmp_path / "shared"), "S1")
    assert stores.mirror_tune_files(uri, local, "segment-1") == 2
    assert (local / "segment-1/trial_a/result.json").read_text() == '{"step": 1}\n'
    assert not (local / "segment-1/trial_a/checkpoint_000001").exists()
    assert stores.mirror_tune_files(uri, local, "segment-9") == 0  # nothing there yet
    assert stores.mirror_tune_files(None, local, "segment-1") == 0


def test_search_json_records_the_storage_url_masked(tmp_path, monkeypatch):
    from reset_tune.search.driver import SearchOptions, _open_search

    monkeypatch.setenv(stores.OPTUNA_STORAGE_ENV, "postgresql://reset_tune:s3cr3t@db:5432/optuna")
    options = SearchOptions(state=tmp_path / "state")
    record, _spec, _seeds = _open_search(REPO / "search_spaces/default.yaml", options)
    text = (Path(record.directory) / "search.json").read_text()
    assert "s3cr3t" not in text
    assert json.loads(text)["optuna_storage"] == "postgresql://reset_tune:***@db:5432/optuna"
