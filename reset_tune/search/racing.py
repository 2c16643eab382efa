"""Racing configurations on seeds: paired, SMAC3-style intensification with one incumbent per arm.

A *configuration* is one Optuna draw; a *seed run* is that configuration trained on one seed (one
Ray Tune trial). Seeds are the race's instances: the same seed gives the same split, label noise,
initialisation and batch order (docs/method.md §7), so two configurations compared on the same seeds
are compared *paired*, and the differences carry far less noise than the values.

Every configuration starts on the first race seed. The resetting arm and the r = 0 arm each keep
an *incumbent* (their best configuration so far); a challenger is raced against its own arm's
incumbent only, on the incumbent's seeds in race order (so every seed set is a prefix of
`seeds`). After each batch of a challenger's runs, with d_s = sign·(challenger − incumbent) on the
common seeds s (sign = +1 when the objective is maximised) and n their number::

    d̄ = mean(d_s)
    se = σ₁ = √(p (1 − p) / n_val)             with one seed (val_acc: the binomial error of an
                                               accuracy on n_val images, p their mean; 0 for
                                               val_loss, which has no binomial error)
    se = max(sd(d_s), 1 / n_val) / √n          with n ≥ 2 (the spread of the paired differences;
                                               the floor is one validation image)

- the challenger *cannot win* when d̄ + z·se < 0: it is rejected (z = `RaceRules.z`, default 1);
- it *might still win* otherwise: it runs on more of the incumbent's seeds, doubling its count
  (1, 2, 4, …) up to the incumbent's;
- once it has run on every seed of the incumbent it replaces it when d̄ > 0, and is rejected when
  d̄ ≤ 0 (ties keep the incumbent).

Each time a challenger is decided, the incumbent gains the next seed (up to `max_seeds`; SMAC
runs its incumbent on one more instance every intensification round), so incumbents accumulate
evidence as the search goes on and later challengers must beat them on more seeds. When the
search has started all its configurations, `close()` tops both incumbents up to `max_seeds`, so
the final comparison of the arms (`reset_tune.search.verdict`) is paired on the same seeds.

With one seed there is no spread, so the noise is that of one accuracy (two configurations
evaluated on the same images err on many of the same ones, so their difference is less noisy
than two independent accuracies). The floor of one image keeps a few identical differences
(accuracies on a small split move in steps of 1/n_val) from reading as a noise-free one.

References: F. Hutter, H. Hoos, K. Leyton-Brown, "Sequential model-based optimization for general
algorithm configuration" (LION 2011; SMAC's intensification: challengers run on the incumbent's
instance-seed pairs, doubling, rejected as soon as they are worse); M. López-Ibáñez et al., "The
irace package: iterated racing for automatic algorithm configuration" (Operations Research
Perspectives 2016). SMAC rejects on the plain mean (z = 0); here a challenger may trail by z
standard errors and still race on, because one seed of a small noisy validation split decides
little.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from reset_tune import names

RACING = "racing"
INCUMBENT = "incumbent"
REJECTED = "rejected"  # could not win against its arm's incumbent
DETHRONED = "dethroned"  # was the incumbent, then beaten
FAILED = "failed"  # a seed run failed: out of the race

# Keys that a seed run's Tune config carries besides the configuration's parameters.
RACE_CONFIG = "race_config"  # the configuration's id (the Optuna trial number of its first run)
RACE_SEED = "race_seed"


@dataclass(frozen=True)
class RaceRules:
    seeds: tuple[int, ...]  # race order; a configuration runs on a prefix of these
    mode: Literal["max", "min"] = "max"
    n_val: int | None = None  # validation images: the binomial noise of val_acc; None = no floor
    z: float = 1.0  # standard errors a challenger may trail by and still race on

    def __post_init__(self) -> None:
        if not self.seeds or len(set(self.seeds)) != len(self.seeds):
            raise ValueError(f"seeds must be distinct and not empty, got {list(self.seeds)}")
        if self.z < 0 or not math.isfinite(self.z):
            raise ValueError(f"z must be a finite number >= 0, got {self.z}")

    @property
    def max_seeds(self) -> int:
        return len(self.seeds)


@dataclass
class Contender:
    config_id: int
    resets: bool
    results: dict[int, float] = field(default_factory=dict)  # seed -> objective
    scheduled: list[int] = field(default_factory=list)  # seeds to run, not started
    running: list[int] = field(default_factory=list)  # seeds started, no result yet
    status: str = RACING
    note: str = ""  # why it was rejected/promoted, for the report

    @property
    def busy(self) -> bool:
        return bool(self.scheduled or self.running)


@dataclass(frozen=True)
class Comparison:
    """A challenger against an incumbent on their common seeds (signed: > 0 is better)."""

    n: int
    mean: float
    se: float


def difference_noise(
    differences: Sequence[float], values: Iterable[float], *, n_val: int | None
) -> float:
    """The standard error of the mean paired difference (see the module docstring)."""
    n = len(differences)
    if n == 0:
        return math.inf
    if n == 1:
        if not n_val:
            return 0.0
        pooled = list(values)
        p = min(max(sum(pooled) / len(pooled), 0.0), 1.0) if pooled else 0.5
        return math.sqrt(p * (1 - p) / n_val)
    floor = 1.0 / n_val if n_val else 0.0
    return max(statistics.stdev(differences), floor) / math.sqrt(n)


class Race:
    """The race of one search. Pure bookkeeping: the searcher asks it what to run next."""

    def __init__(self, rules: RaceRules) -> None:
        self.rules = rules
        self.contenders: dict[int, Contender] = {}
        self.incumbents: dict[bool, int | None] = {True: None, False: None}
        self.closed = False

    # -- what the searcher calls ------------------------------------------------------------------
    def add(self, config_id: int, *, resets: bool) -> None:
        """A new configuration, about to run on the first seed (the caller starts that run)."""
        if config_id in self.contenders:
            raise ValueError(f"configuration {config_id} is already in the race")
        self.contenders[config_id] = Contender(config_id, resets, running=[self.rules.seeds[0]])

    def next_run(self) -> tuple[int, int] | None:
        """A (configuration, seed) to start now, incumbents first; None when nothing waits."""
        waiting = [c for c in self.contenders.values() if c.scheduled and c.status != FAILED]
        if not waiting:
            return None
        waiting.sort(key=lambda c: (c.status != INCUMBENT, c.config_id))
        contender = waiting[0]
        seed = contender.scheduled.pop(0)
        contender.running.append(seed)
        return contender.config_id, seed

    def record(self, config_id: int, seed: int, value: float | None) -> None:
        """A seed run ended: its objective, or None when it failed."""
        contender = self.contenders[config_id]
        if seed in contender.running:
            contender.running.remove(seed)
        if contender.status == FAILED:
            return  # a late result of a configuration already out of the race
        if value is None or not math.isfinite(value):
            self._fail(contender, f"seed {seed} failed")
            return
        contender.results[seed] = float(value)
        if contender.running:
            return  # decide when the batch is complete
        if contender.status in (INCUMBENT, REJECTED, DETHRONED, FAILED):
            return  # an incumbent's extra seed, or a late result of a decided configuration
        self._decide(contender)

    def close(self) -> None:
        """No new configurations will come: top both incumbents up to every race seed."""
        self.closed = True
        for incumbent_id in self.incumbents.values():
            if incumbent_id is not None:
                self._extend(self.contenders[incumbent_id], self.rules.max_seeds)

    @property
    def busy(self) -> bool:
        """Runs are scheduled or running."""
        return any(c.busy for c in self.contenders.values() if c.status != FAILED)

    def incumbent(self, resets: bool) -> Contender | None:
        found = self.incumbents[resets]
        return None if found is None else self.contenders[found]

    def compare(self, challenger: Contender, incumbent: Contender) -> Comparison:
        """`challenger` against `incumbent` on their common seeds (signed so that > 0 wins)."""
        sign = names.gain_sign(self.rules.mode)
        common = [s for s in self.rules.seeds if s in challenger.results and s in incumbent.results]
        diffs = [sign * (challenger.results[s] - incumbent.results[s]) for s in common]
        values = [challenger.results[s] for s in common] + [incumbent.results[s] for s in common]
        se = difference_noise(diffs, values, n_val=self.rules.n_val)
        mean = sum(diffs) / len(diffs) if diffs else math.nan
        return Comparison(n=len(common), mean=mean, se=se)

    # -- the rule ---------------------------------------------------------------------------------
    def _decide(self, challenger: Contender) -> None:
        arm = challenger.resets
        incumbent = self.incumbent(arm)
        if incumbent is None or incumbent is challenger:
            self._promote(challenger, None, "first of its arm")
            return
        held = self._seed_prefix(incumbent)
        comparison = self.compare(challenger, incumbent)
        if comparison.n == 0:
            self._extend(challenger, 1)
            return
        if comparison.mean + self.rules.z * comparison.se < 0:
            self._reject(challenger, incumbent, comparison, "cannot win")
            return
        if len(self._seed_prefix(challenger)) >= len(held):
            if comparison.mean > 0:
                self._promote(challenger, incumbent, "better on all the incumbent's seeds")
            else:
                self._reject(challenger, incumbent, comparison, "not better on all its seeds")
            return
        target = min(2 * len(self._seed_prefix(challenger)), len(held))
        self._extend(challenger, target)

    def _promote(self, challenger: Contender, old: Contender | None, why: str) -> None:
        challenger.status = INCUMBENT
        challenger.note = why
        if old is not None:
            old.status = DETHRONED
            old.note = f"beaten by configuration {challenger.config_id}"
            old.scheduled.clear()
        self.incumbents[challenger.resets] = challenger.config_id
        if self.closed:
            self._extend(challenger, self.rules.max_seeds)
        elif old is not None:
            self._grow(challenger)

    def _reject(
        self, challenger: Contender, incumbent: Contender, comparison: Comparison, why: str
    ) -> None:
        challenger.status = REJECTED
        challenger.scheduled.clear()
        challenger.note = (
            f"{why} against configuration {incumbent.config_id}: paired difference "
            f"{comparison.mean:+.4f} ± {comparison.se:.4f} over {comparison.n} seed(s)"
        )
        self._grow(incumbent)

    def _grow(self, incumbent: Contender) -> None:
        """The incumbent gains the next race seed (SMAC: incumbents accumulate instances)."""
        have = len(incumbent.results) + len(incumbent.running) + len(incumbent.scheduled)
        self._extend(incumbent, min(have + 1, self.rules.max_seeds))

    def _extend(self, contender: Contender, count: int) -> None:
        """Schedule `contender` on the first `count` race seeds it has not run or started."""
        taken = set(contender.results) | set(contender.running) | set(contender.scheduled)
        for seed in self.rules.seeds[:count]:
            if seed not in taken:
                contender.scheduled.append(seed)

    def _fail(self, contender: Contender, why: str) -> None:
        was_incumbent = contender.status == INCUMBENT
        contender.status = FAILED
        contender.note = why
        contender.scheduled.clear()
        if was_incumbent:
            # The arm's best remaining configuration takes over (most seeds, then best mean).
            self.incumbents[contender.resets] = None
            rivals = [
                c
                for c in self.contenders.values()
                if c.resets == contender.resets and c.status in (DETHRONED, REJECTED) and c.results
            ]
            if rivals:
                sign = names.gain_sign(self.rules.mode)
                best = max(
                    rivals,
                    key=lambda c: (len(c.results), sign * statistics.fmean(c.results.values())),
                )
                self._promote(
                    best, None, f"took over from failed configuration {contender.config_id}"
                )

    def _seed_prefix(self, contender: Contender) -> list[int]:
        """The race seeds `contender` has results for, in race order."""
        return [s for s in self.rules.seeds if s in contender.results]

    # -- persistence ------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        return {
            "closed": self.closed,
            "incumbents": {"on": self.incumbents[True], "off": self.incumbents[False]},
            "contenders": [
                {
                    "config_id": c.config_id,
                    "resets": c.resets,
                    "results": {str(s): v for s, v in c.results.items()},
                    "scheduled": list(c.scheduled),
                    "running": list(c.running),
                    "status": c.status,
                    "note": c.note,
                }
                for c in self.contenders.values()
            ],
        }

    def load_state_dict(self, state: Mapping[str, Any], *, interrupted: bool = False) -> None:
        """Restore a saved race. With `interrupted`, runs that were running go back to the
        schedule (of configurations still racing or incumbent), and a configuration whose first
        run never ended is dropped (the driver queues that Optuna trial again, and it re-enters
        the race as a new configuration)."""
        contenders: dict[int, Contender] = {}
        for values in state["contenders"]:
            contender = Contender(
                config_id=int(values["config_id"]),
                resets=bool(values["resets"]),
                results={int(s): float(v) for s, v in values["results"].items()},
                scheduled=[int(s) for s in values["scheduled"]],
                running=[int(s) for s in values["running"]],
                status=str(values["status"]),
                note=str(values.get("note", "")),
            )
            if interrupted:
                if not contender.results and contender.status == RACING:
                    continue
                if contender.status in (RACING, INCUMBENT):
                    contender.scheduled = contender.running + contender.scheduled
                contender.running = []  # a decided configuration's stray run is not re-run
            contenders[contender.config_id] = contender
        self.contenders = contenders
        incumbents = state["incumbents"]
        self.incumbents = {True: incumbents["on"], False: incumbents["off"]}
        self.closed = bool(state["closed"])


def split_race_params(params: Mapping[str, Any]) -> tuple[dict[str, Any], int | None, int | None]:
    """A Tune config as (the configuration's parameters, its race id, the seed), race keys out."""
    values = dict(params)
    config_id = values.pop(RACE_CONFIG, None)
    seed = values.pop(RACE_SEED, None)
    return (
        values,
        None if config_id is None else int(config_id),
        None if seed is None else int(seed),
    )
