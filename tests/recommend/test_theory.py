"""The drift-diffusion-with-resetting closed forms, and the Langevin simulator that checks them."""

from __future__ import annotations

import math

import numpy as np
import pytest

from reset_tune.recommend import langevin, theory

# docs/method.md §6.2: r*·L²/D at these Péclet numbers (two decimals).
DESIGN_TABLE = {-1: 4.55, -0.5: 3.58, 0: 2.54, 0.25: 1.98, 0.5: 1.37, 0.75: 0.72, 0.9: 0.30}


@pytest.mark.parametrize("pe, expected", DESIGN_TABLE.items())
def test_optimal_rate_matches_the_design_table(pe, expected):
    assert theory.optimal_scaled_rate(pe) == pytest.approx(expected, abs=0.01)


@pytest.mark.parametrize("pe", [-3.0, -0.5, 0.0, 0.3, 0.8, 0.97])
def test_the_optimum_is_a_minimum_of_the_closed_form(pe):
    rho = theory.optimal_scaled_rate(pe)
    best = theory.scaled_mfpt(rho, pe)
    for factor in (0.8, 0.95, 1.05, 1.25):
        assert theory.scaled_mfpt(rho * factor, pe) > best


def test_resetting_helps_exactly_below_pe_one():
    assert theory.optimal_scaled_rate(1.0) == 0.0
    assert theory.optimal_scaled_rate(2.0) == 0.0
    assert theory.speedup(1.5) == 1.0
    assert theory.optimal_scaled_rate(0.99) > 0
    assert theory.speedup(0.9) > 1.0
    assert math.isinf(theory.speedup(-0.1))  # without resetting the walker never arrives


def test_physical_units_follow_from_the_scaled_form():
    distance, drift, diffusion, rate = 2.0, 0.3, 0.5, 0.2
    direct = (
        math.exp(distance * (math.sqrt(drift**2 + 4 * diffusion * rate) - drift) / (2 * diffusion))
        - 1
    ) / rate
    assert theory.mfpt(rate, distance=distance, drift=drift, diffusion=diffusion) == pytest.approx(
        direct, rel=1e-12
    )
    # Without resetting and with drift toward the target: T = L / v.
    assert theory.mfpt(0.0, distance=distance, drift=drift, diffusion=diffusion) == pytest.approx(
        distance / drift
    )
    pe = theory.peclet(distance, drift, diffusion)
    assert theory.optimal_rate(distance=distance, drift=drift, diffusion=diffusion) == (
        pytest.approx(theory.optimal_scaled_rate(pe) * diffusion / distance**2)
    )


def test_rates_and_step_probabilities_convert_both_ways():
    p = theory.rate_to_step_probability(0.02, 0.5)
    assert p == pytest.approx(1 - math.exp(-0.01))
    assert theory.step_probability_to_rate(p, 0.5) == pytest.approx(0.02)
    assert theory.effective_step_time(0.05, 0.9) == pytest.approx(0.5)
    with pytest.raises(ValueError):
        theory.effective_step_time(0.05, 1.0)


@pytest.mark.parametrize("pe", [-0.5, 0.0, 0.5])
def test_simulated_first_passage_times_match_the_closed_form(pe):
    rho = theory.optimal_scaled_rate(pe)
    times = langevin.simulate_first_passage(
        distance=1.0, drift=2 * pe, diffusion=1.0, rate=rho, walkers=3000, seed=11
    )
    expected = theory.scaled_mfpt(rho, pe)
    assert times.censored == 0
    assert abs(times.mean - expected) < 4 * times.standard_error
    assert abs(times.mean - expected) / expected < 0.06


def test_simulated_time_without_resetting_is_l_over_v():
    times = langevin.simulate_first_passage(
        distance=1.0, drift=2.0, diffusion=1.0, rate=0.0, walkers=3000, seed=3
    )
    assert times.mean == pytest.approx(0.5, rel=0.05)


@pytest.mark.integration  # a long simulation (10-20 s)
def test_the_simulated_optimal_rate_is_the_numerical_one():
    pe = 0.0
    optimum = theory.optimal_scaled_rate(pe)
    rates = optimum * np.array([0.25, 0.5, 1.0, 2.0, 4.0])
    scan = langevin.scan_rates(pe, rates, walkers=3000, seed=5)
    assert np.all(np.abs(scan.measured - scan.closed_form) < 4 * scan.standard_errors)
    assert int(np.argmin(scan.measured)) == 2
    assert scan.empirical_optimum == pytest.approx(optimum, rel=0.35)
