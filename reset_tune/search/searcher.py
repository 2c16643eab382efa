"""Ray Tune's `OptunaSearch`, fitted to how reset-tune trials report.

A trial reports its objective (`OBJECTIVE`) once, in its final row; every evaluation reports the
running objective instead. Ray's searcher reads ``result[metric]`` from every row; this one gives
Optuna the running objective as the trial's intermediate values (so Optuna's plots show learning
curves) and leaves the final value to `on_trial_complete`.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from typing import Any

from ray.tune.search import Searcher
from ray.tune.search.optuna import OptunaSearch

from reset_tune import names
from reset_tune.search.racing import RACE_CONFIG, RACE_SEED, Race
from reset_tune.search.trainable import RUNNING_OBJECTIVE, SEED_INDEX

# Ray annotates `Searcher.suggest` as returning a dict or None, yet a searcher ends the search by
# returning the string `Searcher.FINISHED` (as Ray's docs say and its own searchers do).
_FINISHED: Any = Searcher.FINISHED


class TrialSearch(OptunaSearch):
    """`OptunaSearch` told each evaluation's running objective at a step unique across seeds."""

    def __init__(self, *args: Any, steps_per_seed: int, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.steps_per_seed = steps_per_seed
        self._reported: dict[str, set[int]] = {}

    def on_trial_result(self, trial_id: str, result: dict[str, Any]) -> None:
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


class RacingSearch(Searcher):
    """Optuna proposes configurations; a `Race` decides which of them run on more seeds.

    Every Tune trial is one seed run. A configuration's first run is an Optuna trial (Optuna is
    told its first-seed value, see below); its later runs are Tune trials of their own whose
    config carries `RACE_CONFIG` and `RACE_SEED`. `suggest` starts, in this order: a seed run the
    race scheduled, a new configuration while fewer than `new_configurations` have started, and
    once all have started and finished their first run the race is closed (both incumbents are
    topped up to every race seed) and runs to its end; then `FINISHED`.

    Optuna learns each configuration's *first-seed* value, at once: every configuration runs
    on the same first seed, so those values are paired with each other (common random numbers)
    and TPE never waits for a race; a mean over a configuration's seeds would mix values on
    different seed sets, and only the few contenders ever get more than one.

    `on_change` is called with the race's state after every change (the driver saves it in the
    search record, so `--resume` continues the race where it stopped).
    """

    def __init__(
        self,
        optuna_search: TrialSearch,
        race: Race,
        *,
        new_configurations: int,
        resets: Callable[[dict], bool],
        on_change: Callable[[dict], None],
        resume_params: Mapping[int, dict] | None = None,
    ) -> None:
        super().__init__(metric=optuna_search.metric, mode=optuna_search.mode)
        self.optuna = optuna_search
        self.race = race
        self.remaining = new_configurations
        self.resets = resets
        self.on_change = on_change
        # Each configuration's parameters, by race id (those of earlier segments come from the
        # driver, which reads them from the Optuna study).
        self.params: dict[int, dict] = dict(resume_params or {})
        self.runs: dict[str, tuple[int, int]] = {}  # Tune trial id -> (configuration, seed)
        self.first_runs: set[str] = set()  # Tune trials that are Optuna trials
        self.first_runs_open = 0

    def set_search_properties(
        self, metric: str | None, mode: str | None, config: dict[str, Any], **spec: Any
    ) -> bool:
        return self.optuna.set_search_properties(metric, mode, config, **spec)

    def suggest(self, trial_id: str) -> dict[str, Any] | None:
        scheduled = self.race.next_run()
        if scheduled is not None:
            config_id, seed = scheduled
            self.runs[trial_id] = (config_id, seed)
            self._changed()
            return {**self.params[config_id], RACE_CONFIG: config_id, RACE_SEED: seed}
        if self.remaining > 0:
            suggestion = self.optuna.suggest(trial_id)
            if suggestion is None or suggestion == _FINISHED:
                return suggestion
            number = self.optuna.trial_number(trial_id)
            assert number is not None  # invariant: OptunaSearch just asked for this trial
            self.remaining -= 1
            self.params[number] = dict(suggestion)
            self.runs[trial_id] = (number, self.race.rules.seeds[0])
            self.first_runs.add(trial_id)
            self.first_runs_open += 1
            self.race.add(number, resets=self.resets(suggestion))
            self._changed()
            return suggestion
        if self.first_runs_open > 0:
            return None  # the last configurations' first runs decide what else runs
        if not self.race.closed:
            self.race.close()
            self._changed()
            return self.suggest(trial_id)
        return None if self.race.busy else _FINISHED

    def on_trial_result(self, trial_id: str, result: dict[str, Any]) -> None:
        if trial_id in self.first_runs:
            self.optuna.on_trial_result(trial_id, result)

    def on_trial_complete(
        self, trial_id: str, result: dict[str, Any] | None = None, error: bool = False
    ) -> None:
        run = self.runs.pop(trial_id, None)
        if run is None:
            return
        if trial_id in self.first_runs:
            self.first_runs.discard(trial_id)
            self.first_runs_open -= 1
            self.optuna.on_trial_complete(trial_id, result=result, error=error)
        value = None if error or not result else result.get(self.optuna.metric)
        self.race.record(*run, None if value is None else float(value))
        self._changed()

    def trial_number(self, trial_id: str) -> int | None:
        return self.optuna.trial_number(trial_id)

    def configuration(self, trial_id: str) -> tuple[int, int] | None:
        """The (configuration, seed) a live Tune trial runs."""
        return self.runs.get(trial_id)

    def save(self, checkpoint_path: str) -> None:
        # Tune snapshots searchers with the experiment; the race's own record is the driver's
        # (`on_change`), so this snapshot is for inspection only.
        with open(checkpoint_path, "w") as handle:
            json.dump(self.race.state_dict(), handle)

    def restore(self, checkpoint_path: str) -> None:
        with open(checkpoint_path) as handle:
            self.race.load_state_dict(json.load(handle))

    def _changed(self) -> None:
        self.on_change(self.race.state_dict())
