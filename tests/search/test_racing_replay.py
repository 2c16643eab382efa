"""Whole searches replayed through `Race` over fabricated pools, in the service's order
(`RacingSearch.suggest`): no deadlock, every started run recorded once, both incumbents on every
race seed at the end. No training; the values sit on a 1/144 grid, with ties, like accuracies on
a small validation split."""

from __future__ import annotations

import random

import pytest

from reset_tune.search.racing import FAILED, INCUMBENT, Race, RaceRules

SEEDS = (0, 1, 2, 3)
N_VAL = 144


def fabricated_pool(rng: random.Random, count: int) -> tuple[list[bool], list[dict[int, float]]]:
    """Per configuration: whether it resets, and its objective on each seed (ties included)."""
    resets = [k % 2 == 0 for k in range(count)]
    rng.shuffle(resets)
    values = []
    for _ in range(count):
        quality = rng.gauss(0.6, 0.04)
        values.append(
            {s: round(min(max(quality + rng.gauss(0, 0.03), 0), 1) * N_VAL) / N_VAL for s in SEEDS}
        )
    if count > 2:
        values[1] = dict(values[0])  # an exact copy: ties on every seed
    return resets, values


def replay(
    race: Race,
    resets: list[bool],
    values: list[dict[int, float | None]],
    *,
    new: int,
    concurrency: int,
    rng: random.Random,
) -> tuple[list[tuple[int, int]], list[tuple[int, int]]]:
    """A search at `concurrency`, runs ending in random order; returns (started, recorded)."""
    started: list[tuple[int, int]] = []
    recorded: list[tuple[int, int]] = []
    running: list[tuple[int, int]] = []
    first_runs_open: set[int] = set()
    added = 0
    for _ in range(10_000):
        while len(running) < concurrency:  # the service's `suggest`, as long as slots are free
            scheduled = race.next_run()
            if scheduled is not None:
                running.append(scheduled)
            elif added < new:
                race.add(added, resets=resets[added])
                running.append((added, SEEDS[0]))
                first_runs_open.add(added)
                added += 1
            elif first_runs_open:
                break
            elif not race.closed:
                race.close()
                continue
            else:
                break
            started.append(running[-1])
        if not running:
            assert not race.busy, f"deadlock: busy with nothing to run: {race.state_dict()}"
            return started, recorded
        config_id, seed = running.pop(rng.randrange(len(running)))
        if seed == SEEDS[0]:
            first_runs_open.discard(config_id)
        race.record(config_id, seed, values[config_id][seed])
        recorded.append((config_id, seed))
    raise AssertionError("the search did not end within 10,000 runs")


@pytest.mark.parametrize("concurrency", [1, 3])
@pytest.mark.parametrize("z", [0.0, 1.0])
def test_replayed_searches_end_with_every_run_recorded_and_incumbents_on_every_seed(
    concurrency: int, z: float
) -> None:
    rng = random.Random(1234 + concurrency)
    for _ in range(150):
        count = rng.choice([1, 2, 5, 10])
        resets, values = fabricated_pool(rng, count)
        race = Race(RaceRules(seeds=SEEDS, mode="max", n_val=N_VAL, z=z))
        started, recorded = replay(
            race, resets, values, new=count, concurrency=concurrency, rng=rng
        )
        assert len(set(started)) == len(started), "a seed run started twice"
        assert sorted(started) == sorted(recorded), "a started run was never recorded"
        assert all((k, SEEDS[0]) in started for k in range(count))
        for arm in (True, False):
            incumbent = race.incumbent(arm)
            if arm not in resets[:count]:
                assert incumbent is None
                continue
            assert incumbent is not None and incumbent.status == INCUMBENT
            assert incumbent.resets is arm
            assert sorted(incumbent.results) == list(SEEDS)
            assert incumbent.results == values[incumbent.config_id]
        assert not any(c.busy for c in race.contenders.values())


def test_at_concurrency_one_the_race_runs_no_more_than_every_configuration_on_every_seed() -> None:
    rng = random.Random(7)
    for _ in range(100):
        resets, values = fabricated_pool(rng, 8)
        race = Race(RaceRules(seeds=SEEDS, mode="max", n_val=N_VAL, z=1.0))
        started, _ = replay(race, resets, values, new=8, concurrency=1, rng=rng)
        assert 8 + 2 * (len(SEEDS) - 1) <= len(started) <= 8 * len(SEEDS)


def test_a_failed_configuration_stays_out_of_the_race_when_its_other_runs_end_later() -> None:
    race = Race(RaceRules(seeds=SEEDS, mode="max", n_val=N_VAL))
    race.add(0, resets=True)
    race.record(0, 0, 0.5)
    race.close()
    assert [race.next_run() for _ in range(3)] == [(0, 1), (0, 2), (0, 3)]  # concurrency 3
    race.record(0, 1, None)  # the incumbent's top-up on seed 1 fails
    race.record(0, 2, 0.5)
    race.record(0, 3, 0.5)
    assert race.contenders[0].status == FAILED
    assert race.incumbent(True) is None
    assert race.next_run() is None and not race.busy
