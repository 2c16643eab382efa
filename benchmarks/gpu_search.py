"""A whole small-data search through the service on one GPU, against its trials one after another.

The spec: Fashion-MNIST, a 2,000-image pool (1,800 training after the 10 % validation split),
60 % symmetric label noise, `vcnn` at batch 32, 4,000 steps a trial, 32 trials searched by TPE
(resetting on and off, reset layers, patience, adaptivity, learning rate), `--concurrency`
trials at a time, each asking Ray for ``1/concurrency`` of the GPU. The script

1. runs that search through the real service (`reset_tune.search.run`: Ray Tune, Optuna with its
   SQLite study, the trainable, the driver's progress and report) and times it end to end;
2. runs the same resolved trial configurations one after another through the engine
   (`reset_tune.engine.train`, the data prepared once, as the search shares them), until
   `--sequential-budget-s` is spent, and extrapolates the rest from their mean (after a short
   warm-up run that takes the process's one-off CUDA start-up, counted once);
3. reports the search's wall time, trials/hour and the ratio to the sequential time.

Tracking goes to an in-memory sink by default (`--tracking memory`: MLflow is not needed, and
the sink's batched delivery runs off the trials' path anyway); `--tracking mlflow` uses the
driver's default ($MLFLOW_TRACKING_URI or the embedded local server). The JSON is rewritten
after each phase, so a run stopped during the sequential part keeps the search's figures.

Data: Fashion-MNIST is found as the loader finds it (`--data-root`, torchvision's layout, or
Debian's package). For a machine without it, `--write-data-subset DIR` writes the 2,000 training
images the full data set's seed-0 pool holds, plus the 10,000 test images, as idx files in
torchvision's layout under DIR; `--data-root DIR` then reads them. On that subset the seed-0
pool is the same 2,000 images, but in another order and with label noise drawn anew (same rate).

On the GPU (about 3–4 minutes with today's engine)::

    python3 benchmarks/gpu_search.py --device cuda --data-root DIR --concurrency 8

A check on a CPU (scikit-learn's digits, about 2 minutes on 2 cores)::

    .venv/bin/python benchmarks/gpu_search.py --device cpu --dataset digits --train-subset 1000 \
        --trials 4 --steps 200 --concurrency 2 --json /tmp/gpu_search.json
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import benchlib  # noqa: E402
import numpy as np  # noqa: E402
import yaml  # noqa: E402

from reset_tune.search.tune_files import COMPLETE  # noqa: E402

SCRIPT_START = time.perf_counter()
RESULTS = Path(__file__).resolve().parent / "results"
SUBSET_FOLDER = Path("FashionMNIST") / "raw"  # torchvision's layout, which the loader reads
_VERSION_KEYS = ("reset_tune", "commit", "python", "torch", "torchvision", "numpy", "host")


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cuda", help="cuda (the figure) or cpu (a check)")
    parser.add_argument("--dataset", default="fashion-mnist")
    parser.add_argument("--data-root", default=None, help="folder holding FashionMNIST/raw/")
    parser.add_argument("--train-subset", type=int, default=2000, help="pool incl. validation")
    parser.add_argument("--noise", default="symmetric:0.6")
    parser.add_argument("--model", default="vcnn")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--steps", type=int, default=4000, help="steps per trial")
    parser.add_argument("--eval-every", type=int, default=50)
    parser.add_argument("--precision", default="fp32", help="fp32 | bf16 (CUDA only)")
    parser.add_argument("--trials", type=int, default=32)
    parser.add_argument("--concurrency", type=int, default=8, help="trials sharing the device")
    parser.add_argument(
        "--sequential-budget-s",
        type=float,
        default=60.0,
        help="time for the one-after-another trials; the rest is extrapolated (0: skip them)",
    )
    parser.add_argument(
        "--deadline-s",
        type=float,
        default=None,
        help="seconds from the script's start after which no sequential trial is started that "
        "the last one's time says would not finish (for a run under a time limit)",
    )
    parser.add_argument("--tracking", choices=("memory", "mlflow"), default="memory")
    parser.add_argument("--work-dir", default=None, help="state directory (default: a temp dir)")
    parser.add_argument("--json", default=str(RESULTS / "gpu_search.json"))
    parser.add_argument(
        "--write-data-subset",
        metavar="DIR",
        default=None,
        help="write the Fashion-MNIST subset (seed-0 pool + test set) under DIR and exit",
    )
    return parser.parse_args(argv)


# -- the data subset --------------------------------------------------------------------------
def _write_idx(path: Path, array: np.ndarray) -> None:
    """An idx file as MNIST's format has it: magic (unsigned bytes, ndim), dims, the bytes."""
    magic = 0x0800 + array.ndim
    header = magic.to_bytes(4, "big") + b"".join(d.to_bytes(4, "big") for d in array.shape)
    path.write_bytes(header + np.ascontiguousarray(array, dtype=np.uint8).tobytes())


