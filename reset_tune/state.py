"""The project's state directory: where local servers, studies and search records live.

Default `./.reset-tune` (per project, like `.git`), or `$RESET_TUNE_STATE_DIR`, or `--state-dir`::

    .reset-tune/
      mlflow/               the embedded MLflow server (SQLite backend, artifacts, server.json)
      ray/                  the local Ray head of `reset-tune up` (head.json, logs)
      optuna.db             Optuna studies, one per search (the default RDB storage)
      searches/<SEARCH_ID>/ one search: search.json, Ray Tune's results and checkpoints, outbox
"""

from __future__ import annotations

import os
from pathlib import Path

STATE_DIR_ENV = "RESET_TUNE_STATE_DIR"
DEFAULT_STATE_DIR = ".reset-tune"


def state_dir(explicit: str | os.PathLike | None = None) -> Path:
    """The state directory to use (absolute; not created here)."""
    chosen = explicit or os.environ.get(STATE_DIR_ENV) or DEFAULT_STATE_DIR
    return Path(chosen).expanduser().resolve()


def mlflow_dir(state: Path) -> Path:
    return state / "mlflow"


def ray_dir(state: Path) -> Path:
    return state / "ray"


def searches_dir(state: Path) -> Path:
    return state / "searches"


def optuna_storage_url(state: Path) -> str:
    return f"sqlite:///{state / 'optuna.db'}"
