"""The dynamics probe: drift v, diffusion D and the Péclet number of SGD once memorisation starts.

A short run of the user's configuration without resetting goes until validation stops improving
(the moment resetting would arm: no better checkpoint metric for `patience` steps) and on for a
`window` of steps after it. At each evaluation in that window, at the current weights θ:

- the direction to the best checkpoint, u = (θbest − θ) / |θbest − θ|, and the distance
  L = |θbest − θ| over every trainable parameter;
- K independent minibatch gradients g_k at the run's batch size (training mode, BatchNorm
  statistics left untouched, plus the coupled weight-decay term), projected on u.

Langevin time is t = η_eff · steps (η_eff = lr / (1 − momentum), see `theory`); an SGD step moves
θ by −η_eff g. The diffusion along u is D = η_eff var_k(g_k · u) / 2. The drift toward θbest has
two estimators, both always computed:

- `gradient`: v = −mean_k(g_k · u), the deterministic force along u (the issue's definition);
- `displacement` (the default): v = −ΔL / Δt, how fast the distance to θbest actually changes,
  pooled over consecutive evaluations with the same θbest (a new θbest restarts the distance).

They differ because the walk is high-dimensional. On our runs the gradient along u points back
toward θbest (a restoring force of the basin: v > 0, Pe ≫ 1) while the weights still move away,
carried by noise in the many other directions (a d-dimensional random walk drifts outward at
≈ (d − 1) D / L) and by the wrong labels. The 1-D first-passage picture is about the distance
to the good region, so the effective drift of that distance is what it needs.

Per-point figures are averaged over the window and Pe = L v / (2 D) follows; intervals are a
bootstrap (evaluations, then minibatches within each, and the displacement pairs). The optimal
rate r* = ρ*(Pe) D / L² becomes a per-step probability 1 − exp(−r* η_eff).

Memorisation. A plateau of the noisy validation loss arms resetting whether or not the model is
fitting wrong labels (docs/method.md §8, "Resetting arms on noise, too"); a drift away from θbest
without memorisation is wandering, and the theory's verdict on it means nothing. So the probe also
runs the label-free memorisation detector (`reset_tune.engine.memorisation`: the train − validation
accuracy gap on the noisy labels) over its own evaluations. A confirmed onset that is undone
(`CONFIRM` consecutive evaluations back under the threshold: a run without resetting does not
unlearn wrong labels, so that was a transient, e.g. an unstable first evaluation) does not count,
and detection starts afresh. When the window after arming ends before memorisation is seen, the
probe trains on (evaluating, measuring nothing more) until memorisation is confirmed or the
configuration's own `steps` run out (`until_memorisation`, default on): the run's budget is the
question, "does this run memorise before it ends?". The figures stay those of the window; where
memorisation began only after it, `memorisation_after_window` says they describe the wandering
before it.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import torch

from reset_tune import names
from reset_tune.config import TrainConfig
from reset_tune.data import DataSplits, DeviceAugmenter
from reset_tune.engine import Callback, TrainingRun
from reset_tune.engine.memorisation import CONFIRM, MemorisationDetector, gap_threshold
from reset_tune.recommend import theory
from reset_tune.seeding import torch_seed

PROBE_STREAM = 7  # the probe's own minibatches: the run's data streams stay as they are

HELPS = "helps"
DOES_NOT_HELP = "does not help"
UNCERTAIN = "uncertain"
NEVER_ARMED = "cannot act"  # resetting would never arm, or arms with no memorisation to counter
NOT_MEMORISED = NEVER_ARMED
DISPLACEMENT = "displacement"
GRADIENT = "gradient"
DRIFT_ESTIMATORS = (DISPLACEMENT, GRADIENT)


@dataclass(frozen=True)
class ProbePoint:
    """Figures at one evaluation of the window."""

    step: int
    best_step: int  # θbest's step: the distance is to this checkpoint
    distance: float  # L = |θbest − θ|
    step_time: float  # η_eff at this step
    projections: tuple[float, ...]  # g_k · u for each minibatch k

    @property
    def drift(self) -> float:
        return -float(np.mean(self.projections))

    @property
    def diffusion(self) -> float:
        return self.step_time * float(np.var(self.projections, ddof=1)) / 2.0


@dataclass(frozen=True)
class DriftDiffusion:
    """Window averages and their bootstrap intervals, and what the theory makes of them."""

    drift: float  # by `drift_estimator`
    diffusion: float
    distance: float
    step_time: float
    drift_estimator: str
    gradient_drift: float
    displacement_drift: float | None  # None without two evaluations sharing a θbest
    peclet: float
    peclet_interval: tuple[float, float]
    drift_interval: tuple[float, float]
    diffusion_interval: tuple[float, float]
    optimal_scaled_rate: float  # ρ* = r* L² / D
    optimal_rate: float  # r* per unit of Langevin time
    reset_prob: float  # r* as a per-step probability
    reset_prob_interval: tuple[float, float]
    speedup: float  # T(0) / T(r*)
    verdict: str
    level: float


def _displacement_pairs(points: list[ProbePoint]) -> list[tuple[float, float]]:
    """(ΔL, Δt) of consecutive evaluations that measure the distance to the same θbest."""
    pairs = []
    for a, b in zip(points, points[1:], strict=False):
        if a.best_step == b.best_step and a.distance > 0 and b.distance > 0 and b.step > a.step:
            dt = (b.step - a.step) * (a.step_time + b.step_time) / 2.0
            pairs.append((b.distance - a.distance, dt))
    return pairs


def estimate_drift_diffusion(
    points: list[ProbePoint],
    *,
    estimator: str = DISPLACEMENT,
    bootstrap: int = 400,
    level: float = 0.9,
    seed: int = 0,
) -> DriftDiffusion:
    """Average the points' figures and bootstrap them (points, minibatches within each, pairs)."""
    if estimator not in DRIFT_ESTIMATORS:
        raise ValueError(f"drift estimator must be one of {DRIFT_ESTIMATORS}, got {estimator!r}")
    points = [p for p in points if p.distance > 0]
    if not points:
        raise ValueError("no probe points: the window held no evaluation away from θbest")
    if any(len(p.projections) < 2 for p in points):
        raise ValueError("each probe point needs at least two minibatch gradients")
    projections = [np.asarray(p.projections, dtype=np.float64) for p in points]
    distances = np.array([p.distance for p in points])
    step_times = np.array([p.step_time for p in points])
    pairs = np.array(_displacement_pairs(points)).reshape(-1, 2)
    used = estimator if estimator == GRADIENT or len(pairs) else GRADIENT

    def summarise(
        chosen: np.ndarray, samples: list[np.ndarray], pair_rows: np.ndarray
    ) -> tuple[float, float, float | None, float, float, float]:
        """(v, gradient v, displacement v, D, L, η) averaged over the `chosen` points."""
        gradient_v = float(np.mean([-samples[i].mean() for i in chosen]))
        d = float(np.mean([step_times[i] * samples[i].var(ddof=1) / 2.0 for i in chosen]))
        displacement_v = (
            -float(pair_rows[:, 0].sum() / pair_rows[:, 1].sum()) if len(pair_rows) else None
        )
        # No pairs means no displacement figure; `used` is then GRADIENT (resampling keeps the
        # number of pairs).
        v = gradient_v if used == GRADIENT or displacement_v is None else displacement_v
        return (
            v,
            gradient_v,
            displacement_v,
            d,
            float(distances[chosen].mean()),
            float(step_times[chosen].mean()),
        )

    every = np.arange(len(points))
    v, gradient_v, displacement_v, d, length, eta = summarise(every, projections, pairs)
    rng = np.random.default_rng(seed)
    draws = []
    for _ in range(bootstrap):
        chosen = rng.integers(0, len(points), len(points))
        resampled = [x[rng.integers(0, x.size, x.size)] for x in projections]
        pair_rows = pairs[rng.integers(0, len(pairs), len(pairs))] if len(pairs) else pairs
        bv, _, _, bd, bl, beta = summarise(chosen, resampled, pair_rows)
        if bd <= 0:
            continue
        pe = theory.peclet(bl, bv, bd)
        rate = theory.optimal_scaled_rate(pe) * bd / (bl * bl)
        draws.append((pe, bv, bd, theory.rate_to_step_probability(rate, beta)))
    draws_array = np.array(draws)
    quantiles = ((1 - level) / 2, (1 + level) / 2)

    def interval(column: int) -> tuple[float, float]:
        low, high = np.quantile(draws_array[:, column], quantiles)
        return float(low), float(high)

    pe = theory.peclet(length, v, d) if d > 0 else math.inf
    rho = theory.optimal_scaled_rate(pe)
    rate = rho * d / (length * length) if d > 0 else 0.0
    pe_interval = interval(0)
    if pe_interval[1] < 1.0:
        verdict = HELPS
    elif pe_interval[0] >= 1.0:
        verdict = DOES_NOT_HELP
    else:
        verdict = UNCERTAIN
    return DriftDiffusion(
        drift=v,
        diffusion=d,
        distance=length,
        step_time=eta,
        drift_estimator=used,
        gradient_drift=gradient_v,
        displacement_drift=displacement_v,
        peclet=pe,
        peclet_interval=pe_interval,
        drift_interval=interval(1),
        diffusion_interval=interval(2),
        optimal_scaled_rate=rho,
        optimal_rate=rate,
        reset_prob=theory.rate_to_step_probability(rate, eta),
        reset_prob_interval=interval(3),
        speedup=theory.speedup(pe),
        verdict=verdict,
        level=level,
    )


