"""Racing vs no racing at equal compute, replayed over a precomputed pool of seed runs.

The search service (Ray + Optuna + MLflow) is too slow to repeat many times per setting on a
small CPU, so this benchmark trains a fixed *pool* once per setting — K configurations drawn from
the search space, each trained on S seeds with the engine — and then *replays* searches over it:

- racing: configurations are drawn in a repeat's order, one at a time (concurrency 1), and the
  real `reset_tune.search.racing.Race` makes every decision, in the order of the service
  (`RacingSearch.suggest`): a scheduled race run if any; else a new configuration while fewer than
  N have started; once all have started and finished, `close()`, and run until not busy. Its total
  number of seed runs B counts the final top-ups.
- no racing, at equal compute: the first B configurations of the same repeat order (drawn with
  replacement from the pool once the order is used up), each on seed 0 only (today's default
  `seeds: [0]`); its pick is the best objective (first one on exact ties).

The objective is the search's: noisy validation accuracy at θbest (`best_val_acc`). The truth of
a configuration is its clean test accuracy at θbest averaged over all S seeds. Each repeat is
replayed twice: with *fixed* seeds (race seeds 0-3, no racing on seed 0) and with *rotated* seeds
(4 of the S seeds in a random order per repeat; no racing on the first), since a fixed seed 0 of
one pool may happen to favour or mislead single-seed search. Every run is cached in
``benchmarks/results/racing/<setting>.json`` as soon as it ends, so a killed run resumes and the
replay runs again without training.

    .venv/bin/python benchmarks/racing.py --new 4,6,8 --repeats 50                # train, replay
    .venv/bin/python benchmarks/racing.py --replay-only --new 4,6,8 --repeats 50  # cached only
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

import numpy as np  # noqa: E402

from reset_tune import names  # noqa: E402
from reset_tune.atomic import write_json_atomic  # noqa: E402
from reset_tune.search.racing import Race, RaceRules  # noqa: E402

RESULTS = REPO_ROOT / "benchmarks" / "results" / "racing"
POOL_SEED = 20_261_204  # the pool's configurations: the same draws for every setting
RACE_SEEDS = (0, 1, 2, 3)
T95 = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365, 8: 2.306}


@dataclass(frozen=True)
class Setting:
    name: str
    dataset: str
    noise: str
    steps: int
    train_subset: int | None = None
    data_root: str | None = None

    def train_config(self, params: dict, seed: int):
        from reset_tune.config import TrainConfig

        return TrainConfig(
            dataset=self.dataset,
            data_root=self.data_root,
            noise=self.noise,
            train_subset=self.train_subset,
            model="cnn",
            steps=self.steps,
            eval_every=50,
            device="cpu",
            seed=seed,
            **params,
        )


FMNIST = "/usr/share/datasets/fashion-mnist"
SETTINGS = {
    s.name: s
    for s in (
        Setting("digits-sym0.4-1500", "digits", "symmetric:0.4", 1500),
        Setting("digits-sym0.4-300", "digits", "symmetric:0.4", 300),
        Setting("digits-sym0.2-1500", "digits", "symmetric:0.2", 1500),
        # Listed for completeness; ~60 ms per step on one CPU thread (28x28 images), so a pool
        # of 16 x 5 runs of 2,000 steps takes ~2.7 core-hours.
        Setting("fmnist2k-sym0.6-2000", "fashion-mnist", "symmetric:0.6", 2000, 2000, FMNIST),
        Setting("fmnist20k-sym0.6-800", "fashion-mnist", "symmetric:0.6", 800, 20000, FMNIST),
    )
}
DEFAULT_SETTINGS = ("digits-sym0.4-1500", "digits-sym0.4-300", "digits-sym0.2-1500")


# ----------------------------------------------------------------------------- the pool


def pool_configurations(count: int) -> list[dict]:
    """`count` configurations, alternately resetting and r = 0 (any prefix is balanced)."""
    rng = np.random.default_rng(POOL_SEED)
    configs = []
    for k in range(count):
        lr = float(math.exp(rng.uniform(math.log(0.01), math.log(0.2))))
        batch = int(rng.choice([16, 32, 64]))
        r = float(math.exp(rng.uniform(math.log(0.002), math.log(0.05))))
        layers = str(rng.choice(["all", "head"]))
        patience = int(rng.choice([100, 150, 200, 250, 300]))
        if k % 2 == 0:
            configs.append(
                {
                    "lr": lr,
                    "batch_size": batch,
                    "reset_prob": r,
                    "reset_layers": layers,
                    "patience": patience,
                }
            )
        else:
            configs.append({"lr": lr, "batch_size": batch, "reset_prob": 0.0})
    return configs


def pool_path(setting: Setting) -> Path:
    return RESULTS / f"{setting.name}.json"


def load_pool(setting: Setting) -> dict:
    path = pool_path(setting)
    if path.exists():
        return json.loads(path.read_text())
    return {"setting": setting.__dict__, "runs": {}}


def train_pool(setting: Setting, configs: int, seeds: int) -> dict:
    """Train every missing (configuration, seed) run, configuration by configuration."""
    import torch

    from reset_tune.engine import prepare_data, train
    from reset_tune.engine.memorisation import detect_memorisation

    torch.set_num_threads(1)
    pool = load_pool(setting)
    params = pool_configurations(configs)
    data = {}
    todo = [(k, s) for k in range(configs) for s in range(seeds) if f"{k}/{s}" not in pool["runs"]]
    print(f"[{setting.name}] {len(todo)} runs to train", flush=True)
    for i, (k, s) in enumerate(todo):
        config = setting.train_config(params[k], s)
        if s not in data:
            data[s] = prepare_data(config)
        start = time.perf_counter()
        result = train(config, data=data[s])
        wall = time.perf_counter() - start
        last = result.history[-1]
        n_val = int(result.data["num_val"])
        finding = detect_memorisation(result.history, n_val=n_val, batch_size=config.batch_size)
        keep = (names.STEP, names.TRAIN_ACC, names.VAL_ACC, names.VAL_LOSS, names.MEMORISATION)
        pool["runs"][f"{k}/{s}"] = {
            "config": k,
            "seed": s,
            "params": params[k],
            "objective": result.best_val_acc,
            "test_acc": result.test_acc,
            "num_resets": result.num_resets,
            "armed_step": result.armed_step,
            "best_step": result.best_step,
            "num_val": n_val,
            "num_test": int(result.data["num_test"]),
            "memorisation_step": finding.onset_step,  # label-free onset, as the verdict's
            "last_memorisation": last.get(names.MEMORISATION),
            "last_train_acc": last.get(names.TRAIN_ACC),
            "wall_s": wall,
            "history": [{key: row.get(key) for key in keep} for row in result.history],
        }
        write_json_atomic(pool_path(setting), pool)
        print(
            f"[{setting.name}] {i + 1}/{len(todo)} config {k} seed {s}: "
            f"val {result.best_val_acc:.3f} test {result.test_acc:.3f} "
            f"resets {result.num_resets} {wall:.1f}s",
            flush=True,
        )
    return pool


# ----------------------------------------------------------------------------- the replay


class RaceDefect(RuntimeError):
    """The Race misbehaved during a replay (deadlock, a run never recorded, missing top-ups)."""


@dataclass
class Pool:
    """The cached runs of one setting, restricted to configurations complete on `seeds` seeds."""

    setting: Setting
    seeds: int
    configs: list[int]
    params: dict[int, dict]
    runs: dict[tuple[int, int], dict]

    @classmethod
    def load(cls, setting: Setting, *, seeds: int, configs: int | None = None) -> Pool:
        raw = load_pool(setting)["runs"]
        runs = {(int(r["config"]), int(r["seed"])): r for r in raw.values()}
        ids = sorted({k for k, _ in runs})
        complete = [k for k in ids if all((k, s) in runs for s in range(seeds))]
        if configs is not None:
            complete = [k for k in complete if k < configs]
        params = {k: runs[(k, 0)]["params"] for k in complete}
        return cls(setting, seeds, complete, params, runs)

    def resets(self, k: int) -> bool:
        return float(self.params[k].get("reset_prob", 0.0)) > 0.0

    def objective(self, k: int, seed: int) -> float:
        return float(self.runs[(k, seed)]["objective"])

    def test(self, k: int, seed: int) -> float:
        return float(self.runs[(k, seed)]["test_acc"])

    def truth(self, k: int) -> float:
        """Clean test accuracy averaged over all the pool's seeds."""
        return statistics.fmean(self.test(k, s) for s in range(self.seeds))

    @property
    def n_val(self) -> int:
        return min(int(self.runs[(k, 0)]["num_val"]) for k in self.configs)

    def seed_values(self, k: int, seed: int):
        from reset_tune.search.verdict import SeedValues

        run = self.runs[(k, seed)]
        return SeedValues(
            objective=float(run["objective"]),
            test_acc=float(run["test_acc"]),
            num_resets=int(run["num_resets"]),
            memorisation_step=run["memorisation_step"],
            n_val=int(run["num_val"]),
            n_test=int(run["num_test"]),
        )

    def regime(self) -> dict:
        off = [
            self.runs[(k, s)] for k in self.configs if not self.resets(k) for s in range(self.seeds)
        ]
        on = [self.runs[(k, s)] for k in self.configs if self.resets(k) for s in range(self.seeds)]
        best_on = max((self.truth(k) for k in self.configs if self.resets(k)), default=math.nan)
        best_off = max(
            (self.truth(k) for k in self.configs if not self.resets(k)), default=math.nan
        )
        return {
            "r0_last_memorisation": statistics.fmean(r["last_memorisation"] for r in off),
            "r0_label_free_onset_fraction": statistics.fmean(
                r["memorisation_step"] is not None for r in off
            ),
            "resetting_armed_fraction": statistics.fmean(r["armed_step"] is not None for r in on),
            "resetting_mean_resets": statistics.fmean(r["num_resets"] for r in on),
            "resetting_last_memorisation": statistics.fmean(r["last_memorisation"] for r in on),
            "pool_best_resetting_test": best_on,
            "pool_best_r0_test": best_off,
            "pool_best_gap_points": 100 * (best_on - best_off),
            "run_wall_s_total": sum(r["wall_s"] for r in self.runs.values()),
            "run_wall_s_mean": statistics.fmean(r["wall_s"] for r in self.runs.values()),
        }


