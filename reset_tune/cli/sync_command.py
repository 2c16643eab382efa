"""`reset-tune sync SEARCH`: backfill MLflow from a search's outbox and Ray Tune result files."""

from __future__ import annotations

import argparse

from reset_tune.cli.state_option import checked_state_dir
from reset_tune.state import mlflow_dir


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
    from reset_tune.errors import ConfigError, ResetTuneError
    from reset_tune.redact import MASK, redact_text, redact_uri
    from reset_tune.search.preflight import check_tracking_uri
    from reset_tune.search.record import find_search
    from reset_tune.search.sync import sync_search
    from reset_tune.tracking import resolve_tracking_uri
    from reset_tune.tracking.server import health_ok

    if args.mlflow_uri is not None:
        check_tracking_uri(args.mlflow_uri)
    state = checked_state_dir(args.state_dir)
    record = find_search(state, args.search_id)
    explicit = args.mlflow_uri or (record.tracking_uri if record.tracking_explicit else None)
    if explicit is not None and MASK in explicit and not args.mlflow_uri:
        raise ConfigError(
            f"search {record.search_id} was tracked at {explicit}; give --mlflow-uri with its "
            "credentials to sync it"
        )
    uri, _server = resolve_tracking_uri(explicit, mlflow_dir(state))
    shown = redact_uri(uri)
    if uri.startswith(("http://", "https://")) and not health_ok(uri.rstrip("/"), timeout_s=5.0):
        # MLflow's client would retry for minutes and end in a retry dump.
        raise ResetTuneError(
            f"no MLflow server answers at {shown}; start it (`reset-tune up`), or pass the "
            "server's address with --mlflow-uri"
        )
    report = sync_search(record, uri)
    print(
        f"synced {record.search_id} to {shown}: {report.outbox_runs} run(s) from the outbox, "
        f"{report.trials_recorded} trial(s) recorded from Ray Tune's files "
        f"({report.metrics_logged} metric values), {report.trials_present} already complete"
    )
    for error in report.errors:
        print(f"warning: {redact_text(error)}")
    return 0
