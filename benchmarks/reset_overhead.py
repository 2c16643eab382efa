"""What stochastic resetting costs the engine: steps/s at r > 0 vs r = 0, and one restore in ms.

Part 1, loop overhead. The engine (``reset_tune.engine.TrainingRun``) trains the same model on
the same data twice per repeat: with ``reset_prob`` r (default 0.01) and with r = 0. Both arms use
``patience=0``, so resetting arms at the first evaluation in both; the r = 0 arm therefore runs
the armed-but-never-resetting path (the resetter's per-step check and the θc updates on every
new best), and the two arms differ only in the resets themselves. The two runs of a pair run
**in lockstep**: two threads that take turns, one evaluation interval (``--eval-every`` steps plus
the evaluation) each, so that exactly one computes at any moment and both see the same machine
load. Each run's clock runs only on its own turns after the warm-up (which holds the arming
evaluation), with ``time.perf_counter`` and ``torch.cuda.synchronize`` at every turn's ends;
steps/s = timed steps / timed seconds. The arm that takes the first turn alternates from pair to
pair. The slowdown is ``1 - steps/s(r) / steps/s(0)`` per pair, reported as mean ± sd in %; the
goal is at most 2 %. The slowdown expected from the restore cost alone (r x one reset's ms /
one step's ms) is printed next to it: a measured figure can only be told apart from zero when it
exceeds the spread.

Part 2, one restore. All weights and buffers of a model (default ResNet-18, CIFAR stem, 10
classes) and their SGD momentum, restored in place, in ms (median of ``--restore-repeats``):

* ``restore_`` (``reset_tune.resetting.restore_``, fused ``torch._foreach_copy_``): weights and
  buffers, then weights, buffers and momentum;
* a ``StochasticResetter`` reset (``reset_prob=1``, so every ``step()`` restores θc), which is
  what the engine runs;
* ``load_state_dict``: ``model.load_state_dict``, and the reference style
  ``model.load_state_dict`` + ``optimizer.load_state_dict(copy.deepcopy(...))``;
* the raw copy floor: one ``copy_`` of a contiguous buffer holding the same number of bytes.

Run from the repository root::

    .venv/bin/python benchmarks/reset_overhead.py                 # CPU, cnn on digits
    .venv/bin/python benchmarks/reset_overhead.py --device cuda --model resnet18 \\
        --dataset synthetic-cifar --batch-size 256
"""

from __future__ import annotations

import argparse
import copy
import statistics
import sys
import threading
import time

import benchlib
import torch

from reset_tune.config import TrainConfig
from reset_tune.data import DataSplits
from reset_tune.engine import Callback, TrainingRun
from reset_tune.models import build_model
from reset_tune.resetting import StochasticResetter, restore_, take_snapshot

_SIZES = benchlib.SyntheticSizes(train=5000, val=500, test=500)


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="reset_overhead.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cpu", help="cpu (default), cuda, cuda:N or auto")
    parser.add_argument("--model", default="cnn", help="model of the loop runs (default cnn)")
    parser.add_argument(
        "--dataset",
        default="digits",
        choices=benchlib.DATASETS,
        help="data of the loop runs (default digits)",
    )
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--reset-prob", type=float, default=0.01, help="r of the resetting arm")
    parser.add_argument("--steps", type=int, default=1000, help="timed steps per run")
    parser.add_argument("--warmup", type=int, default=50, help="untimed steps (>= eval_every)")
    parser.add_argument(
        "--eval-every", type=int, default=10, help="steps between evaluations = one turn"
    )
    parser.add_argument("--repeats", type=int, default=6, help="pairs of runs (r, 0)")
    parser.add_argument(
        "--noise",
        default="none",
        help="label noise (default none: no memorisation probe at evaluations, so the "
        "evaluations dilute the per-step cost of resetting as little as possible)",
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--restore-model", default="resnet18", help="model whose restore is timed (resnet18)"
    )
    parser.add_argument("--restore-repeats", type=int, default=30)
    parser.add_argument("--skip-loop", action="store_true", help="only time one restore")
    benchlib.add_threads_option(parser)
    parser.add_argument("--json", metavar="OUT", help="write all figures to this JSON file")
    args = parser.parse_args(argv)
    if not 0.0 < args.reset_prob <= 1.0:
        parser.error(f"--reset-prob must be in (0, 1], got {args.reset_prob}")
    if args.repeats < 1 or args.restore_repeats < 1 or args.batch_size < 1:
        parser.error("--repeats, --restore-repeats and --batch-size must be at least 1")
    if args.warmup < args.eval_every:
        parser.error(f"--warmup ({args.warmup}) must be at least --eval-every ({args.eval_every})")
    benchlib.check_window(warmup=args.warmup, steps=args.steps, eval_every=args.eval_every)
    return args


