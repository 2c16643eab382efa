"""Leave-one-setting-out: how good are recommendations, against full searches of the same setting?

For each stored search (one per dataset/noise/batch setting, `settings.py`), recommend for its
setting from the *other* searches only, train the recommended configuration, and compare its
clean test accuracy with that setting's search: the best trial (by the search's objective) and
its best r = 0 trial. The recommended configuration uses the lr of the held-out search's best
r = 0 trial (a user who has a tuned baseline recipe and asks for reset settings), so the r = 0
comparison is paired: same lr, batch, seed and data; on a CPU that run is bit-identical to the
search's own r = 0 trial, whose test accuracy is used.

Two variants: `setting` leaves out the held-out search only; `dataset` leaves out every search
of the same dataset (the recommendation must transfer across datasets). With `--lr default` the
user has no tuned recipe: the recommended configuration trains at `TrainConfig`'s default lr, is
probed afresh at that lr, and is compared with an r = 0 run at that same lr (trained here) as
well as with the search.

    # once: the searches (8 settings, ~25 min on 2 cores), into a state dir with its own stack
    RESET_TUNE_STATE_DIR=benchmarks/results/lodo/state .venv/bin/python \
        benchmarks/recommend/lodo.py --run-searches
    # --extra adds 4 digits settings near the others (~8 min more), so that history decides
    # the evaluation (descriptions are cached on the searches' MLflow runs after the first time)
    RESET_TUNE_STATE_DIR=benchmarks/results/lodo/state .venv/bin/python benchmarks/recommend/lodo.py
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parents[1]))
sys.path.insert(0, str(HERE))

import torch  # noqa: E402
from settings import EXTRA_SETTINGS, SETTINGS, write_specs  # noqa: E402

from reset_tune.config import TrainConfig  # noqa: E402
from reset_tune.engine import prepare_data, train  # noqa: E402
from reset_tune.recommend import History, read_history, recommend  # noqa: E402
from reset_tune.recommend.history import PastSearch  # noqa: E402
from reset_tune.state import mlflow_dir, state_dir  # noqa: E402
from reset_tune.tracking import find_local_server  # noqa: E402

RESULTS = HERE.parent / "results" / "lodo"


def _key(config: dict) -> tuple:
    return (config["dataset"], config["noise"], int(config["batch_size"]))


def run_searches(settings: tuple, trials: int) -> None:
    """Run each setting's search, except those that already finished (their JSON exists)."""
    specs = write_specs(RESULTS / "specs", settings, trials=trials)
    cli = [sys.executable, "-m", "reset_tune.cli.main"]
    subprocess.run([*cli, "up"], check=True)
    for name, path in specs.items():
        done_before = RESULTS / f"search-{name}.json"
        if done_before.exists() and done_before.read_text().strip():
            print(f"{name}: already searched ({done_before})", flush=True)
            continue
        started = time.perf_counter()
        with open(RESULTS / f"search-{name}.log", "w") as log:
            done = subprocess.run([*cli, "search", str(path), "--json"], stdout=subprocess.PIPE,
                                  stderr=log, text=True)  # fmt: skip
        (RESULTS / f"search-{name}.json").write_text(done.stdout)
        print(f"{name}: exit {done.returncode}, {time.perf_counter() - started:.0f} s", flush=True)


