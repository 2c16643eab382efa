"""What a search found: its trials' outcomes, the best configuration, plots and importances.

Built from the search's Tune files (`tune_files`), so a finished, resumed or synced search reports
the same way. The best configuration is ranked by the objective (a validation metric at θbest);
clean test accuracy is shown beside it, never used to choose.
"""

from __future__ import annotations

import json
import math
import warnings
from collections.abc import Collection, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

from reset_tune import names
from reset_tune.engine.memorisation import detect_memorisation
from reset_tune.engine.result import TrainResult
from reset_tune.search.labels import configuration_id, run_label
from reset_tune.search.racing import INCUMBENT, split_race_params
from reset_tune.search.spec import RESET_PROB, SearchSpec
from reset_tune.search.trainable import (
    OBJECTIVE,
    WALL_TIME,
    objective_value,
    results_from_row,
    trial_summary,
)
from reset_tune.search.tune_files import COMPLETE, TuneTrial
from reset_tune.search.verdict import SeedValues, Verdict, decide
from reset_tune.tracking.sink import trial_run_name

if TYPE_CHECKING:
    import optuna


@dataclass
class TrialOutcome:
    label: str
    tune_trial_id: str
    outcome: str  # tune_files.COMPLETE | PRUNED | FAILED | INTERRUPTED
    params: dict[str, Any]  # the searched values (and the switch), as Tune's config holds them
    config: dict[str, Any]  # the resolved TrainConfig of the first seed
    objective: float | None = None
    test_acc: float | None = None
    num_resets: float | None = None
    wall_time_s: float | None = None
    failure_reason: str | None = None
    steps_reported: int = 0
    tie_break: float | None = None  # the other validation metric at θbest (val_loss for val_acc)
    per_seed: dict[int, SeedValues] = field(default_factory=dict)  # what the verdict pairs
    n_seeds: int = 0  # seeds behind `objective` (a mean over them)
    race_status: str | None = None  # racing: incumbent | rejected | dethroned | racing | failed
    race_note: str = ""
    runs: list[str] = field(default_factory=list)  # racing: the configuration's seed runs

    @property
    def resets(self) -> bool:
        return float(self.config.get(RESET_PROB, 0.0)) > 0

    @property
    def objective_value(self) -> float:
        """The objective of a complete trial (the report ranks only those)."""
        if self.objective is None:
            raise ValueError(f"{self.label} has no objective: it did not complete")
        return float(self.objective)


