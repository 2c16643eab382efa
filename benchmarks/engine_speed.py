"""Engine vs the reference loop style: training steps per second, side by side in one run.

What is measured. For each model, the reference loop (``reference_loop.py``, re-created from
docs/method.md §9) and the engine (``reset_tune.engine.TrainingRun``) train the same model at
the same batch size on the same splits with the same optimizer, schedule and evaluation cadence
(``--eval-every``, 10 by default: a pass over the whole validation split every 10 steps). Both
are built fresh for every repeat, run ``--warmup`` steps untimed, then ``--steps`` timed steps;
the timed window starts and ends right after an evaluation, so it holds exactly
``steps / eval_every`` validation passes in both loops (plus the reference's test passes on new
bests, part of its style). Steps/s = timed steps / wall seconds (``time.perf_counter``, with
``torch.cuda.synchronize`` at both ends on a GPU). Repeats alternate which loop goes first; the
report gives mean ± sd over repeats and the ratio engine / reference.

Data. ``synthetic-cifar`` (default): CIFAR-shaped uint8 images, 3x32x32, 10 learnable classes,
from a fixed seed, split through the engine's real data path (``reset_tune.data.build_splits``);
crop+flip augmentation in both loops. ``digits``: scikit-learn's 8x8 digits, no augmentation.
Labels are clean by default (``--noise none``): label noise changes neither loop's cost, and with
noisy labels the engine also predicts up to 2,048 wrong-labelled training samples at every
evaluation (its memorisation probe), work the reference loop does not do. Pass e.g.
``--noise symmetric:0.4`` to include it.

``--profile`` then runs cProfile over a short stretch of each loop and prints where the time
goes: the reference loop by phase (batch drawing; forward/backward under anomaly mode;
``gc.collect``; weight norm; reset; validation; test passes), the engine by phase, and the top
functions of each; then direct, unprofiled measurements of what anomaly mode adds to one
forward/backward step, of one batch draw (PIL work vs the rest) and of one ``gc.collect()``.

``--threads`` (default 1 on CPU) sets torch's intra-op threads for both loops; see benchlib.

Run from the repository root::

    .venv/bin/python benchmarks/engine_speed.py                        # CPU: cnn and resnet18
    .venv/bin/python benchmarks/engine_speed.py --model cnn --profile
    .venv/bin/python benchmarks/engine_speed.py --device cuda          # GPU: resnet18, batch 256
"""

from __future__ import annotations

import argparse
import cProfile
import io
import pstats
import sys
import time
import warnings

import benchlib
import torch
from reference_loop import ReferenceLoop

from reset_tune.config import TrainConfig
from reset_tune.data import DataSplits

# Per-(device type, model) defaults, chosen so the default CPU run (cnn + resnet18) takes about
# three minutes on 2 shared cores with 1 thread (2 min 58 s measured; ResNet-18 at batch 16, as
# one batch-32 step alone takes ~1.3 s there), and the GPU run mirrors docs/method.md §9 (ResNet-18,
# batch 256).
_CPU_DEFAULTS = {
    "cnn": {"batch_size": 32, "steps": 30, "warmup": 10, "repeats": 3},
    "resnet18": {"batch_size": 16, "steps": 10, "warmup": 10, "repeats": 2},
}
_CPU_OTHER = {"batch_size": 32, "steps": 20, "warmup": 10, "repeats": 2}
_CUDA_DEFAULTS = {"batch_size": 256, "steps": 200, "warmup": 20, "repeats": 3}
# On a CPU a pass over 1,000 validation images costs ResNet-18 as much as ~15 training steps of
# batch 32; smaller validation/test splits keep the default run short (same splits, both loops).
_CPU_SIZES = benchlib.SyntheticSizes(train=5000, val=250, test=250)
_CUDA_SIZES = benchlib.SyntheticSizes(train=5000, val=1000, test=1000)
PROFILE_STEPS = 20  # longest stretch of each loop under cProfile (after the usual warm-up)