def projected_minibatch_gradients(
    model: torch.nn.Module,
    loss_of_batch: Callable[[int], torch.Tensor],
    direction: Mapping[str, torch.Tensor],
    *,
    minibatches: int,
    weight_decay: float = 0.0,
) -> list[float]:
    """g_k · u for `minibatches` losses `loss_of_batch(k)`, leaving the model's buffers as they
    were (BatchNorm running statistics are not updated by the probe)."""
    params = [(n, p) for n, p in model.named_parameters() if p.requires_grad and n in direction]
    buffers = {n: b.detach().clone() for n, b in model.named_buffers()}
    decay = 0.0
    if weight_decay:
        decay = float(sum((p.detach() * direction[n]).sum() for n, p in params)) * weight_decay
    out = []
    try:
        for k in range(minibatches):
            loss = loss_of_batch(k)
            grads = torch.autograd.grad(loss, [p for _, p in params])
            dot = sum((g * direction[n]).sum() for (n, _), g in zip(params, grads, strict=True))
            out.append(float(dot) + decay)
    finally:
        with torch.no_grad():
            for name, buffer in model.named_buffers():
                buffer.copy_(buffers[name])
    return out


def direction_to_best(
    model: torch.nn.Module, best: Mapping[str, torch.Tensor]
) -> tuple[dict[str, torch.Tensor], float]:
    """The unit direction from the current weights to θbest's, and the distance between them."""
    deltas = {
        name: best[name].to(p.dtype) - p.detach()
        for name, p in model.named_parameters()
        if p.requires_grad
    }
    distance = math.sqrt(sum(float((d.double() ** 2).sum()) for d in deltas.values()))
    if distance == 0.0:
        return {n: torch.zeros_like(d) for n, d in deltas.items()}, 0.0
    return {n: d / distance for n, d in deltas.items()}, distance


