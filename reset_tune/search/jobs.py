"""Searches as Ray jobs: staged, submitted, listed, followed and stopped through the Ray Jobs API.

A submitted search ships a copy of the `reset_tune` package and the spec file (nothing else) as
the job's `working_dir`; the job runs

    python -m reset_tune.cli.main search <spec file name> [search args]

in that directory, so the shipped package shadows any installed one and the cluster runs the code
that was submitted. The Jobs API lives in the Ray dashboard (`ray[default]`), addressed by its
http URL: `--address`, else `$RAY_ADDRESS` when it is an http(s) URL, else the dashboard of the
local stack (`reset-tune up`).
"""

from __future__ import annotations

import asyncio
import os
import shlex
import shutil
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import reset_tune
from reset_tune.errors import ConfigError, ResetTuneError
from reset_tune.search.cluster import LocalStack, find_local_stack
from reset_tune.search.ray_auth import AUTH_MODE_ENV, ensure_auth_mode, is_loopback_address

TRACKING_URI_ENV = "MLFLOW_TRACKING_URI"
TERMINAL_STATUSES = frozenset({"SUCCEEDED", "FAILED", "STOPPED"})
SEARCH_ENTRYPOINT = ("python", "-m", "reset_tune.cli.main", "search")
PACKAGE_NAME = "reset_tune"
_IGNORED = shutil.ignore_patterns("__pycache__", "*.pyc", "*.pyo")


class JobsError(ResetTuneError):
    """The Ray Jobs API could not be reached or refused a request; the message says what to do."""


class JobNotFound(JobsError):
    """No job with that id on that cluster."""


def quiet_ray_logging() -> None:
    """Ray's job SDK logs every upload and socket close at INFO; the CLI says what matters."""
    import logging

    import ray  # noqa: F401  (Ray configures its loggers on import)

    logging.getLogger("ray").setLevel(logging.WARNING)


@dataclass
class JobSummary:
    """One job as `reset-tune jobs` shows it."""

    job_id: str  # the submission id for submitted jobs, else Ray's driver job id
    status: str
    entrypoint: str
    start_time: float | None = None  # seconds since the epoch
    end_time: float | None = None
    message: str = ""
    metadata: dict[str, str] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "job_id": self.job_id,
            "status": self.status,
            "entrypoint": self.entrypoint,
            "start_time": self.start_time,
            "end_time": self.end_time,
            "message": self.message,
            "metadata": self.metadata,
        }


# ---------------------------------------------------------------------------------------------
# Addresses and the client


def resolve_address(explicit: str | None, state: Path | None) -> str:
    """The dashboard URL: `explicit`, else $RAY_ADDRESS (if http/https), else the local stack's."""
    if explicit:
        return normalize_address(explicit)
    from_env = os.environ.get("RAY_ADDRESS", "")
    if from_env.startswith(("http://", "https://")):
        return from_env.rstrip("/")
    stack = find_local_stack(state) if state is not None else None
    if stack is not None:
        return stack.dashboard_url
    where = f" for state directory {state}" if state is not None else ""
    raise JobsError(
        f"no Ray cluster to talk to: no --address given, $RAY_ADDRESS is not an http(s) URL, "
        f"and no local stack runs{where}; start one with `reset-tune up` or pass --address "
        "http://HEAD:8265 (a Ray dashboard)"
    )


def normalize_address(address: str) -> str:
    """An http(s) URL without a trailing slash; a bare HOST:PORT becomes http://HOST:PORT."""
    address = address.strip().rstrip("/")
    if address.startswith(("http://", "https://")):
        return address
    if "://" in address:
        raise ConfigError(
            f"--address {address!r}: the Ray Jobs API needs the dashboard's http(s) address, "
            "e.g. http://127.0.0.1:8265 (not a ray:// or GCS address)"
        )
    return f"http://{address}"