@dataclass
class SearchReport:
    search_id: str
    objective_metric: str
    mode: str
    trials: list[TrialOutcome]
    importances: dict[str, float]
    tracking_uri: str | None = None
    mlflow_url: str | None = None  # the parent run in the UI's model-training view
    mlflow_trials_url: str | None = None  # the search's trials, sorted by the objective
    racing: bool = False  # `trials` are configurations raced on seeds (`runs` are the seed runs)
    runs: list[TrialOutcome] = field(default_factory=list)
    steps: int | None = None  # the training budget, for the verdict's wording
    # Every seed's full result of each complete run, by Tune trial id: the winners' curves.
    # Not part of `to_json` (the trials' files hold them).
    results: dict[str, list[TrainResult]] = field(default_factory=dict, repr=False)

    @property
    def complete(self) -> list[TrialOutcome]:
        return [t for t in self.trials if t.outcome == COMPLETE and _finite(t.objective)]

    def ranked(self) -> list[TrialOutcome]:
        """Complete configurations, best first. Ties on the objective (validation accuracy on a
        small split moves in steps of 1/n) go to the other validation metric at θbest. With
        racing, the incumbents come first, then configurations by how many seeds they won:
        a mean over one lucky seed does not outrank a mean over four."""
        sign = -names.gain_sign(self.mode)  # ascending sort: best first
        # Ties then go to low loss (objective accuracy) or high accuracy (objective loss).
        tie_sign = 1.0 if self.objective_metric == names.METRIC_VAL_ACC else -1.0

        def key(t: TrialOutcome) -> tuple[float, float, float, float]:
            tie = t.tie_break if t.tie_break is not None and math.isfinite(t.tie_break) else 0.0
            leading = 0.0 if not self.racing or t.race_status == INCUMBENT else 1.0
            seeds = -float(t.n_seeds) if self.racing else 0.0
            return (leading, seeds, sign * t.objective_value, tie_sign * tie)

        return sorted(self.complete, key=key)

    @property
    def best_resetting(self) -> TrialOutcome | None:
        """The best resetting configuration (the resetting arm's incumbent when racing)."""
        found = [t for t in self.ranked() if t.resets]
        return found[0] if found else None

    def verdict(self) -> Verdict:
        """Best resetting vs best r = 0 configuration, paired on their common seeds."""
        resetting, baseline = self.best_resetting, self.best_baseline
        return decide(
            None if resetting is None else resetting.per_seed,
            None if baseline is None else baseline.per_seed,
            mode=self.mode,
            objective_metric=self.objective_metric,
            resetting_label=None if resetting is None else resetting.label,
            baseline_label=None if baseline is None else baseline.label,
            steps=self.steps,
        )

    def tie_noise(self) -> float | None:
        """The binomial standard error of the best configuration's objective (an accuracy on the
        validation split, averaged over its seeds): configurations closer to the best than this
        are tied with it. None for val_loss (no binomial error) or without a complete one."""
        best = self.best
        if best is None or self.objective_metric != names.METRIC_VAL_ACC or not best.per_seed:
            return None
        n_val = min(v.n_val for v in best.per_seed.values())
        p = min(max(best.objective_value, 0.0), 1.0)
        return math.sqrt(p * (1 - p) / n_val) / math.sqrt(max(best.n_seeds, 1))

    def tied_with_best(self) -> list[TrialOutcome]:
        """Configurations (besides the best) within `tie_noise` of the best's objective."""
        best, noise = self.best, self.tie_noise()
        if best is None or noise is None:
            return []
        return [
            t for t in self.ranked()[1:] if abs(t.objective_value - best.objective_value) <= noise
        ]

    @property
    def best(self) -> TrialOutcome | None:
        ranked = self.ranked()
        return ranked[0] if ranked else None

    @property
    def best_baseline(self) -> TrialOutcome | None:
        """The best r = 0 trial: what resetting is measured against in this search."""
        baseline = [t for t in self.ranked() if not t.resets]
        return baseline[0] if baseline else None

    def counts(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for trial in self.trials:
            counts[trial.outcome] = counts.get(trial.outcome, 0) + 1
        return counts

    def summary_metrics(self) -> dict[str, float]:
        """The search's outcome as the parent run's metrics, under ``summary/`` with the trials'
        names (`trial_run.SUMMARY_METRICS`): the best trial's objective and clean test accuracy
        (``summary/objective``, ``summary/test_acc``), the same of the best r = 0 trial
        (``summary/r0_*``) and of the best resetting one (``summary/resetting_*``), the gain
        (best resetting − best r = 0 clean test accuracy), trial counts; then the verdict's."""
        metrics: dict[str, float] = {
            f"summary/trials_{k}": float(v) for k, v in self.counts().items()
        }
        metrics["summary/trials"] = float(len(self.trials))
        for prefix, trial in (
            ("summary/", self.best),
            ("summary/r0_", self.best_baseline),
            ("summary/resetting_", self.best_resetting),
        ):
            if trial is None:
                continue
            metrics[f"{prefix}objective"] = trial.objective_value
            if trial.test_acc is not None:
                metrics[f"{prefix}test_acc"] = float(trial.test_acc)
        if self.best is not None:
            metrics["summary/reset_prob"] = float(self.best.config.get(RESET_PROB, 0.0))
        gain = self.gain
        if gain is not None:
            metrics["summary/gain_test_acc"] = gain
        metrics.update(self.verdict().metrics())
        return metrics

    @property
    def gain(self) -> float | None:
        """Clean test accuracy of the best resetting trial minus the best r = 0 trial's (both
        chosen by the objective); None without both."""
        resetting, baseline = self.best_resetting, self.best_baseline
        if resetting is None or baseline is None:
            return None
        if resetting.test_acc is None or baseline.test_acc is None:
            return None
        return float(resetting.test_acc) - float(baseline.test_acc)

    def to_json(self) -> dict[str, Any]:
        best = self.best
        return {
            "search_id": self.search_id,
            "objective": self.objective_metric,
            "mode": self.mode,
            "counts": self.counts(),
            "best": asdict(best) if best else None,
            "best_config": best.config if best else None,
            "best_baseline": asdict(self.best_baseline) if self.best_baseline else None,
            "importances": self.importances,
            "trials": [asdict(t) for t in self.trials],
            "tracking_uri": self.tracking_uri,
            "mlflow_url": self.mlflow_url,
            "mlflow_trials_url": self.mlflow_trials_url,
            "summary": self.summary_metrics(),
            "verdict": self.verdict().to_json(),
            "verdict_line": self.verdict().line(),
            "racing": self.racing,
            "runs": [asdict(t) for t in self.runs] if self.racing else [],
            "tie_noise": self.tie_noise(),
            "tied_with_best": [t.label for t in self.tied_with_best()],
        }

    def table(self, top: int = 10) -> str:
        """The top configurations as a text table, best first; `≈` marks a tie with the best
        (within `tie_noise`), and with racing each row is a mean over its seeds."""
        seeds_column = f" {'seeds':>5} {'race':<10}" if self.racing else ""
        header = (
            f"{'trial':<12}  {self.objective_metric:>8} {'test acc':>8}{seeds_column} "
            f"{'reset_prob':>10} {'layers':<14} {'patience':>8} {'lr':>8} {'batch':>5} "
            f"{'resets':>6}"
        )
        lines = [header, "-" * len(header)]
        tied = {t.label for t in self.tied_with_best()}
        for t in self.ranked()[:top]:
            c = t.config
            r = float(c.get(RESET_PROB, 0.0))
            mark = "≈" if t.label in tied else " "
            race = f" {t.n_seeds:>5} {(t.race_status or '-'):<10.10}" if self.racing else ""
            lines.append(
                f"{t.label:<12} {mark}{t.objective:>8.4f} {_fmt(t.test_acc):>8}{race} "
                f"{(f'{r:.4g}' if r > 0 else 'off'):>10} "
                f"{(str(c.get('reset_layers')) if r > 0 else '-'):<14.14} "
                f"{(str(c.get('patience')) if r > 0 else '-'):>8} {float(c['lr']):>8.4g} "
                f"{int(c['batch_size']):>5} {_fmt(t.num_resets, '.0f'):>6}"
            )
        others = [t for t in self.trials if t.outcome != COMPLETE]
        for t in others:
            why = f": {t.failure_reason}" if t.failure_reason else ""
            lines.append(f"{t.label:<12} {t.outcome}{why}")
        noise = self.tie_noise()
        if tied and noise is not None:
            lines.append(
                f"≈ tied with the best: within one standard error ({100 * noise:.1f} points, "
                "binomial on the validation split) of its objective"
            )
        return "\n".join(lines)

    def comparison_plot(self) -> bytes:
        """Both arms side by side, every complete trial labelled by its number, the winners
        starred, each arm's spread (`plots.render_comparison`)."""
        from reset_tune.plots import ArmPoint, render_comparison

        marks: dict[str, list[str]] = {}
        for trial, mark in ((self.best, "best"), (self.best_baseline, "best r=0")):
            if trial is not None:
                marks.setdefault(trial.label, []).append(mark)
        points = [
            ArmPoint(
                label=_short_label(t.label),
                resets=t.resets,
                reset_prob=float(t.config.get(RESET_PROB, 0.0)),
                objective=t.objective_value,
                test_acc=None if t.test_acc is None else float(t.test_acc),
                mark=", ".join(marks.get(t.label, [])),
            )
            for t in self.complete
        ]
        return render_comparison(
            points,
            objective_metric=self.objective_metric,
            title=f"{self.search_id}: resetting vs r = 0",
            gain=self.gain,
        )

    def winners_curves_plot(self) -> bytes | None:
        """The best resetting and the best r = 0 trial's curves on one figure (their first
        common seed), or the one the search has; None without a complete trial."""
        shown: dict[str, TrainResult] = {}
        pairs = [("best resetting", self.best_resetting), ("best r = 0", self.best_baseline)]
        seeds = [
            {int(r.config.get("seed", 0)) for r in self._results_of(t)}
            for _, t in pairs
            if t is not None
        ]
        common = set.intersection(*seeds) if seeds else set()
        for what, trial in pairs:
            if trial is None:
                continue
            results = self._results_of(trial)
            chosen = [r for r in results if int(r.config.get("seed", 0)) in common] or results
            if chosen:
                r = min(chosen, key=lambda res: int(res.config.get("seed", 0)))
                arm = f"r={float(r.config.get(RESET_PROB, 0.0)):.2g}" if trial.resets else "r=0"
                shown[f"{what}: {trial.label} {arm}, seed {r.config.get('seed')}"] = r
        if not shown:
            return None
        from reset_tune.plots import render_curves

        return render_curves(shown, title=f"{self.search_id}: best resetting vs best r = 0")

    def _results_of(self, trial: TrialOutcome) -> list[TrainResult]:
        ids = [r.tune_trial_id for r in self.runs if r.label in trial.runs] if self.racing else []
        return [res for i in (ids or [trial.tune_trial_id]) for res in self.results.get(i, [])]


def _short_label(label: str) -> str:
    """``trial-0004`` -> ``4`` (and ``trial-0004 seed 2`` -> ``4 seed 2``), for plot labels."""
    head, _, rest = label.partition(" ")
    number = head.removeprefix("trial-").lstrip("0") or "0"
    return f"{number} {rest}".strip()


def outcomes(
    spec: SearchSpec,
    trials: Iterable[TuneTrial],
    *,
    numbers: dict[str, int],
    interrupted: Collection[str] = (),
) -> list[TrialOutcome]:
    """One `TrialOutcome` per Tune trial (trials re-run on resume keep their own entries)."""
    out = []
    for trial in trials:
        number = numbers.get(trial.trial_id)
        label = trial_run_name(trial.trial_id if number is None else number)
        try:
            config = spec.config_for(trial.params).to_dict()
        except Exception:  # noqa: BLE001 - a trial from another spec version: shown, not used
            config = dict(trial.params)
        final = trial.final_row
        if spec.racing is not None:
            label = run_label(spec, trial.trial_id, trial.params, number)
        outcome = TrialOutcome(
            label=label,
            tune_trial_id=trial.trial_id,
            outcome=trial.outcome(pruning=spec.prunes, interrupted=interrupted),
            params=dict(trial.params),
            config=config,
            failure_reason=trial.failure_reason,
            steps_reported=len(trial.evaluation_rows),
        )
        if final is not None:
            results = results_from_row(final)
            summary = trial_summary(spec, results)
            outcome.per_seed = {int(r.config["seed"]): seed_values(spec, r) for r in results}
            outcome.n_seeds = len(results)
            outcome.objective = float(final[OBJECTIVE])
            outcome.test_acc = summary[names.TEST_ACC]
            outcome.num_resets = summary[names.RESET_COUNT]
            outcome.wall_time_s = summary[WALL_TIME]
            other = (
                names.BEST_VAL_LOSS
                if spec.objective.metric == names.METRIC_VAL_ACC
                else names.BEST_VAL_ACC
            )
            outcome.tie_break = summary[other]
        out.append(outcome)
    return out


def seed_values(spec: SearchSpec, result: TrainResult) -> SeedValues:
    """What the verdict needs of one seed's result (memorisation detected without labels)."""
    n_val = int(result.data.get("num_val") or 1)
    finding = detect_memorisation(
        result.history, n_val=n_val, batch_size=int(result.config["batch_size"])
    )
    return SeedValues(
        objective=objective_value(spec, result),
        test_acc=float(result.test_acc),
        num_resets=int(result.num_resets),
        memorisation_step=finding.onset_step,
        n_val=n_val,
        n_test=int(result.data.get("num_test") or 1),
    )


def configurations(
    spec: SearchSpec,
    runs: Sequence[TrialOutcome],
    *,
    numbers: dict[str, int],
    race: dict[str, Any] | None,
) -> list[TrialOutcome]:
    """Racing: one outcome per configuration, its seed runs merged (means over their seeds),
    with the race's status of each configuration."""
    statuses = {int(c["config_id"]): c for c in (race or {}).get("contenders", [])}
    grouped: dict[int, list[TrialOutcome]] = {}
    for run in runs:
        config_id = configuration_id(run.params, numbers.get(run.tune_trial_id))
        if config_id is not None:
            grouped.setdefault(config_id, []).append(run)
    out = []
    for config_id, members in sorted(grouped.items()):
        complete = [m for m in members if m.outcome == COMPLETE and _finite(m.objective)]
        first = members[0]
        params = split_race_params(first.params)[0]
        per_seed = dict(sorted((s, v) for m in complete for s, v in m.per_seed.items()))
        status = statuses.get(config_id, {})
        merged = TrialOutcome(
            label=trial_run_name(config_id),
            tune_trial_id=first.tune_trial_id,
            outcome=COMPLETE if complete else first.outcome,
            params=params,
            config=first.config,
            failure_reason=None if complete else first.failure_reason,
            steps_reported=sum(m.steps_reported for m in members),
            per_seed=per_seed,
            n_seeds=len(per_seed),
            race_status=status.get("status"),
            race_note=status.get("note", ""),
            runs=[m.label for m in members],
        )
        if complete:
            merged.objective = _mean([m.objective for m in complete])
            merged.test_acc = _mean([m.test_acc for m in complete])
            merged.num_resets = _mean([m.num_resets for m in complete])
            merged.tie_break = _mean([m.tie_break for m in complete])
            merged.wall_time_s = sum(m.wall_time_s or 0.0 for m in complete)
        out.append(merged)
    return out


def _mean(values: Sequence[float | None]) -> float | None:
    known = [float(v) for v in values if v is not None]
    return sum(known) / len(known) if known else None


def param_importances(study: optuna.Study) -> dict[str, float]:
    """Optuna's parameter importances (fANOVA) over the complete trials; {} when too few."""
    import optuna

    complete = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
    if len(complete) < 2:
        return {}
    try:
        with warnings.catch_warnings():
            # "some regimes have less than 2 trials": expected in a small search, not actionable.
            warnings.simplefilter("ignore", UserWarning)
            importances = optuna.importance.get_param_importances(study)
    except (ValueError, RuntimeError):
        return {}  # e.g. no parameter shared by every complete trial, or constant objectives
    return {k: round(float(v), 6) for k, v in importances.items()}


def best_config_text(report: SearchReport) -> str:
    best = report.best
    if best is None:
        return "{}\n"
    return json.dumps(best.config, indent=2, sort_keys=True) + "\n"


def _finite(value: float | None) -> bool:
    return value is not None and math.isfinite(value)


def _fmt(value: float | None, spec: str = ".4f") -> str:
    return "-" if value is None else format(value, spec)
