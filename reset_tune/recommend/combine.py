"""How the theory prior and similar past searches combine into one recommendation.

Similarity. Each setting is a point in a small feature space (`features`): the estimated noise
rate, log2 batch size, log10 training-set size, ln classes, ln input size, and the probe's Péclet
number squashed to (−1, 1) by Pe / (1 + |Pe|). A past search's weight is the Gaussian kernel

    w = exp(−½ Σ_f ((x_f − x'_f) / s_f)²) × (1 if the same model, else ½)

with the scales `SCALES` (e.g. 0.1 of noise rate, one doubling of batch size, half a decade of
samples). Searches with w < `MIN_WEIGHT` do not count.

Resetting on or off. The expected gain (clean test accuracy, resetting − r = 0) is the weighted
mean of the past gains shrunk toward 0 by a pseudo-search of weight `PRIOR_WEIGHT`:
ĝ = Σ wᵢ gᵢ / (PRIOR_WEIGHT + Σ wᵢ). Its standard error comes from the weighted spread of the gains
(at least `MIN_GAIN_SD`) over the effective number of searches n_eff = (Σw)² / Σw², and the
confidence is P(gain > 0) under a normal approximation.

The verdict, and resetting on or off. Resetting counters memorisation; where there is none, a
drift away from θbest is wandering and resetting only costs (docs/method.md §8). So the probe's
label-free memorisation check gates everything:

- **memorisation seen** (and resetting armed, so the window was measured): with evidence
  (Σw ≥ `MIN_EVIDENCE`) resetting is on iff ĝ > 0; without it the theory decides: on iff the
  probe's Pe says resetting helps or is uncertain (Pe < 1 inside its interval). Verdict "helps"
  if on, else "does not help".
- **no memorisation within the budget**, or validation never stopped improving (resetting would
  never arm): verdict "cannot act", resetting **off**, with what to change (more steps, a smaller
  training set, less weight decay) — unless similar history says resetting won by a margin:
  evidence Σw ≥ `MIN_EVIDENCE`, ĝ > 0 and P(gain > 0) ≥ `HISTORY_MARGIN_P`; then "helps" on
  history's word. (Settings without memorisation sit at the Pe feature's "cannot help" end, so
  such history comes from other settings without memorisation.)
- **memorisation not checked** (a description from before the check) or seen but the window had
  no measurable point (the schedule's lr reached 0): verdict "unknown", resetting off unless
  history says it won by a margin, as above.

Off answers still carry `rate_if_on`, the rate below, for a confirming search to try.

The reset probability (in ln r). The theory's r* is a Gaussian prior N(ln r*, σ_T²) with σ_T² =
σ_probe² + `THEORY_MODEL_SD`², σ_probe from the probe's bootstrap interval; where the theory
gives no rate (Pe ≥ 1) the prior is the weak N(ln `FALLBACK_RATE`, `FALLBACK_SD`²). Each similar
past search whose best resetting trial had rate rᵢ adds a Gaussian observation N(ln rᵢ,
`HISTORY_SD`² / wᵢ). The recommendation is the precision-weighted posterior mean, and its interval
the posterior's 90 % interval. Layers, the checkpoint metric and `adaptive` are weighted votes of
each search's best resetting configuration plus a vote of weight `PRIOR_WEIGHT` for the method's
defaults (a layer choice the model lacks gets no vote); `patience` is their weighted median with
the default 200 as one more value of weight `PRIOR_WEIGHT`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TypedDict, TypeVar

import numpy as np

from reset_tune.errors import ConfigError
from reset_tune.recommend.history import PastSearch, SettingDescription
from reset_tune.recommend.probe import DOES_NOT_HELP, HELPS, NEVER_ARMED, UNCERTAIN

CANNOT_ACT = NEVER_ARMED  # "cannot act"
UNKNOWN = "unknown"
VERDICTS = (HELPS, DOES_NOT_HELP, CANNOT_ACT, UNKNOWN)

SCALES = {
    "noise_rate": 0.1,
    "log2_batch": 1.0,
    "log10_train": 0.5,
    "ln_classes": 0.7,
    "ln_input": 1.0,
    "squashed_pe": 0.5,
}
OTHER_MODEL_FACTOR = 0.5
MIN_WEIGHT = 0.01
MIN_EVIDENCE = 0.5
HISTORY_MARGIN_P = 0.9  # P(gain > 0) at which history alone turns resetting on (no memorisation)
PRIOR_WEIGHT = 0.5
MIN_GAIN_SD = 0.01
THEORY_MODEL_SD = 1.0  # ln units: the 1-D theory is trusted to a factor of e
FALLBACK_RATE = 0.01
FALLBACK_SD = 1.5
HISTORY_SD = 0.7  # ln units: how far apart good rates are within one search
Z90 = 1.6448536269514722
RATE_BOUNDS = (1e-4, 0.2)


class _ResetDefaults(TypedDict):
    reset_layers: str
    patience: int
    checkpoint_metric: str
    adaptive: bool


DEFAULTS: _ResetDefaults = {"reset_layers": "all", "patience": 200,
                            "checkpoint_metric": "val_loss", "adaptive": True}  # fmt: skip
_Choice = TypeVar("_Choice")


def features(description: SettingDescription) -> dict[str, float]:
    profile, probe = description.profile, description.probe
    c, h, w = profile.input_shape
    if probe.figures is None or (probe.memorisation_checked and not probe.memorised):
        squashed = 1.0  # nothing to counter: like a setting where resetting cannot help
    else:
        pe = probe.figures.peclet
        squashed = pe / (1.0 + abs(pe)) if math.isfinite(pe) else math.copysign(1.0, pe)
    return {
        "noise_rate": profile.noise_estimate.rate,
        "log2_batch": math.log2(probe.config["batch_size"]),
        "log10_train": math.log10(max(profile.num_train, 1)),
        "ln_classes": math.log(profile.num_classes),
        "ln_input": math.log(c * h * w),
        "squashed_pe": squashed,
    }


def similarity(new: SettingDescription, past: SettingDescription) -> float:
    a, b = features(new), features(past)
    distance2 = sum(((a[k] - b[k]) / s) ** 2 for k, s in SCALES.items())
    weight = math.exp(-0.5 * distance2)
    if new.probe.config.get("model") != past.probe.config.get("model"):
        weight *= OTHER_MODEL_FACTOR
    return weight


@dataclass(frozen=True)
class Evidence:
    """One past search as it entered the recommendation."""

    name: str
    run_id: str
    weight: float
    dataset: str
    noise: str
    model: str
    batch_size: int
    noise_estimate: float
    peclet: float | None
    best_reset_prob: float
    best_reset_layers: str
    gain: float
    resetting_won: bool
    trials: int
    compute_steps: int


@dataclass(frozen=True)
class Combined:
    resetting: bool
    reset_prob: float
    reset_prob_interval: tuple[float, float]  # 90 % interval of `rate_if_on`, also when off
    reset_layers: str
    patience: int
    checkpoint_metric: str
    adaptive: bool
    expected_gain: float | None
    expected_gain_sd: float | None
    probability_of_gain: float | None
    evidence_weight: float
    effective_searches: float
    basis: str
    reasons: tuple[str, ...]
    verdict: str = ""  # one of VERDICTS
    verdict_reason: str = ""
    advice: tuple[str, ...] = ()  # what to change where resetting cannot act
    rate_if_on: float = 0.0  # the rate the evidence puts r at, should resetting be tried anyway
    memorised: bool | None = None  # the probe's memorisation check (None: not checked)


def _normal_cdf(z: float) -> float:
    return 0.5 * (1.0 + math.erf(z / math.sqrt(2.0)))


def _vote(values: Sequence[tuple[_Choice, float]], default: _Choice) -> _Choice:
    tally: dict[str, tuple[_Choice, float]] = {repr(default): (default, PRIOR_WEIGHT)}
    for value, weight in values:
        key = repr(value)
        tally[key] = (value, tally.get(key, (value, 0.0))[1] + weight)
    return max(tally.values(), key=lambda item: item[1])[0]


def _weighted_median(values: list[tuple[float, float]]) -> float:
    ordered = sorted(values)
    total = sum(w for _, w in ordered)
    running = 0.0
    for value, weight in ordered:
        running += weight
        if running >= total / 2:
            return value
    return ordered[-1][0]


def layer_choice_valid(layers: str, model: str) -> bool:
    """Whether `layers` names parameters of `model` (past winners from other models may not)."""
    from reset_tune.errors import ConfigError
    from reset_tune.models import build_model
    from reset_tune.resetting.selection import select_reset_tensors

    try:
        net = build_model(model, in_channels=1, num_classes=2, image_size=32)
        select_reset_tensors(net, layers)
    except (ConfigError, ValueError, KeyError):
        return False
    return True


def combine(
    new: SettingDescription, past: list[PastSearch], *, model: str
) -> tuple[Combined, list[Evidence]]:
    figures = new.probe.figures
    verdict = new.probe.verdict
    evidence: list[Evidence] = []
    for search in past:
        if search.description is None:
            raise ConfigError(
                f"past search {search.name!r} has no description of its setting; read the "
                "history with read_history (it describes each search) or set its description "
                "from describe_setting."
            )
        weight = similarity(new, search.description)
        if weight < MIN_WEIGHT:
            continue
        past_figures = search.description.probe.figures
        evidence.append(
            Evidence(
                name=search.name,
                run_id=search.run_id,
                weight=weight,
                dataset=search.best_baseline.config["dataset"],
                noise=search.best_baseline.config["noise"],
                model=search.best_baseline.config["model"],
                batch_size=int(search.best_baseline.config["batch_size"]),
                noise_estimate=search.description.profile.noise_estimate.rate,
                peclet=None if past_figures is None else past_figures.peclet,
                best_reset_prob=float(search.best_reset.config["reset_prob"]),
                best_reset_layers=str(search.best_reset.config["reset_layers"]),
                gain=search.gain,
                resetting_won=search.resetting_won,
                trials=search.trials,
                compute_steps=search.compute_steps,
            )
        )
    evidence.sort(key=lambda e: -e.weight)
    reasons: list[str] = []
    total = sum(e.weight for e in evidence)
    n_eff = total**2 / sum(e.weight**2 for e in evidence) if evidence else 0.0

    # -- on or off ------------------------------------------------------------------------------
    expected_gain = gain_sd = p_gain = None
    if evidence:
        gains = np.array([e.gain for e in evidence])
        weights = np.array([e.weight for e in evidence])
        expected_gain = float((weights * gains).sum() / (PRIOR_WEIGHT + total))
        weighted_mean = float((weights * gains).sum() / total)
        spread = math.sqrt(float((weights * (gains - weighted_mean) ** 2).sum() / total))
        gain_sd = max(spread, MIN_GAIN_SD) / math.sqrt(max(n_eff, 1.0))
        p_gain = _normal_cdf(expected_gain / gain_sd)
    probe = new.probe
    theory_on = verdict in (HELPS, UNCERTAIN)
    # The expected gain when past searches weigh enough to decide; None when they do not.
    history_gain = expected_gain if total >= MIN_EVIDENCE else None
    history_decides = history_gain is not None
    history_margin = (
        history_gain is not None and history_gain > 0 and (p_gain or 0.0) >= HISTORY_MARGIN_P
    )
    history_line = (
        f"{len(evidence)} similar past search(es) (total weight {total:.2f}, effective "
        f"{n_eff:.1f}): expected gain {expected_gain:+.2%} of clean test accuracy"
        + ("" if p_gain is None else f", P(gain > 0) = {p_gain:.2f}")
        if evidence
        else ""
    )
    memorised: bool | None = probe.memorised if probe.memorisation_checked else None
    advice: tuple[str, ...] = ()
    if memorised and figures is not None:
        # Memorisation to counter, and the window measured: history, else the theory, decides.
        if history_gain is not None:
            resetting = history_gain > 0
            basis = "history and theory"
            reasons.append(history_line)
            if theory_on != resetting:
                reasons.append(f"the theory disagrees (resetting {verdict}); history decides")
        else:
            resetting = theory_on
            basis = (
                "theory only: no similar finished search"
                if not evidence
                else f"theory mostly: similar searches weigh only {total:.2f}"
            )
            reasons.append(f"the probe says resetting {verdict}")
        final = HELPS if resetting else DOES_NOT_HELP
        why = f"memorisation began at step {probe.memorisation_step}" + (
            f"; {'history' if history_decides else 'the theory'} says resetting "
            f"{'pays' if resetting else 'does not pay'} here"
        )
        if verdict == UNCERTAIN and not history_decides:
            why += " (the theory is uncertain: Pe's interval reaches 1)"
        if probe.memorisation_after_window:
            reasons.append("memorisation began after the measuring window: the figures describe "
                           "the wandering before it")  # fmt: skip
    else:
        if memorised is None and figures is not None:
            final = UNKNOWN
            why = ("the probe's description has no memorisation check (made before it existed), "
                   "so whether resetting has anything to counter is unknown")  # fmt: skip
        elif memorised and figures is None and probe.armed_step is not None:
            final = UNKNOWN
            why = ("memorisation began, but the window after arming had no measurable point "
                   "(the learning rate had reached 0)")  # fmt: skip
        else:
            final = CANNOT_ACT
            why = _cannot_act_reason(new)
            advice = cannot_act_advice(new)
        if history_margin:
            resetting = True
            final = HELPS
            basis = "history: similar searches where resetting won by a margin"
            reasons.append(history_line)
            reasons.append(f"the probe alone would say {CANNOT_ACT if advice else UNKNOWN}: "
                           f"{why}; history overrides it")  # fmt: skip
            why = (f"similar past searches say resetting won (P(gain > 0) = {p_gain:.2f}), "
                   "though the probe saw no memorisation to counter")  # fmt: skip
            advice = ()
        else:
            resetting = False
            basis = "probe: " + ("no memorisation to counter" if final == CANNOT_ACT
                                 else "memorisation check inconclusive")  # fmt: skip
            if history_line:
                reasons.append(history_line + (
                    "; not a margin to act on without memorisation" if history_decides
                    else "; too little weight to decide"))  # fmt: skip
            reasons.append(f"resetting off: the verdict is {final}")
            if figures is not None and figures.verdict == HELPS:
                reasons.append(
                    f"the theory's Pe = {figures.peclet:.3g} would say 'helps', but without "
                    "memorisation the drift is wandering, not latent bias"
                )
    # -- the rate -------------------------------------------------------------------------------
    if figures is not None and figures.reset_prob > 0:
        low, high = figures.reset_prob_interval
        low = max(low, figures.reset_prob / 100, 1e-12)
        high = max(high, figures.reset_prob)
        probe_sd = (math.log(high) - math.log(low)) / (2 * Z90)
        prior_mean = math.log(figures.reset_prob)
        prior_var = probe_sd**2 + THEORY_MODEL_SD**2
    else:
        prior_mean, prior_var = math.log(FALLBACK_RATE), FALLBACK_SD**2
        if verdict in (DOES_NOT_HELP, NEVER_ARMED):
            reasons.append(f"the theory gives no rate here; a weak prior at r = {FALLBACK_RATE}")
    precision = 1.0 / prior_var
    weighted_sum = prior_mean / prior_var
    for e in evidence:
        if e.best_reset_prob > 0:
            observation_precision = e.weight / HISTORY_SD**2
            precision += observation_precision
            weighted_sum += math.log(e.best_reset_prob) * observation_precision
    mean, sd = weighted_sum / precision, math.sqrt(1.0 / precision)
    low_b, high_b = RATE_BOUNDS
    rate = float(np.clip(math.exp(mean), low_b, high_b))
    interval = (
        float(np.clip(math.exp(mean - Z90 * sd), low_b, high_b)),
        float(np.clip(math.exp(mean + Z90 * sd), low_b, high_b)),
    )

    # -- layers and checkpoint policy --------------------------------------------------------
    # Each search's best resetting configuration, whether or not it beat that search's r = 0.
    best_resetting = [e for e in evidence if e.best_reset_prob > 0]
    layer_votes = [(e.best_reset_layers, e.weight) for e in best_resetting
                   if layer_choice_valid(e.best_reset_layers, model)]  # fmt: skip
    layers = str(_vote(layer_votes, DEFAULTS["reset_layers"]))
    by_name = {s.name: s for s in past}
    winners = [(by_name[e.name].best_reset.config, e.weight) for e in best_resetting]
    patience_values = [(float(DEFAULTS["patience"]), PRIOR_WEIGHT)]
    patience_values += [(float(c["patience"]), w) for c, w in winners]
    patience = int(_weighted_median(patience_values))
    metric = str(_vote([(c["checkpoint_metric"], w) for c, w in winners],
                       DEFAULTS["checkpoint_metric"]))  # fmt: skip
    adaptive = bool(_vote([(bool(c["adaptive"]), w) for c, w in winners], DEFAULTS["adaptive"]))

    combined = Combined(
        verdict=final,
        verdict_reason=why,
        advice=advice,
        rate_if_on=rate,
        memorised=memorised,
        resetting=resetting,
        reset_prob=rate if resetting else 0.0,
        reset_prob_interval=interval,
        reset_layers=layers,
        patience=patience,
        checkpoint_metric=metric,
        adaptive=adaptive,
        expected_gain=expected_gain,
        expected_gain_sd=gain_sd,
        probability_of_gain=p_gain,
        evidence_weight=total,
        effective_searches=n_eff,
        basis=basis,
        reasons=tuple(reasons),
    )
    return combined, evidence


def _cannot_act_reason(description: SettingDescription) -> str:
    probe = description.probe
    if probe.armed_step is None:
        return (f"validation was still improving after {probe.steps_trained} steps: resetting "
                "would never arm")  # fmt: skip
    return (
        f"validation stopped improving at step {probe.armed_step}, but no memorisation was seen "
        f"in {probe.steps_trained} of the {probe.budget_steps or probe.steps_trained} steps: "
        "resetting would arm on a plateau of noise and pull the weights back for nothing"
    )


def cannot_act_advice(description: SettingDescription) -> tuple[str, ...]:
    """What would give resetting memorisation to counter, for a "cannot act" answer."""
    probe, profile = description.probe, description.profile
    config = probe.config
    steps = probe.budget_steps or int(config.get("steps", probe.steps_trained))
    out = []
    if profile.noise_estimate.rate < 0.05:
        out.append(
            f"the labels look nearly clean ({profile.noise_estimate.rate:.1%} estimated wrong): "
            "there may be nothing to memorise, and nothing for resetting to do"
        )
    out.append(f"more steps (--steps, now {steps}): wrong labels are memorised after the clean "
               "majority is fitted")  # fmt: skip
    out.append(f"a smaller training set (--train-subset; {profile.num_train} training samples "
               "now): small sets memorise within fewer steps")  # fmt: skip
    decay = float(config.get("weight_decay", 0.0) or 0.0)
    if decay > 0:
        out.append(f"less weight decay (--weight-decay, now {decay:g}): it holds back "
                   "memorisation")  # fmt: skip
    return tuple(out)


def confidence_label(combined: Combined) -> str:
    """high: consistent history from at least two similar searches; medium: history leaning one
    way; low: weak or split history, or the theory alone (it has not been validated as a
    predictor of accuracy gains)."""
    p = combined.probability_of_gain
    if p is None or combined.evidence_weight < MIN_EVIDENCE:
        return "low"
    decisive = max(p, 1 - p)
    if decisive >= 0.9 and combined.effective_searches >= 2:
        return "high"
    return "medium" if decisive >= 0.7 else "low"
