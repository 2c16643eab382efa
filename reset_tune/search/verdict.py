"""A search's verdict: does resetting help here? The best resetting configuration against the best
r = 0 configuration, paired on their common seeds, and whether resetting had anything to counter.

The two configurations are each arm's incumbent (racing, `reset_tune.search.racing`) or best trial
by the objective. On each common seed s the paired difference is d_s = resetting − r = 0 (signed so
that > 0 is better for `val_loss` too); over n seeds the 95 % interval is the t interval::

    d̄ ± t(0.975, n − 1) · se,   se = max(sd(d), 1 / n_images) / √n

the paired t interval; the floor of one image (accuracies only) keeps a few identical
differences (accuracies on a small split move in steps of 1/n_images) from reading as
noise-free. The interval is computed for the objective (what the search chose by) and for clean
test accuracy (reported, never used to choose). The words come from the objective's interval:

- **helps**: the interval lies above 0; **hurts**: below 0; **no evidence**: it contains 0;
- **cannot act**: the r = 0 configuration did not memorise within the budget on any of its seeds
  (`reset_tune.engine.memorisation`, label-free), or the resetting configuration never reset —
  resetting has nothing to counter, or never acted, whatever the difference says;
- **1 seed: not a verdict**: a single common seed gives no interval at all.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from reset_tune import names

HELPS = "helps"
HURTS = "hurts"
NO_EVIDENCE = "no evidence"
CANNOT_ACT = "cannot act"
ONE_SEED = "1 seed: not a verdict"
NO_COMPARISON = "no comparison"
WORDS = (HELPS, HURTS, NO_EVIDENCE, CANNOT_ACT, ONE_SEED, NO_COMPARISON)

_T975 = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365, 8: 2.306,
         9: 2.262, 10: 2.228, 12: 2.179, 15: 2.131, 20: 2.086, 30: 2.042}  # fmt: skip


def t_quantile_975(df: int) -> float:
    """Student's t 0.975 quantile (df ≥ 1); conservative between tabulated values, 1.96 past 30."""
    if df < 1:
        raise ValueError(f"df must be at least 1, got {df}")
    if df > 30:
        return 1.96
    return _T975[min(k for k in _T975 if k >= df)]


@dataclass(frozen=True)
class SeedValues:
    """One configuration on one seed."""

    objective: float
    test_acc: float
    num_resets: int
    memorisation_step: int | None  # label-free onset (None: no memorisation within the budget)
    n_val: int  # validation images (the objective's binomial noise)
    n_test: int


@dataclass(frozen=True)
class PairedDifference:
    n: int
    mean: float
    low: float  # the 95 % interval; nan with one seed
    high: float
    se: float

    def points(self) -> str:
        """E.g. ``+2.10 points [+0.40, +3.80]`` (accuracies) in percentage points."""
        if self.n < 2:
            return f"{100 * self.mean:+.2f} points (1 seed, no interval)"
        return f"{100 * self.mean:+.2f} points [{100 * self.low:+.2f}, {100 * self.high:+.2f}]"

    def plain(self) -> str:
        if self.n < 2:
            return f"{self.mean:+.4f} (1 seed, no interval)"
        return f"{self.mean:+.4f} [{self.low:+.4f}, {self.high:+.4f}]"


def paired_difference(
    differences: Sequence[float], values: Sequence[float], *, n_images: int | None
) -> PairedDifference:
    """Mean and 95 % t interval of paired `differences` (see the module docstring); with one
    difference, no interval, and `values` (both arms' raw values) give its binomial noise."""
    n = len(differences)
    if n == 0:
        raise ValueError("no common seed: nothing to compare")
    mean = statistics.fmean(differences)
    if n < 2:
        # No spread from one seed: the binomial error of one accuracy says how noisy it is.
        p = min(max(statistics.fmean(values), 0.0), 1.0)
        se = math.sqrt(p * (1 - p) / n_images) if n_images else math.nan
        return PairedDifference(n=1, mean=mean, low=math.nan, high=math.nan, se=se)
    floor = 1.0 / n_images if n_images else 0.0
    se = max(statistics.stdev(differences), floor) / math.sqrt(n)
    half = t_quantile_975(n - 1) * se
    return PairedDifference(n=n, mean=mean, low=mean - half, high=mean + half, se=se)


