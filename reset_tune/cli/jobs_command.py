"""`reset-tune submit`, `jobs`, `logs` and `stop`: searches as Ray jobs, through the Jobs API."""

from __future__ import annotations

import argparse
import json
import re
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, TextIO

from reset_tune.cli.stack_command import add_state_dir_option
from reset_tune.cli.state_option import checked_state_dir
from reset_tune.errors import ConfigError
from reset_tune.redact import redact_uri

if TYPE_CHECKING:
    from reset_tune.search.spec import SearchSpec

_ADDRESS_HELP = (
    "the Ray dashboard's http address, e.g. http://HEAD:8265 (default: $RAY_ADDRESS when it is "
    "an http(s) URL, else the local stack of `reset-tune up`)"
)


def _with_search_args(base: type[argparse.ArgumentParser]) -> type[argparse.ArgumentParser]:
    """A parser class that keeps everything after `--` as `search_args`, verbatim."""

    class SubmitParser(base):  # type: ignore[misc, valid-type]
        def parse_known_args(
            self, args: Sequence[str] | None = None, namespace: argparse.Namespace | None = None
        ) -> tuple[argparse.Namespace, list[str]]:
            args = list(sys.argv[1:] if args is None else args)
            extra: list[str] = []
            if "--" in args:
                cut = args.index("--")
                args, extra = args[:cut], args[cut + 1 :]
            namespace, rest = super().parse_known_args(args, namespace)
            namespace.search_args = extra
            return namespace, rest

    return SubmitParser


def _add_address(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--address", metavar="URL", help=_ADDRESS_HELP)
    add_state_dir_option(parser)


def register(commands: argparse._SubParsersAction) -> None:
    submit = commands.add_parser(
        "submit",
        help="run a search on a Ray cluster as a Ray job",
        usage="reset-tune submit SPEC [options] [-- SEARCH OPTIONS ...]",
        description=(
            "Submit `reset-tune search SPEC` to a Ray cluster through the Ray Jobs API. The job "
            "ships this reset_tune package and the spec (nothing else) as its working dir, so the "
            "cluster runs the submitted code. Options after `--` go to `reset-tune search` "
            "(e.g. -- --trials 24). Waits for the job to end unless --no-wait."
        ),
    )
    submit.__class__ = _with_search_args(type(submit))
    submit.add_argument("spec", metavar="SPEC", help="search spec YAML (checked here first)")
    _add_address(submit)
    submit.add_argument(
        "--mlflow-uri",
        metavar="URI",
        help="MLflow server the search logs to, as the cluster reaches it (default: "
        "$MLFLOW_TRACKING_URI, else the local stack's when the job runs on this machine)",
    )
    submit.add_argument(
        "--seed-configs",
        metavar="FILE|SEARCH_ID",
        help="configurations to try first; a file is shipped with the job",
    )
    submit.add_argument("--submission-id", metavar="ID", help="the job's id (default: Ray's)")
    mode = submit.add_mutually_exclusive_group()
    mode.add_argument("--no-wait", action="store_true", help="print the job id and return")
    mode.add_argument("--follow", action="store_true", help="stream the job's output until it ends")
    submit.add_argument("--json", action="store_true", help="print the job as JSON on stdout")
    submit.set_defaults(handler=run_submit, search_args=[])

    jobs = commands.add_parser(
        "jobs",
        help="list the jobs on a Ray cluster",
        description="List the jobs of a Ray cluster (oldest first) with their status.",
    )
    _add_address(jobs)
    jobs.add_argument("--json", action="store_true", help="print the jobs as JSON")
    jobs.set_defaults(handler=run_jobs)

    logs = commands.add_parser(
        "logs",
        help="print a job's output",
        description="Print the output of a Ray job; --follow streams it until the job ends.",
    )
    logs.add_argument("job_id", metavar="JOB", help="the job's id (see reset-tune jobs)")
    _add_address(logs)
    logs.add_argument("--follow", "-f", action="store_true", help="stream until the job ends")
    logs.set_defaults(handler=run_logs)

    stop = commands.add_parser(
        "stop",
        help="stop a running job",
        description=(
            "Stop a Ray job: Ray sends its process group SIGTERM, then SIGKILL after a grace "
            "period. Waits until the job has stopped unless --no-wait."
        ),
    )
    stop.add_argument("job_id", metavar="JOB", help="the job's id (see reset-tune jobs)")
    _add_address(stop)
    stop.add_argument("--no-wait", action="store_true", help="return once the stop is requested")
    stop.add_argument(
        "--timeout",
        type=float,
        default=60.0,
        metavar="SECONDS",
        help="how long to wait for the job to stop (default: 60)",
    )
    stop.set_defaults(handler=run_stop)


def run_submit(args: argparse.Namespace) -> int:
    from reset_tune.search import load_spec
    from reset_tune.search.cluster import find_local_stack
    from reset_tune.search.jobs import quiet_ray_logging, resolve_address, submit_search

    spec = Path(args.spec)
    # Everything the remote search would refuse is refused here first (exit 2, nothing sent).
    search_spec = load_spec(spec)
    check_submission_id(args.submission_id)
    if args.mlflow_uri is not None:
        from reset_tune.search.preflight import check_tracking_uri

        check_tracking_uri(args.mlflow_uri)
    check_search_args(spec, args.search_args)
    quiet_ray_logging()
    search_args = list(args.search_args)
    extra_files: list[Path] = []
    if args.seed_configs is not None:
        seed = Path(args.seed_configs)
        if seed.is_file():
            check_seed_configs_file(search_spec, seed)
            extra_files.append(seed)
            search_args += ["--seed-configs", seed.name]
        elif seed.is_dir():
            raise ConfigError(f"--seed-configs {args.seed_configs!r}: is a directory, not a file")
        elif seed.suffix.lower() in (".yaml", ".yml", ".json") or "/" in args.seed_configs:
            raise ConfigError(f"--seed-configs {args.seed_configs!r}: no such file")
        else:
            search_args += ["--seed-configs", args.seed_configs]  # a previous search's id
    state = checked_state_dir(args.state_dir)
    address = resolve_address(args.address, state)
    if not any(arg.split("=", 1)[0] == "--state-dir" for arg in search_args):
        stack = find_local_stack(state)
        if args.state_dir is not None or (stack is not None and stack.dashboard_url == address):
            # The job runs in a scratch working dir: keep its state (Optuna study, Tune results)
            # in this state directory when it is on this machine, or where --state-dir says.
            search_args += ["--state-dir", str(state)]
    job_id = submit_search(
        address,
        spec,
        search_args=search_args,
        mlflow_uri=args.mlflow_uri,
        submission_id=args.submission_id,
        extra_files=extra_files,
        state=state,
    )
    hints = (
        f"follow it: reset-tune logs {job_id} --follow{_address_hint(args)}\n"
        f"stop it:   reset-tune stop {job_id}{_address_hint(args)}"
    )
    out = sys.stderr if args.json else sys.stdout
    print(f"submitted job {job_id} to {redact_uri(address)}", file=out)
    if args.no_wait:
        print(hints, file=out)
        if args.json:
            _print_job_json(job_id, address, "PENDING", spec)
        return 0
    try:
        status = _wait(address, job_id, follow=args.follow, out=out)
    except KeyboardInterrupt:
        print(f"\nstopped waiting; the job goes on.\n{hints}", file=sys.stderr)
        return 130
    if args.json:
        _print_job_json(job_id, address, status, spec)
    if status == "SUCCEEDED":
        print(f"job {job_id} SUCCEEDED", file=out)
        return 0
    _report_failure(address, job_id, status, show_logs=not args.follow)
    return 1


# A submission id becomes a file name in Ray's job logs: letters, digits, `_`, `-`, `.` only.
_SUBMISSION_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.\-]{0,99}")