# Reference-loop phases, by the method names of `ReferenceLoop` (see reference_loop.py). The
# DataLoader and PIL functions inside a batch draw also run in validation and test passes, so
# their share of a batch draw is measured directly instead (`_batch_draw_costs`).
_REFERENCE_PHASES = (
    ("draw batch (new DataLoader iterator, PIL transforms)", "reference_loop.py", "_next_batch"),
    ("forward + backward + optimizer (anomaly mode on)", "reference_loop.py", "_forward_backward"),
    ("gc.collect + empty_cache", "reference_loop.py", "_free_memory"),
    ("weight norm (.item() host sync)", "reference_loop.py", "_weight_norm"),
    ("reset draw / load_state_dict", "reference_loop.py", "_maybe_reset"),
    ("validation every eval_every steps (incl. test passes)", "reference_loop.py", "_validate"),
    ("  of which: test pass on each new best", "reference_loop.py", "_test"),
)
_ENGINE_PHASES = (
    ("training steps (device batches, no syncs)", "engine/loop.py", "_train_step"),
    ("evaluations (validation + memorisation probe)", "engine/loop.py", "_evaluate"),
)


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="engine_speed.py",
        description=__doc__.split("\n\n")[0],
        epilog="Per-model defaults: CPU cnn batch 32, 30 steps, 3 repeats; CPU resnet18 batch "
        "16, 10 steps, 2 repeats; CUDA batch 256, 200 steps, 3 repeats.",
    )
    parser.add_argument("--device", default="cpu", help="cpu (default), cuda, cuda:N or auto")
    parser.add_argument(
        "--model",
        action="append",
        dest="models",
        metavar="NAME",
        help="model to time (repeatable); default cnn and resnet18 on CPU, resnet18 on CUDA",
    )
    parser.add_argument("--batch-size", type=int, help="training batch size (default per model)")
    parser.add_argument("--steps", type=int, help="timed steps per run (default per model)")
    parser.add_argument(
        "--warmup", type=int, help="untimed steps first (default 10 on CPU, 20 on CUDA)"
    )
    parser.add_argument("--repeats", type=int, help="runs of each loop (default per model)")
    parser.add_argument("--eval-every", type=int, default=10, help="steps between validations")
    parser.add_argument(
        "--dataset",
        default="synthetic-cifar",
        choices=benchlib.DATASETS,
        help="synthetic-cifar (3x32x32, default) or digits (1x8x8)",
    )
    parser.add_argument(
        "--synthetic-sizes",
        metavar="TRAIN,VAL,TEST",
        help="synthetic-cifar split sizes (default 5000,250,250 on CPU; 5000,1000,1000 on CUDA)",
    )
    parser.add_argument("--noise", default="none", help="label noise spec (default none)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--no-deterministic",
        dest="deterministic",
        action="store_false",
        help="non-deterministic kernels in both loops (the engine's default is deterministic)",
    )
    benchlib.add_threads_option(parser)
    parser.add_argument("--profile", action="store_true", help="also profile each loop")
    parser.add_argument("--json", metavar="OUT", help="write all figures to this JSON file")
    return parser.parse_args(argv)


def _sizes(args: argparse.Namespace, device: torch.device) -> benchlib.SyntheticSizes:
    if args.synthetic_sizes is None:
        return _CUDA_SIZES if device.type == "cuda" else _CPU_SIZES
    try:
        train, val, test = (int(part) for part in args.synthetic_sizes.split(","))
    except ValueError:
        raise SystemExit(
            f"error: --synthetic-sizes must be three integers TRAIN,VAL,TEST, got "
            f"{args.synthetic_sizes!r}"
        ) from None
    if min(train, val, test) < 1:
        raise SystemExit(f"error: --synthetic-sizes must be positive, got {args.synthetic_sizes}")
    return benchlib.SyntheticSizes(train=train, val=val, test=test)


def _settings(args: argparse.Namespace, device: torch.device, model: str) -> dict[str, int]:
    if device.type == "cuda":
        base = dict(_CUDA_DEFAULTS)
    else:
        base = dict(_CPU_DEFAULTS.get(model, _CPU_OTHER))
    for key in ("batch_size", "steps", "warmup", "repeats"):
        value = getattr(args, key)
        if value is not None:
            base[key] = value
    if base["repeats"] < 1 or base["batch_size"] < 1:
        raise SystemExit("error: --repeats and --batch-size must be at least 1")
    benchlib.check_window(warmup=base["warmup"], steps=base["steps"], eval_every=args.eval_every)
    return base


