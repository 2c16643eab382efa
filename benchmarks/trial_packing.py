"""Trial packing: aggregate training steps/s with 1, 2, 4, 8 trials sharing one GPU.

Each packing level runs `n` identical trials of reset-tune's own trainable
(`reset_tune.search.trainable.run_trial`) as Ray Tune trials requesting ``gpu = 1/n`` (Ray's
fractional GPU resources, what a spec's ``resources: {gpus: 0.25}`` asks for), all at once, on a
CIFAR-shaped synthetic data set resident on the GPU. It reports, per level:

- aggregate steps/s: the sum over trials of each trial's own training rate (the engine's timing,
  so Ray's start-up is not in it), and the same over the level's whole wall time (start-up in);
- the speed-up over one trial per GPU, and each trial's rate relative to running alone.

Small models leave most of an H100 idle, so packing several trials is how a search fills it;
large ones saturate it alone. Run on a GPU machine::

    .venv/bin/python benchmarks/trial_packing.py --model cnn --batch-size 128
    .venv/bin/python benchmarks/trial_packing.py --model resnet18 --batch-size 128

On a CPU (`--device cpu`) trials share the machine's cores instead (``cpu = cores/n``), which
checks the script, not the GPU figure.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import benchlib  # noqa: E402

from reset_tune import names  # noqa: E402
from reset_tune.search import SearchSpec  # noqa: E402
from reset_tune.search.trainable import RESULT_JSON, TrialSetup, run_trial  # noqa: E402


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cuda", help="cuda (the figure) or cpu (a check)")
    parser.add_argument("--model", default="cnn", help="cnn | vcnn | resnet18 | resnet34")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--steps", type=int, default=1000, help="steps per trial")
    parser.add_argument("--eval-every", type=int, default=250)
    parser.add_argument("--packing", type=int, nargs="+", default=[1, 2, 4, 8])
    parser.add_argument("--train-size", type=int, default=45_000)
    parser.add_argument("--json", default="benchmarks/results/trial_packing.json")
    return parser.parse_args(argv)


def _spec(args: argparse.Namespace, device: str) -> SearchSpec:
    # dataset cifar10 names the problem for the spec; the trials get the synthetic data instead.
    return SearchSpec.from_dict(
        {
            "train": {
                "dataset": "cifar10",
                "noise": "symmetric:0.4",
                "model": args.model,
                "steps": args.steps,
                "eval_every": args.eval_every,
                "device": device,
                "precision": "bf16" if device == "cuda" else "fp32",
                "reset_prob": 0.01,
                "batch_size": args.batch_size,
            },
            "params": {"lr": {"type": "categorical", "choices": [0.05]}},
            # A cuda spec must request a GPU to validate; each level asks Ray for its own
            # share (`_level`), so this value is not what the trials get.
            "resources": {"gpus": 1} if device == "cuda" else {},
        },
        source="trial_packing",
    )


def _data(spec: SearchSpec, args: argparse.Namespace):
    from reset_tune.config import TrainConfig
    from reset_tune.data import build_splits, parse_noise_spec
    from reset_tune.engine import data_settings

    config = TrainConfig.from_dict({**spec.fixed, "seed": 0})
    loaded = benchlib.synthetic_cifar(num_train=args.train_size, num_test=10_000)
    splits = build_splits(
        loaded,
        noise=parse_noise_spec(config.noise),
        seed=0,
        val_fraction=config.val_fraction,
        augment=config.augment,
        device="cpu",
    )
    splits.settings = data_settings(config)
    return {(0, config.augment): splits}


def _level(n: int, spec: SearchSpec, data, args, device: str) -> dict:
    from ray import tune

    setup = TrialSetup(spec=spec, data=data, checkpoint_every=10**9, threads=1)
    cores = os.cpu_count() or 1
    resources = {"cpu": 1, "gpu": 1.0 / n} if device == "cuda" else {"cpu": max(cores / n, 0.01)}
    params = {"lr": 0.05}
    trainable = tune.with_resources(tune.with_parameters(run_trial, setup=setup), resources)
    tuner = tune.Tuner(
        trainable,
        param_space=params,
        tune_config=tune.TuneConfig(num_samples=n, max_concurrent_trials=n),
        run_config=tune.RunConfig(
            name=f"packing-{n}", storage_path=str(Path(args.json).parent / "ray"), verbose=0
        ),
    )
    started = time.perf_counter()
    grid = tuner.fit()
    wall = time.perf_counter() - started
    rates, errors = [], []
    for result in grid:
        if result.error is not None:
            errors.append(str(result.error).splitlines()[-1])
            continue
        (train_result,) = json.loads(result.metrics[RESULT_JSON])
        rates.append(train_result["steps_per_s"])
    return {
        "trials": n,
        "resources_per_trial": resources,
        "per_trial_steps_per_s": rates,
        "aggregate_steps_per_s": sum(rates),
        "aggregate_over_wall_steps_per_s": n * args.steps / wall if not errors else None,
        "wall_s": wall,
        "errors": errors,
    }


def main(argv: list[str] | None = None) -> int:
    args = _parse_args(argv)
    device = benchlib.resolve_device(args.device)
    import ray

    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    os.environ["TUNE_DISABLE_STRICT_METRIC_CHECKING"] = "1"
    ray.init(
        address="local",
        num_gpus=1 if device.type == "cuda" else 0,
        include_dashboard=False,
        logging_level=logging.WARNING,
        log_to_driver=False,
    )
    spec = _spec(args, device.type)
    data = _data(spec, args)
    levels = [_level(n, spec, data, args, device.type) for n in args.packing]
    ray.shutdown()
    alone = levels[0]["aggregate_steps_per_s"] / levels[0]["trials"]
    print(f"{benchlib.describe_machine(benchlib.machine_facts(device))}")
    print(f"model {args.model}, batch {args.batch_size}, {args.steps} steps per trial")
    print(f"{'trials':>6} {'aggregate steps/s':>18} {'speed-up':>9} {'per trial vs alone':>19}")
    for level in levels:
        n, total = level["trials"], level["aggregate_steps_per_s"]
        print(
            f"{n:>6} {total:>18.1f} {total / levels[0]['aggregate_steps_per_s']:>8.2f}x "
            f"{total / n / alone:>18.2f}x"
            + (f"  errors: {level['errors']}" if level["errors"] else "")
        )
    benchlib.write_json(
        args.json,
        {
            "machine": benchlib.machine_facts(device),
            "settings": vars(args),
            "levels": levels,
            "metric": f"{names.STEPS_PER_S} of each trial's whole loop",
        },
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