def check_submission_id(submission_id: str | None, *, what: str = "--submission-id") -> None:
    if submission_id is None:
        return
    if not _SUBMISSION_ID.fullmatch(submission_id) or ".." in submission_id:
        raise ConfigError(
            f"{what} {submission_id!r}: use 1-100 letters, digits, '_', '-' or '.' "
            "(starting with a letter or digit, no '..')"
        )


def check_search_args(spec: Path, search_args: Sequence[str]) -> None:
    """The options after `--`, checked as `reset-tune search` will check them on the cluster:
    its parser, then the same argument checks (`reset_tune.search.preflight`)."""
    import contextlib
    import io

    from reset_tune.cli.main import build_parser
    from reset_tune.search.preflight import check_arguments, check_tracking_uri

    for arg in search_args:
        if arg in ("-h", "--help"):
            raise ConfigError(
                "after --: --help shows nothing on a cluster; see reset-tune search --help"
            )
    captured = io.StringIO()
    try:
        with contextlib.redirect_stderr(captured), contextlib.redirect_stdout(captured):
            parsed = build_parser().parse_args(["search", str(spec), *search_args])
    except SystemExit:
        lines = captured.getvalue().strip().splitlines()
        message = lines[-1] if lines else "not options of reset-tune search"
        message = re.sub(r"^reset-tune( search)?: error: ", "", message)
        message = re.sub(r" \(see reset-tune( search)? --help\)$", "", message)
        raise ConfigError(f"after --: {message}") from None
    if parsed.resume is not None:
        raise ConfigError(
            "after --: --resume does not go with a SPEC to submit; submit a new search"
        )
    check_arguments(
        spec,
        resume=False,
        search_id=None,
        trials=parsed.trials,
        max_failures=parsed.max_failures,
        checkpoint_every=parsed.checkpoint_every,
    )
    if parsed.top < 1:
        raise ConfigError(f"after --: --top must be at least 1, got {parsed.top}")
    if parsed.mlflow_uri is not None:
        check_tracking_uri(parsed.mlflow_uri)
    if parsed.seed_configs is not None:
        raise ConfigError("give --seed-configs before --, so that its file is shipped with the job")