def _config(
    args: argparse.Namespace, device: torch.device, model: str, settings: dict, data_keys: dict
) -> TrainConfig:
    return TrainConfig(
        **data_keys,
        model=model,
        batch_size=settings["batch_size"],
        steps=settings["warmup"] + settings["steps"],
        eval_every=args.eval_every,
        device=str(device),
        deterministic=args.deterministic,
        reset_prob=0.0,  # speed comparison: never reset (docs/method.md §9 measures r = 0)
    )


def time_reference(
    config: TrainConfig, splits: DataSplits, *, warmup: int, steps: int
) -> tuple[float, int]:
    """Steps/s of the reference loop over `steps` steps after `warmup` untimed ones, and the
    number of test passes (new bests) that fell inside the timed window."""
    loop = ReferenceLoop(config, splits)
    loop.train_steps(warmup)
    tests_before = loop.counters.test_passes
    benchlib.synchronize(loop.device)
    started = time.perf_counter()
    loop.train_steps(steps)
    benchlib.synchronize(loop.device)
    seconds = time.perf_counter() - started
    return steps / seconds, loop.counters.test_passes - tests_before


def _measure_model(
    args: argparse.Namespace, device: torch.device, model: str, splits: DataSplits, keys: dict
) -> dict:
    settings = _settings(args, device, model)
    config = _config(args, device, model, settings, keys)
    warmup, steps = settings["warmup"], settings["steps"]
    reference, engine, test_passes = [], [], []
    began = time.perf_counter()
    print(
        f"\n== {model}: batch {settings['batch_size']}, {steps} timed steps after {warmup} "
        f"warm-up, eval every {args.eval_every}, {settings['repeats']} repeats",
        flush=True,
    )
    for repeat in range(settings["repeats"]):
        order = ("reference", "engine") if repeat % 2 == 0 else ("engine", "reference")
        for which in order:
            if which == "reference":
                rate, tests = time_reference(config, splits, warmup=warmup, steps=steps)
                reference.append(rate)
                test_passes.append(tests)
                detail = f"({tests} test passes on new bests in the window)"
            else:
                rate, _ = benchlib.time_engine(config, splits, warmup=warmup, steps=steps)
                engine.append(rate)
                detail = ""
            print(f"  repeat {repeat + 1} {which:<9} {rate:8.2f} steps/s  {detail}", flush=True)
    ratios = [e / r for e, r in zip(engine, reference, strict=True)]
    ref_mean, _ = benchlib.mean_sd(reference)
    eng_mean, _ = benchlib.mean_sd(engine)
    print(
        f"  {model}: reference {benchlib.fmt_mean_sd(reference)} steps/s, engine "
        f"{benchlib.fmt_mean_sd(engine)} steps/s, ratio {eng_mean / ref_mean:.2f}x "
        f"(per repeat {benchlib.fmt_mean_sd(ratios)}); {time.perf_counter() - began:.0f} s",
        flush=True,
    )
    return {
        "model": model,
        **settings,
        "eval_every": args.eval_every,
        "reference_steps_per_s": reference,
        "engine_steps_per_s": engine,
        "ratio_of_means": eng_mean / ref_mean,
        "ratio_per_repeat": ratios,
        "reference_test_passes_in_window": test_passes,
    }


# ----------------------------------------------------------------------------- profiling


def _cumulative(stats: pstats.Stats, filename: str, function: str) -> float:
    """Total cumulative seconds of functions named `function` in files ending in `filename`."""
    total = 0.0
    for (path, _line, name), (_cc, _nc, _tt, cumulative, _callers) in stats.stats.items():
        if name == function and path.endswith(filename):
            total += cumulative
    return total


def _top_entries(stats: pstats.Stats, count: int = 15) -> str:
    buffer = io.StringIO()
    stats.stream = buffer
    stats.sort_stats("tottime").print_stats(count)
    lines = buffer.getvalue().splitlines()
    start = next((i for i, line in enumerate(lines) if "ncalls" in line), 0)
    return "\n".join(line for line in lines[start:] if line.strip())