@dataclass
class ProbeResult:
    """What the dynamics probe measured on one configuration."""

    config: dict[str, Any]
    armed_step: int | None  # when validation had stopped improving (None: it never did)
    best_step: int | None
    steps_trained: int
    wall_time_s: float
    points: list[ProbePoint] = field(default_factory=list)
    figures: DriftDiffusion | None = None
    # Memorisation, label-free (module docstring). None: not checked (an older description).
    memorisation_step: int | None = None  # onset of the lasting memorisation; None: not seen
    memorisation_checked: bool = False
    max_gap: float | None = None  # largest train − val accuracy gap on the noisy labels
    final_gap: float | None = None
    final_gap_threshold: float | None = None  # the gap that would have signalled, at the end
    transient_onsets: list[int] = field(default_factory=list)  # confirmed, then undone
    window_end_step: int | None = None  # where the window after arming ended
    budget_steps: int | None = None  # the configuration's `steps`

    @property
    def memorised(self) -> bool:
        return self.memorisation_step is not None

    @property
    def theory_verdict(self) -> str | None:
        """The drift-diffusion verdict on the window, memorisation or not (None: no window)."""
        return self.figures.verdict if self.figures is not None else None

    @property
    def verdict(self) -> str:
        """The theory's verdict where resetting has memorisation to counter; else "cannot act"."""
        if self.figures is None:
            return NEVER_ARMED
        if self.memorisation_checked and not self.memorised:
            return NOT_MEMORISED
        return self.figures.verdict

    @property
    def memorisation_after_window(self) -> bool:
        return (
            self.memorisation_step is not None
            and self.window_end_step is not None
            and self.memorisation_step > self.window_end_step
        )

    @property
    def extension_steps(self) -> int:
        """Steps trained past the window to look for memorisation (the cost of looking)."""
        if self.window_end_step is None:
            return 0
        return max(0, self.steps_trained - self.window_end_step)

    def to_dict(self) -> dict[str, Any]:
        values = asdict(self)
        values["verdict"] = self.verdict
        return values

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> ProbeResult:
        values = dict(values)
        values.pop("verdict", None)
        points = [
            ProbePoint(**{**p, "projections": tuple(p["projections"])}) for p in values["points"]
        ]
        figures = values.get("figures")
        if figures is not None:
            # JSON has no tuples: the intervals come back as lists.
            fields: dict[str, Any] = {
                k: tuple(v) if isinstance(v, list) else v for k, v in figures.items()
            }
            figures = DriftDiffusion(**fields)
        return cls(**{**values, "points": points, "figures": figures})

    def describe_memorisation(self) -> str:
        """What the label-free detector saw, in words."""
        if not self.memorisation_checked:
            return "not checked"
        gap = "" if self.max_gap is None else f"; largest train − val gap {self.max_gap:+.3f}"
        transient = (
            f" (a transient signal at step {', '.join(map(str, self.transient_onsets))} was undone)"
            if self.transient_onsets
            else ""
        )
        if self.memorised:
            where = " (after the measuring window)" if self.memorisation_after_window else ""
            return f"began at step {self.memorisation_step}{where}{gap}{transient}"
        threshold = (
            "" if self.final_gap_threshold is None
            else f", under the {self.final_gap_threshold:.3f} that signals"
        )  # fmt: skip
        final = "" if self.final_gap is None else f"; final gap {self.final_gap:+.3f}{threshold}"
        return f"not seen in {self.steps_trained} steps{gap}{final}{transient}"

    def describe(self) -> str:
        if self.figures is None:
            return (
                f"validation was still improving after {self.steps_trained} steps: memorisation "
                "did not start within the budget, so resetting cannot act (train longer or on "
                "fewer samples)"
            )
        f = self.figures
        span = (
            f"steps {self.points[0].step}–{self.points[-1].step}" if self.points else "the window"
        )
        text = (
            f"Pe = {f.peclet:.3g} ({f.level:.0%} interval {f.peclet_interval[0]:.3g} to "
            f"{f.peclet_interval[1]:.3g}); v = {f.drift:.3g} ({f.drift_estimator}; gradient "
            f"projection {f.gradient_drift:.3g}), D = {f.diffusion:.3g}, "
            f"L = {f.distance:.3g}, measured over {span} (armed at {self.armed_step})"
        )
        if self.memorisation_checked and not self.memorised:
            return (
                f"{text}; the theory would say resetting {f.verdict}, but no memorisation was "
                f"seen in {self.steps_trained} steps: the drift is wandering, not latent bias"
            )
        return f"{text}; resetting {f.verdict}"


