"""`reset-tune train`: one run (optionally with its r = 0 baseline), a summary, JSON and a plot."""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

from reset_tune import names
from reset_tune.atomic import write_json_atomic
from reset_tune.config import OPTIMIZERS, PRECISIONS, SCHEDULES, TrainConfig
from reset_tune.errors import ConfigError
from reset_tune.names import AUGMENT_SETTINGS
from reset_tune.output_dirs import check_output_dir
from reset_tune.redact import redact_text

# (option, config field, type, help). Defaults come from TrainConfig and are shown in --help.
_OPTIONS: tuple[tuple[str, str, Any, str], ...] = (
    (
        "--dataset",
        "dataset",
        str,
        "digits | mnist | fashion-mnist | cifar10 | cifar100 | cifar10n | cifar100n | imagefolder",
    ),
    ("--data-root", "data_root", str, "folder holding datasets in torchvision's on-disk layout"),
    (
        "--label-file",
        "label_file",
        str,
        "CIFAR-N human label file (CIFAR-10_human.pt / CIFAR-100_human.pt)",
    ),
    ("--image-size", "image_size", int, "imagefolder: resize images to this square size"),
    (
        "--noise",
        "noise",
        str,
        "KIND:RATE label noise: none, symmetric:R, symmetric-uniform:R, asymmetric:R, "
        "pairflip:R, matrix:PATH, human:SET (cifar10n: aggre|random1|random2|random3|worst)",
    ),
    ("--val-fraction", "val_fraction", float, "share of the training pool held out for validation"),
    (
        "--train-subset",
        "train_subset",
        int,
        "use only this many training samples (validation included)",
    ),
    ("--augment", "augment", str, f"augmentation: {' | '.join(AUGMENT_SETTINGS)}"),
    ("--model", "model", str, "mlp | cnn | vcnn | resnet18 | resnet34"),
    ("--loss", "loss", str, "ce | gce | sce | mae"),
    ("--gce-q", "gce_q", float, "GCE exponent q"),
    ("--sce-alpha", "sce_alpha", float, "SCE weight of cross-entropy"),
    ("--sce-beta", "sce_beta", float, "SCE weight of reverse cross-entropy"),
    ("--steps", "steps", int, "optimizer steps in total"),
    ("--eval-every", "eval_every", int, "steps between evaluations"),
    ("--batch-size", "batch_size", int, "minibatch size"),
    ("--lr", "lr", float, "initial learning rate"),
    ("--optimizer", "optimizer", str, " | ".join(OPTIMIZERS)),
    ("--momentum", "momentum", float, "SGD momentum"),
    ("--weight-decay", "weight_decay", float, "weight decay"),
    ("--schedule", "schedule", str, f"learning-rate schedule: {' | '.join(SCHEDULES)}"),
    ("--lr-step-every", "lr_step_every", int, "step schedule: steps between decays"),
    ("--lr-gamma", "lr_gamma", float, "step schedule: decay factor"),
    ("--precision", "precision", str, f"{' | '.join(PRECISIONS)} (bf16 = autocast on CUDA)"),
    (
        "--reset-prob",
        "reset_prob",
        float,
        "per-step reset probability r once armed (0 = no resetting)",
    ),
    (
        "--reset-layers",
        "reset_layers",
        str,
        "what a reset restores: all, head, a model group (e.g. layer4, fc_block) or a glob over "
        "parameter names; comma-separated",
    ),
    ("--patience", "patience", int, "steps without improvement before resetting arms"),
    ("--warmup", "warmup", int, "resetting never arms before this step"),
    ("--checkpoint-metric", "checkpoint_metric", str, "what picks θbest: val_loss | val_acc"),
    (
        "--lr-on-reset",
        "lr_on_reset",
        str,
        "keep (the schedule continues) | restore (the LR saved with θc comes back)",
    ),
    (
        "--reset-seed",
        "reset_seed",
        int,
        "seed of the reset decisions (default: derived from --seed)",
    ),
    ("--seed", "seed", int, "seed of data split, noise, initialisation and batch order"),
    ("--device", "device", str, "auto | cpu | cuda | cuda:N"),
    ("--eval-batch-size", "eval_batch_size", int, "batch size of evaluation passes"),
    (
        "--memorisation-samples",
        "memorisation_samples",
        int,
        "wrong-labelled training samples probed per evaluation (0 = all)",
    ),
)
# (positive flag, negative flag, field, help)
_SWITCHES: tuple[tuple[str, str, str, str], ...] = (
    (
        "--download",
        "--no-download",
        "download",
        "download datasets through torchvision when online",
    ),
    ("--clean-val", "--noisy-val", "clean_val", "use clean labels for the validation split"),
    ("--adaptive", "--no-adaptive", "adaptive", "after arming, each new θbest becomes θc"),
    (
        "--restore-optimizer",
        "--no-restore-optimizer",
        "restore_optimizer",
        "a reset also restores the layers' optimizer state (momentum)",
    ),
    ("--deterministic", "--no-deterministic", "deterministic", "deterministic kernels"),
    (
        "--cuda-graphs",
        "--no-cuda-graphs",
        "cuda_graphs",
        "capture the training step and evaluation in CUDA graphs where valid (CUDA, SGD)",
    ),
    (
        "--arm-on-memorisation",
        "--no-arm-on-memorisation",
        "arm_on_memorisation",
        "arm resetting only once memorisation has begun by the label-free signal (train − val "
        "accuracy on the noisy labels) as well as after --patience",
    ),
)