# ----------------------------------------------------------------------------- part 1: loop


class _Turns:
    """Lets two runs take turns on the machine: exactly one of them computes at any moment."""

    def __init__(self) -> None:
        self._events = (threading.Event(), threading.Event())
        self._done = [False, False]
        self._lock = threading.Lock()
        self.failed = False

    def wait_for_turn(self, index: int) -> None:
        while not self._events[index].wait(timeout=0.5):
            if self.failed:
                raise RuntimeError("the other run failed")
            with self._lock:
                if self._done[1 - index]:
                    break
        self._events[index].clear()

    def hand_over(self, index: int) -> None:
        with self._lock:
            if self._done[1 - index]:
                return  # the other run has finished: keep going alone
        self._events[1 - index].set()
        self.wait_for_turn(index)

    def finish(self, index: int) -> None:
        with self._lock:
            self._done[index] = True
        self._events[1 - index].set()

    def fail(self) -> None:
        self.failed = True
        for event in self._events:
            event.set()


class _LockstepTimer(Callback):
    """Hands the turn to the other run after every evaluation; its clock runs only on its turns.

    A turn is ``eval_every`` training steps plus the evaluation that ends them. Turns after the
    evaluation at `warmup` and up to the one at `end` are timed; the rest of the run (warm-up,
    the end-of-run test passes) is untimed and, like everything else, never overlaps the other
    run's work.
    """

    def __init__(self, index: int, turns: _Turns, *, warmup: int, end: int) -> None:
        self.index, self.turns, self.warmup, self.end = index, turns, warmup, end
        self.seconds = 0.0
        self.turn_seconds: list[float] = []
        self._resumed: float | None = None

    def on_train_start(self, run: TrainingRun) -> None:
        if self.index == 1:
            self.turns.wait_for_turn(1)

    def on_evaluation(self, run: TrainingRun, metrics: dict[str, float]) -> None:
        if self._resumed is not None:
            benchlib.synchronize(run.device)
            self.turn_seconds.append(time.perf_counter() - self._resumed)
            self.seconds += self.turn_seconds[-1]
            self._resumed = None
        if run.step >= self.end:
            return  # keep the turn through the end-of-run passes; `on_train_end` hands it over
        self.turns.hand_over(self.index)
        if run.step >= self.warmup:
            benchlib.synchronize(run.device)
            self._resumed = time.perf_counter()

    def on_train_end(self, run: TrainingRun, result) -> None:
        self.turns.finish(self.index)