def draw_stream(pool: Pool, repeat: int, count: int) -> list[int]:
    """A repeat's draws: a random order of the pool, then draws with replacement."""
    rng = np.random.default_rng([POOL_SEED, repeat])
    order = [pool.configs[i] for i in rng.permutation(len(pool.configs))]
    while len(order) < count:
        order.append(pool.configs[int(rng.integers(len(pool.configs)))])
    return order[:count]


def race_search(
    pool: Pool, draws: list[int], *, new: int, z: float, seeds: tuple[int, ...] = RACE_SEEDS
) -> dict:
    """One racing search at concurrency 1, in the service's order; contender j is draws[j]."""
    race = Race(RaceRules(seeds=seeds, mode="max", n_val=pool.n_val, z=z))
    started = runs = 0
    for _ in range(10_000):
        scheduled = race.next_run()
        if scheduled is not None:
            cid, seed = scheduled
            race.record(cid, seed, pool.objective(draws[cid], seed))
            runs += 1
            continue
        if started < new:
            cid = started
            race.add(cid, resets=pool.resets(draws[cid]))
            race.record(cid, seeds[0], pool.objective(draws[cid], seeds[0]))
            started += 1
            runs += 1
            continue
        if not race.closed:
            race.close()
            continue
        if race.busy:
            raise RaceDefect(f"deadlock: busy with nothing to run; state {race.state_dict()}")
        break
    else:
        raise RaceDefect("the race did not end within 10,000 decisions")
    running = [c.config_id for c in race.contenders.values() if c.running]
    if running:
        raise RaceDefect(f"runs never recorded for configurations {running}")
    for arm in (True, False):
        inc = race.incumbent(arm)
        if inc is not None and set(inc.results) != set(seeds):
            raise RaceDefect(f"incumbent {inc.config_id} ends on seeds {sorted(inc.results)}")
    return {"race": race, "runs": runs}


