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

`--signs` is a different, cheaper test: is the verdict's sign right? For each of
`settings.SIGN_SETTINGS` (regimes that memorise within their budget and regimes that do not),
`recommend` answers from the theory and the probe alone (no history: full searches per setting
would not fit a 2-core budget), and the truth comes from paired runs on seeds 0, 1, 2: r = 0
against resetting at r = 0.01 (`TRUTH_RATE`: TrainConfig's default, the rate a user who turns
resetting on gets, and one at which it acts within these budgets; the theory's rates, 0.002-0.004
here, give one to three resets in some runs, which measures nothing), layers `all`, patience
200, all else equal; clean test accuracy. The
paired differences d_s give d̄ and se = max(sd(d), σ₁) / √n, σ₁ = √(2 p (1 − p) / n_test) the
binomial noise of one difference of two test accuracies (as `reset_tune.search.verdict` floors
it). Truth is "helps" if d̄ > 2 se, "hurts" if d̄ < −2 se, else "no effect". A verdict of
"helps" (resetting on) is correct iff the truth is "helps"; an off verdict ("cannot act",
"does not help", "unknown") iff it is "no effect" or "hurts".

    .venv/bin/python benchmarks/recommend/lodo.py --signs      # ~25 min on one core
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
from settings import EXTRA_SETTINGS, SETTINGS, SIGN_SETTINGS, write_specs  # noqa: E402

from reset_tune import names  # noqa: E402
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


TRUTH_SEEDS = (0, 1, 2)
TRUTH_RATE = 0.01


def _truth(diffs: list[float], p: float, n_test: int) -> tuple[str, float, float, float]:
    """(word, mean, sd, se) of the paired differences (module docstring)."""
    import math
    import statistics

    n = len(diffs)
    mean = statistics.fmean(diffs)
    sd = statistics.stdev(diffs) if n > 1 else 0.0
    sigma1 = math.sqrt(2 * p * (1 - p) / n_test)
    se = max(sd, sigma1) / math.sqrt(n)
    word = "helps" if mean > 2 * se else "hurts" if mean < -2 * se else "no effect"
    return word, mean, sd, se


def evaluate_signs(settings: tuple = SIGN_SETTINGS, seeds: tuple = TRUTH_SEEDS) -> dict:
    """The verdict (no history) against paired runs, per setting; cached per setting."""
    from reset_tune.engine.memorisation import detect_memorisation

    torch.set_num_threads(1)
    folder = RESULTS / "signs"
    folder.mkdir(parents=True, exist_ok=True)
    rows = []
    for setting in settings:
        cached = folder / f"{setting.name}.json"
        before = json.loads(cached.read_text()) if cached.exists() else None
        if before is not None and before["truth_rate"] == TRUTH_RATE:
            rows.append(before)
            print(f"{setting.label}: cached", flush=True)
            continue
        base = TrainConfig.from_dict({**setting.train(), "reset_prob": 0.0})
        started = time.perf_counter()
        answer = recommend(base, tracking_uri=None, log=False)
        recommend_s = time.perf_counter() - started
        probe = answer.description.probe
        c = answer.combined
        rate = TRUTH_RATE
        # r = 0 runs do not depend on the resetting arm's rate: reuse them from an older row.
        reusable = {run["seed"]: run["r0"] for run in before["runs"]} if before else {}
        runs = []
        for seed in seeds:
            pair = {}
            for r in (0.0, rate):
                if r == 0.0 and seed in reusable:
                    pair["r0"] = reusable[seed]
                    continue
                config = base.replace(seed=seed, reset_prob=r)
                data = prepare_data(config)
                result = train(config, data=data)
                finding = detect_memorisation(result.history, n_val=int(data.val_y.shape[0]),
                                              batch_size=config.batch_size)  # fmt: skip
                pair["reset" if r else "r0"] = {
                    "test_acc": result.test_acc, "num_resets": result.num_resets,
                    "armed_step": result.armed_step, "memorisation_onset": finding.onset_step,
                    "final_memorisation": result.history[-1].get(names.MEMORISATION),
                    "max_memorisation": max(h.get(names.MEMORISATION, float("nan"))
                                            for h in result.history),
                    "steps": result.steps_completed, "wall_s": result.wall_time_s,
                    "n_test": int(data.test_y.shape[0]),
                }  # fmt: skip
            runs.append({"seed": seed, **pair, "diff": pair["reset"]["test_acc"]
                         - pair["r0"]["test_acc"]})  # fmt: skip
        diffs = [run["diff"] for run in runs]
        p = sum(run["r0"]["test_acc"] for run in runs) / len(runs)
        word, mean, sd, se = _truth(diffs, p, runs[0]["r0"]["n_test"])
        on = c.resetting
        row = {
            "setting": setting.name, "label": setting.label, "config": base.to_dict(),
            "verdict": c.verdict, "resetting": on, "verdict_reason": c.verdict_reason,
            "advice": list(c.advice), "theory_verdict": probe.theory_verdict,
            "peclet": None if probe.figures is None else probe.figures.peclet,
            "probe_armed_step": probe.armed_step, "probe_memorisation_step":
            probe.memorisation_step, "probe_transient_onsets": probe.transient_onsets,
            "probe_max_gap": probe.max_gap, "probe_steps": probe.steps_trained,
            "probe_window_end_step": probe.window_end_step,
            "probe_extension_steps": probe.extension_steps, "probe_wall_s": probe.wall_time_s,
            "recommend_wall_s": recommend_s, "noise_estimate":
            answer.description.profile.noise_estimate.rate,
            "truth_rate": rate, "rate_if_on": c.rate_if_on, "runs": runs, "truth": word,
            "truth_mean": mean,
            "truth_sd": sd, "truth_se": se,
            "correct": (word == "helps") if on else (word != "helps"),
            "sign_correct_ignoring_noise": (mean > 0) == on,
        }  # fmt: skip
        cached.write_text(json.dumps(row, indent=2, default=str) + "\n")
        rows.append(row)
        print(
            f"{setting.label:<36} verdict {c.verdict:<13} (theory {probe.theory_verdict}, "
            f"memorisation {probe.memorisation_step}, probe {probe.steps_trained} steps) "
            f"truth {word:<9} {mean:+.2%} ± {sd:.2%} (se {se:.2%}, r {rate:.4f}) "
            f"{'OK' if row['correct'] else 'WRONG'}",
            flush=True,
        )
    correct = sum(r["correct"] for r in rows)
    decided = [r for r in rows if r["truth"] != "no effect"]
    summary = (
        f"sign accuracy {correct}/{len(rows)} = {correct / len(rows):.0%}; on the "
        f"{len(decided)} settings with an effect beyond the noise "
        f"{sum(r['correct'] for r in decided)}/{len(decided)}; sign of the mean ignoring the "
        f"noise {sum(r['sign_correct_ignoring_noise'] for r in rows)}/{len(rows)}"
    )
    return {"rows": rows, "summary": summary}


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
    parser.add_argument("--json", default=None, help="default: results/lodo/lodo.json, or "
                        "results/lodo/signs.json with --signs")  # fmt: skip
    parser.add_argument("--signs", action="store_true",
                        help="test the sign of the verdict against paired runs")  # fmt: skip
    args = parser.parse_args()
    RESULTS.mkdir(parents=True, exist_ok=True)
    if args.signs:
        result = evaluate_signs()
        print(result["summary"])
        path = Path(args.json or RESULTS / "signs.json")
        path.write_text(json.dumps(result, indent=2, default=str) + "\n")
        return 0
    args.json = args.json or str(RESULTS / "lodo.json")
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