@dataclass
class Verdict:
    word: str
    reason: str
    resetting: str | None = None  # the configurations compared (labels)
    baseline: str | None = None
    seeds: list[int] = field(default_factory=list)  # the common seeds
    objective_metric: str = "val_acc"
    objective: PairedDifference | None = None
    test_acc: PairedDifference | None = None
    baseline_memorised: int = 0  # of the r = 0 configuration's seeds, how many memorised
    baseline_memorisation_steps: list[int | None] = field(default_factory=list)
    resetting_resets: list[int] = field(default_factory=list)  # resets per common seed

    def line(self) -> str:
        """The verdict in one line, e.g. for the end of `reset-tune search`."""
        head = (
            f"verdict: resetting {self.word}"
            if self.word in (HELPS, HURTS)
            else (f"verdict: {self.word}")
        )
        if self.objective is None or self.test_acc is None:
            return f"{head} ({self.reason})"
        n = len(self.seeds)
        compared = f"{self.resetting} vs r = 0 {self.baseline} on {n} paired seed(s)"
        objective = (
            self.objective.points()
            if self.objective_metric == "val_acc"
            else self.objective.plain()
        )
        return (
            f"{head} — {compared}: {self.objective_metric} {objective}, "
            f"clean test {self.test_acc.points()} (reported, not used to choose); {self.reason}"
        )

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    def metrics(self) -> dict[str, float]:
        """The verdict's figures as MLflow metrics of the search's parent run."""
        out: dict[str, float] = {"verdict/n_seeds": float(len(self.seeds))}
        for name, diff in (("objective", self.objective), ("test_acc", self.test_acc)):
            if diff is None:
                continue
            out[f"verdict/{name}_diff"] = diff.mean
            if diff.n >= 2:
                out[f"verdict/{name}_low"] = diff.low
                out[f"verdict/{name}_high"] = diff.high
        if self.baseline_memorisation_steps:
            out["verdict/baseline_memorised_fraction"] = self.baseline_memorised / len(
                self.baseline_memorisation_steps
            )
        return out


def decide(
    resetting: Mapping[int, SeedValues] | None,
    baseline: Mapping[int, SeedValues] | None,
    *,
    mode: str,
    objective_metric: str,
    resetting_label: str | None = None,
    baseline_label: str | None = None,
    steps: int | None = None,
) -> Verdict:
    """The verdict on two configurations' per-seed values (see the module docstring)."""
    if not resetting or not baseline:
        missing = "resetting" if not resetting else "r = 0"
        return Verdict(
            NO_COMPARISON,
            f"no complete {missing} configuration to compare with",
            resetting=resetting_label,
            baseline=baseline_label,
            objective_metric=objective_metric,
        )
    sign = names.gain_sign(mode)
    seeds = sorted(s for s in resetting if s in baseline)
    if not seeds:
        return Verdict(
            NO_COMPARISON,
            "the two configurations share no seed",
            resetting=resetting_label,
            baseline=baseline_label,
            objective_metric=objective_metric,
        )
    accuracy = objective_metric == "val_acc"
    objective = paired_difference(
        [sign * (resetting[s].objective - baseline[s].objective) for s in seeds],
        [resetting[s].objective for s in seeds] + [baseline[s].objective for s in seeds],
        n_images=min(baseline[s].n_val for s in seeds) if accuracy else None,
    )
    test = paired_difference(
        [resetting[s].test_acc - baseline[s].test_acc for s in seeds],
        [resetting[s].test_acc for s in seeds] + [baseline[s].test_acc for s in seeds],
        n_images=min(baseline[s].n_test for s in seeds),
    )
    onsets = [baseline[s].memorisation_step for s in seeds]
    memorised = sum(1 for o in onsets if o is not None)
    resets = [resetting[s].num_resets for s in seeds]
    verdict = Verdict(
        word=NO_EVIDENCE,
        reason="",
        resetting=resetting_label,
        baseline=baseline_label,
        seeds=list(seeds),
        objective_metric=objective_metric,
        objective=objective,
        test_acc=test,
        baseline_memorised=memorised,
        baseline_memorisation_steps=onsets,
        resetting_resets=resets,
    )
    budget = f"{steps} steps" if steps else "the budget"
    if memorised == 0:
        verdict.word = CANNOT_ACT
        verdict.reason = (
            f"the r = 0 configuration did not memorise within {budget} on any of its "
            f"{len(seeds)} seed(s) (label-free signal), so resetting has nothing to counter; "
            "train longer, use a smaller training set or less weight decay"
        )
        return verdict
    if sum(resets) == 0:
        verdict.word = CANNOT_ACT
        verdict.reason = (
            "the resetting configuration never reset on its seeds (resetting did not arm, or "
            "r is too small for the steps left): it ran as r = 0; shorten patience or train longer"
        )
        return verdict
    where = (
        f"r = 0 memorised on all {len(seeds)} seeds"
        if memorised == len(seeds)
        else f"r = 0 memorised on {memorised} of {len(seeds)} seeds"
    )
    if objective.n < 2:
        verdict.word = ONE_SEED
        noise = (
            f" (±{100 * objective.se:.1f} points of noise)" if math.isfinite(objective.se) else ""
        )
        verdict.reason = (
            f"{where}; one seed of a noisy validation split decides nothing{noise}: race seeds "
            "(racing: in the spec) or list more seeds"
        )
        return verdict
    if objective.low > 0:
        verdict.word = HELPS
    elif objective.high < 0:
        verdict.word = HURTS
    verdict.reason = where
    return verdict
