"""The dynamics probe's stability: the same setting probed with different seeds.

Each seed changes the data split, the noise draw, the initialisation and the batch order, so the
spread is what a user would see between two probes of their dataset. Prints, per setting, the
figures of each seed and their spread (median, min–max, and the coefficient of variation of the
per-step reset probability the theory implies).

    .venv/bin/python benchmarks/recommend/probe_stability.py            # ~6 min on 2 cores
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parents[1]))

import torch  # noqa: E402

from reset_tune.config import TrainConfig  # noqa: E402
from reset_tune.recommend import probe_dynamics  # noqa: E402

SETTINGS = {
    "digits sym0.5 b16": dict(dataset="digits", noise="symmetric:0.5", batch_size=16, steps=1500),
    "digits sym0.2 b64": dict(dataset="digits", noise="symmetric:0.2", batch_size=64, steps=1500),
    "fashion-mnist sym0.6 b16 (1,500 images)": dict(
        dataset="fashion-mnist", noise="symmetric:0.6", batch_size=16, steps=1200,
        train_subset=1500,
    ),
}  # fmt: skip


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--fashion-seeds", type=int, default=3)
    parser.add_argument("--json", default=str(HERE.parent / "results" / "probe_stability.json"))
    args = parser.parse_args()
    torch.set_num_threads(1)
    report = {}
    for name, setting in SETTINGS.items():
        seeds = args.fashion_seeds if "fashion" in name else args.seeds
        rows = []
        for seed in range(seeds):
            config = TrainConfig(model="cnn", eval_every=50, device="cpu", seed=seed, **setting)
            result = probe_dynamics(config)
            f = result.figures
            row = {
                "seed": seed,
                "armed_step": result.armed_step,
                "verdict": result.verdict,
                "steps": result.steps_trained,
                "wall_s": round(result.wall_time_s, 1),
            }
            if f is not None:
                row.update(
                    peclet=f.peclet, peclet_interval=f.peclet_interval, drift=f.drift,
                    gradient_drift=f.gradient_drift, diffusion=f.diffusion, distance=f.distance,
                    reset_prob=f.reset_prob, reset_prob_interval=f.reset_prob_interval,
                )  # fmt: skip
            rows.append(row)
            print(f"{name} seed {seed}: {result.describe()}; per-step r* "
                  f"{row.get('reset_prob', float('nan')):.4g}", flush=True)  # fmt: skip
        probs = [r["reset_prob"] for r in rows if "reset_prob" in r]
        pes = [r["peclet"] for r in rows if "peclet" in r]
        summary = {
            "verdicts": sorted({r["verdict"] for r in rows}),
            "peclet_median": statistics.median(pes) if pes else None,
            "peclet_range": (min(pes), max(pes)) if pes else None,
            "reset_prob_median": statistics.median(probs) if probs else None,
            "reset_prob_range": (min(probs), max(probs)) if probs else None,
            "reset_prob_cv": statistics.stdev(probs) / statistics.mean(probs)
            if len(probs) > 1 else None,
        }  # fmt: skip
        print(f"{name}: {json.dumps(summary)}", flush=True)
        report[name] = {"rows": rows, "summary": summary}
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps(report, indent=2, default=str) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
