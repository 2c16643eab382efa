"""Where a search keeps its state on a cluster: the Optuna study, Tune's trial files, MLflow.

Each store comes from a flag, else from the environment (so that a Kubernetes pod or a Ray job
gets it from a Secret, never from a command line anyone can read):

    Optuna study     --storage        / RESET_TUNE_OPTUNA_STORAGE  (postgresql://user:pw@host/db)
    Tune trial files --tune-storage   / RESET_TUNE_TUNE_STORAGE    (s3://bucket/prefix, a path)
    S3 endpoint      ?endpoint_override=URL in the s3:// URI, else AWS_ENDPOINT_URL_S3 /
                     AWS_ENDPOINT_URL (MinIO, SeaweedFS, Ceph); credentials from the AWS
                     variables or files as every AWS client reads them
    MLflow           --mlflow-uri     / MLFLOW_TRACKING_URI, with MLFLOW_TRACKING_USERNAME and
                     MLFLOW_TRACKING_PASSWORD for a server with basic auth (MLflow reads them)

Credentials never reach a record: `search.json` keeps the Optuna URL with its password masked
(`reset_tune.redact.redact_uri`), so a resumed search needs the URL again, from the flag or the
environment; `open_optuna_storage` says so when it is missing.
"""

from __future__ import annotations

import os
import urllib.parse
from pathlib import Path
from typing import TYPE_CHECKING, Any

from reset_tune.errors import ConfigError, ResetTuneError
from reset_tune.redact import MASK, redact_text, redact_uri

if TYPE_CHECKING:
    import optuna
    import pyarrow.fs

OPTUNA_STORAGE_ENV = "RESET_TUNE_OPTUNA_STORAGE"
TUNE_STORAGE_ENV = "RESET_TUNE_TUNE_STORAGE"
S3_ENDPOINT_ENVS = ("AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL")  # the AWS SDKs' own names
S3_REGION_ENVS = ("AWS_REGION", "AWS_DEFAULT_REGION")
MLFLOW_USERNAME_ENV = "MLFLOW_TRACKING_USERNAME"
MLFLOW_PASSWORD_ENV = "MLFLOW_TRACKING_PASSWORD"
ENDPOINT_PARAM = "endpoint_override"


class StoreUnavailable(ResetTuneError):
    """A store could not be opened; the message names it (credentials masked) and the fix."""


def optuna_storage_url(explicit: str | None) -> str | None:
    """The Optuna storage URL: the flag's, else $RESET_TUNE_OPTUNA_STORAGE, else None."""
    return explicit or os.environ.get(OPTUNA_STORAGE_ENV) or None


def tune_storage_uri(explicit: str | None, search_id: str | None = None) -> str | None:
    """Where Tune keeps trial files: the flag's, else $RESET_TUNE_TUNE_STORAGE, else None.

    With `search_id`, the search's own folder under it (every search names its segments
    segment-1, segment-2, ...: searches sharing a bucket must not share folders).
    """
    uri = explicit or os.environ.get(TUNE_STORAGE_ENV) or None
    if uri is None or search_id is None:
        return uri
    parts = urllib.parse.urlsplit(uri)
    if not parts.scheme:
        return str(Path(uri) / search_id)
    return urllib.parse.urlunsplit(parts._replace(path=f"{parts.path.rstrip('/')}/{search_id}"))


def recorded_storage(url: str) -> str:
    """The Optuna URL as a record may keep it: with its password masked."""
    return redact_uri(url)


def open_optuna_storage(recorded: str, given: str | None = None) -> optuna.storages.RDBStorage:
    """The study's database: `given` (flag or environment) or the recorded URL.

    A recorded URL whose password was masked cannot be opened; then the URL must be given
    again. Server databases get `pool_pre_ping` (a connection the database or a proxy closed
    while the search ran is replaced instead of failing the next trial's write).
    """
    import optuna

    url = given or recorded
    if MASK in urllib.parse.urlsplit(url).netloc:
        raise StoreUnavailable(
            f"the Optuna storage {url} needs its password: give the full URL with --storage or "
            f"${OPTUNA_STORAGE_ENV}"
        )
    engine_kwargs: dict[str, Any] = {}
    if not url.startswith("sqlite"):
        engine_kwargs["pool_pre_ping"] = True
    try:
        return optuna.storages.RDBStorage(url, engine_kwargs=engine_kwargs)
    except Exception as error:  # noqa: BLE001 - any driver/URL problem: one clear message
        raise StoreUnavailable(
            f"cannot open the Optuna storage {redact_uri(url)}: "
            f"{redact_text(_first_line(error))}; give a reachable database URL with --storage or "
            f"${OPTUNA_STORAGE_ENV} (sqlite:///FILE or postgresql://USER:PASSWORD@HOST/DB)"
        ) from None


