"""`reset-tune sync SEARCH`: backfill MLflow from a search's outbox and Ray Tune result files."""

from __future__ import annotations

import argparse

from reset_tune.state import mlflow_dir, state_dir


def register(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser(
        "sync",
        help="backfill MLflow with what a search recorded while the tracking server was away",
        description=(
            "Replay a search's undelivered MLflow records, then record every trial that Ray "
            "Tune's result files hold but MLflow lacks. Safe to repeat."
        ),
    )
    parser.add_argument("search_id", metavar="SEARCH", help="the search id (see search.json)")
    parser.add_argument(
        "--mlflow-uri",
        help="tracking server (default: the one the search used, or the local one)",
    )
    parser.add_argument(
        "--state-dir",
        help="project state directory (default: $RESET_TUNE_STATE_DIR or .reset-tune)",
    )
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from reset_tune.search.record import find_search
    from reset_tune.search.sync import sync_search
    from reset_tune.tracking import resolve_tracking_uri

    state = state_dir(args.state_dir)
    record = find_search(state, args.search_id)
    explicit = args.mlflow_uri or (record.tracking_uri if record.tracking_explicit else None)
    uri, _server = resolve_tracking_uri(explicit, mlflow_dir(state))
    report = sync_search(record, uri)
    print(
        f"synced {record.search_id} to {uri}: {report.outbox_runs} run(s) from the outbox, "
        f"{report.trials_recorded} trial(s) recorded from Ray Tune's files "
        f"({report.metrics_logged} metric values), {report.trials_present} already complete"
    )
    for error in report.errors:
        print(f"warning: {error}")
    return 0