def register(commands: argparse._SubParsersAction) -> None:
    defaults = TrainConfig()
    parser = commands.add_parser(
        "train",
        help="train one classifier with stochastic resetting",
        description=(
            "Train one classifier on noisily-labelled data with stochastic resetting. Prints "
            "progress, then a summary; writes result.json and curves.png to --out."
        ),
    )
    parser.add_argument(
        "--config",
        metavar="FILE",
        help="YAML or JSON file of settings (options given here override it)",
    )
    for option, field, kind, text in _OPTIONS:
        parser.add_argument(
            option,
            dest=field,
            type=kind,
            default=None,
            help=f"{text} (default: {getattr(defaults, field)})",
        )
    for positive, negative, field, text in _SWITCHES:
        parser.add_argument(
            positive,
            dest=field,
            action="store_true",
            default=None,
            help=f"{text} (default: {getattr(defaults, field)})",
        )
        parser.add_argument(
            negative, dest=field, action="store_false", default=None, help=argparse.SUPPRESS
        )
    parser.add_argument(
        "--baseline", action="store_true", help="also run r = 0 with the same seed and report both"
    )
    parser.add_argument(
        "--out",
        metavar="DIR",
        help="where result.json and curves.png go (default: runs/train-TIMESTAMP)",
    )
    parser.add_argument(
        "--json",
        action="store_true",
        help="print the result JSON on stdout (progress goes to stderr)",
    )
    parser.add_argument("--quiet", action="store_true", help="no progress lines")
    parser.set_defaults(handler=run)


def _config_from(args: argparse.Namespace) -> TrainConfig:
    values: dict[str, Any] = {}
    if args.config:
        values.update(_read_config_file(Path(args.config)))
    for _, field, _, _ in _OPTIONS:
        if getattr(args, field) is not None:
            values[field] = getattr(args, field)
    for _, _, field, _ in _SWITCHES:
        if getattr(args, field) is not None:
            values[field] = getattr(args, field)
    return TrainConfig.from_dict(values, source=args.config or "options")


def _read_config_file(path: Path) -> dict[str, Any]:
    from reset_tune.yaml_files import read_yaml_file

    loaded = read_yaml_file(path, "--config file")
    if loaded is None:
        return {}  # an empty (or all-comments) file: no settings, as in a spec's sections
    if isinstance(loaded, dict) and isinstance(loaded.get("config"), dict):
        loaded = loaded["config"]  # a result.json: rerun its resolved config
    if not isinstance(loaded, dict):
        raise ConfigError(f"{path}: a --config file must hold a mapping of settings (key: value).")
    return loaded


