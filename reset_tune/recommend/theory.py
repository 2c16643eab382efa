"""Drift-diffusion with stochastic resetting: the closed forms behind the recommendation.

A walker at distance L from a target, with drift v toward it (v < 0: away from it) and diffusion
D, reset to its start at rate r, reaches the target after a mean first-passage time

    T(r) = (exp(L (sqrt(v² + 4 D r) − v) / (2 D)) − 1) / r          (docs/method.md §6.1)

In the dimensionless rate ρ = r L² / D and the Péclet number Pe = L v / (2 D) this is

    T D / L² = τ(ρ, Pe) = (exp(sqrt(Pe² + ρ) − Pe) − 1) / ρ,

so the optimal rate depends on Pe alone: r* = ρ*(Pe) · D / L². Resetting shortens the search iff
Pe < 1; without it (ρ → 0) τ → 1 / (2 Pe) for Pe > 0, i.e. T = L / v, and T is infinite for
Pe ≤ 0. Setting dτ/dρ = 0 with s = sqrt(Pe² + ρ) gives (s² − Pe²) / (2 s) = 1 − exp(Pe − s),
which `optimal_scaled_rate` solves.

Training time maps to Langevin time through the step size: one SGD step of learning rate η is a
time step η (momentum μ makes the effective step η / (1 − μ)), so a rate r is a per-step
probability 1 − exp(−r η).
"""

from __future__ import annotations

import math

from scipy.optimize import brentq


def peclet(distance: float, drift: float, diffusion: float) -> float:
    """Pe = L v / (2 D): how much the drift dominates diffusion over the distance L."""
    if distance <= 0 or diffusion <= 0:
        raise ValueError("the distance and the diffusion must be positive")
    return distance * drift / (2.0 * diffusion)


def scaled_mfpt(rho: float, pe: float) -> float:
    """τ(ρ, Pe) = T D / L²; ρ = 0 is no resetting (infinite for Pe ≤ 0)."""
    if rho < 0:
        raise ValueError("the reset rate must be non-negative")
    if rho == 0:
        return 1.0 / (2.0 * pe) if pe > 0 else math.inf
    exponent = math.sqrt(pe * pe + rho) - pe
    if exponent > 700:  # exp overflows a double: the walker practically never arrives
        return math.inf
    return math.expm1(exponent) / rho


def mfpt(rate: float, *, distance: float, drift: float, diffusion: float) -> float:
    """The closed-form mean first-passage time T(r) in the walker's own time units."""
    pe = peclet(distance, drift, diffusion)
    scale = distance * distance / diffusion
    return scaled_mfpt(rate * scale, pe) * scale


def optimal_scaled_rate(pe: float) -> float:
    """ρ*(Pe) = r* L² / D that minimises τ; 0 for Pe ≥ 1 (resetting cannot help there)."""
    if pe >= 1.0:
        return 0.0

    def stationary(s: float) -> float:
        return (s * s - pe * pe) / (2.0 * s) - 1.0 + math.exp(pe - s)

    # For Pe < 0 the stationarity condition is negative at s = |Pe|; for 0 ≤ Pe < 1 it is 0 at
    # s = Pe (ρ = 0) and dips below 0 just above it. Either way it is positive for large s.
    low = abs(pe) if pe < 0 else pe
    step = max(1e-3, 1e-3 * abs(pe))
    while stationary(low + step) >= 0:
        step /= 2
        if step < 1e-12:
            return 0.0  # so close to Pe = 1 that the optimum is numerically zero
    low += step
    high = max(2.0 * low, low + 2.0)
    while stationary(high) <= 0:
        high *= 2.0
    s = brentq(stationary, low, high, xtol=1e-13, rtol=1e-12, maxiter=500)
    return s * s - pe * pe


def optimal_rate(*, distance: float, drift: float, diffusion: float) -> float:
    """r* in the walker's time units (0 when resetting cannot help)."""
    pe = peclet(distance, drift, diffusion)
    return optimal_scaled_rate(pe) * diffusion / (distance * distance)


def speedup(pe: float) -> float:
    """T(0) / T(r*): how many times sooner the target is reached at the optimal rate."""
    if pe <= 0:
        return math.inf  # without resetting the walker never arrives (on average)
    rho = optimal_scaled_rate(pe)
    if rho == 0.0:
        return 1.0
    return scaled_mfpt(0.0, pe) / scaled_mfpt(rho, pe)


def rate_to_step_probability(rate: float, step_time: float) -> float:
    """The per-step reset probability of a rate, for steps of Langevin time `step_time`."""
    if rate < 0 or step_time <= 0:
        raise ValueError("the rate must be non-negative and the step time positive")
    return -math.expm1(-rate * step_time)


def step_probability_to_rate(probability: float, step_time: float) -> float:
    """Inverse of `rate_to_step_probability`."""
    if not 0 <= probability < 1 or step_time <= 0:
        raise ValueError("the probability must be in [0, 1) and the step time positive")
    return -math.log1p(-probability) / step_time


def effective_step_time(lr: float, momentum: float = 0.0) -> float:
    """Langevin time of one SGD step: η / (1 − μ) (heavy-ball momentum's steady-state step)."""
    if lr <= 0 or not 0 <= momentum < 1:
        raise ValueError("lr must be positive and momentum in [0, 1)")
    return lr / (1.0 - momentum)