def connect(address: str, *, timeout_s: float = 10.0) -> Any:
    """A `JobSubmissionClient` for the dashboard at `address`; `JobsError` if none answers."""
    address = normalize_address(address)
    ensure_auth_mode(address)
    _check_dashboard(address, timeout_s)
    from ray.exceptions import AuthenticationError
    from ray.job_submission import JobSubmissionClient

    try:
        return JobSubmissionClient(address)
    except ConnectionError:
        raise _unreachable(address, "connection refused") from None
    except AuthenticationError as error:
        raise _auth_error(address, error) from None
    except RuntimeError as error:
        raise JobsError(f"the Ray dashboard at {address} refused the Jobs API: {error}") from None


def _check_dashboard(address: str, timeout_s: float) -> None:
    """Fail fast (bounded time, one clear message) when nothing answers at `address`."""
    try:
        with urllib.request.urlopen(f"{address}/api/version", timeout=timeout_s):
            return
    except urllib.error.HTTPError as error:
        if error.code in (401, 403):
            return  # it answers; the client adds the token (or says it has none)
        raise JobsError(
            f"{address} answered /api/version with HTTP {error.code}: it is not a Ray dashboard "
            "(the Jobs API needs the dashboard's address, e.g. http://HEAD:8265)"
        ) from None
    except (OSError, ValueError) as error:
        reason = getattr(error, "reason", error)
        raise _unreachable(address, str(reason)) from None


def _unreachable(address: str, reason: str) -> JobsError:
    hint = (
        "start one with `reset-tune up` or pass --address"
        if is_loopback_address(address)
        else "check the address (the dashboard's http URL, port 8265 by default) and that the "
        "cluster's dashboard is reachable from here, or pass another --address"
    )
    return JobsError(f"no Ray dashboard answers at {address} ({reason}); {hint}")


def _auth_error(address: str, error: Exception) -> JobsError:
    first = str(error).strip().splitlines()[0] if str(error).strip() else "authentication failed"
    return JobsError(
        f"the Ray cluster at {address} refused us: {first}. It uses token authentication: put "
        "its token in ~/.ray/auth_token, or set RAY_AUTH_TOKEN (or RAY_AUTH_TOKEN_PATH), and "
        "RAY_AUTH_MODE=token"
    )


def _call(address: str, job_id: str | None, action: Any) -> Any:
    """Run a client call, turning Ray's errors into `JobsError` with the address in it."""
    from ray.exceptions import AuthenticationError

    try:
        return action()
    except AuthenticationError as error:
        raise _auth_error(address, error) from None
    except ConnectionError as error:
        raise _unreachable(address, str(error)) from None
    except RuntimeError as error:
        text = str(error)
        if job_id is not None and ("404" in text or "does not exist" in text):
            raise JobNotFound(
                f"no job {job_id!r} at {address}; `reset-tune jobs` lists the jobs there"
            ) from None
        if "already exists" in text or "already been used" in text or "already in use" in text:
            raise JobsError(
                f"a job with that submission id already exists at {address}; choose another "
                "--submission-id, or leave it out for a new one"
            ) from None
        # Ray's text may carry the server's whole traceback: its first line says what failed.
        first = text.strip().splitlines()[0] if text.strip() else type(error).__name__
        raise JobsError(f"the Ray Jobs API at {address} failed: {first}") from None
    except OSError as error:  # requests' ConnectionError is an OSError
        raise _unreachable(address, type(error).__name__) from None


# ---------------------------------------------------------------------------------------------
# Staging and submitting


def stage_package(dest: Path, files: Mapping[str, Path]) -> Path:
    """Fill the fresh folder `dest` with the `reset_tune` package source and `files` (by name).

    The package is the directory of the imported `reset_tune/__init__.py`, without `__pycache__`
    and compiled files; `files` maps a name in `dest` to a file to copy there (the spec file, a
    seed-configs file). Nothing else is shipped. Returns `dest`.
    """
    dest = Path(dest)
    if dest.exists() and any(dest.iterdir()):
        raise JobsError(f"staging folder {dest} is not empty")
    dest.mkdir(parents=True, exist_ok=True)
    shutil.copytree(package_source(), dest / PACKAGE_NAME, ignore=_IGNORED)
    for name, source in files.items():
        if Path(name).name != name or name in ("", ".", "..", PACKAGE_NAME):
            raise ConfigError(
                f"cannot ship {str(source)!r} as {name!r}: a shipped file needs a plain file name "
                f"other than {PACKAGE_NAME!r}"
            )
        if not Path(source).is_file():
            raise ConfigError(f"cannot ship {str(source)!r}: no such file")
        shutil.copyfile(source, dest / name)
    return dest