def t_interval(diffs: list[float]) -> tuple[float, float]:
    n = len(diffs)
    if n < 2:
        return -math.inf, math.inf
    half = T95[n - 1] * statistics.stdev(diffs) / math.sqrt(n)
    mean = statistics.fmean(diffs)
    return mean - half, mean + half


def repeat_seeds(pool: Pool, repeat: int, rotate: bool) -> tuple[int, ...]:
    """The race seeds of a repeat: 0-3, or (rotated) 4 of the S seeds in a random order; the
    no-racing search runs on the first of them. The truth always averages all S seeds."""
    if not rotate:
        return RACE_SEEDS
    rng = np.random.default_rng([POOL_SEED, repeat, 1])
    return tuple(int(s) for s in rng.permutation(pool.seeds)[: len(RACE_SEEDS)])


def replay_once(pool: Pool, repeat: int, *, new: int, z: float, rotate: bool = False) -> dict:
    from reset_tune.search.verdict import HELPS, HURTS, NO_EVIDENCE, decide, paired_difference

    seeds = repeat_seeds(pool, repeat, rotate)
    first = seeds[0]
    longest = 4 * new * len(seeds) + 2 * len(seeds)
    draws = draw_stream(pool, repeat, longest)
    out = race_search(pool, draws, new=new, z=z, seeds=seeds)
    race, budget = out["race"], out["runs"]
    truth = pool.truth

    # racing: the better incumbent by mean objective on common seeds (r = 0 on exact ties)
    inc_on, inc_off = race.incumbent(True), race.incumbent(False)
    on = draws[inc_on.config_id] if inc_on else None
    off = draws[inc_off.config_id] if inc_off else None
    racing: dict = {"r0_arm": off, "resetting_arm": on}
    verdict: dict = {}
    if on is not None and off is not None:
        common = [s for s in seeds if s in inc_on.results and s in inc_off.results]
        mean_on = statistics.fmean(inc_on.results[s] for s in common)
        mean_off = statistics.fmean(inc_off.results[s] for s in common)
        racing["pick"] = on if mean_on > mean_off else off
        obj_diffs = [pool.objective(on, s) - pool.objective(off, s) for s in common]
        test_diffs = [pool.test(on, s) - pool.test(off, s) for s in common]
        true_diff = truth(on) - truth(off)
        low, high = t_interval(test_diffs)
        floor = paired_difference(
            test_diffs,
            [pool.test(on, s) for s in common] + [pool.test(off, s) for s in common],
            n_images=int(pool.runs[(on, 0)]["num_test"]),
        )
        olow, ohigh = t_interval(obj_diffs)
        words = HELPS if olow > 0 else HURTS if ohigh < 0 else NO_EVIDENCE
        service = decide(
            {s: pool.seed_values(on, s) for s in common},
            {s: pool.seed_values(off, s) for s in common},
            mode="max",
            objective_metric="val_acc",
        )
        verdict = {
            "n": len(common),
            "test_diff": statistics.fmean(test_diffs),
            "true_diff": true_diff,
            "covered": low <= true_diff <= high,
            "half_width": (high - low) / 2,
            "covered_with_floor": floor.low <= true_diff <= floor.high,
            "words": words,
            "service_words": service.word,
            "service_objective_low": service.objective.low if service.objective else None,
        }
    else:
        racing["pick"] = on if on is not None else off

    # no racing at equal compute: B configurations on seed 0
    seen = draws[:budget]
    plain = {
        "pick": max(seen, key=lambda k: pool.objective(k, first)),  # max keeps the first of ties
        "r0_arm": max(
            (k for k in seen if not pool.resets(k)),
            key=lambda k: pool.objective(k, first),
            default=None,
        ),
    }
    best_seen = max(truth(k) for k in set(seen) | set(draws[:new]))
    pool_best = max(truth(k) for k in pool.configs)
    for result in (racing, plain):
        pick, arm = result["pick"], result["r0_arm"]
        result["pick_test"] = truth(pick)
        result["pick_resets"] = pool.resets(pick)
        result["regret"] = best_seen - truth(pick)
        result["pool_regret"] = pool_best - truth(pick)
        result["gain_over_r0_arm"] = None if arm is None else truth(pick) - truth(arm)
    return {
        "repeat": repeat,
        "seeds": list(seeds),
        "budget": budget,
        "distinct_plain": len(set(seen)),
        "racing": racing,
        "plain": plain,
        "verdict": verdict,
    }


