"""What a short `train` and a short `search` cost end to end, before and after, side by side.

Both are fresh `python -m reset_tune.cli.main` processes, alternating between the code of
`--before` (a commit, checked out into a temporary git worktree) and the working tree,
`--repeats` times each; the median and range of wall-clock seconds are printed, and the ratio.
Short runs are where the fixed costs show: what every trial worker and every search driver
imports, reads and does at exit, around a few seconds of training.

* `train`: digits, `mlp`, 40 steps, evaluation every 20, into a fresh `--out`.
* `search`: 3 trials of 200 steps (digits, `mlp`, 2 at a time, 1 CPU each) on a Ray the driver
  starts for itself (so the trial workers run the same tree as the driver), into one MLflow
  server started here for all runs; each search has its own state directory.

    python benchmarks/command_latency.py                   # before = f3adde5, n = 3
    python benchmarks/command_latency.py --repeats 5 --skip-search

Measured on the 2-core development machine (x86_64, Python 3.11, CPU only): see
benchmarks/README.md, "Command latency".
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import yaml
from usage_error_speed import (  # benchmarks/ is this script's folder
    before_worktree,
    print_before_after,
    time_command,
)

REPO = Path(__file__).resolve().parents[1]

SEARCH_SPEC = {
    "name": "latency",
    "train": {"dataset": "digits", "noise": "symmetric:0.4", "model": "mlp", "steps": 200,
              "eval_every": 50, "device": "cpu"},
    "objective": "val_acc", "trials": 3, "concurrency": 2, "seeds": [0],
    "resources": {"cpus": 1, "gpus": 0},
    "sampler": {"type": "tpe", "seed": 0, "startup_trials": 2},
    "params": {"reset_prob": {"type": "loguniform", "low": 0.005, "high": 0.05},
               "lr": {"type": "categorical", "choices": [0.05, 0.1]}},
}  # fmt: skip


def commands(scratch: Path, run: int, label: str, spec: Path, mlflow_uri: str | None):
    here = scratch / f"{label}-{run}"
    listed = {
        "train (40 steps)": [
            "train", "--dataset", "digits", "--model", "mlp", "--steps", "40",
            "--eval-every", "20", "--device", "cpu", "--out", str(here / "train"),
        ],
    }  # fmt: skip
    if mlflow_uri is not None:
        listed["search (3 trials x 200 steps)"] = [
            "search", str(spec), "--mlflow-uri", mlflow_uri,
            "--state-dir", str(here / "state"), "--json",
        ]  # fmt: skip
    return listed


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--before", default="f3adde5", help="commit of the 'before' code")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--skip-search", action="store_true", help="time `train` only")
    args = parser.parse_args()

    from reset_tune.tracking.server import start_local_server

    with tempfile.TemporaryDirectory(prefix="rt-latency-") as tmp:
        scratch = Path(tmp)
        spec = scratch / "latency.yaml"
        spec.write_text(yaml.safe_dump(SEARCH_SPEC))
        server = None if args.skip_search else start_local_server(scratch / "mlflow")
        uri = None if server is None else server.uri
        results: dict[tuple[str, str], list[float]] = {}
        last: dict[tuple[str, str], str] = {}
        try:
            with before_worktree(args.before, scratch) as before:
                trees = {"before": before, "after": REPO}
                for run in range(args.repeats):
                    for label, tree in trees.items():
                        for name, argv in commands(scratch, run, label, spec, uri).items():
                            seconds, code, line = time_command(tree, argv, str(scratch))
                            results.setdefault((name, label), []).append(seconds)
                            last[(name, label)] = f"exit {code}: {line[:70]}"
        finally:
            if server is not None:
                server.stop()

    print_before_after(results, last, commands(Path(), 0, "", Path(), uri).keys(), args.repeats)
    return 0


if __name__ == "__main__":
    sys.exit(main())