def package_source() -> Path:
    return Path(reset_tune.__file__).resolve().parent


def submit_entrypoint(
    address: str,
    entrypoint: str,
    *,
    working_dir: Path | None = None,
    env_vars: Mapping[str, str] | None = None,
    metadata: Mapping[str, str] | None = None,
    submission_id: str | None = None,
) -> str:
    """Submit any shell command as a Ray job; returns its submission id."""
    address = normalize_address(address)
    client = connect(address)
    runtime_env: dict[str, Any] = {}
    if working_dir is not None:
        runtime_env["working_dir"] = str(working_dir)
    if env_vars:
        runtime_env["env_vars"] = {str(k): str(v) for k, v in env_vars.items()}
    return _call(
        address,
        None,
        lambda: client.submit_job(
            entrypoint=entrypoint,
            runtime_env=runtime_env or None,
            metadata=dict(metadata) if metadata else None,
            submission_id=submission_id,
        ),
    )


def search_entrypoint(spec_name: str, search_args: Sequence[str]) -> str:
    return shlex.join([*SEARCH_ENTRYPOINT, spec_name, *search_args])


def submit_search(
    address: str,
    spec_path: str | os.PathLike,
    *,
    search_args: Sequence[str] = (),
    mlflow_uri: str | None = None,
    env: Mapping[str, str] | None = None,
    submission_id: str | None = None,
    extra_files: Sequence[str | os.PathLike] = (),
    state: Path | None = None,
) -> str:
    """Submit `reset-tune search SPEC` as a Ray job; returns the job's submission id.

    The spec is validated here first (`ConfigError` before anything is sent). The job's
    environment gets `env`, RAY_AUTH_MODE when set, and MLFLOW_TRACKING_URI: `mlflow_uri`, else
    this process's $MLFLOW_TRACKING_URI, else — when the job goes to a cluster on this machine —
    the MLflow server of the local stack of `state`. `extra_files` ship beside the spec (refer to
    them by base name in `search_args`).
    """
    from reset_tune.search import load_spec

    spec_file = Path(spec_path)
    load_spec(spec_file)
    address = normalize_address(address)
    files = {spec_file.name: spec_file}
    for extra in extra_files:
        extra_path = Path(extra)
        if extra_path.name in files:
            raise ConfigError(
                f"cannot ship {str(extra_path)!r}: another shipped file is also named "
                f"{extra_path.name!r}"
            )
        files[extra_path.name] = extra_path
    env_vars = job_environment(address, mlflow_uri=mlflow_uri, env=env, state=state)
    metadata = {"reset_tune": "search", "spec": spec_file.name}
    with tempfile.TemporaryDirectory(prefix="reset-tune-job-") as staging:
        working_dir = stage_package(Path(staging) / "job", files)
        return submit_entrypoint(
            address,
            search_entrypoint(spec_file.name, search_args),
            working_dir=working_dir,
            env_vars=env_vars,
            metadata=metadata,
            submission_id=submission_id,
        )


def job_environment(
    address: str,
    *,
    mlflow_uri: str | None = None,
    env: Mapping[str, str] | None = None,
    state: Path | None = None,
) -> dict[str, str]:
    """The env_vars of a search job (see `submit_search`)."""
    ensure_auth_mode(address)
    values = {str(k): str(v) for k, v in (env or {}).items()}
    if os.environ.get(AUTH_MODE_ENV):
        values.setdefault(AUTH_MODE_ENV, os.environ[AUTH_MODE_ENV])
    uri = mlflow_uri or os.environ.get(TRACKING_URI_ENV)
    if not uri and state is not None and is_loopback_address(address):
        stack: LocalStack | None = find_local_stack(state)
        if stack is not None:
            uri = stack.mlflow_uri
    if uri:
        values[TRACKING_URI_ENV] = uri
    return values