def mean_sd(values: list[float]) -> tuple[float, float]:
    values = [v for v in values if v is not None]
    if not values:
        return math.nan, math.nan
    return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else 0.0


def summarise(pool: Pool, reps: list[dict], *, new: int, rotate: bool) -> dict:
    out: dict = {
        "setting": pool.setting.name,
        "K": len(pool.configs),
        "S": pool.seeds,
        "repeats": len(reps),
        "new_configurations": new,
        "seed_assignment": "rotated" if rotate else "fixed",
        "regime": pool.regime(),
        "budget_B": mean_sd([r["budget"] for r in reps]),
        "budget_B_range": [min(r["budget"] for r in reps), max(r["budget"] for r in reps)],
        "plain_distinct_configs": mean_sd([r["distinct_plain"] for r in reps]),
    }
    for method in ("racing", "plain"):
        rows = [r[method] for r in reps]
        gains = [x["gain_over_r0_arm"] for x in rows]
        out[method] = {
            "beats_r0_arm": sum(1 for g in gains if g is not None and g > 0),
            "with_r0_arm": sum(1 for g in gains if g is not None),
            "gain_over_r0_arm_points": [100 * v for v in mean_sd(gains)],
            "regret_points": [100 * v for v in mean_sd([x["regret"] for x in rows])],
            "pool_regret_points": [100 * v for v in mean_sd([x["pool_regret"] for x in rows])],
            "pick_test": mean_sd([x["pick_test"] for x in rows]),
            "pick_resets": sum(x["pick_resets"] for x in rows),
        }
    diffs = [r["racing"]["pick_test"] - r["plain"]["pick_test"] for r in reps]
    out["racing_minus_plain_points"] = [100 * v for v in mean_sd(diffs)]
    out["racing_vs_plain_wins_ties_losses"] = [
        sum(d > 1e-12 for d in diffs),
        sum(abs(d) <= 1e-12 for d in diffs),
        sum(d < -1e-12 for d in diffs),
    ]
    verdicts = [r["verdict"] for r in reps if r["verdict"]]
    words: dict = {}
    agree = decisive = 0
    for v in verdicts:
        words[v["words"]] = words.get(v["words"], 0) + 1
        if v["words"] in ("helps", "hurts"):
            decisive += 1
            agree += (v["words"] == "helps") == (v["true_diff"] > 0)
    service_words: dict = {}
    for v in verdicts:
        service_words[v["service_words"]] = service_words.get(v["service_words"], 0) + 1
    out["verdict"] = {
        "count": len(verdicts),
        "n_seeds": mean_sd([v["n"] for v in verdicts]),
        "coverage": sum(v["covered"] for v in verdicts),
        "coverage_with_floor": sum(v["covered_with_floor"] for v in verdicts),
        "test_half_width_points": [100 * x for x in mean_sd([v["half_width"] for v in verdicts])],
        "words": words,
        "decisive_agree": [agree, decisive],
        "service_words": service_words,
        "true_diff_points": [100 * v for v in mean_sd([v["true_diff"] for v in verdicts])],
        "true_diff_positive": sum(v["true_diff"] > 0 for v in verdicts),
    }
    return out


