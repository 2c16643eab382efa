"""What a search found: its trials' outcomes, the best configuration, plots and importances.

Built from the search's Tune files (`tune_files`), so a finished, resumed or synced search reports
the same way. The best configuration is ranked by the objective (a validation metric at θbest);
clean test accuracy is shown beside it, never used to choose.
"""

from __future__ import annotations

import io
import json
import math
import warnings
from collections.abc import Collection, Iterable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

from reset_tune import names
from reset_tune.search.spec import RESET_PROB, SearchSpec
from reset_tune.search.trainable import OBJECTIVE, WALL_TIME, results_from_row, trial_summary
from reset_tune.search.tune_files import COMPLETE, TuneTrial
from reset_tune.tracking.sink import trial_run_name


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

    @property
    def resets(self) -> bool:
        return float(self.config.get(RESET_PROB, 0.0)) > 0


@dataclass
class SearchReport:
    search_id: str
    objective_metric: str
    mode: str
    trials: list[TrialOutcome]
    importances: dict[str, float]
    tracking_uri: str | None = None
    mlflow_url: str | None = None

    @property
    def complete(self) -> list[TrialOutcome]:
        return [t for t in self.trials if t.outcome == COMPLETE and _finite(t.objective)]

    def ranked(self) -> list[TrialOutcome]:
        """Complete trials, best first. Ties on the objective (validation accuracy on a small
        split moves in steps of 1/n) go to the other validation metric at θbest."""
        sign = -1.0 if self.mode == "max" else 1.0
        tie_sign = 1.0 if self.objective_metric == "val_acc" else -1.0  # then low loss / high acc

        def key(t: TrialOutcome) -> tuple[float, float]:
            tie = t.tie_break if t.tie_break is not None and math.isfinite(t.tie_break) else 0.0
            return (sign * float(t.objective), tie_sign * tie)

        return sorted(self.complete, key=key)

    @property
    def best(self) -> TrialOutcome | None:
        ranked = self.ranked()
        return ranked[0] if ranked else None

    @property
    def best_baseline(self) -> TrialOutcome | None:
        """The best r = 0 trial: what resetting is measured against in this search."""
        baseline = [t for t in self.ranked() if not t.resets]
        return baseline[0] if baseline else None

    @property
    def armed_fraction(self) -> float | None:
        """Of the complete resetting trials, the share in which resetting ever fired."""
        resetting = [t for t in self.complete if t.resets]
        if not resetting:
            return None
        return sum(1 for t in resetting if (t.num_resets or 0) > 0) / len(resetting)

    def counts(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for trial in self.trials:
            counts[trial.outcome] = counts.get(trial.outcome, 0) + 1
        return counts

    def summary_metrics(self) -> dict[str, float]:
        metrics: dict[str, float] = {f"trials/{k}": float(v) for k, v in self.counts().items()}
        best, baseline = self.best, self.best_baseline
        if best is not None:
            metrics["best/objective"] = float(best.objective)
            if best.test_acc is not None:
                metrics["best/test_acc"] = float(best.test_acc)
            metrics["best/reset_prob"] = float(best.config.get(RESET_PROB, 0.0))
        if baseline is not None and baseline.test_acc is not None:
            metrics["baseline/test_acc"] = float(baseline.test_acc)
            metrics["baseline/objective"] = float(baseline.objective)
            if best is not None and best.test_acc is not None:
                metrics["gain/test_acc"] = float(best.test_acc) - float(baseline.test_acc)
        return metrics

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
            "summary": self.summary_metrics(),
        }

    def table(self, top: int = 10) -> str:
        """The top trials as a text table, best first."""
        header = (
            f"{'trial':<12} {self.objective_metric:>8} {'test acc':>8} {'reset_prob':>10} "
            f"{'layers':<14} {'patience':>8} {'lr':>8} {'batch':>5} {'resets':>6}"
        )
        lines = [header, "-" * len(header)]
        for t in self.ranked()[:top]:
            c = t.config
            r = float(c.get(RESET_PROB, 0.0))
            lines.append(
                f"{t.label:<12} {t.objective:>8.4f} {_fmt(t.test_acc):>8} "
                f"{(f'{r:.4g}' if r > 0 else 'off'):>10} "
                f"{(str(c.get('reset_layers')) if r > 0 else '-'):<14.14} "
                f"{(str(c.get('patience')) if r > 0 else '-'):>8} {float(c['lr']):>8.4g} "
                f"{int(c['batch_size']):>5} {_fmt(t.num_resets, '.0f'):>6}"
            )
        others = [t for t in self.trials if t.outcome != COMPLETE]
        for t in others:
            why = f": {t.failure_reason}" if t.failure_reason else ""
            lines.append(f"{t.label:<12} {t.outcome}{why}")
        return "\n".join(lines)

    def comparison_plot(self) -> bytes:
        """Clean test accuracy (θbest) against reset probability; r = 0 trials marked apart."""
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, (ax_test, ax_obj) = plt.subplots(1, 2, figsize=(10, 4), constrained_layout=True)
        resetting = [t for t in self.complete if t.resets]
        baseline = [t for t in self.complete if not t.resets]
        for ax, key, label in (
            (ax_test, "test_acc", "clean test accuracy (θbest)"),
            (ax_obj, "objective", f"{self.objective_metric} (objective)"),
        ):
            xs = [float(t.config[RESET_PROB]) for t in resetting if getattr(t, key) is not None]
            ys = [float(getattr(t, key)) for t in resetting if getattr(t, key) is not None]
            ax.scatter(xs, ys, label="resetting trials", color="tab:blue")
            values = [float(getattr(t, key)) for t in baseline if getattr(t, key) is not None]
            for i, value in enumerate(values):
                ax.axhline(
                    value,
                    color="tab:red",
                    linestyle="--",
                    linewidth=1,
                    label="r = 0 trials" if i == 0 else None,
                )
            best = self.best
            if best is not None and getattr(best, key) is not None and best.resets:
                ax.scatter(
                    [float(best.config[RESET_PROB])],
                    [float(getattr(best, key))],
                    marker="*",
                    s=200,
                    color="gold",
                    edgecolor="black",
                    label="best (by objective)",
                    zorder=3,
                )
            if xs:
                ax.set_xscale("log")
            ax.set_xlabel("reset probability per step")
            ax.set_ylabel(label)
            ax.legend(fontsize=8)
        fig.suptitle(f"{self.search_id}: resetting vs r = 0")
        buffer = io.BytesIO()
        fig.savefig(buffer, format="png", dpi=110)
        plt.close(fig)
        return buffer.getvalue()


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
            summary = trial_summary(spec, results_from_row(final))
            outcome.objective = float(final[OBJECTIVE])
            outcome.test_acc = summary[names.TEST_ACC]
            outcome.num_resets = summary[names.RESET_COUNT]
            outcome.wall_time_s = summary[WALL_TIME]
            other = (
                names.BEST_VAL_LOSS if spec.objective.metric == "val_acc" else names.BEST_VAL_ACC
            )
            outcome.tie_break = summary[other]
        out.append(outcome)
    return out


def param_importances(study) -> dict[str, float]:
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


def _float(value: Any) -> float | None:
    return float(value) if isinstance(value, int | float) else None


def _fmt(value: float | None, spec: str = ".4f") -> str:
    return "-" if value is None else format(value, spec)


def render_best(report: SearchReport, keys: Sequence[str] | None = None) -> str:
    """The best configuration as `reset-tune train` options (what to run next)."""
    best = report.best
    if best is None:
        return "no trial completed: no best configuration"
    searched = keys or list(best.params)
    parts = []
    for key in searched:
        if key not in best.config:
            continue
        value = best.config[key]
        parts.append(f"--{key.replace('_', '-')} {value}")
    return " ".join(parts)