class LastingMemorisation:
    """The label-free detector over a run without resetting, counting only lasting memorisation:
    a confirmed onset followed by `confirm` consecutive evaluations back under the threshold
    was a transient; it is recorded and detection starts afresh."""

    def __init__(self, *, n_val: int, batch_size: int, confirm: int = CONFIRM) -> None:
        self.n_val, self.batch_size, self.confirm = n_val, batch_size, confirm
        self.detector = MemorisationDetector(n_val=n_val, confirm=confirm)
        self.transient_onsets: list[int] = []
        self.max_gap = -math.inf
        self.final_gap: float | None = None
        self.final_threshold: float | None = None
        self._previous_step = 0
        self._quiet = 0

    @property
    def onset_step(self) -> int | None:
        return self.detector.onset_step

    def observe(self, metrics: Mapping[str, float]) -> None:
        step = int(metrics[names.STEP])
        train_acc, val_acc = float(metrics[names.TRAIN_ACC]), float(metrics[names.VAL_ACC])
        n_seen = max(step - self._previous_step, 1) * self.batch_size
        self._previous_step = step
        gap = self.detector.observe(step=step, train_acc=train_acc, val_acc=val_acc,
                                    n_seen=n_seen)  # fmt: skip
        threshold = gap_threshold(train_acc=train_acc, val_acc=val_acc, n_seen=n_seen,
                                  n_val=self.n_val)  # fmt: skip
        if math.isfinite(gap):
            self.max_gap = max(self.max_gap, gap)
        self.final_gap, self.final_threshold = gap, threshold
        if self.detector.onset_step is None:
            return
        self._quiet = 0 if gap > threshold else self._quiet + 1
        if self._quiet >= self.confirm:
            self.transient_onsets.append(self.detector.onset_step)
            self.detector = MemorisationDetector(n_val=self.n_val, confirm=self.confirm)
            self._quiet = 0