def fmt(pair, digits: int = 2) -> str:
    mean, sd = pair
    return f"{mean:+.{digits}f} ± {sd:.{digits}f}"


def print_summary(s: dict) -> None:
    g = s["regime"]
    print(
        f"\n== {s['setting']}: K = {s['K']}, S = {s['S']}, repeats = {s['repeats']}, "
        f"N = {s['new_configurations']} new configurations, {s['seed_assignment']} seeds"
    )
    print(
        f"regime: r = 0 memorisation at the end {g['r0_last_memorisation']:.2f} (label-free onset "
        f"in {100 * g['r0_label_free_onset_fraction']:.0f} % of r = 0 runs); resetting armed in "
        f"{100 * g['resetting_armed_fraction']:.0f} %, {g['resetting_mean_resets']:.1f} resets "
        f"per run; pool best resetting {100 * g['pool_best_resetting_test']:.2f} vs r = 0 "
        f"{100 * g['pool_best_r0_test']:.2f} % clean test"
    )
    b = s["budget_B"]
    print(
        f"equal compute: B = {b[0]:.1f} ± {b[1]:.1f} seed runs (range {s['budget_B_range']}); "
        f"no racing sees {s['plain_distinct_configs'][0]:.1f} distinct configurations"
    )
    print(f"{'method':<10} {'beats r0 arm':>12} {'gain over r0 arm':>18} {'regret':>14} "
          f"{'pool regret':>14} {'pick resets':>11}")  # fmt: skip
    for method in ("racing", "plain"):
        m = s[method]
        print(
            f"{method:<10} {m['beats_r0_arm']:>5}/{m['with_r0_arm']:<6} "
            f"{fmt(m['gain_over_r0_arm_points']):>18} {fmt(m['regret_points']):>14} "
            f"{fmt(m['pool_regret_points']):>14} {m['pick_resets']:>5}/{s['repeats']}"
        )
    w = s["racing_vs_plain_wins_ties_losses"]
    print(
        f"racing pick − no-racing pick (true clean test): {fmt(s['racing_minus_plain_points'])} "
        f"points; wins/ties/losses {w[0]}/{w[1]}/{w[2]}"
    )
    v = s["verdict"]
    print(
        f"racing verdict ({v['count']} repeats, {v['n_seeds'][0]:.1f} seeds): true diff "
        f"{fmt(v['true_diff_points'])} points (> 0 in {v['true_diff_positive']}); 95 % t "
        f"coverage {v['coverage']}/{v['count']} (half-width "
        f"{v['test_half_width_points'][0]:.2f} points on average; with binomial floor "
        f"{v['coverage_with_floor']}/{v['count']}); words {v['words']}, decisive and right "
        f"{v['decisive_agree'][0]}/{v['decisive_agree'][1]}; service words {v['service_words']}"
    )


