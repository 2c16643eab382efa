"""The Ray Tune function trainable: one trial = the engine run on each of the spec's seeds.

What a trial reports to Tune (rows at most every `TrialSetup.report_interval_s` seconds, each
carrying the evaluations since the previous one, see `evaluation_rows`; then one final row):

- every evaluation: the engine's metrics (`reset_tune.names`: ``step``, ``val/acc``, ...), plus
  ``seed`` and `RUNNING_OBJECTIVE` (the objective at the best evaluation so far of this seed: what
  an ASHA scheduler compares, with ``step`` as its time attribute);
- last: the last evaluation together with `OBJECTIVE` (the objective metric at θbest, the mean
  over seeds), summary metrics and `RESULT_JSON`, every seed's full `TrainResult`; in one row,
  so that a scheduler never stops a trial between its last evaluation and its result. The
  searcher ranks trials by `OBJECTIVE` only, so a trial stopped early (pruned) never reports it
  and Optuna records it as pruned, not as a complete trial with a partial value.

Every `checkpoint_every` evaluations the full training state (`TrainingRun.state_dict()`: model,
optimizer, scheduler, resetter, sampler and augmenter RNGs), the finished seeds' results and the
position in the seed list are reported as a Tune checkpoint; a trial restarted after its worker
died loads it from `ray.tune.get_checkpoint()` and continues bit-exactly (on CPU). Evaluations
between that checkpoint and the failure are reported again with identical values; the driver's
tracker logs each (seed, step) once.

A run that diverges (`TrainingDiverged`) or runs out of device memory ends the trial as failed:
the reason is reported (`FAILURE_REASON`), recorded in a checkpoint so that Tune's retries fail at
once instead of repeating the run, and raised as `TrialFailed`.
"""

from __future__ import annotations

import json
import tempfile
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from reset_tune import names
from reset_tune.config import TrainConfig
from reset_tune.data import DataSplits
from reset_tune.engine import Callback, TrainingRun
from reset_tune.engine.result import TrainResult
from reset_tune.errors import ResetTuneError, TrainingDiverged
from reset_tune.search.spec import SearchSpec

# -- keys of the rows a trial reports (beside the engine's metric names) --------------------------
OBJECTIVE = names.OBJECTIVE  # final row only: what the searcher ranks trials by
RUNNING_OBJECTIVE = "running_objective"  # every evaluation: what a scheduler compares
SEED = "seed"
SEED_INDEX = "seed_index"
RESULT_JSON = "result_json"  # final row only: [TrainResult.to_dict() per seed], as JSON
FAILURE_REASON = "failure_reason"
NODE_ID = "node_id"  # the Ray node that ran the evaluation
EVALUATIONS = "evaluations"  # JSON list of the evaluations before this row's since the last report
# A trial's summary metrics (`trial_summary`): the mean over seeds of each of these
# `TrainResult.summary_metrics` keys, plus the total wall time.
SUMMARY_KEYS = (
    names.TEST_ACC,
    names.FINAL_TEST_ACC,
    names.BEST_VAL_ACC,
    names.BEST_VAL_LOSS,
    names.BEST_STEP,
    names.RESET_COUNT,
    names.STEPS_PER_S,
)
WALL_TIME = names.WALL_TIME
# The final row carries the last evaluation's metrics too (so that a scheduler sees the last step
# and the trial's result together); these keys are the final row's own. The summary's
# `reset/count` and `perf/steps_per_s` would collide with the evaluation's and are left to
# `trial_summary`, which reads them from `RESULT_JSON`.
FINAL_KEYS = (
    OBJECTIVE,
    RESULT_JSON,
    WALL_TIME,
    names.TEST_ACC,
    names.FINAL_TEST_ACC,
    names.BEST_VAL_ACC,
    names.BEST_VAL_LOSS,
    names.BEST_STEP,
)

_CHECKPOINT_FILE = "trial_state.pt"
_CHECKPOINT_VERSION = 1


class TrialFailed(ResetTuneError):
    """The trial's training cannot succeed (diverged, out of memory); the message says why."""


@dataclass(frozen=True)
class TrialSetup:
    """What every trial of a search shares, shipped once through `tune.with_parameters`.

    `data` maps each seed to its prepared splits (noise, split and subset depend on the seed),
    built once by the driver and read from each node's object store by the trials there.
    """

    spec: SearchSpec
    data: Mapping[tuple[int, str], DataSplits]  # by (seed, augment setting)
    checkpoint_every: int = 5  # evaluations between checkpoints (at the next report)
    threads: int = 1  # torch intra-op threads per trial
    report_interval_s: float = 2.0  # least time between two reports to Tune
    # Checkpoint folders of trials an interrupted search left running, by `params_key`: a
    # re-queued trial with those parameters continues from there (see `driver`).
    resume_from: Mapping[str, str] = field(default_factory=dict)