def write_data_subset(directory: str, size: int) -> Path:
    """Fashion-MNIST's seed-0 pool of `size` training images and its whole test set, as idx."""
    from reset_tune.data import load_dataset
    from reset_tune.seeding import SPLIT_STREAM, numpy_generator

    loaded = load_dataset("fashion-mnist")
    # The pool `build_splits` takes for seed 0 with train_subset=size, in its order.
    pool = numpy_generator(0, SPLIT_STREAM).permutation(len(loaded.train))[:size]
    folder = Path(directory) / SUBSET_FOLDER
    folder.mkdir(parents=True, exist_ok=True)
    files = {
        "train-images-idx3-ubyte": loaded.train.images[pool][:, 0],
        "train-labels-idx1-ubyte": loaded.train.labels[pool],
        "t10k-images-idx3-ubyte": loaded.test.images[:, 0],
        "t10k-labels-idx1-ubyte": loaded.test.labels,
    }
    for name, array in files.items():
        _write_idx(folder / name, array)
    print(f"wrote {size} training and {len(loaded.test)} test images under {folder}")
    return folder


# -- the spec ---------------------------------------------------------------------------------
def spec_dict(args: argparse.Namespace, device: str) -> dict[str, Any]:
    train: dict[str, Any] = {
        "dataset": args.dataset,
        "train_subset": args.train_subset,
        "noise": args.noise,
        "model": args.model,
        "batch_size": args.batch_size,
        "steps": args.steps,
        "eval_every": args.eval_every,
        "device": device,
        "precision": args.precision,
    }
    if args.data_root is not None:
        train["data_root"] = os.path.abspath(args.data_root)
    cores = os.cpu_count() or 1
    return {
        "name": "gpu-search",
        "description": f"{args.dataset} {args.train_subset}-image pool, {args.model}, "
        f"batch {args.batch_size}, {args.steps} steps, {args.concurrency} trials at a time",
        "train": train,
        "objective": "val_acc",
        "trials": args.trials,
        "concurrency": args.concurrency,
        "seeds": [0],
        # On a GPU the trials share it (one CPU each); on a CPU they share the cores.
        "resources": (
            {"cpus": 1, "gpus": 1.0 / args.concurrency}
            if device == "cuda"
            else {"cpus": max(1.0, float(cores // args.concurrency)), "gpus": 0}
        ),
        "scheduler": "none",
        "sampler": {"type": "tpe", "seed": 0, "startup_trials": min(8, args.trials)},
        "params": {
            "reset_prob": {"type": "loguniform", "low": 0.001, "high": 0.03, "off_arm": True},
            "reset_layers": {"type": "categorical", "choices": ["all", "head", "fc_block"]},
            "patience": {"type": "int", "low": 100, "high": 400, "step": 50},
            "adaptive": {"type": "categorical", "choices": [True, False]},
            "lr": {"type": "loguniform", "low": 0.005, "high": 0.2},
        },
    }


# -- the two measurements -----------------------------------------------------------------------
def run_search(spec_path: Path, state: Path, args: argparse.Namespace) -> dict[str, Any]:
    from reset_tune.search import run
    from reset_tune.tracking import MemorySink

    tracking = MemorySink(experiment_name="gpu-search") if args.tracking == "memory" else None
    started = time.perf_counter()
    outcome = run(spec_path, state_dir=state, tracking=tracking)
    wall = time.perf_counter() - started
    trials = []
    for t in outcome.report.trials:
        trials.append(
            {
                "label": t.label,
                "outcome": t.outcome,
                "objective": t.objective,
                "test_acc": t.test_acc,
                "num_resets": t.num_resets,
                "wall_time_s": t.wall_time_s,
                "config": t.config,
                "failure_reason": t.failure_reason,
            }
        )
    complete = [t for t in trials if t["outcome"] == COMPLETE]
    trial_walls = [float(t["wall_time_s"]) for t in complete if t["wall_time_s"] is not None]
    return {
        "search_id": outcome.record.search_id,
        "tracking": args.tracking,
        "wall_s": wall,
        "trials_complete": len(complete),
        "trials_per_hour": len(complete) / wall * 3600.0 if wall > 0 else None,
        # All trials' steps over the search's wall time (Ray's and the driver's time included).
        "aggregate_steps_per_s_over_wall": len(complete) * args.steps / wall,
        # Each trial's own loop (steps over its wall time), while sharing the device.
        "mean_trial_steps_per_s": (
            sum(args.steps / w for w in trial_walls) / len(trial_walls) if trial_walls else None
        ),
        "sum_of_trial_wall_s": sum(trial_walls),
        "trials": trials,
    }


def run_sequential(trials: list[dict[str, Any]], args: argparse.Namespace) -> dict[str, Any]:
    """The search's complete trials, one after another through the engine, within the budget."""
    import torch

    from reset_tune.config import TrainConfig
    from reset_tune.engine import prepare_data, train

    complete = [t for t in trials if t["outcome"] == COMPLETE]
    configs = [TrainConfig.from_dict(t["config"]) for t in complete]
    if not configs or args.sequential_budget_s <= 0:
        return {"skipped": True}
    quickest_s = min(float(t["wall_time_s"] or 0.0) for t in complete)
    if args.deadline_s is not None and time.perf_counter() - SCRIPT_START > args.deadline_s:
        return {"skipped": True, "reason": "no time left before --deadline-s"}
    torch.set_num_threads(1)  # as each search trial ran (trial_threads of one CPU)
    started = time.perf_counter()
    data = prepare_data(configs[0], "cpu")
    prepare_s = time.perf_counter() - started
    # The process's one-off start-up (CUDA context, cuDNN and cuBLAS handles, kernel loading)
    # on a short run of the first configuration: counted once in the total, not extrapolated.
    t0 = time.perf_counter()
    short = max(1, min(2 * configs[0].eval_every, configs[0].steps))
    train(TrainConfig.from_dict({**complete[0]["config"], "steps": short}), data=data)
    warmup_s = time.perf_counter() - t0
    runs = []
    for config in configs:
        if runs and time.perf_counter() - started > args.sequential_budget_s:
            break
        if args.deadline_s is not None:
            # The last trial's time, or before the first the quickest search trial's (shared,
            # so no faster than alone), says whether one more would end before the deadline.
            expected = runs[-1]["wall_s"] if runs else quickest_s
            if time.perf_counter() - SCRIPT_START + expected > args.deadline_s:
                break
        t0 = time.perf_counter()
        result = train(config, data=data)
        runs.append(
            {
                "wall_s": time.perf_counter() - t0,
                "steps_per_s": result.steps_per_s,
                # What provenance says beyond the versions (e.g. which step path ran).
                "provenance": {
                    k: v for k, v in result.provenance.items() if k not in _VERSION_KEYS
                },
            }
        )
        print(
            f"sequential {len(runs)}/{len(configs)}: {runs[-1]['wall_s']:.1f} s, "
            f"{result.steps_per_s:.0f} steps/s",
            flush=True,
        )
    if not runs:
        return {"skipped": True, "reason": "no time left before --deadline-s"}
    walls = [r["wall_s"] for r in runs]
    per_trial = sum(walls) / len(walls)
    total = prepare_s + warmup_s + sum(walls) + per_trial * (len(configs) - len(runs))
    return {
        "skipped": False,
        "trials_run": len(runs),
        "trials_total": len(configs),
        "extrapolated": len(runs) < len(configs),
        "prepare_data_s": prepare_s,
        "warmup_s": warmup_s,
        "warmup_steps": short,
        "mean_trial_s": per_trial,
        "total_s": total,
        "trials_per_hour": len(configs) / total * 3600.0,
        "runs": runs,
    }


def main(argv: list[str] | None = None) -> int:
    args = _parse_args(argv)
    if args.write_data_subset is not None:
        write_data_subset(args.write_data_subset, args.train_subset)
        return 0
    device = benchlib.resolve_device(args.device)
    import ray

    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    work = Path(args.work_dir or tempfile.mkdtemp(prefix="gpu_search-"))
    work.mkdir(parents=True, exist_ok=True)
    spec_path = work / "gpu_search.yaml"
    spec_path.write_text(yaml.safe_dump(spec_dict(args, device.type), sort_keys=False))
    payload: dict[str, Any] = {
        "machine": benchlib.machine_facts(device),
        "settings": vars(args),
        "spec": spec_dict(args, device.type),
    }
    benchlib.write_json(args.json, payload)  # something to read if the search is stopped
    # Started here, not by the driver, so that the GPU count is explicit; the driver uses it.
    started = time.perf_counter()
    ray.init(
        address="local",
        num_gpus=1 if device.type == "cuda" else 0,
        include_dashboard=False,
        logging_level=logging.WARNING,
        log_to_driver=False,
    )
    payload["ray_init_s"] = time.perf_counter() - started
    try:
        search = run_search(spec_path, work / "state", args)
    finally:
        ray.shutdown()
    payload["search"] = search
    benchlib.write_json(args.json, payload)
    print(
        f"search: {search['trials_complete']} trials in {search['wall_s']:.1f} s "
        f"({search['trials_per_hour']:.0f} trials/hour; sum of trial times "
        f"{search['sum_of_trial_wall_s']:.1f} s)",
        flush=True,
    )
    sequential = run_sequential(search["trials"], args)
    payload["sequential"] = sequential
    if not sequential.get("skipped"):
        payload["speedup_over_sequential"] = sequential["total_s"] / search["wall_s"]
        run = sequential["trials_run"]
        basis = f" (extrapolated from {run})" if sequential["extrapolated"] else ""
        print(
            f"one after another: {sequential['total_s']:.1f} s for "
            f"{sequential['trials_total']} trials{basis}; "
            f"the search was {payload['speedup_over_sequential']:.2f}x faster"
        )
    benchlib.write_json(args.json, payload)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