def print_table(summaries: list[dict]) -> None:
    """One row per setting, N, seed assignment and method (points of clean test accuracy)."""
    print(
        "\n| setting | N | seeds | B | method | pick beats own r = 0 arm | gain over r = 0 arm "
        "| regret | racing − no racing | verdict covers true diff | verdict words right |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for s in summaries:
        v = s["verdict"]
        b = s["budget_B"]
        extra = {
            "racing": (
                fmt(s["racing_minus_plain_points"]),
                f"{v['coverage']}/{v['count']}",
                "{}/{} decisive".format(*v["decisive_agree"]),
            ),
            "plain": ("", "", ""),
        }
        for method in ("racing", "plain"):
            m = s[method]
            diff, covered, right = extra[method]
            print(
                f"| {s['setting']} | {s['new_configurations']} | {s['seed_assignment']} | "
                f"{b[0]:.1f} ± {b[1]:.1f} | {'racing' if method == 'racing' else 'no racing'} | "
                f"{m['beats_r0_arm']}/{m['with_r0_arm']} | {fmt(m['gain_over_r0_arm_points'])} | "
                f"{fmt(m['regret_points'])} | {diff} | {covered} | {right} |"
            )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--settings", default=",".join(DEFAULT_SETTINGS))
    parser.add_argument("--configs", type=int, default=16, help="K: pool configurations")
    parser.add_argument("--seeds", type=int, default=5, help="S: seeds per configuration")
    parser.add_argument("--replay-only", action="store_true", help="train nothing")
    parser.add_argument("--repeats", type=int, default=50, help="R: replays per setting")
    parser.add_argument("--new", default="6", help="N: new configurations (comma list)")
    parser.add_argument("--z", type=float, default=1.0, help="RaceRules.z")
    parser.add_argument("--json", default=str(RESULTS / "summary.json"))
    args = parser.parse_args(argv)
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    setting_names = args.settings.split(",")
    if not args.replay_only:
        for name in setting_names:
            train_pool(SETTINGS[name], args.configs, args.seeds)
    summaries = []
    for name in setting_names:
        pool = Pool.load(SETTINGS[name], seeds=args.seeds, configs=args.configs)
        if len(pool.configs) < 4:
            print(f"[{name}] only {len(pool.configs)} complete configurations: skipped")
            continue
        for new in (int(n) for n in args.new.split(",")):
            for rotate in (False, True):
                reps = [
                    replay_once(pool, i, new=new, z=args.z, rotate=rotate)
                    for i in range(args.repeats)
                ]
                summary = summarise(pool, reps, new=new, rotate=rotate)
                print_summary(summary)
                summaries.append({**summary, "per_repeat": reps})
    print_table(summaries)
    write_json_atomic(args.json, {"z": args.z, "race_seeds": RACE_SEEDS, "summaries": summaries})
    print(f"\nwritten: {args.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