def objective_value(spec: SearchSpec, result: TrainResult) -> float:
    """The validation metric at θbest that the search optimises (never a test metric)."""
    return result.best_val_acc if spec.objective.metric == "val_acc" else result.best_val_loss


def trial_summary(spec: SearchSpec, results: list[TrainResult]) -> dict[str, float]:
    """A trial's summary metrics: means over seeds, total wall time, and the objective."""
    summary = {
        key: sum(r.summary_metrics()[key] for r in results) / len(results) for key in SUMMARY_KEYS
    }
    summary[WALL_TIME] = sum(r.wall_time_s for r in results)
    summary[OBJECTIVE] = sum(objective_value(spec, r) for r in results) / len(results)
    return summary


def final_row(spec: SearchSpec, results: list[TrainResult]) -> dict[str, Any]:
    """The trial's result as reported: `FINAL_KEYS` (with every seed's result as JSON)."""
    summary = trial_summary(spec, results)
    row: dict[str, Any] = {k: summary[k] for k in FINAL_KEYS if k in summary}
    row[RESULT_JSON] = json.dumps([r.to_dict() for r in results], default=str)
    return row


def results_from_row(row: Mapping[str, Any]) -> list[TrainResult]:
    """Every seed's `TrainResult` from a final row (as Tune's result files keep it)."""
    return [TrainResult.from_dict(values) for values in json.loads(row[RESULT_JSON])]