def evaluate(uri: str, variants: list[str], lr: str = "r0", settings: tuple = SETTINGS) -> dict:
    torch.set_num_threads(1)
    wanted = {(s.dataset, s.noise, s.batch_size): s for s in settings}
    print(f"reading the searches from {uri} (describing each once) ...", flush=True)
    full = read_history(uri, say=lambda line: print(line, flush=True))
    by_setting: dict[tuple, PastSearch] = {}
    for search in full.searches:
        key = _key(search.best_baseline.config)
        if key in wanted:
            by_setting[key] = search  # the latest search of a setting wins
    rows = []
    for key, held in sorted(by_setting.items()):
        for variant in variants:
            if variant == "setting":
                others = [s for k, s in by_setting.items() if k != key]
            else:
                others = [s for k, s in by_setting.items() if k[0] != key[0]]
            past = History(searches=others, source=uri)
            base = TrainConfig.from_dict(held.best_baseline.config)
            paired_r0 = held.best_baseline.test_acc
            started = time.perf_counter()
            if lr == "r0":
                # The held-out search's description is a profile and probe of exactly this
                # configuration (deterministic on a CPU), so it stands in for recomputing it;
                # its cost is counted below from the probe's own record.
                answer = recommend(base, tracking_uri=uri, history=past,
                                   description=held.description, log=False)  # fmt: skip
            else:
                base = base.replace(lr=TrainConfig().lr)
                answer = recommend(base, tracking_uri=uri, history=past, log=False)
                paired_r0 = train(base, data=prepare_data(base)).test_acc
            recommend_s = time.perf_counter() - started
            config = TrainConfig.from_dict(answer.config)
            data = prepare_data(config)
            trained = train(config, data=data)
            probe = answer.description.probe
            search_best = max(held.best_reset, held.best_baseline,
                              key=lambda t: t.objective)  # fmt: skip
            row = {
                "setting": f"{key[0]} {key[1]} b{key[2]}",
                "variant": variant if lr == "r0" else f"{variant}, default lr",
                "lr": base.lr,
                "paired_r0_test_acc": paired_r0,
                "gain_over_paired_r0": trained.test_acc - paired_r0,
                "history": [s.name for s in others],
                "recommended": answer.reset_settings(),
                "confidence": answer.confidence,
                "basis": answer.combined.basis,
                "evidence_weight": answer.combined.evidence_weight,
                "expected_gain": answer.combined.expected_gain,
                "probe_verdict": probe.verdict,
                "peclet": None if probe.figures is None else probe.figures.peclet,
                "theory_reset_prob": None if probe.figures is None else probe.figures.reset_prob,
                "noise_estimate": answer.description.profile.noise_estimate.rate,
                "noise_true": answer.description.profile.noise_estimate.true_rate,
                "recommended_test_acc": trained.test_acc,
                "recommended_resets": trained.num_resets,
                "search_best_test_acc": search_best.test_acc,
                "search_best_reset_prob": search_best.config["reset_prob"],
                "search_r0_test_acc": held.best_baseline.test_acc,
                "search_best_reset_test_acc": held.best_reset.test_acc,
                "regret": search_best.test_acc - trained.test_acc,
                "gain_recommended": trained.test_acc - held.best_baseline.test_acc,
                "gain_search": search_best.test_acc - held.best_baseline.test_acc,
                "compute_steps_recommend": probe.steps_trained + trained.steps_completed,
                "compute_steps_search": held.compute_steps,
                "wall_s_recommend": recommend_s + probe.wall_time_s + trained.wall_time_s,
                "wall_s_search_trials": held.wall_time_s,
            }
            rows.append(row)
            print(
                f"{row['setting']:<30} {variant:<8} r={row['recommended']['reset_prob']:.4f} "
                f"{row['recommended']['reset_layers']:<11} rec {trained.test_acc:.4f}  "
                f"best {search_best.test_acc:.4f}  r0 {held.best_baseline.test_acc:.4f}  "
                f"regret {row['regret']:+.4f}  compute {row['compute_steps_recommend']}/"
                f"{row['compute_steps_search']} steps",
                flush=True,
            )
    return {"rows": rows, "skipped": full.skipped}


def summarise(rows: list[dict]) -> str:
    lines = []
    for variant in sorted({r["variant"] for r in rows}):
        chosen = [r for r in rows if r["variant"] == variant]
        regret = sum(r["regret"] for r in chosen) / len(chosen)
        gain_rec = sum(r["gain_recommended"] for r in chosen) / len(chosen)
        gain_search = sum(r["gain_search"] for r in chosen) / len(chosen)
        compute = sum(r["compute_steps_recommend"] for r in chosen) / sum(
            r["compute_steps_search"] for r in chosen
        )
        paired = sum(r["gain_over_paired_r0"] for r in chosen) / len(chosen)
        lines.append(
            f"{variant}: {len(chosen)} settings; mean regret {regret:+.2%}; mean gain over the "
            f"search's r = 0 arm: recommended {gain_rec:+.2%}, search-best {gain_search:+.2%}; "
            f"over r = 0 at the same lr: {paired:+.2%}; "
            f"compute {compute:.1%} of the searches' training steps"
        )
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--run-searches", action="store_true",
                        help="run the settings' searches first (those not yet run)")  # fmt: skip
    parser.add_argument("--extra", action="store_true",
                        help="add 4 digits settings near the others (history decides)")  # fmt: skip
    parser.add_argument("--trials", type=int, default=10, help="trials per search")
    parser.add_argument("--mlflow-uri", help="default: the state directory's local server")
    parser.add_argument("--variants", default="setting,dataset")
    parser.add_argument(
        "--lr",
        choices=("r0", "default"),
        default="r0",
        help="train the recommendation at the lr of the held-out search's best r = 0 trial, or "
        "at TrainConfig's default",
    )
    parser.add_argument("--json", default=str(RESULTS / "lodo.json"))
    args = parser.parse_args()
    RESULTS.mkdir(parents=True, exist_ok=True)
    settings = SETTINGS + EXTRA_SETTINGS if args.extra else SETTINGS
    if args.run_searches:
        run_searches(settings, args.trials)
    uri = args.mlflow_uri or os.environ.get("MLFLOW_TRACKING_URI")
    if uri is None:
        server = find_local_server(mlflow_dir(state_dir(None)))
        if server is None:
            sys.exit("no MLflow server: run with --run-searches, or give --mlflow-uri")
        uri = server.uri
    result = evaluate(uri, args.variants.split(","), args.lr, settings)
    summary = summarise(result["rows"])
    print(summary)
    result["summary"] = summary
    Path(args.json).write_text(json.dumps(result, indent=2, default=str) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
