"""Credentials in URIs are masked before the tool prints, logs or records them."""

from __future__ import annotations

import pytest

from reset_tune.redact import redact_text, redact_uri


@pytest.mark.parametrize(
    ("uri", "expected"),
    [
        ("http://user:password@host:5000", "http://user:***@host:5000"),
        ("https://user:p%40ss@mlflow.example.com/path", "https://user:***@mlflow.example.com/path"),
        ("postgresql://optuna:s3cret@db:5432/optuna", "postgresql://optuna:***@db:5432/optuna"),
        ("https://ghp_abcdef@host", "https://***@host"),
        ("http://host:5000/?token=abc&x=1", "http://host:5000/?token=***&x=1"),
        (
            "http://host/?api_key=k&password=p&user=u",
            "http://host/?api_key=***&password=***&user=u",
        ),
        ("http://host/?Secret=1", "http://host/?Secret=***"),
        ("http://u:pw@host/?access_token=t", "http://u:***@host/?access_token=***"),
    ],
)
def test_secrets_are_masked(uri: str, expected: str) -> None:
    assert redact_uri(uri) == expected
    assert redact_uri(expected) == expected  # masking twice changes nothing


@pytest.mark.parametrize(
    "uri",
    [
        "http://127.0.0.1:5000",
        "http://host:5000/path?experiment=3",
        "/tmp/mlruns",
        "file:///tmp/mlruns",
        "sqlite:////tmp/optuna.db",
        "127.0.0.1:6379",
        "",
    ],
)
def test_uris_without_secrets_are_unchanged(uri: str) -> None:
    assert redact_uri(uri) == uri


def test_unparseable_uri_still_masks_and_never_raises() -> None:
    # An unbalanced bracket makes urlsplit raise; the password must still not come through.
    masked = redact_uri("http://user:hunter2@[::1")
    assert "hunter2" not in masked


def test_text_with_uris_is_masked() -> None:
    text = "cannot reach http://alice:hunter2@host:5000 (connection refused)"
    assert redact_text(text) == "cannot reach http://alice:***@host:5000 (connection refused)"
