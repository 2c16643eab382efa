"""Does arming resetting on label-free memorisation remove its losses where nothing is memorised,
without costing its gains where the model memorises?

Four regimes (40 % symmetric noise, batch 32, lr 0.05, cosine, patience 100, `eval_every` 50 or
100): digits with the `cnn` memorising (default weight decay) and not memorising (weight decay
0.05); Fashion-MNIST with the `mlp` memorising (2,000-image subset) and not memorising (20,000
images, 1,500 steps: under 3 epochs). Three arms per regime and seed, paired on the seed (same
split, noise, initialisation and batch order): r = 0; r = 0.01 armed by the patience rule (the
method's default); r = 0.01 with `arm_on_memorisation`. Reported: clean test accuracy of θbest
(`test_acc`), paired differences against r = 0 (mean, sd, n), when each arm armed, and, for the
r = 0 runs, how the label-free onset compares with the true memorisation fraction — also for
other detector constants (margin, confirm), replayed offline on the same histories.

Each run's result is cached under `benchmarks/results/memorisation_arming/runs/` (git-ignored)
and reused when its configuration is unchanged, so a rerun only trains what is missing.

    .venv/bin/python benchmarks/memorisation_arming.py   # 4 regimes × 3 arms × 5 seeds
    .venv/bin/python benchmarks/memorisation_arming.py --seeds 0 1 2 --regimes digits-memorising

CPU, one thread: ~60 runs of 5–15 s (digits `cnn` ~9 s per 1,500 steps, Fashion-MNIST `mlp`
~10 s), about 10 core-minutes in all. Writes `benchmarks/results/memorisation_arming.json`.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import benchlib  # noqa: F401  (makes the repository importable)
import torch
from benchlib import describe_machine, machine_facts, mean_sd, write_json

from reset_tune import names
from reset_tune.config import TrainConfig
from reset_tune.engine import TrainResult, prepare_data, train
from reset_tune.engine.memorisation import replay_detector

COMMON = dict(noise="symmetric:0.4", batch_size=32, lr=0.05, patience=100, steps=1500, device="cpu")
REGIMES: dict[str, dict] = {
    "digits-memorising": dict(dataset="digits", model="cnn", eval_every=50),
    "digits-not-memorising": dict(dataset="digits", model="cnn", eval_every=50, weight_decay=0.05),
    "fashion-memorising": dict(
        dataset="fashion-mnist", model="mlp", train_subset=2000, eval_every=50
    ),
    "fashion-not-memorising": dict(
        dataset="fashion-mnist", model="mlp", train_subset=20000, eval_every=100
    ),
}
ARMS: dict[str, dict] = {
    "r=0": dict(reset_prob=0.0),
    "r=0.01 patience": dict(reset_prob=0.01),
    "r=0.01 arm on memorisation": dict(reset_prob=0.01, arm_on_memorisation=True),
}
# Detector constants replayed offline on the r = 0 histories: (margin, z, confirm).
RULES = [
    (sig, m, 2.0, c) for sig in ("probe", "running") for m in (0.03, 0.05, 0.08) for c in (1, 2, 3)
]
RESULTS = benchlib.REPO_ROOT / "benchmarks" / "results"


def config_for(regime: str, arm: str, seed: int) -> TrainConfig:
    return TrainConfig(**{**COMMON, **REGIMES[regime], **ARMS[arm], "seed": seed})


def cached_run(config: TrainConfig, path: Path, data_cache: dict) -> TrainResult:
    if path.exists():
        saved = json.loads(path.read_text())
        if saved["config"] == config.to_dict():
            return TrainResult.from_dict(saved)
    key = (config.dataset, config.train_subset, config.seed)
    if key not in data_cache:
        data_cache.clear()  # one data set in memory at a time
        data_cache[key] = prepare_data(config, "cpu")
    result = train(config, data=data_cache[key])
    write_json(str(path), result.to_dict())
    return result


def replay(history: list[dict], *, signal: str, **rule) -> int | None:
    """The onset `rule` gives on `history`, with the train probe's accuracy ("probe", what the
    engine uses) or the running accuracy of the training minibatches ("running")."""
    if signal == "running":
        history = [{k: v for k, v in h.items() if k != names.TRAIN_PROBE_ACC} for h in history]
    detector, _ = replay_detector(history, **rule)
    return detector.onset_step


def true_fraction_at(history: list[dict], step: int | None) -> float | None:
    if step is None:
        return None
    return next(h[names.MEMORISATION] for h in history if h[names.STEP] == step)


def signal_row(result: TrainResult) -> dict:
    """The r = 0 run's onset against its true memorisation fraction."""
    history, onset = result.history, result.memorisation_step
    true = [h[names.MEMORISATION] for h in history]
    before = [h[names.MEMORISATION] for h in history if onset is None or h[names.STEP] < onset]
    return {
        "onset_step": onset,
        "true_fraction_at_onset": true_fraction_at(history, onset),
        "max_true_fraction_before_onset": max(before) if before else None,
        "max_true_fraction": max(true),
        "final_true_fraction": true[-1],
        "patience_armed_step": result.armed_step,  # r = 0 arms too, with nothing to reset
        "replayed_onsets": {
            f"{sig} margin={m} z={z} confirm={c}": (
                o := replay(
                    history,
                    signal=sig,
                    n_val=result.data["num_val"],
                    batch_size=result.config["batch_size"],
                    margin=m,
                    z=z,
                    confirm=c,
                ),
                true_fraction_at(history, o),
            )
            for sig, m, z, c in RULES
        },
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    parser.add_argument("--regimes", nargs="+", default=list(REGIMES), choices=list(REGIMES))
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--json", default=str(RESULTS / "memorisation_arming.json"))
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    facts = machine_facts(torch.device("cpu"))
    print(describe_machine(facts), flush=True)

    runs: dict[str, dict[str, dict[int, TrainResult]]] = {}
    data_cache: dict = {}
    started = time.perf_counter()
    for regime in args.regimes:
        runs[regime] = {arm: {} for arm in ARMS}
        for seed in args.seeds:
            for arm in ARMS:
                slug = f"{regime}-{arm.replace(' ', '-').replace('=', '')}-s{seed}"
                path = RESULTS / "memorisation_arming" / "runs" / f"{slug}.json"
                result = cached_run(config_for(regime, arm, seed), path, data_cache)
                runs[regime][arm][seed] = result
                print(
                    f"{regime:<24} {arm:<28} seed {seed}: test acc {result.test_acc:.4f}  "
                    f"armed {result.armed_step}  onset {result.memorisation_step}  "
                    f"resets {result.num_resets}  ({time.perf_counter() - started:.0f} s)",
                    flush=True,
                )

    summary: dict[str, dict] = {}
    for regime, by_arm in runs.items():
        base = by_arm["r=0"]
        arms = {}
        for arm, by_seed in by_arm.items():
            diffs = [100 * (by_seed[s].test_acc - base[s].test_acc) for s in args.seeds]
            mean, sd = mean_sd(diffs)
            arms[arm] = {
                "test_acc": {s: by_seed[s].test_acc for s in args.seeds},
                "test_acc_mean": statistics.fmean(by_seed[s].test_acc for s in args.seeds),
                "diff_vs_r0_points": diffs,
                "diff_mean": mean,
                "diff_sd": sd,
                "n": len(diffs),
                "wins": sum(d > 0 for d in diffs),
                "losses": sum(d < 0 for d in diffs),
                "armed_steps": {s: by_seed[s].armed_step for s in args.seeds},
                "num_resets": {s: by_seed[s].num_resets for s in args.seeds},
            }
        summary[regime] = {
            "config": {**COMMON, **REGIMES[regime]},
            "arms": arms,
            "signal": {s: signal_row(base[s]) for s in args.seeds},
        }

    print(f"\n{'regime':<24} {'arm':<28} {'test acc':>8} {'Δ vs r=0 (points)':>22} {'armed':>6}")
    for regime, entry in summary.items():
        for arm, a in entry["arms"].items():
            armed = sum(v is not None for v in a["armed_steps"].values())
            delta = (
                "" if arm == "r=0" else f"{a['diff_mean']:+.2f} ± {a['diff_sd']:.2f} (n={a['n']})"
            )
            print(
                f"{regime:<24} {arm:<28} {a['test_acc_mean']:>8.4f} {delta:>22} {armed:>3}/{a['n']}"
            )
    print("\nlabel-free onset in the r = 0 runs (true memorisation fraction at the onset):")
    for regime, entry in summary.items():
        cells = []
        for s, row in entry["signal"].items():
            frac = row["true_fraction_at_onset"]
            cells.append(
                f"s{s}: {row['onset_step']}"
                + ("" if frac is None else f" ({frac:.2f})")
                + f" max {row['max_true_fraction']:.2f}"
            )
        print(f"  {regime:<24} " + "; ".join(cells))
    print("\nreplayed rules: runs fired / true fraction at onset (mean) per regime")
    for sig, m, z, c in RULES:
        key = f"{sig} margin={m} z={z} confirm={c}"
        cells = []
        for regime, entry in summary.items():
            onsets = [row["replayed_onsets"][key] for row in entry["signal"].values()]
            fired = [f for o, f in onsets if o is not None]
            frac = f"{statistics.fmean(fired):.2f}" if fired else "-"
            cells.append(f"{regime.split('-', 1)[0][:3]}-{'mem' if 'not' not in regime else 'not'} "
                         f"{len(fired)}/{len(onsets)} ({frac})")  # fmt: skip
        print(f"  {key:<36} " + "  ".join(cells))

    payload = {
        "machine": facts,
        "seeds": args.seeds,
        "wall_time_s": time.perf_counter() - started,
        "regimes": summary,
    }
    write_json(args.json, payload)
    print(f"\nwrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