def _anomaly_cost(config: TrainConfig, splits: DataSplits, repeats: int = 5) -> dict[str, float]:
    """ms of one forward/backward/optimizer step on a fixed batch, anomaly mode off vs on."""
    loop = ReferenceLoop(config, splits)
    images, labels = loop._next_batch()
    times: dict[bool, list[float]] = {False: [], True: []}
    for _ in range(2):  # warm-up both modes
        for mode in (False, True):
            with torch.autograd.set_detect_anomaly(mode):
                loop._forward_backward(images, labels)
    for _ in range(repeats):
        for mode in (False, True):
            with torch.autograd.set_detect_anomaly(mode):
                benchlib.synchronize(loop.device)
                started = time.perf_counter()
                loop._forward_backward(images, labels)
                benchlib.synchronize(loop.device)
                times[mode].append(time.perf_counter() - started)
    return {
        "off_ms": 1e3 * min(times[False]),
        "on_ms": 1e3 * min(times[True]),
    }


def _batch_draw_costs(config: TrainConfig, splits: DataSplits, repeats: int = 20) -> dict:
    """ms of one reference batch draw: the per-sample PIL work, and the rest (a new iterator,
    its shuffled permutation of all training indices, fetching and collating)."""
    loop = ReferenceLoop(config, splits)
    loader, dataset = loop.train_loader, loop.train_loader.dataset

    def best_of(action) -> float:
        samples = []
        for _ in range(repeats):
            started = time.perf_counter()
            action()
            samples.append(time.perf_counter() - started)
        return 1e3 * min(samples)

    whole = best_of(lambda: next(iter(loader)))
    per_batch = best_of(lambda: [dataset[i] for i in range(config.batch_size)])
    return {
        "draw_ms": whole,
        "pil_transform_ms_per_sample": per_batch / config.batch_size,
        "pil_transform_ms_per_batch": per_batch,
        "iterator_permutation_collate_ms": max(0.0, whole - per_batch),
    }


def _gc_cost_ms(repeats: int = 5) -> float:
    import gc

    samples = []
    for _ in range(repeats):
        started = time.perf_counter()
        gc.collect()
        samples.append(time.perf_counter() - started)
    return 1e3 * min(samples)