class _Probe(Callback):
    def __init__(
        self, *, window: int, minibatches: int, seed: int, batch_size: int,
        until_memorisation: bool,
    ) -> None:  # fmt: skip
        self.window = window
        self.minibatches = minibatches
        self.seed = seed
        self.batch_size = batch_size
        self.until_memorisation = until_memorisation
        self.points: list[ProbePoint] = []
        self.armed_step: int | None = None
        self.window_end_step: int | None = None
        self.memorisation: LastingMemorisation | None = None

    def on_train_start(self, run: TrainingRun) -> None:
        n_val = int(run.data.val_y.shape[0])
        if n_val >= 1:
            self.memorisation = LastingMemorisation(n_val=n_val, batch_size=self.batch_size)

    def on_evaluation(self, run: TrainingRun, metrics: dict[str, float]) -> None:
        if self.memorisation is not None:
            self.memorisation.observe(metrics)
        if not run.resetter.armed:
            return
        if self.armed_step is None:
            self.armed_step = run.step
        in_window = self.window_end_step is None  # up to and including the window's last point
        if in_window and run.optimizer.param_groups[0]["lr"] > 0:  # lr 0 at the end: no time
            self.points.append(self._measure(run))
        if run.step - self.armed_step >= self.window:
            if self.window_end_step is None:
                self.window_end_step = run.step
            seen = self.memorisation is None or self.memorisation.onset_step is not None
            if seen or not self.until_memorisation:
                run.request_stop("dynamics probe window complete")

    def _measure(self, run: TrainingRun) -> ProbePoint:
        config, data = run.config, run.data
        direction, distance = direction_to_best(run.model, run.resetter.best_model_state())
        generator = torch.Generator(device=run.device)
        generator.manual_seed(torch_seed(self.seed, PROBE_STREAM) + run.step)
        augmenter = DeviceAugmenter(
            mean=data.mean, std=data.std, augment=data.augment,
            seed=self.seed + 7919 * run.step, device=run.device,
            memory_format=run.memory_format,
        )  # fmt: skip
        n_train = int(data.train_y.shape[0])

        def loss_of_batch(_: int) -> torch.Tensor:
            index = torch.randint(0, n_train, (config.batch_size,), generator=generator,
                                  device=run.device)  # fmt: skip
            logits = run.model(augmenter.train_batch(data.train_x[index]))
            return run.loss_fn(logits, data.train_y[index])

        coupled_decay = config.weight_decay if config.optimizer != "adamw" else 0.0
        projections = projected_minibatch_gradients(
            run.model, loss_of_batch, direction,
            minibatches=self.minibatches, weight_decay=coupled_decay,
        )  # fmt: skip
        lr = float(run.optimizer.param_groups[0]["lr"])
        momentum = config.momentum if config.optimizer == "sgd" else 0.0
        best_step = run.resetter.best_step
        if best_step is None:  # measured only once armed, and arming needs a θbest
            raise RuntimeError("the dynamics probe measured before the run had a best checkpoint")
        return ProbePoint(
            step=run.step,
            best_step=best_step,
            distance=distance,
            step_time=theory.effective_step_time(lr, momentum),
            projections=tuple(projections),
        )