def run(args: argparse.Namespace) -> int:
    # Every check that needs no torch comes first: a usage error answers before torch loads.
    config = _config_from(args)
    if args.baseline and config.reset_prob == 0:
        raise ConfigError(
            "--baseline compares against resetting, but --reset-prob is 0; give --reset-prob > 0."
        )
    out = Path(args.out or f"runs/train-{time.strftime('%Y%m%d-%H%M%S')}")
    check_output_dir(out, ("result.json", "curves.png"), option="--out")

    from reset_tune.engine import ProgressPrinter, TrainingRun
    from reset_tune.plots import write_curves

    arms = {"resetting" if config.reset_prob > 0 else "no resetting": config}
    if args.baseline:
        arms["baseline (r=0)"] = config.replace(reset_prob=0.0)

    # Build every run before training any: bad settings fail before minutes are spent.
    first = TrainingRun(config)
    runs = {
        label: first if cfg is config else TrainingRun(cfg, data=first.data)
        for label, cfg in arms.items()
    }
    results = {}
    for label, training_run in runs.items():
        callbacks = [] if args.quiet else [ProgressPrinter(label=label, every=_print_every(config))]
        results[label] = training_run.run(callbacks)

    payload: dict[str, Any]
    if len(results) == 1:
        payload = next(iter(results.values())).to_dict()
    else:
        resetting, baseline = results["resetting"], results["baseline (r=0)"]
        payload = {
            "resetting": resetting.to_dict(),
            "baseline": baseline.to_dict(),
            "test_acc_difference": resetting.test_acc - baseline.test_acc,
        }
    title = f"{config.dataset}, {first.data.noise_description}, {config.model}, seed {config.seed}"
    write_json_atomic(out / "result.json", payload)
    wrote = [out / "result.json"]
    try:
        write_curves(out / "curves.png", results, title=title)
        wrote.append(out / "curves.png")
    except Exception as error:  # noqa: BLE001 - a plot must never cost the result just saved
        print(
            f"warning: could not write {out / 'curves.png'} ({redact_text(str(error))}); the "
            f"result is saved in {out / 'result.json'}",
            file=sys.stderr,
        )

    if args.json:
        json.dump(payload, sys.stdout, indent=2, default=str)
        sys.stdout.write("\n")
        for line in _memorisation_lines(results):
            print(line, file=sys.stderr)
    else:
        _print_summary(results, wrote)
    for label, result in results.items():
        if result.config["reset_prob"] > 0 and result.armed_step is None:
            # docs/method.md §8: resetting only acts once memorisation starts.
            if result.config.get("arm_on_memorisation") and result.memorisation_step is None:
                why = "memorisation never began (label-free signal), and it arms only then"
            else:
                why = "validation kept improving until the last step"
            print(
                f"note: in '{label}' resetting never armed: {why}, so this run was plain SGD. "
                f"Train longer (--steps), use a smaller training set (--train-subset) or a "
                f"shorter --patience.",
                file=sys.stderr,
            )
    return 0


def _print_every(config: TrainConfig) -> int:
    evaluations = max(1, config.steps // config.eval_every)
    return max(1, evaluations // 20)  # about 20 progress lines per run


_NO_MEMORISATION_ADVICE = (
    "resetting has nothing to counter — train longer (--steps), use a smaller training set "
    "(--train-subset) or less weight decay (--weight-decay)"
)


def _memorisation_lines(results: dict) -> list[str]:
    """Per run, whether and when memorisation began by the label-free signal; the r = 0 run
    first, since it shows whether resetting can act at all (docs/method.md §8)."""
    lines = []
    ordered = sorted(results.items(), key=lambda item: item[1].config["reset_prob"] > 0)
    for label, r in ordered:
        steps = r.steps_completed
        plain = r.config["reset_prob"] == 0 or r.armed_step is None  # plain SGD throughout
        if r.memorisation_step is not None:
            text = f"memorisation began at step {r.memorisation_step} (label-free signal)"
            if r.config["reset_prob"] == 0 and len(results) > 1:
                text += "; resetting can act from there"
        elif plain:
            text = f"no memorisation within {steps} steps: {_NO_MEMORISATION_ADVICE}"
        else:
            text = (
                f"no memorisation signalled within {steps} steps, though resetting armed at step "
                f"{r.armed_step}: it armed on a plateau, not on memorisation "
                "(--arm-on-memorisation waits for it)"
            )
        lines.append(f"{label}: {text}")
    return lines


def _print_summary(results: dict, wrote: list[Path]) -> None:
    header = (
        f"{'run':<16} {'test acc (θbest)':>17} {'best step':>9} {'armed at':>9} {'resets':>7} "
        f"{'mem. from':>9} {'memorised':>9} {'time':>7}"
    )
    print(header)
    print("-" * len(header))
    for label, r in results.items():
        memorised = (
            r.history[-1].get(names.MEMORISATION, float("nan")) if r.history else float("nan")
        )
        armed = "-" if r.armed_step is None else str(r.armed_step)
        onset = "-" if r.memorisation_step is None else str(r.memorisation_step)
        print(
            f"{label:<16} {r.test_acc:>17.4f} {r.best_step:>9} {armed:>9} {r.num_resets:>7} "
            f"{onset:>9} {memorised:>9.2f} {r.wall_time_s:>6.1f}s"
        )
    print()
    for line in _memorisation_lines(results):
        print(line)
    print(
        "('mem. from': label-free, train − val accuracy on the noisy labels; 'memorised': the "
        "true share of wrong labels fitted at the end, known only for injected noise)"
    )
    if len(results) == 2:
        a, b = results.values()
        print(
            f"\nresetting − baseline: {100 * (a.test_acc - b.test_acc):+.2f} points "
            "of clean test accuracy"
        )
    print(f"\nwrote {' and '.join(str(path) for path in wrote)}")