def evaluation_rows(row: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The evaluations one reported row carries: those batched in `EVALUATIONS`, then the row
    itself when it is one (every row but a failure report)."""
    rows = [dict(r) for r in json.loads(row[EVALUATIONS])] if row.get(EVALUATIONS) else []
    if names.STEP in row and not row.get(FAILURE_REASON):
        rows.append({k: v for k, v in row.items() if k != EVALUATIONS})
    return rows


class _Reporter(Callback):
    """Hands evaluations to Tune at most every `interval_s` seconds, several to a row.

    `tune.report` waits for the driver to take the row (a round trip per call), so reporting
    each evaluation of a fast model would spend a good part of the trial waiting. A row carries
    the latest evaluation's metrics (what a scheduler compares) and the earlier ones since the
    last report in `EVALUATIONS`. Once `every` evaluations have passed since the last
    checkpoint, the next report carries one.
    """

    def __init__(self, trial: _TrialState, every: int, interval_s: float) -> None:
        self.trial = trial
        self.every = every
        self.interval_s = interval_s
        self.best: float | None = None

    def on_evaluation(self, run: TrainingRun, metrics: dict[str, float]) -> None:
        trial = self.trial
        value = metrics[trial.objective_key]
        if self.best is None or names.better(value, self.best, trial.spec.mode):
            self.best = value
        row: dict[str, Any] = {**metrics, SEED: run.config.seed, SEED_INDEX: trial.seed_index}
        row[RUNNING_OBJECTIVE] = self.best
        row[NODE_ID] = trial.node_id
        trial.pending.append(row)
        trial.since_checkpoint += 1
        if trial.seed_index == len(trial.configs) - 1 and run.step >= run.config.steps:
            return  # the last evaluation goes with the trial's result, in one row
        if time.monotonic() - trial.last_report >= self.interval_s:
            self.report(run)

    def report(self, run: TrainingRun) -> None:
        from ray import tune

        trial = self.trial
        row = trial.take_pending()
        if trial.since_checkpoint >= self.every and run.step < run.config.steps:
            with tempfile.TemporaryDirectory(prefix="reset-tune-ckpt-") as directory:
                trial.save(Path(directory), run)
                tune.report(row, checkpoint=tune.Checkpoint.from_directory(directory))
            trial.since_checkpoint = 0
        else:
            tune.report(row)
        trial.last_report = time.monotonic()


class _TrialState:
    """Where a trial is: which seed, the finished seeds' results; saved with each checkpoint."""

    def __init__(self, spec: SearchSpec, params: Mapping[str, Any]) -> None:
        self.spec = spec
        self.params = dict(params)
        self.configs: list[TrainConfig] = spec.configs_for(params)
        self.seed_index = 0
        self.finished: list[TrainResult] = []
        self.run_state: dict[str, Any] | None = None
        self.failure: str | None = None
        self.pending: list[dict[str, Any]] = []  # evaluations not reported yet
        self.node_id: str | None = None  # the Ray node running this attempt
        self.since_checkpoint = 0
        self.last_report = time.monotonic()
        self.objective_key = names.VAL_ACC if spec.objective.metric == "val_acc" else names.VAL_LOSS

    def take_pending(self) -> dict[str, Any]:
        """The row that reports the pending evaluations (the latest, carrying the others)."""
        rows, self.pending = self.pending, []
        if not rows:
            return {}
        row = dict(rows[-1])
        if len(rows) > 1:
            row[EVALUATIONS] = json.dumps(rows[:-1])
        return row

    def save(self, directory: Path, run: TrainingRun | None) -> None:
        state = {
            "version": _CHECKPOINT_VERSION,
            "params": self.params,
            "seed_index": self.seed_index,
            "finished": [r.to_dict() for r in self.finished],
            "run": run.state_dict() if run is not None else None,
            "failure": self.failure,
        }
        torch.save(state, directory / _CHECKPOINT_FILE)

    def load(self, directory: Path) -> None:
        # The checkpoint was written by this trial (Tune's storage), so full unpickling is safe;
        # weights_only would refuse the nested result dicts' plain Python values anyway.
        state = torch.load(directory / _CHECKPOINT_FILE, map_location="cpu", weights_only=False)
        if state.get("version") != _CHECKPOINT_VERSION:
            raise TrialFailed(f"checkpoint version {state.get('version')!r} is not supported")
        if state["params"] != self.params:
            raise TrialFailed("the checkpoint belongs to a trial with other parameters")
        self.seed_index = int(state["seed_index"])
        self.finished = [TrainResult.from_dict(r) for r in state["finished"]]
        self.run_state = state["run"]
        self.failure = state["failure"]


def run_trial(params: dict[str, Any], setup: TrialSetup) -> None:
    """The function trainable: Tune's trial config is the Optuna draw (`space.suggest`)."""
    import ray
    from ray import tune

    torch.set_num_threads(max(1, setup.threads))
    spec = setup.spec
    trial = _TrialState(spec, params)
    trial.node_id = ray.get_runtime_context().get_node_id()
    checkpoint = tune.get_checkpoint()
    if checkpoint is not None:
        with checkpoint.as_directory() as directory:
            trial.load(Path(directory))
    elif params_key(params) in setup.resume_from:
        trial.load(Path(setup.resume_from[params_key(params)]))
    if trial.failure is not None:
        raise TrialFailed(trial.failure)

    while trial.seed_index < len(trial.configs):
        config = trial.configs[trial.seed_index]
        run = None
        try:
            run = TrainingRun(config, data=setup.data[(config.seed, config.augment)])
            if trial.run_state is not None:
                run.load_state_dict(trial.run_state)
                trial.run_state = None
            reporter = _Reporter(trial, setup.checkpoint_every, setup.report_interval_s)
            result = run.run([reporter])
        except (TrainingDiverged, torch.OutOfMemoryError) as error:
            _fail(trial, run, _reason(error, config))
        trial.finished.append(result)
        trial.seed_index += 1
    tune.report({**trial.take_pending(), **final_row(spec, trial.finished)})


def params_key(params: Mapping[str, Any]) -> str:
    """A trial's parameters as one string: how a re-queued trial finds its old checkpoint."""
    return json.dumps(dict(params), sort_keys=True, default=str)


def _reason(error: BaseException, config: TrainConfig) -> str:
    if isinstance(error, torch.OutOfMemoryError):
        first = str(error).strip().splitlines()[0] if str(error).strip() else "out of memory"
        return (
            f"out of device memory with batch_size={config.batch_size}, model={config.model} "
            f"(seed {config.seed}): {first}"
        )
    return f"{error} (seed {config.seed})"


def _fail(trial: _TrialState, run: TrainingRun | None, reason: str) -> None:
    from ray import tune

    trial.failure = reason
    step = run.step if run is not None else 0
    with tempfile.TemporaryDirectory(prefix="reset-tune-ckpt-") as directory:
        trial.save(Path(directory), None)
        row = {
            names.STEP: step,
            SEED_INDEX: trial.seed_index,
            FAILURE_REASON: reason,
            NODE_ID: trial.node_id,
        }
        if trial.pending:
            row[EVALUATIONS] = json.dumps(trial.pending)  # the curves up to the failure
            trial.pending = []
        tune.report(row, checkpoint=tune.Checkpoint.from_directory(directory))
    raise TrialFailed(reason)


def trial_threads(cpus: float) -> int:
    """Torch threads for a trial given its CPU share (Ray also sets OMP_NUM_THREADS)."""
    return max(1, int(cpus)) if cpus >= 1 else 1