def _probe_every(config: TrainConfig) -> int:
    # Evaluations every patience/8 steps (at most the config's cadence) give ~8 probe points.
    return max(1, min(config.eval_every, config.patience // 8 or config.eval_every))


def probe_config(config: TrainConfig) -> TrainConfig:
    """What the probe of `config` trains: `config` without resetting, at the probe's cadence."""
    return config.replace(reset_prob=0.0, eval_every=min(_probe_every(config), config.steps))


def probe_dynamics(
    config: TrainConfig,
    *,
    data: DataSplits | None = None,
    window: int | None = None,
    minibatches: int = 16,
    estimator: str = DISPLACEMENT,
    bootstrap: int = 400,
    level: float = 0.9,
    callbacks: Iterable[Callback] = (),
    until_memorisation: bool = True,
) -> ProbeResult:
    """Run `config` without resetting until memorisation starts, then measure v, D and Pe.

    `window` (default: the config's patience, at least 4 evaluations) is how many steps past the
    arming point are measured, every patience / 8 steps (at most `eval_every`). With
    `until_memorisation`, a window that ends before the memorisation detector has fired is
    followed by plain training until it fires or `config.steps` run out.
    """
    probed = probe_config(config)
    every = _probe_every(config)
    window = window if window is not None else max(config.patience, 4 * every)
    started = time.perf_counter()
    run = TrainingRun(probed, data=data)
    probe = _Probe(window=window, minibatches=minibatches, seed=config.seed,
                   batch_size=config.batch_size, until_memorisation=until_memorisation)  # fmt: skip
    result = run.run([*callbacks, probe])
    memo = probe.memorisation
    figures = None
    if any(p.distance > 0 for p in probe.points):
        figures = estimate_drift_diffusion(
            probe.points, estimator=estimator, bootstrap=bootstrap, level=level, seed=config.seed
        )
    return ProbeResult(
        config=probed.to_dict(),
        armed_step=probe.armed_step,
        best_step=result.best_step,
        steps_trained=result.steps_completed,
        wall_time_s=time.perf_counter() - started,
        points=probe.points,
        figures=figures,
        memorisation_step=None if memo is None else memo.onset_step,
        memorisation_checked=memo is not None,
        max_gap=None if memo is None or not math.isfinite(memo.max_gap) else memo.max_gap,
        final_gap=None if memo is None else memo.final_gap,
        final_gap_threshold=None if memo is None else memo.final_threshold,
        transient_onsets=[] if memo is None else list(memo.transient_onsets),
        window_end_step=probe.window_end_step,
        budget_steps=config.steps,
    )
