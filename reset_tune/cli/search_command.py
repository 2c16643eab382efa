"""`reset-tune search`: run (or resume) a search on a Ray cluster, tracked in MLflow."""

from __future__ import annotations

import argparse
import contextlib
import functools
import json
import sys

from reset_tune.cli.state_option import checked_state_dir
from reset_tune.errors import ConfigError
from reset_tune.redact import redact_uri


def register(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser(
        "search",
        help="search reset settings with lr and batch size (Ray Tune + Optuna + MLflow)",
        description=(
            "Run the search a spec describes (search_spaces/*.yaml) as Ray Tune trials explored "
            "by Optuna, every trial logged to MLflow as a child of the search's run. Uses the "
            "Ray cluster at --address / $RAY_ADDRESS, else the one `reset-tune up` started, "
            "else a local one for this search; and the MLflow server at --mlflow-uri / "
            "$MLFLOW_TRACKING_URI, else a local one it starts (and reuses next time)."
        ),
    )
    parser.add_argument("spec", nargs="?", help="search spec YAML (optional with --resume)")
    parser.add_argument(
        "--resume",
        nargs="?",
        const="",
        metavar="SEARCH_ID",
        help="continue an interrupted search (default: the latest of SPEC), or add trials to "
        "a finished one with --trials",
    )
    parser.add_argument(
        "--trials", type=int, help="target number of finished trials (default: the spec's)"
    )
    parser.add_argument(
        "--seed-configs",
        metavar="FILE|SEARCH_ID",
        help="configurations to try first: a YAML/JSON list of {param: value}, or the id of a "
        "previous search (its 5 best)",
    )
    parser.add_argument("--address", help="Ray cluster address (default: $RAY_ADDRESS)")
    parser.add_argument("--mlflow-uri", help="MLflow tracking server (default: local one)")
    parser.add_argument(
        "--storage",
        help="Optuna storage URL (default: sqlite in the state directory; postgresql://... "
        "for a shared cluster)",
    )
    parser.add_argument(
        "--tune-storage",
        help="where Ray Tune keeps trial results and checkpoints; on a multi-node cluster a "
        "path every node can reach (NFS, s3://...). Default: the state directory",
    )
    parser.add_argument(
        "--max-failures",
        type=int,
        default=2,
        help="retries of a trial whose worker or node died (from its last checkpoint)",
    )
    parser.add_argument(
        "--checkpoint-every",
        type=int,
        default=5,
        help="evaluations between trial checkpoints",
    )
    parser.add_argument(
        "--state-dir",
        help="project state directory (default: $RESET_TUNE_STATE_DIR or .reset-tune)",
    )
    parser.add_argument("--top", type=int, default=10, help="rows of the final table")
    parser.add_argument(
        "--json", action="store_true", help="print a JSON summary on stdout (progress on stderr)"
    )
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from reset_tune import search

    if args.top < 1:
        raise ConfigError(f"--top must be at least 1, got {args.top}")
    state = checked_state_dir(args.state_dir)
    progress = sys.stderr if args.json else sys.stdout
    call = functools.partial(
        search.run,
        args.spec,
        trials=args.trials,
        address=args.address,
        mlflow_uri=args.mlflow_uri,
        resume=args.resume is not None,
        search_id=args.resume or None,
        seed_configs=args.seed_configs,
        storage=args.storage,
        tune_storage=args.tune_storage,
        state_dir=state,
        max_failures=args.max_failures,
        checkpoint_every=args.checkpoint_every,
        stream=progress,
    )
    if args.json:
        # Ray Tune prints its own banner on stdout; stdout must hold only the JSON summary.
        with contextlib.redirect_stdout(sys.stderr):
            outcome = call()
    else:
        outcome = call()
    report, record = outcome.report, outcome.record
    if args.json:
        summary = report.to_json()
        summary["state_dir"] = str(state)
        summary["search_dir"] = str(record.path)
        print(json.dumps(summary, indent=2, default=str))
        return 0 if report.best is not None else 1
    out = sys.stdout
    print(f"\nsearch {record.search_id}: {_counts(report.counts())}", file=out)
    print(report.table(top=args.top), file=out)
    best = report.best
    if best is None:
        print("\nno trial completed; see the failures above", file=out)
        return 1
    baseline = report.best_baseline
    seeds = f" over {best.n_seeds} seeds" if best.n_seeds > 1 else ""
    print(
        f"\nbest configuration ({best.label}, {report.objective_metric} "
        f"{best.objective:.4f}{seeds}):"
    )
    print(json.dumps(_searched(best.config, best.params), indent=2, sort_keys=True))
    if baseline is not None and best.test_acc is not None and baseline.test_acc is not None:
        gain = 100 * (best.test_acc - baseline.test_acc)
        print(
            f"clean test accuracy: best {100 * best.test_acc:.2f} % vs best r = 0 trial "
            f"{100 * baseline.test_acc:.2f} % ({gain:+.2f} points)"
        )
    print(report.verdict().line())
    print(f"full config: {record.path / 'search.json'}")
    if report.mlflow_url:
        print(f"MLflow UI: {redact_uri(report.mlflow_url)}")
        if report.mlflow_trials_url:
            print(f"MLflow trials, best first: {redact_uri(report.mlflow_trials_url)}")
    elif report.tracking_uri:
        print(f"tracked in: {redact_uri(report.tracking_uri)}")
    return 0


def _counts(counts: dict[str, int]) -> str:
    return ", ".join(f"{n} {state}" for state, n in sorted(counts.items())) or "no trials"


def _searched(config: dict, params: dict) -> dict:
    """The best config's searched values (what differs between trials), under config names."""
    keys = [k for k in params if k in config]
    return {k: config[k] for k in keys} | {"reset_prob": config.get("reset_prob")}
