"""Reading a search's Ray Tune files: every trial's reported rows, status and latest checkpoint.

Tune writes, per trial, ``params.json`` (the trial config), ``result.json`` (one JSON object per
report, in order) and checkpoint folders ``checkpoint_NNNNNN/``; the driver writes ``error.txt``
when a trial fails. These files are the search's own record of what happened: `sync` backfills
MLflow from them, and a resumed search finds its interrupted trials' checkpoints here.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Collection
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from reset_tune import names
from reset_tune.search.trainable import (
    FAILURE_REASON,
    OBJECTIVE,
    RESULT_JSON,
    SEED_INDEX,
    evaluation_rows,
)

# Trial outcomes as the search reports them (and the MLflow run status each one gets).
COMPLETE = "complete"
PRUNED = "pruned"  # stopped early by the scheduler
FAILED = "failed"
INTERRUPTED = "interrupted"  # the search ended (or was killed) while it ran

_ROW_KEYS_DROPPED = {
    # Tune's bookkeeping added to every row; not metrics of the run.
    "timestamp", "time_this_iter_s", "time_total_s", "training_iteration", "done", "pid",
    "hostname", "node_ip", "time_since_restore", "iterations_since_restore", "date",
    "trial_id", "config", "checkpoint_dir_name", "should_checkpoint",
}  # fmt: skip


@dataclass
class TuneTrial:
    """One Tune trial as its files record it."""

    trial_id: str
    path: Path
    params: dict[str, Any]
    rows: list[dict[str, Any]] = field(default_factory=list)
    error: str | None = None

    @property
    def final_row(self) -> dict[str, Any] | None:
        for row in reversed(self.rows):
            if OBJECTIVE in row and RESULT_JSON in row:
                return row
        return None

    @property
    def failure_reason(self) -> str | None:
        for row in reversed(self.rows):
            if row.get(FAILURE_REASON):
                return str(row[FAILURE_REASON])
        if self.error:
            lines = [line for line in self.error.strip().splitlines() if line.strip()]
            return lines[-1] if lines else "the trial raised an error"
        return None

    @property
    def evaluation_rows(self) -> list[dict[str, Any]]:
        """The per-evaluation rows, each (seed index, step) once (a resumed trial repeats some).

        The final row is among them: it also holds the last evaluation.
        """
        seen: set[tuple[int, int]] = set()
        rows = []
        for reported in self.rows:
            for row in evaluation_rows(reported):
                key = (int(row.get(SEED_INDEX, 0)), int(row[names.STEP]))
                if key not in seen:
                    seen.add(key)
                    rows.append(row)
        return rows

    def latest_checkpoint(self) -> Path | None:
        found = sorted(self.path.glob("checkpoint_*"))
        return found[-1] if found else None

    def outcome(self, *, pruning: bool, interrupted: Collection[str] = ()) -> str:
        """COMPLETE, FAILED, or for a trial that stopped without a result: INTERRUPTED when it is
        in `interrupted` (left running by a stopped search) or nothing prunes, else PRUNED."""
        if self.final_row is not None:
            return COMPLETE
        if self.failure_reason is not None:
            return FAILED
        if self.trial_id in interrupted or not pruning:
            return INTERRUPTED
        return PRUNED


def metric_items(row: dict[str, Any]) -> dict[str, float]:
    """The numeric metrics of one reported row (Tune's bookkeeping keys left out)."""
    out: dict[str, float] = {}
    for key, value in row.items():
        if key in _ROW_KEYS_DROPPED or isinstance(value, str) or value is None:
            continue
        if isinstance(value, bool | int | float):
            out[key] = float(value)
    return out


# Tune names a trial's folder `<trainable>_<8 hex>_<n>_<params…>`; its id is `<8 hex>_<n:05d>`.
_TRIAL_FOLDER = re.compile(r"_([0-9a-f]{8})_(\d+)(?:_|$)")


def trial_id_from_folder(name: str) -> str:
    """The Tune trial id a folder name encodes (params in the name hold '=' and ',', which are
    no valid run key); the name with such characters replaced when it encodes none."""
    match = _TRIAL_FOLDER.search(name)
    if match:
        return f"{match[1]}_{int(match[2]):05d}"
    return re.sub(r"[^A-Za-z0-9._-]", "_", name)[:200] or "trial"


def read_trial(path: Path) -> TuneTrial | None:
    """The trial whose folder is `path`, or None when it has no readable ``params.json``."""
    try:
        params = json.loads((path / "params.json").read_text())
    except (OSError, ValueError):
        return None
    rows: list[dict[str, Any]] = []
    results = path / "result.json"
    if results.exists():
        for line in results.read_text().splitlines():
            line = line.strip()
            if not line:
                continue
            try:
                rows.append(json.loads(line, parse_constant=_constant))
            except ValueError:
                break  # a line cut short by a killed driver: what came before is whole
    trial_id = next((str(r["trial_id"]) for r in rows if "trial_id" in r), None)
    if trial_id is None:  # no report yet (e.g. the driver was killed first)
        trial_id = trial_id_from_folder(path.name)
    error_file = path / "error.txt"
    error = error_file.read_text(errors="replace") if error_file.exists() else None
    return TuneTrial(trial_id=trial_id, path=path, params=params, rows=rows, error=error)


def read_experiment(directory: Path) -> list[TuneTrial]:
    """Every trial of one Tune experiment folder, in the order Tune created them."""
    trials = []
    for params_file in sorted(directory.glob("*/params.json")):
        trial = read_trial(params_file.parent)
        if trial is not None:
            trials.append(trial)
    return trials


def _constant(name: str) -> float:
    return {"NaN": math.nan, "Infinity": math.inf, "-Infinity": -math.inf}[name]
