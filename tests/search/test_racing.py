"""The racing rule on fabricated results: promotion, rejection, pairing, doubling, both arms,
closing, failures and resumption (`reset_tune.search.racing`)."""

from __future__ import annotations

import math

import pytest

from reset_tune.search.racing import (
    DETHRONED,
    FAILED,
    INCUMBENT,
    REJECTED,
    Race,
    RaceRules,
    difference_noise,
)

SEEDS = (0, 1, 2, 3)


def make_race(n_val: int | None = 150, z: float = 1.0, mode: str = "max") -> Race:
    return Race(RaceRules(seeds=SEEDS, mode=mode, n_val=n_val, z=z))


def drain(race: Race, values: dict[int, dict[int, float]]) -> list[tuple[int, int]]:
    """Run every scheduled seed run with the fabricated values; returns the runs in order."""
    ran = []
    while (run := race.next_run()) is not None:
        ran.append(run)
        config_id, seed = run
        race.record(config_id, seed, values[config_id][seed])
    return ran


def start(race: Race, config_id: int, value: float, *, resets: bool = True) -> None:
    race.add(config_id, resets=resets)
    race.record(config_id, SEEDS[0], value)


def test_the_first_configuration_of_an_arm_is_its_incumbent():
    race = make_race()
    start(race, 0, 0.60)
    assert race.incumbent(True).config_id == 0
    assert race.incumbent(False) is None
    assert not race.busy  # nothing else to run until a challenger comes


def test_a_challenger_clearly_worse_on_the_first_seed_is_rejected_at_once():
    race = make_race(n_val=150)
    start(race, 0, 0.60)
    # σ₁ = √(0.5·0.5/150) ≈ 0.041 at p ≈ 0.5: 0.45 trails by 0.15, more than one σ₁.
    start(race, 1, 0.45)
    assert race.contenders[1].status == REJECTED
    assert "cannot win" in race.contenders[1].note
    # A challenger was decided, so the incumbent gains the next seed.
    assert race.next_run() == (0, 1)


def test_a_challenger_within_noise_races_on_the_incumbents_seeds_first_doubling():
    race = make_race(n_val=150)
    start(race, 0, 0.60)
    values = {0: {0: 0.60, 1: 0.60, 2: 0.61, 3: 0.60}}
    # Give the incumbent four seeds by rejecting clear losers, as a search would.
    for loser in (10, 11, 12):
        start(race, loser, 0.30)
        values[loser] = {s: 0.30 for s in SEEDS}
        drain(race, values)
    assert sorted(race.contenders[0].results) == [0, 1, 2, 3]
    # A close challenger: seed 0 first (already run), then seed 1 (2 seeds), then seeds 2-3.
    values[1] = {0: 0.59, 1: 0.62, 2: 0.62, 3: 0.62}
    start(race, 1, values[1][0])
    assert race.contenders[1].status != REJECTED
    ran = drain(race, values)
    challenger_runs = [seed for config_id, seed in ran if config_id == 1]
    assert challenger_runs == [1, 2, 3]  # the incumbent's seeds, in race order: 1 → 2 → 4 seeds
    assert race.incumbent(True).config_id == 1  # better on average over all four paired seeds
    assert race.contenders[0].status == DETHRONED


def test_ties_on_all_the_incumbents_seeds_keep_the_incumbent():
    race = make_race(n_val=150)
    start(race, 0, 0.60)
    start(race, 1, 0.60)
    assert race.contenders[1].status == REJECTED
    assert race.incumbent(True).config_id == 0


def test_the_arms_race_separately():
    race = make_race(n_val=150)
    start(race, 0, 0.70, resets=True)
    start(race, 1, 0.40, resets=False)  # far below the resetting incumbent, but alone in its arm
    assert race.incumbent(False).config_id == 1
    assert race.contenders[1].status == INCUMBENT
    start(race, 2, 0.30, resets=False)
    assert race.contenders[2].status == REJECTED
    assert "configuration 1" in race.contenders[2].note  # compared with its own arm's incumbent