def check_seed_configs_file(spec: SearchSpec, path: Path) -> None:
    """The configurations in `path` are ones the search `spec` can run (as the search checks)."""
    from reset_tune.search.space import to_trial_params
    from reset_tune.yaml_files import read_yaml_file

    loaded = read_yaml_file(path, "--seed-configs file")
    if isinstance(loaded, dict):
        loaded = [loaded]
    if not isinstance(loaded, list) or not all(isinstance(c, dict) for c in loaded):
        raise ConfigError(
            f"{path}: must hold a list of configurations (mappings of parameter: value)"
        )
    for i, config in enumerate(loaded):
        to_trial_params(spec, config, where=f"{path}[{i}]")


def _wait(address: str, job_id: str, *, follow: bool, out: TextIO) -> str:
    from reset_tune.search.jobs import job_logs, job_status, wait_for_job

    if follow:
        for chunk in job_logs(address, job_id, follow=True):
            sys.stdout.write(chunk)
            sys.stdout.flush()
        # The log stream ends when the job does; its final status may lag a moment behind.
        return wait_for_job(address, job_id, timeout_s=60.0, poll_s=0.5)
    last = None
    while True:
        status = job_status(address, job_id)
        if status != last:
            print(f"[{time.strftime('%H:%M:%S')}] job {job_id}: {status}", file=out, flush=True)
            last = status
        if status in ("SUCCEEDED", "FAILED", "STOPPED"):
            return status
        time.sleep(2.0)


def _report_failure(address: str, job_id: str, status: str, *, show_logs: bool) -> None:
    from reset_tune.search.jobs import job_info, job_logs

    info = job_info(address, job_id)
    reason = f": {info.message}" if info.message else ""
    if show_logs:
        text = "".join(job_logs(address, job_id))
        tail = "\n".join(text.splitlines()[-20:])
        if tail:
            print(f"last lines of the job's output:\n{tail}", file=sys.stderr)
    print(f"job {job_id} ended {status}{reason}", file=sys.stderr)


def _print_job_json(job_id: str, address: str, status: str, spec: Path) -> None:
    print(
        json.dumps(
            {"job_id": job_id, "address": redact_uri(address), "status": status, "spec": str(spec)}
        )
    )


def _address_hint(args: argparse.Namespace) -> str:
    hint = ""
    if args.address:
        hint += f" --address {redact_uri(args.address)}"
    if args.state_dir:
        hint += f" --state-dir {args.state_dir}"
    return hint


def run_jobs(args: argparse.Namespace) -> int:
    from reset_tune.search.jobs import list_jobs, quiet_ray_logging, resolve_address

    quiet_ray_logging()

    address = resolve_address(args.address, checked_state_dir(args.state_dir))
    jobs = list_jobs(address)
    if args.json:
        print(json.dumps([job.to_dict() for job in jobs], indent=2))
        return 0
    if not jobs:
        print(f"no jobs at {redact_uri(address)}")
        return 0
    rows = [
        (
            job.job_id,
            job.status,
            _when(job.start_time),
            _duration(job.start_time, job.end_time),
            _short(job.entrypoint, 70),
        )
        for job in jobs
    ]
    header = ("JOB", "STATUS", "STARTED", "TIME", "ENTRYPOINT")
    widths = [max(len(str(row[i])) for row in [header, *rows]) for i in range(4)]
    for row in [header, *rows]:
        print(
            "  ".join(str(cell).ljust(width) for cell, width in zip(row, widths, strict=False)),
            end="",
        )
        print(f"  {row[4]}")
    return 0


def run_logs(args: argparse.Namespace) -> int:
    from reset_tune.search.jobs import job_logs, quiet_ray_logging, resolve_address

    check_submission_id(args.job_id, what="JOB")
    quiet_ray_logging()

    address = resolve_address(args.address, checked_state_dir(args.state_dir))
    try:
        for chunk in job_logs(address, args.job_id, follow=args.follow):
            sys.stdout.write(chunk)
            sys.stdout.flush()
    except KeyboardInterrupt:
        print("\nstopped following; the job goes on.", file=sys.stderr)
        return 130
    return 0


def run_stop(args: argparse.Namespace) -> int:
    from reset_tune.search.jobs import (
        job_status,
        quiet_ray_logging,
        resolve_address,
        stop_job,
        wait_for_job,
    )

    quiet_ray_logging()

    if args.timeout <= 0:
        raise ConfigError(f"--timeout must be > 0 seconds, got {args.timeout}")
    check_submission_id(args.job_id, what="JOB")
    address = resolve_address(args.address, checked_state_dir(args.state_dir))
    if not stop_job(address, args.job_id):
        print(f"job {args.job_id} had already ended: {job_status(address, args.job_id)}")
        return 0
    if args.no_wait:
        print(f"asked job {args.job_id} to stop")
        return 0
    status = wait_for_job(address, args.job_id, timeout_s=args.timeout, poll_s=0.5)
    print(f"job {args.job_id}: {status}")
    return 0


def _when(epoch_s: float | None) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(epoch_s)) if epoch_s else "-"


def _duration(start: float | None, end: float | None) -> str:
    if not start:
        return "-"
    seconds = int((end or time.time()) - start)
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


def _short(text: str, width: int) -> str:
    return text if len(text) <= width else text[: width - 1] + "…"
