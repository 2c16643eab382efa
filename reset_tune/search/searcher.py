"""Ray Tune's `OptunaSearch`, fitted to how reset-tune trials report.

A trial reports its objective (`OBJECTIVE`) once, in its final row; every evaluation reports the
running objective instead. Ray's searcher reads ``result[metric]`` from every row; this one gives
Optuna the running objective as the trial's intermediate values (so Optuna's plots show learning
curves) and leaves the final value to `on_trial_complete`.
"""

from __future__ import annotations

from ray.tune.search.optuna import OptunaSearch

from reset_tune import names
from reset_tune.search.trainable import RUNNING_OBJECTIVE, SEED_INDEX


class TrialSearch(OptunaSearch):
    def __init__(self, *args, steps_per_seed: int, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.steps_per_seed = steps_per_seed
        self._reported: dict[str, set[int]] = {}

    def on_trial_result(self, trial_id: str, result: dict) -> None:
        if trial_id in self._completed_trials or trial_id not in self._ot_trials:
            return
        if RUNNING_OBJECTIVE not in result or names.STEP not in result:
            return
        # Steps restart with each seed; Optuna keeps one value per step.
        step = int(result.get(SEED_INDEX, 0)) * self.steps_per_seed + int(result[names.STEP])
        reported = self._reported.setdefault(trial_id, set())
        if step not in reported:  # a trial restarted from a checkpoint reports some steps again
            reported.add(step)
            self._ot_trials[trial_id].report(float(result[RUNNING_OBJECTIVE]), step)

    def trial_number(self, trial_id: str) -> int | None:
        trial = self._ot_trials.get(trial_id)
        return None if trial is None else trial.number