# ---------------------------------------------------------------------------------------------
# Listing, logs, status, stop


def list_jobs(address: str) -> list[JobSummary]:
    """The cluster's jobs, oldest first."""
    address = normalize_address(address)
    client = connect(address)
    details = _call(address, None, client.list_jobs)
    jobs = [
        JobSummary(
            job_id=d.submission_id or d.job_id or "?",
            status=str(d.status.value if hasattr(d.status, "value") else d.status),
            entrypoint=d.entrypoint or "",
            start_time=d.start_time / 1000 if d.start_time else None,
            end_time=d.end_time / 1000 if d.end_time else None,
            message=d.message or "",
            metadata=dict(d.metadata or {}),
        )
        for d in details
    ]
    return sorted(jobs, key=lambda job: job.start_time or 0.0)


def job_status(address: str, job_id: str) -> str:
    address = normalize_address(address)
    client = connect(address)
    status = _call(address, job_id, lambda: client.get_job_status(job_id))
    return str(status.value if hasattr(status, "value") else status)


def job_info(address: str, job_id: str) -> JobSummary:
    address = normalize_address(address)
    client = connect(address)
    d = _call(address, job_id, lambda: client.get_job_info(job_id))
    return JobSummary(
        job_id=d.submission_id or d.job_id or job_id,
        status=str(d.status.value if hasattr(d.status, "value") else d.status),
        entrypoint=d.entrypoint or "",
        start_time=d.start_time / 1000 if d.start_time else None,
        end_time=d.end_time / 1000 if d.end_time else None,
        message=d.message or "",
        metadata=dict(d.metadata or {}),
    )


def job_logs(address: str, job_id: str, follow: bool = False) -> Iterator[str]:
    """The job's output: all of it so far, or (`follow`) chunks as they come until the job ends."""
    address = normalize_address(address)
    client = connect(address)
    if not follow:
        yield _call(address, job_id, lambda: client.get_job_logs(job_id))
        return
    _call(address, job_id, lambda: client.get_job_info(job_id))  # unknown id: JobNotFound now
    loop = asyncio.new_event_loop()
    stream = client.tail_job_logs(job_id)
    try:
        while True:
            chunk = _call(address, job_id, lambda: loop.run_until_complete(_next_chunk(stream)))
            if chunk is None:
                return
            yield chunk
    finally:
        try:
            loop.run_until_complete(stream.aclose())
        finally:
            loop.close()


async def _next_chunk(stream: Any) -> str | None:
    try:
        return await anext(stream)
    except StopAsyncIteration:
        return None


def stop_job(address: str, job_id: str) -> bool:
    """Ask the job to stop (SIGTERM, then SIGKILL after a grace period); False if it had ended."""
    address = normalize_address(address)
    client = connect(address)
    return bool(_call(address, job_id, lambda: client.stop_job(job_id)))


def wait_for_job(
    address: str,
    job_id: str,
    *,
    timeout_s: float | None = None,
    poll_s: float = 1.0,
    until: frozenset[str] = TERMINAL_STATUSES,
) -> str:
    """Poll until the job's status is in `until` (default: it ended); returns that status.

    Raises `JobsError` when `timeout_s` passes first.
    """
    address = normalize_address(address)
    client = connect(address)
    deadline = None if timeout_s is None else time.monotonic() + timeout_s
    while True:
        status = _call(address, job_id, lambda: client.get_job_status(job_id))
        value = str(status.value if hasattr(status, "value") else status)
        if value in until:
            return value
        if deadline is not None and time.monotonic() >= deadline:
            raise JobsError(f"job {job_id} at {address} is still {value} after {timeout_s:.0f} s")
        time.sleep(poll_s)