def tune_run_storage(uri: str | None, default: Path) -> tuple[str, pyarrow.fs.FileSystem | None]:
    """Tune's `storage_path` and `storage_filesystem` for `uri` (None: the local `default`).

    `s3://bucket/prefix` gets an S3 filesystem with the endpoint override (from the URI's
    `?endpoint_override=` or the AWS endpoint variables) and the path without its scheme; other
    URIs go to Tune as they are. Credentials are never put into the filesystem object (Tune
    pickles it to every worker): each process reads them from its own environment.
    """
    if uri is None:
        return str(default), None
    parts = urllib.parse.urlsplit(uri)
    if parts.scheme != "s3":
        return uri, None
    if not parts.netloc:
        raise ConfigError(f"--tune-storage {redact_uri(uri)}: give a bucket, s3://BUCKET/PREFIX")
    query = dict(urllib.parse.parse_qsl(parts.query))
    endpoint = query.pop(ENDPOINT_PARAM, None) or _first_env(S3_ENDPOINT_ENVS)
    if query:
        raise ConfigError(
            f"--tune-storage {redact_uri(uri)}: unknown option(s) {', '.join(sorted(query))}; "
            f"only {ENDPOINT_PARAM}=URL is understood"
        )
    return f"{parts.netloc}{parts.path}".rstrip("/"), s3_filesystem(endpoint)


def s3_filesystem(endpoint: str | None) -> pyarrow.fs.FileSystem:
    """A pyarrow S3 filesystem for `endpoint` (None: AWS), credentials from the environment."""
    from pyarrow import fs

    kwargs: dict[str, Any] = {}
    region = _first_env(S3_REGION_ENVS)
    if region:
        kwargs["region"] = region
    if endpoint:
        parsed = urllib.parse.urlsplit(endpoint if "://" in endpoint else f"https://{endpoint}")
        if not parsed.hostname:
            raise ConfigError(f"S3 endpoint {redact_uri(endpoint)!r}: expected http(s)://HOST:PORT")
        kwargs["endpoint_override"] = parsed.netloc
        kwargs["scheme"] = parsed.scheme
        kwargs.setdefault("region", "us-east-1")  # S3-compatible servers ignore it; pyarrow asks
    return fs.S3FileSystem(**kwargs)


def _first_env(names: tuple[str, ...]) -> str | None:
    for name in names:
        if os.environ.get(name):
            return os.environ[name]
    return None


def mirror_tune_files(uri: str | None, default: Path, segment: str) -> int:
    """Copy a segment's Tune files from shared storage into `default / segment`; files copied.

    The search's record, report, `sync` and `--resume` read Tune's files (params.json,
    result.json, error.txt, experiment state) from the state directory; with `--tune-storage`
    Tune writes them elsewhere, so the driver mirrors them after each segment and before a
    resume. Checkpoints stay in the shared storage only (they can be large): an interrupted
    trial of a search on shared storage runs again from its start on `--resume`.
    """
    if uri is None:
        return 0
    from pyarrow import fs

    root, filesystem = tune_run_storage(uri, default)
    filesystem = filesystem or fs.LocalFileSystem()
    source = f"{root.rstrip('/')}/{segment}"
    if filesystem.get_file_info(source).type == fs.FileType.NotFound:
        return 0
    target = default / segment
    copied = 0
    for info in filesystem.get_file_info(fs.FileSelector(source, recursive=True)):
        relative = info.path[len(source) :].lstrip("/")
        if info.type != fs.FileType.File or any(
            part.startswith("checkpoint_") for part in relative.split("/")
        ):
            continue
        destination = target / relative
        destination.parent.mkdir(parents=True, exist_ok=True)
        with filesystem.open_input_stream(info.path) as stream:
            destination.write_bytes(stream.read())
        copied += 1
    return copied


def _first_line(error: BaseException) -> str:
    """SQLAlchemy appends a "(Background on this error at …)" line: keep the first only."""
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__