def _time_in_lockstep(
    configs: list[TrainConfig], splits: DataSplits, *, warmup: int, steps: int
) -> list[tuple[float, TrainingRun]]:
    """Steps/s of two engine runs that alternate on the machine, one evaluation interval each.

    Interleaving at this granularity exposes both runs to the same machine load (other jobs on
    a shared machine come and go on a scale of seconds), so their ratio is far less noisy than
    that of two runs one after the other.
    """
    turns = _Turns()
    runs = [TrainingRun(config, data=splits) for config in configs]
    timers = [_LockstepTimer(i, turns, warmup=warmup, end=warmup + steps) for i in range(len(runs))]
    errors: list[BaseException | None] = [None, None]

    def train(index: int) -> None:
        try:
            runs[index].run([timers[index]])
        except BaseException as exc:  # reported by the main thread below
            errors[index] = exc
            turns.fail()

    threads = [threading.Thread(target=train, args=(i,), daemon=True) for i in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for error in errors:
        if error is not None:
            raise error
    return [(steps / timer.seconds, run, timer) for timer, run in zip(timers, runs, strict=True)]


def _loop_overhead(args: argparse.Namespace, device: torch.device) -> dict:
    splits, data_keys = benchlib.load_splits(
        args.dataset, noise=args.noise, seed=args.seed, device=device, sizes=_SIZES
    )
    base = TrainConfig(
        **data_keys,
        model=args.model,
        batch_size=args.batch_size,
        steps=args.warmup + args.steps,
        eval_every=args.eval_every,
        reset_prob=0.0,
        patience=0,  # armed at the first evaluation, in both arms
        warmup=0,
        device=str(device),
    )
    arms = {"reset": base.replace(reset_prob=args.reset_prob), "no_reset": base}
    rates: dict[str, list[float]] = {"reset": [], "no_reset": []}
    resets_in_window: list[int] = []
    print(
        f"== loop overhead: {args.model} on {args.dataset}, batch {args.batch_size}, "
        f"{args.steps} timed steps after {args.warmup}, eval every {args.eval_every}, "
        f"r = {args.reset_prob} vs 0, {args.repeats} interleaved pairs",
        flush=True,
    )
    for repeat in range(args.repeats):
        order = ("reset", "no_reset") if repeat % 2 == 0 else ("no_reset", "reset")
        pair = _time_in_lockstep(
            [arms[arm] for arm in order], splits, warmup=args.warmup, steps=args.steps
        )
        for arm, (rate, run, _) in zip(order, pair, strict=True):
            if run.resetter.armed_step is None or run.resetter.armed_step > args.warmup:
                raise RuntimeError(f"the {arm} arm did not arm during warm-up")
            rates[arm].append(rate)
            resets = sum(1 for s in run.resetter.reset_steps if s > args.warmup)
            if arm == "reset":
                resets_in_window.append(resets)
            print(f"  pair {repeat + 1} {arm:<8} {rate:9.2f} steps/s  {resets} resets", flush=True)
    slowdowns = [
        100.0 * (1.0 - r / n) for r, n in zip(rates["reset"], rates["no_reset"], strict=True)
    ]
    mean, sd = benchlib.mean_sd(slowdowns)
    standard_error = sd / len(slowdowns) ** 0.5
    print(
        f"  r = {args.reset_prob}: {benchlib.fmt_mean_sd(rates['reset'])} steps/s; r = 0: "
        f"{benchlib.fmt_mean_sd(rates['no_reset'])} steps/s\n"
        f"  slowdown {mean:+.2f} ± {sd:.2f} % (mean ± sd of {len(slowdowns)} pairs; standard "
        f"error {standard_error:.2f} %); goal <= 2 %",
        flush=True,
    )
    restore_ms = _time_resetter_reset(args.model, splits, device, repeats=args.restore_repeats)
    step_ms = 1e3 / statistics.fmean(rates["no_reset"])
    expected = 100.0 * args.reset_prob * restore_ms / step_ms
    print(
        f"  expected from restore cost: r x {restore_ms:.3f} ms / {step_ms:.2f} ms per step "
        f"= {expected:.3f} %",
        flush=True,
    )
    return {
        "model": args.model,
        "dataset": args.dataset,
        "batch_size": args.batch_size,
        "steps": args.steps,
        "warmup": args.warmup,
        "eval_every": args.eval_every,
        "reset_prob": args.reset_prob,
        "repeats": args.repeats,
        "steps_per_s_reset": rates["reset"],
        "steps_per_s_no_reset": rates["no_reset"],
        "resets_in_window": resets_in_window,
        "slowdown_percent_per_pair": slowdowns,
        "slowdown_percent_mean": mean,
        "slowdown_percent_sd": sd,
        "slowdown_percent_standard_error": standard_error,
        "noise": args.noise,
        "restore_ms_of_this_model": restore_ms,
        "expected_slowdown_percent": expected,
    }


# ----------------------------------------------------------------------------- part 2: restore


def _model_and_optimizer(
    name: str, *, in_channels: int, image_size: int, device: torch.device
) -> tuple[torch.nn.Module, torch.optim.Optimizer]:
    """A model with one SGD-with-momentum step taken, so every parameter has a momentum buffer."""
    torch.manual_seed(0)
    model = build_model(name, in_channels=in_channels, num_classes=10, image_size=image_size)
    model = model.to(device).train()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, weight_decay=5e-4)
    images = torch.randn(4, in_channels, image_size, image_size, device=device)
    labels = torch.randint(0, 10, (4,), device=device)
    torch.nn.functional.cross_entropy(model(images), labels).backward()
    optimizer.step()
    return model, optimizer


def _median_ms(action, device: torch.device, repeats: int, warmup: int = 3) -> float:
    for _ in range(warmup):
        action()
    samples = []
    for _ in range(repeats):
        benchlib.synchronize(device)
        started = time.perf_counter()
        action()
        benchlib.synchronize(device)
        samples.append(time.perf_counter() - started)
    return 1e3 * statistics.median(samples)