def _profile_model(
    args: argparse.Namespace, device: torch.device, model: str, splits: DataSplits, keys: dict
) -> dict:
    settings = _settings(args, device, model)
    every = args.eval_every
    settings["steps"] = max(every, min(settings["steps"], PROFILE_STEPS) // every * every)
    config = _config(args, device, model, settings, keys)
    warmup, steps = settings["warmup"], settings["steps"]
    print(
        f"\n== profile of {model}: {steps} steps after {warmup} warm-up, under cProfile. It "
        "slows Python-heavy code (PIL transforms, anomaly mode's stack capture) more than torch "
        "kernels, so shares are indicative; the direct measurements at the end are unprofiled.",
        flush=True,
    )

    loop = ReferenceLoop(config, splits)
    loop.train_steps(warmup)
    tests_before = loop.counters.test_passes
    profiler = cProfile.Profile()
    started = time.perf_counter()
    profiler.enable()
    loop.train_steps(steps)
    profiler.disable()
    reference_s = time.perf_counter() - started
    ref_stats = pstats.Stats(profiler)
    phases = []
    print(f"reference loop, {1e3 * reference_s / steps:.1f} ms/step under the profiler; by phase:")
    for label, filename, function in _REFERENCE_PHASES:
        seconds = _cumulative(ref_stats, filename, function)
        phases.append(
            {
                "phase": label.strip(),
                "ms_per_step": 1e3 * seconds / steps,
                "share": seconds / reference_s,
            }
        )
        print(f"  {label:<58} {1e3 * seconds / steps:9.2f} ms/step  {seconds / reference_s:6.1%}")
    print(f"  (test passes in the window: {loop.counters.test_passes - tests_before})")
    print("reference loop, top functions by own time:")
    print(_top_entries(ref_stats))

    engine_profiler = cProfile.Profile()
    rate, _ = benchlib.time_engine(
        config, splits, warmup=warmup, steps=steps, profiler=engine_profiler
    )
    engine_s = steps / rate
    eng_stats = pstats.Stats(engine_profiler)
    engine_phases = []
    print(f"engine, {1e3 * engine_s / steps:.1f} ms/step under the profiler; by phase:")
    for label, filename, function in _ENGINE_PHASES:
        seconds = _cumulative(eng_stats, filename, function)
        engine_phases.append(
            {"phase": label, "ms_per_step": 1e3 * seconds / steps, "share": seconds / engine_s}
        )
        print(f"  {label:<58} {1e3 * seconds / steps:9.2f} ms/step  {seconds / engine_s:6.1%}")
    print("engine, top functions by own time:")
    print(_top_entries(eng_stats))

    anomaly = _anomaly_cost(config, splits)
    draw = _batch_draw_costs(config, splits)
    gc_ms = _gc_cost_ms()
    print("direct measurements (best of several, no profiler):")
    print(
        f"  forward+backward+optimizer step: {anomaly['off_ms']:.1f} ms with anomaly mode off, "
        f"{anomaly['on_ms']:.1f} ms on (+{anomaly['on_ms'] - anomaly['off_ms']:.1f} ms)"
    )
    print(
        f"  one batch draw {draw['draw_ms']:.1f} ms: PIL image + transforms "
        f"{draw['pil_transform_ms_per_sample']:.3f} ms/sample x {config.batch_size} = "
        f"{draw['pil_transform_ms_per_batch']:.1f} ms; new iterator, shuffled permutation of "
        f"{splits.train_y.shape[0]} indices, fetch and collate "
        f"{draw['iterator_permutation_collate_ms']:.1f} ms"
    )
    print(f"  gc.collect(): {gc_ms:.1f} ms in this process")
    return {
        "model": model,
        **settings,
        "reference_ms_per_step_profiled": 1e3 * reference_s / steps,
        "engine_ms_per_step_profiled": 1e3 * engine_s / steps,
        "reference_phases": phases,
        "engine_phases": engine_phases,
        "anomaly_mode_ms": anomaly,
        "batch_draw": draw,
        "gc_collect_ms": gc_ms,
    }


def main(argv: list[str] | None = None) -> int:
    args = _parse_args(argv)
    device = benchlib.resolve_device(args.device)
    benchlib.apply_threads(args.threads, device)
    models = args.models or (["resnet18"] if device.type == "cuda" else ["cnn", "resnet18"])
    for model in models:
        _settings(args, device, model)  # validate every model's settings before any work
    # Anomaly mode warns each time it is switched on; the point is made once in the README.
    warnings.filterwarnings("ignore", message="Anomaly Detection has been enabled")
    sizes = _sizes(args, device)
    splits, data_keys = benchlib.load_splits(
        args.dataset, noise=args.noise, seed=args.seed, device=device, sizes=sizes
    )
    facts = benchlib.machine_facts(device)
    summary = splits.summary()
    print(f"machine: {benchlib.describe_machine(facts)}")
    print(
        f"data: {args.dataset}, {summary['num_train']} train / {summary['num_val']} val / "
        f"{summary['num_test']} test, {summary['in_channels']}x{summary['image_size']}x"
        f"{summary['image_size']}, augment {summary['augment']}, noise {args.noise}; "
        f"deterministic kernels {'on' if args.deterministic else 'off'}"
    )
    results = [_measure_model(args, device, model, splits, data_keys) for model in models]
    profiles = (
        [_profile_model(args, device, model, splits, data_keys) for model in models]
        if args.profile
        else []
    )

    print("\nmodel      batch  steps  reps  reference steps/s  engine steps/s   engine/reference")
    for row in results:
        print(
            f"{row['model']:<10} {row['batch_size']:>5}  {row['steps']:>5}  {row['repeats']:>4}  "
            f"{benchlib.fmt_mean_sd(row['reference_steps_per_s']):>17}  "
            f"{benchlib.fmt_mean_sd(row['engine_steps_per_s']):>14}   "
            f"{row['ratio_of_means']:.2f}x ± {benchlib.mean_sd(row['ratio_per_repeat'])[1]:.2f}"
        )
    if args.json:
        benchlib.write_json(
            args.json,
            {
                "benchmark": "engine_speed",
                "machine": facts,
                "data": {**summary, "requested": args.dataset, "sizes": sizes.__dict__},
                "deterministic": args.deterministic,
                "results": results,
                "profiles": profiles,
                "argv": sys.argv[1:] if argv is None else argv,
            },
        )
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
