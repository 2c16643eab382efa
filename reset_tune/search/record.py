"""`search.json`: what the driver keeps about one search in the state directory.

It is written whole (atomically) when the search starts, after each Tune segment, and when the
search ends, so `--resume`, `sync` and `reset-tune search --list`-style tools can read it at any
time. A segment is one `Tuner.fit()`: the first run of a search, then one per `--resume`.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from reset_tune.atomic import write_json_atomic
from reset_tune.errors import ConfigError
from reset_tune.state import searches_dir

RECORD_FILE = "search.json"
TUNE_DIR = "tune"
OUTBOX_DIR = "outbox"

RUNNING = "running"
FINISHED = "finished"
INTERRUPTED = "interrupted"
FAILED = "failed"


@dataclass
class Segment:
    name: str
    trials: int  # trials this segment was asked to run
    started: float
    finished: bool = False


@dataclass
class SearchRecord:
    search_id: str
    experiment_name: str
    spec: dict[str, Any]  # the validated spec, as loaded (model_dump of SearchSpec)
    spec_source: str
    spec_text: str
    tracking_uri: str
    optuna_storage: str
    target_trials: int
    created: float = field(default_factory=time.time)
    status: str = RUNNING
    segments: list[Segment] = field(default_factory=list)
    trial_numbers: dict[str, int] = field(default_factory=dict)  # Tune trial id -> Optuna number
    # Tune trials a stopped search left running (re-run on resume): not outcomes of the search.
    interrupted_trials: list[str] = field(default_factory=list)
    tracking_explicit: bool = False  # given by --mlflow-uri / $MLFLOW_TRACKING_URI
    mlflow_parent_run_id: str | None = None
    best: dict[str, Any] | None = None
    race: dict[str, Any] | None = None  # racing: `Race.state_dict()`, saved at every change
    verdict: dict[str, Any] | None = None  # `Verdict.to_json()` of the finished search
    directory: str = ""

    @property
    def path(self) -> Path:
        return Path(self.directory)

    @property
    def tune_dir(self) -> Path:
        return self.path / TUNE_DIR

    @property
    def outbox_dir(self) -> Path:
        return self.path / OUTBOX_DIR

    def save(self) -> None:
        write_json_atomic(self.path / RECORD_FILE, asdict(self))

    @classmethod
    def load(cls, directory: Path) -> SearchRecord:
        values = json.loads((directory / RECORD_FILE).read_text())
        values["segments"] = [Segment(**s) for s in values.get("segments", [])]
        values["directory"] = str(directory)
        return cls(**values)


def search_directory(state: Path, search_id: str) -> Path:
    return searches_dir(state) / search_id


def list_searches(state: Path) -> list[SearchRecord]:
    """Every search recorded in the state directory, oldest first."""
    records = []
    root = searches_dir(state)
    if not root.is_dir():
        return []
    for entry in root.iterdir():
        if (entry / RECORD_FILE).exists():
            try:
                records.append(SearchRecord.load(entry))
            except (OSError, ValueError, TypeError):
                continue  # a record from another version or cut short: not ours to guess at
    return sorted(records, key=lambda r: r.created)


def find_search(
    state: Path, search_id: str | None, *, spec_name: str | None = None
) -> SearchRecord:
    """The search `search_id`, or (None) the latest one, of spec `spec_name` when given.

    Raises `ConfigError` naming what was looked for and what exists.
    """
    records = list_searches(state)
    if search_id:
        directory = search_directory(state, search_id)
        if (directory / RECORD_FILE).exists():
            return SearchRecord.load(directory)
        known = ", ".join(r.search_id for r in records[-5:]) or "none"
        raise ConfigError(
            f"no search {search_id!r} in {searches_dir(state)} (recent: {known}); "
            "check the id, or --state-dir"
        )
    # A search rejected before any trial ran (`failed`) has nothing to resume.
    records = [r for r in records if r.status != FAILED]
    if spec_name is not None:
        records = [r for r in records if r.experiment_name == spec_name]
    if not records:
        where = f" of spec {spec_name!r}" if spec_name else ""
        raise ConfigError(
            f"no search{where} to resume in {searches_dir(state)}; start one without --resume"
        )
    return records[-1]


def new_search_id(name: str) -> str:
    """`<spec name>-YYYYmmdd-HHMMSS` (plus the pid's last digits, should two start at once)."""
    stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime())
    return f"{name}-{stamp}-{os.getpid() % 1000:03d}"