def _armed_resetter(model: torch.nn.Module, optimizer: torch.optim.Optimizer) -> StochasticResetter:
    """A resetter with r = 1 that is armed, so each `step()` restores everything from θc."""
    resetter = StochasticResetter(model, optimizer, reset_prob=1.0, patience=0)
    resetter.observe(val_loss=1.0, val_acc=0.5)
    if not resetter.armed:
        raise RuntimeError("the resetter did not arm with patience 0")
    return resetter


def _time_resetter_reset(
    name: str, splits: DataSplits, device: torch.device, *, repeats: int
) -> float:
    model, optimizer = _model_and_optimizer(
        name, in_channels=splits.in_channels, image_size=splits.image_size, device=device
    )
    resetter = _armed_resetter(model, optimizer)
    return _median_ms(resetter.step, device, repeats)


def _restore_costs(args: argparse.Namespace, device: torch.device) -> dict:
    name = args.restore_model
    model, optimizer = _model_and_optimizer(name, in_channels=3, image_size=32, device=device)
    params = dict(model.named_parameters())
    buffers = dict(model.named_buffers())
    weight_names = list(params) + list(buffers)
    snapshot = take_snapshot(model, optimizer, weight_names, optimizer_names=list(params), step=0)
    weights_only = take_snapshot(model, None, weight_names, step=0)
    saved_model = copy.deepcopy(model.state_dict())
    saved_optimizer = copy.deepcopy(optimizer.state_dict())

    def nbytes(tensors) -> int:
        return sum(t.numel() * t.element_size() for t in tensors)

    momentum = [optimizer.state[p]["momentum_buffer"] for p in params.values()]
    weight_bytes = nbytes(list(params.values()) + list(buffers.values()))
    all_bytes = weight_bytes + nbytes(momentum)
    # float32, like the weights, so the floor uses the same copy kernel; sizes in elements.
    weight_elems, all_elems = weight_bytes // 4, all_bytes // 4
    floor_src = torch.zeros(all_elems, dtype=torch.float32, device=device)
    floor_dst = torch.zeros_like(floor_src)
    resetter = _armed_resetter(model, optimizer)
    repeats = args.restore_repeats

    def reference_reset() -> None:
        model.load_state_dict(saved_model)
        optimizer.load_state_dict(copy.deepcopy(saved_optimizer))

    rows = [
        (
            "weights+buffers",
            "restore_ (torch._foreach_copy_)",
            lambda: restore_(model, None, weights_only),
        ),
        ("weights+buffers", "model.load_state_dict", lambda: model.load_state_dict(saved_model)),
        (
            "weights+buffers",
            "raw copy floor (one contiguous copy_)",
            lambda: floor_dst[:weight_elems].copy_(floor_src[:weight_elems]),
        ),
        (
            "+momentum",
            "restore_ with optimizer state",
            lambda: restore_(model, optimizer, snapshot, optimizer_names=list(params)),
        ),
        ("+momentum", "StochasticResetter reset (step() at r=1)", resetter.step),
        ("+momentum", "load_state_dict + optimizer.load_state_dict(deepcopy)", reference_reset),
        ("+momentum", "raw copy floor (one contiguous copy_)", lambda: floor_dst.copy_(floor_src)),
    ]
    print(
        f"\n== one restore of all {name} tensors on {device}: {weight_bytes / 1e6:.1f} MB of "
        f"weights+buffers, {all_bytes / 1e6:.1f} MB with momentum; median of {repeats}",
        flush=True,
    )
    results = []
    for what, how, action in rows:
        ms = _median_ms(action, device, repeats)
        results.append({"restores": what, "method": how, "ms": ms})
        print(f"  {what:<16} {how:<56} {ms:9.3f} ms", flush=True)
    return {
        "model": name,
        "weight_bytes": weight_bytes,
        "bytes_with_momentum": all_bytes,
        "repeats": repeats,
        "rows": results,
    }


def main(argv: list[str] | None = None) -> int:
    args = _parse_args(argv)
    device = benchlib.resolve_device(args.device)
    benchlib.apply_threads(args.threads, device)
    facts = benchlib.machine_facts(device)
    print(f"machine: {benchlib.describe_machine(facts)}", flush=True)
    loop = None if args.skip_loop else _loop_overhead(args, device)
    restore = _restore_costs(args, device)
    if args.json:
        benchlib.write_json(
            args.json,
            {
                "benchmark": "reset_overhead",
                "machine": facts,
                "loop": loop,
                "restore": restore,
                "argv": sys.argv[1:] if argv is None else argv,
            },
        )
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