def test_close_tops_both_incumbents_up_to_every_race_seed():
    race = make_race()
    start(race, 0, 0.60, resets=True)
    start(race, 1, 0.55, resets=False)
    race.close()
    values = {0: {s: 0.6 for s in SEEDS}, 1: {s: 0.55 for s in SEEDS}}
    drain(race, values)
    assert sorted(race.contenders[0].results) == list(SEEDS)
    assert sorted(race.contenders[1].results) == list(SEEDS)
    assert not race.busy


def test_a_promotion_after_closing_also_gets_every_seed():
    race = make_race(n_val=150)
    start(race, 0, 0.60)
    race.add(1, resets=True)  # its first run is still running when the race closes
    race.close()
    race.record(1, 0, 0.75)
    values = {0: {s: 0.60 for s in SEEDS}, 1: {s: 0.75 for s in SEEDS}}
    drain(race, values)
    assert race.incumbent(True).config_id == 1
    assert sorted(race.contenders[1].results) == list(SEEDS)


def test_minimising_flips_the_comparison():
    race = make_race(n_val=None, mode="min")
    start(race, 0, 1.00)
    start(race, 1, 0.50)  # a lower loss wins; without binomial noise one seed decides (SMAC)
    assert race.incumbent(True).config_id == 1


def test_a_failed_incumbent_hands_over_to_the_best_remaining_configuration():
    race = make_race(n_val=150)
    start(race, 0, 0.60)
    start(race, 1, 0.40)  # rejected; the incumbent gains seed 1
    assert race.next_run() == (0, 1)
    race.record(0, 1, None)
    assert race.contenders[0].status == FAILED
    assert race.incumbent(True).config_id == 1


def test_resuming_puts_running_runs_back_and_drops_configurations_never_measured():
    race = make_race(n_val=150)
    start(race, 0, 0.60)
    race.add(1, resets=True)  # first run in flight: Optuna requeues it on resume
    start(race, 2, 0.40)
    assert race.next_run() == (0, 1)  # in flight when the driver dies
    state = race.state_dict()
    restored = make_race(n_val=150)
    restored.load_state_dict(state, interrupted=True)
    assert 1 not in restored.contenders
    assert restored.contenders[0].scheduled == [1] and restored.contenders[0].running == []
    assert restored.next_run() == (0, 1)
    assert restored.incumbent(True).config_id == 0
    assert restored.contenders[2].status == REJECTED


def test_difference_noise_is_binomial_for_one_seed_then_the_spread():
    one = difference_noise([0.0], [0.5, 0.5], n_val=100)
    assert one == pytest.approx(math.sqrt(0.25 / 100))
    tied = difference_noise([0.0, 0.0], [0.5] * 4, n_val=100)
    assert tied == pytest.approx(0.01 / math.sqrt(2))  # identical differences: one image
    spread = difference_noise([0.3, -0.3], [0.5] * 4, n_val=100)
    assert spread == pytest.approx(0.3)  # sd 0.424 / √2
    assert difference_noise([0.1], [0.5, 0.6], n_val=None) == 0.0


def test_rules_reject_bad_settings():
    with pytest.raises(ValueError, match="distinct"):
        RaceRules(seeds=(0, 0))
    with pytest.raises(ValueError, match="z must be"):
        RaceRules(seeds=(0, 1), z=-1)


def test_resuming_does_not_rerun_a_decided_configurations_stray_run():
    race = make_race(n_val=150)
    start(race, 0, 0.60)
    start(race, 1, 0.40)  # rejected; the incumbent gains seed 1
    assert race.next_run() == (0, 1)  # the incumbent's seed-1 run starts ...
    race.add(2, resets=True)
    race.record(2, 0, 0.90)  # ... and a new challenger dethrones it meanwhile
    assert race.contenders[0].status == DETHRONED and race.contenders[0].running == [1]
    restored = make_race(n_val=150)
    restored.load_state_dict(race.state_dict(), interrupted=True)
    assert restored.contenders[0].scheduled == [] and restored.contenders[0].running == []
