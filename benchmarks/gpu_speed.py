"""GPU speed of small trials: eager vs CUDA-graphed steps, packing, ResNet-18 vs the reference loop.

One run, side by side, on one GPU (benchmarks/README.md, "GPU speed"):

1. **Steps/s of one trial** for `cnn`, `vcnn` (batch 32 and 128) and `resnet18` (128, 256): the
   eager step vs the CUDA-graphed step and evaluation (`reset_tune.engine.graphs`), with
   deterministic kernels and without; `torch.compile(mode="reduce-overhead")` for `vcnn` batch 32.
   Each figure: the engine's own loop (`benchlib.time_engine`: a window from one evaluation to
   another, evaluations every `--eval-every` steps included), noisy labels (the memorisation
   probe runs at every evaluation, as in a search).
2. **The FLOP-bound limit** per model and batch: FLOPs of one training step (forward + backward,
   `torch.utils.flop_counter`) against the chip's dense TF32 / bf16 tensor-core peak, and the
   fraction of it the graphed step reaches.
3. **Packing small trials** (`vcnn`, batch 32, graphed): aggregate steps/s of 1, 2, 4, 8 and 16
   trials in one process (`TrainingGroup`, a CUDA stream each) and as that many processes.
4. **ResNet-18 against the reference loop** (`reference_loop.py`, batch 256, evaluation every 10
   steps, deterministic): the engine eager fp32, graphed fp32 and graphed bf16.

`--quick --device cpu` runs every section at toy sizes: a check of the script, not a figure.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import benchlib  # noqa: E402
import torch  # noqa: E402

from reset_tune.config import TrainConfig  # noqa: E402
from reset_tune.engine import TrainingGroup, TrainingRun  # noqa: E402
from reset_tune.models import build_model  # noqa: E402

# Dense tensor-core peaks of an H100/H200 SXM (the vendor's datasheet, without sparsity); fp32
# runs use TF32 (`engine.runtime.configure_kernels` allows it).
PEAK_TFLOPS = {"fp32": 494.7, "bf16": 989.4}
SINGLE = [
    ("cnn", 32),
    ("cnn", 128),
    ("vcnn", 32),
    ("vcnn", 128),
    ("resnet18", 128),
    ("resnet18", 256),
]
PACKING = [1, 2, 4, 8, 16]
PROCESS_LEVELS = (1, 4, 16)  # the same trials as separate processes, for comparison


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--quick", action="store_true", help="toy sizes: check the script")
    parser.add_argument("--eval-every", type=int, default=50, help="as the shipped specs (50)")
    parser.add_argument(
        "--sections",
        default="single,flops,packing,reference,compile",
        help="comma-separated subset",
    )
    parser.add_argument("--json", default="benchmarks/results/gpu_speed.json")
    parser.add_argument("--worker", help=argparse.SUPPRESS)  # one packed process's trial (JSON)
    return parser.parse_args(argv)


class Bench:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.device = benchlib.resolve_device(args.device)
        self.quick = args.quick
        self.eval_every = 10 if self.quick else args.eval_every
        sizes = (
            benchlib.SyntheticSizes(train=600, val=100, test=100)
            if self.quick
            else benchlib.SyntheticSizes(train=5000, val=1000, test=1000)
        )
        self.splits, self.keys = benchlib.load_splits(
            "synthetic-cifar", noise="symmetric:0.4", seed=0, device=self.device, sizes=sizes
        )

    def config(self, model: str, batch: int, steps: int, **extra) -> TrainConfig:
        values = dict(
            self.keys,
            model=model,
            batch_size=batch,
            steps=steps,
            eval_every=extra.pop("eval_every", self.eval_every),
            device=str(self.device),
            reset_prob=0.01,
            patience=0,  # armed from the first evaluation: the resetting path is timed too
        )
        values.update(extra)
        return TrainConfig(**values)

    def steps_for(self, model: str, graphed: bool) -> tuple[int, int]:
        """(warm-up, timed) steps: both captures happen inside the warm-up."""
        e = self.eval_every
        if self.quick:
            return 2 * e, 2 * e
        if model.startswith("resnet"):
            return 2 * e, 4 * e
        return 2 * e, (40 if graphed else 16) * e

    def time_one(self, config: TrainConfig, *, warmup: int, steps: int, compile_model=False):
        benchlib.synchronize(self.device)
        if compile_model:
            run = TrainingRun(config, data=self.splits)
            run.model = torch.compile(run.model, mode="reduce-overhead")
            timer = benchlib.WindowTimer(warmup, warmup + steps)
            run.run([timer])
            return steps / timer.seconds, run
        return benchlib.time_engine(config, self.splits, warmup=warmup, steps=steps)

    # -- 1 ------------------------------------------------------------------------------------
    def single(self) -> list[dict]:
        rows = []
        cases = SINGLE[:3] if self.quick else SINGLE
        for model, batch in cases:
            for deterministic in (True, False):
                for graphed in (False, True):
                    warmup, steps = self.steps_for(model, graphed)
                    config = self.config(
                        model,
                        batch,
                        warmup + steps,
                        cuda_graphs=graphed,
                        deterministic=deterministic,
                    )
                    rate, run = self.time_one(config, warmup=warmup, steps=steps)
                    rows.append(
                        {
                            "model": model,
                            "batch_size": batch,
                            "deterministic": deterministic,
                            "requested": "cuda_graph" if graphed else "eager",
                            **run.path.as_provenance(),
                            "steps_per_s": rate,
                            "timed_steps": steps,
                        }
                    )
                    print(
                        f"{model:>8} b{batch:<4} det={deterministic!s:<5} "
                        f"{run.path.train_step:>10}: {rate:9.1f} steps/s",
                        flush=True,
                    )
        return rows

    def compiled(self, model: str, batch: int) -> dict:
        warmup, steps = self.steps_for(model, True)
        config = self.config(model, batch, warmup + steps, cuda_graphs=False)
        row = {"model": model, "batch_size": batch, "deterministic": True}
        started = time.perf_counter()
        try:
            rate, _ = self.time_one(config, warmup=warmup, steps=steps, compile_model=True)
            row.update(requested="compile_reduce_overhead", steps_per_s=rate)
        except Exception as error:  # a failed compile is a finding, not a crash
            row.update(
                requested="compile_reduce_overhead", error=f"{type(error).__name__}: {error}"
            )
        row["wall_s_including_compile"] = time.perf_counter() - started
        print(f"compile {model} b{batch}: {row}", flush=True)
        return row

    # -- 2 ------------------------------------------------------------------------------------
    def flops(self, single_rows: list[dict]) -> list[dict]:
        from torch.utils.flop_counter import FlopCounterMode

        rows = []
        for model_name, batch in SINGLE:
            model = build_model(
                model_name,
                in_channels=self.splits.in_channels,
                num_classes=self.splits.num_classes,
                image_size=self.splits.image_size,
            )
            x = torch.randn(
                batch, self.splits.in_channels, self.splits.image_size, self.splits.image_size
            )
            counter = FlopCounterMode(display=False)
            with counter:
                model(x).sum().backward()
            step_flops = counter.get_total_flops()
            limit = PEAK_TFLOPS["fp32"] * 1e12 / step_flops
            best = max(
                (
                    r["steps_per_s"]
                    for r in single_rows
                    if r["model"] == model_name
                    and r["batch_size"] == batch
                    and r.get("train_step") == "cuda_graph"
                    and "steps_per_s" in r
                ),
                default=None,
            )
            rows.append(
                {
                    "model": model_name,
                    "batch_size": batch,
                    "train_step_gflop": step_flops / 1e9,
                    "flop_bound_steps_per_s_tf32": limit,
                    "best_graphed_steps_per_s": best,
                    "fraction_of_flop_bound": None if best is None else best / limit,
                }
            )
            print(f"flops {model_name} b{batch}: {rows[-1]}", flush=True)
        return rows

    # -- 3 ------------------------------------------------------------------------------------
    def packing_configs(self, k: int) -> list[TrainConfig]:
        steps = 4 * self.eval_every if self.quick else 60 * self.eval_every
        model = "mlp" if self.quick else "vcnn"
        return [
            self.config(model, 32, steps, lr=0.02 + 0.01 * i, reset_prob=0.005 * (i % 4))
            for i in range(k)
        ]

    def packing(self) -> list[dict]:
        rows = []
        levels = [1, 2, 4] if self.quick else PACKING
        for k in levels:
            configs = self.packing_configs(k)
            runs = [TrainingRun(c, data=self.splits) for c in configs]
            benchlib.synchronize(self.device)
            started = time.perf_counter()
            results = TrainingGroup(runs).run()
            wall = time.perf_counter() - started
            steps = sum(r.steps_completed for r in results)
            rows.append(
                {
                    "trials": k,
                    "how": "one process (TrainingGroup)",
                    "aggregate_steps_per_s": steps / wall,
                    "wall_s": wall,
                    "train_step": results[0].provenance["train_step"],
                }
            )
            print(f"group x{k}: {steps / wall:9.1f} steps/s aggregate", flush=True)
            if k in PROCESS_LEVELS or self.quick:
                rows.append(self._processes(k))
        return rows

    def _processes(self, k: int) -> dict:
        command = [sys.executable, __file__, "--device", str(self.device), "--worker", ""]
        if self.quick:
            command.append("--quick")
        env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
        procs = []
        for i in range(k):
            command[command.index("--worker") + 1] = f"{k}:{i}"
            procs.append(subprocess.Popen(command, stdout=subprocess.PIPE, text=True, env=env))
        outs = [json.loads(p.communicate()[0].strip().splitlines()[-1]) for p in procs]
        first = min(o["loop_started"] for o in outs)
        last = max(o["loop_ended"] for o in outs)
        steps = sum(o["steps"] for o in outs)
        row = {
            "trials": k,
            "how": "separate processes",
            "aggregate_steps_per_s": steps / (last - first),
            "sum_of_own_rates": sum(o["steps_per_s"] for o in outs),
            "wall_s_loops": last - first,
            "train_step": outs[0]["train_step"],
        }
        print(f"processes x{k}: {row['aggregate_steps_per_s']:9.1f} steps/s aggregate", flush=True)
        return row

    def worker(self, spec: str) -> None:
        k, i = (int(part) for part in spec.split(":"))
        config = self.packing_configs(k)[i]
        run = TrainingRun(config, data=self.splits)
        benchlib.synchronize(self.device)
        started = time.time()
        result = run.run()
        benchlib.synchronize(self.device)
        ended = time.time()
        print(
            json.dumps(
                {
                    "steps": result.steps_completed,
                    "steps_per_s": result.steps_per_s,
                    "loop_started": started,
                    "loop_ended": ended,
                    "train_step": result.provenance["train_step"],
                }
            )
        )

    # -- 4 ------------------------------------------------------------------------------------
    def reference(self) -> dict:
        from engine_speed import time_reference

        model, batch = ("mlp", 32) if self.quick else ("resnet18", 256)
        warmup, steps, repeats = (10, 10, 1) if self.quick else (20, 60, 2)
        base = self.config(model, batch, warmup + steps, eval_every=10, reset_prob=0.0)
        reference = []
        for _ in range(repeats):
            rate, _ = time_reference(base, self.splits, warmup=warmup, steps=steps)
            reference.append(rate)
            print(f"reference {model} b{batch}: {rate:.2f} steps/s", flush=True)
        ref_mean, ref_sd = benchlib.mean_sd(reference)
        variants = {
            "eager fp32": dict(cuda_graphs=False),
            "graphed fp32": dict(cuda_graphs=True),
        }
        if self.device.type == "cuda":
            variants["graphed bf16"] = dict(cuda_graphs=True, precision="bf16")
        out = {"model": model, "batch_size": batch, "eval_every": 10, "reference": reference}
        for name, extra in variants.items():
            config = TrainConfig(**{**base.to_dict(), **extra})
            rates = []
            for _ in range(repeats):
                rate, run = benchlib.time_engine(config, self.splits, warmup=warmup, steps=steps)
                rates.append(rate)
            mean, sd = benchlib.mean_sd(rates)
            out[name] = {
                "steps_per_s": rates,
                "ratio_to_reference": mean / ref_mean,
                **run.path.as_provenance(),
            }
            print(
                f"engine {name}: {mean:.1f} ± {sd:.1f} steps/s, {mean / ref_mean:.1f}x", flush=True
            )
        out["reference_mean_sd"] = [ref_mean, ref_sd]
        return out


def main(argv: list[str] | None = None) -> int:
    args = _parse_args(argv)
    torch.set_num_threads(1 if args.device == "cpu" else torch.get_num_threads())
    bench = Bench(args)
    if args.worker:
        bench.worker(args.worker)
        return 0
    sections = set(args.sections.split(","))
    payload: dict = {"machine": benchlib.machine_facts(bench.device), "quick": args.quick}
    payload["eval_every"] = bench.eval_every
    began = time.perf_counter()

    def save() -> None:  # after every section: a run cut short keeps what it measured
        payload["wall_s"] = time.perf_counter() - began
        benchlib.write_json(args.json, payload)

    if "single" in sections:
        payload["single"] = bench.single()
        save()
    if "flops" in sections:
        payload["flops"] = bench.flops(payload.get("single", []))
        save()
    if "packing" in sections:
        payload["packing"] = bench.packing()
        save()
    if "reference" in sections:
        payload["reference"] = bench.reference()
        save()
    if "compile" in sections and bench.device.type == "cuda":
        payload["compile"] = bench.compiled("vcnn", 32)
        save()
    print(f"wrote {args.json} ({payload['wall_s']:.0f} s)", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
