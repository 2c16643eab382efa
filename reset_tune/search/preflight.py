"""The checks a search passes before anything is created: no search record, Optuna study, MLflow
run or Tune folder exists until the arguments, the Ray address, the Optuna storage, the Tune
storage, the tracking URI and the state directory have been checked (the data are prepared next,
also before anything is created: `reset_tune.search.driver.run_search`).

`check_arguments` is the one set of argument checks `reset_tune.search.run` and `reset-tune
search` share, so both say the same thing about the same mistake. A malformed value is a
`ConfigError` (exit 2); a well-formed one that does not answer (nothing listens at the Ray address,
the database refuses) is a `SearchFailed` (exit 1). Every URI in a message is masked (`redact`).
"""

from __future__ import annotations

import os
import socket
from pathlib import Path

from reset_tune.errors import ConfigError, ResetTuneError
from reset_tune.output_dirs import check_output_dir
from reset_tune.redact import redact_text, redact_uri


class SearchFailed(ResetTuneError):
    """The search could not run (cluster, storage); the message says what and how to fix it."""


def check_arguments(
    spec_path: object,
    *,
    resume: bool,
    search_id: str | None,
    trials: object,
    max_failures: object,
    checkpoint_every: object,
    report_interval_s: object = 0.0,
) -> None:
    """The arguments of a search, each named by its keyword and its command-line flag."""
    if spec_path is not None and not isinstance(spec_path, str | os.PathLike):
        raise ConfigError(
            f"spec_path must be the path of a search spec file, got {type(spec_path).__name__}"
        )
    if spec_path is None and not resume:
        raise ConfigError("give a search spec file, e.g. search_spaces/default.yaml")
    if spec_path is not None:
        path = Path(spec_path)
        if path.is_dir():
            raise ConfigError(f"{os.fspath(spec_path)}: is a directory, not a search spec file")
        if not path.is_file():
            raise ConfigError(f"{os.fspath(spec_path)}: no such spec file")
    if search_id is not None and not resume:
        raise ConfigError("search_id names the search to resume; pass resume=True with it")
    for name, value, minimum in (
        ("trials", trials, 1),
        ("max_failures", max_failures, 0),
        ("checkpoint_every", checkpoint_every, 1),
    ):
        flag = "--" + name.replace("_", "-")
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{name} must be an integer, got {value!r} ({flag})")
        if value < minimum:
            raise ConfigError(f"{name} must be at least {minimum}, got {value} ({flag})")
    if not (isinstance(report_interval_s, int | float) and report_interval_s >= 0):
        raise ConfigError(f"report_interval_s must be at least 0, got {report_interval_s!r}")


def check_services(
    state: Path,
    *,
    address: str | None,
    storage: str | None,
    tune_storage: str | None,
    mlflow_uri: str | None,
    tracking_given: bool = False,
    new_search: bool = True,
) -> None:
    """Every folder, store and service a search needs, checked before anything is created:
    the state directory, the Ray cluster, the Optuna storage, the Tune storage and the tracking
    URI (each from its flag or, where it has one, its environment variable)."""
    from reset_tune.search import stores
    from reset_tune.state import optuna_storage_url
    from reset_tune.tracking.names import TRACKING_URI_ENV

    check_state_dir(state)
    target = ray_target(address, state)
    if target:
        check_ray_address(target)
    given = stores.optuna_storage_url(storage)
    if given is not None:
        check_optuna_storage(given, explicit=True)
    elif new_search:
        check_optuna_storage(optuna_storage_url(state), explicit=False)
    location = stores.tune_storage_uri(tune_storage)
    if location is not None:
        check_tune_storage(location)
    if not tracking_given:
        uri = mlflow_uri or os.environ.get(TRACKING_URI_ENV)
        if uri:
            option = "--mlflow-uri" if mlflow_uri else "$" + TRACKING_URI_ENV
            check_tracking_uri(uri, option=option)


def check_state_dir(state: Path) -> None:
    """The state directory is (or can be created as) a writable folder."""
    check_output_dir(state, option="--state-dir")


# -- the Ray cluster -----------------------------------------------------------------------------
def ray_target(address: str | None, state: Path) -> str | None:
    """The cluster a search joins: `address`, $RAY_ADDRESS, the state directory's stack (`reset-tune
    up`), or None (a local instance started for the search)."""
    from reset_tune.search.cluster import find_local_stack

    target = address or os.environ.get("RAY_ADDRESS") or None
    if target is None:
        stack = find_local_stack(state)
        if stack is not None:
            target = stack.gcs_address
    return target


def check_ray_address(address: str, timeout_s: float = 5.0) -> None:
    """Fail in seconds, with the fix, when `address` is malformed or nothing listens there (Ray
    would retry for many minutes). `auto` and `ray://` addresses are left to Ray."""
    if address == "auto" or address.startswith("ray://"):
        return
    shown = redact_uri(address)
    hostport = address.split("://", 1)[1] if "://" in address else address
    host, colon, port = hostport.rstrip("/").rpartition(":")
    host = host.strip("[]")
    if not colon or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ConfigError(
            f"--address {shown!r} is not a Ray address; give HOST:PORT of the head's GCS (e.g. "
            "127.0.0.1:6379), or leave --address and RAY_ADDRESS unset to use a local cluster"
        )
    try:
        with socket.create_connection((host, int(port)), timeout=timeout_s):
            return
    except OSError as error:
        reason = error.strerror or str(error) or type(error).__name__
        raise SearchFailed(
            f"no Ray cluster answers at {shown} ({reason}); start one (`reset-tune up`, "
            "`ray start --head`), fix --address / RAY_ADDRESS, or leave both unset to use a "
            "local Ray instance"
        ) from None


# -- the Optuna storage --------------------------------------------------------------------------
def check_optuna_storage(url: str, *, explicit: bool, timeout_s: float = 10.0) -> None:
    """`url` is a database URL SQLAlchemy can open and connect to (a SQLite file's folder must
    be writable). Creates no table and no study."""
    import sqlalchemy
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError, NoSuchModuleError

    shown = redact_uri(url)
    advice = "give a database URL with --storage (sqlite:///FILE or postgresql://USER@HOST/DB)"
    try:
        parsed = make_url(url)
    except (ArgumentError, ValueError) as error:
        raise ConfigError(
            f"--storage {shown!r} is not a database URL ({error}); {advice}"
        ) from None
    if parsed.get_backend_name() == "sqlite":
        database = parsed.database or ""
        if database in ("", ":memory:"):
            raise ConfigError(
                f"--storage {shown!r} keeps the study in memory, so it is lost when the search "
                f"ends and --resume cannot find it; {advice}"
            )
        where = Path(database)
        if where.is_dir():
            raise ConfigError(f"--storage {shown!r}: {where} is a directory, not a database file")
        option = "--storage" if explicit else "--state-dir"
        if explicit and not where.parent.is_dir():
            # SQLite creates the file, never its folder.
            raise ConfigError(
                f"--storage {shown!r}: the folder {where.parent} does not exist; create it or "
                "give another file"
            )
        check_output_dir(where.parent, option=option)
        return
    # Drivers written in C (psycopg2, mysqlclient) ignore Python's socket timeout: their own
    # connect_timeout bounds the wait on a host that does not answer.
    connect_args = (
        {"connect_timeout": max(1, int(timeout_s))}
        if parsed.get_backend_name() in ("postgresql", "mysql", "mariadb")
        else {}
    )
    try:
        engine = sqlalchemy.create_engine(url, pool_pre_ping=False, connect_args=connect_args)
    except NoSuchModuleError:
        raise ConfigError(
            f"--storage {shown!r}: unknown kind of database {parsed.drivername!r}; {advice}"
        ) from None
    except ImportError as error:
        raise ConfigError(
            f"--storage {shown!r}: its database driver is not installed ({error}); install it "
            "(e.g. `pip install psycopg2-binary` for postgresql://)"
        ) from None
    except (ArgumentError, ValueError, TypeError) as error:
        raise ConfigError(f"--storage {shown!r}: {error}; {advice}") from None
    try:
        with _deadline(timeout_s), engine.connect():
            pass
    except Exception as error:  # noqa: BLE001 - any driver's refusal: one line with the reason
        reason = redact_text(str(error).splitlines()[0] if str(error) else type(error).__name__)
        raise SearchFailed(
            f"cannot connect to the Optuna storage {shown} ({reason}); check that the database "
            "runs and the URL, or leave --storage out to use the state directory's SQLite file"
        ) from None
    finally:
        engine.dispose()


class _deadline:
    """A connection attempt that gives up after `timeout_s` (drivers may wait for minutes)."""

    def __init__(self, timeout_s: float) -> None:
        self.timeout_s = timeout_s
        self.saved: float | None = None

    def __enter__(self) -> None:
        self.saved = socket.getdefaulttimeout()
        socket.setdefaulttimeout(self.timeout_s)

    def __exit__(self, *exc: object) -> None:
        socket.setdefaulttimeout(self.saved)


# -- the Tune storage ----------------------------------------------------------------------------
def check_tune_storage(location: str) -> None:
    """A local `--tune-storage` is a writable folder; a remote one (s3://...) a URI pyarrow
    can open."""
    shown = redact_uri(location)
    if "://" in location and not location.startswith("file://"):
        try:
            import pyarrow.fs

            pyarrow.fs.FileSystem.from_uri(location)
        except Exception as error:  # noqa: BLE001 - pyarrow raises several kinds: one line
            reason = redact_text(str(error).splitlines()[0] if str(error) else repr(error))
            raise ConfigError(
                f"--tune-storage {shown!r}: not a storage location Ray Tune can use ({reason}); "
                "give a folder every node can reach (NFS) or s3://BUCKET/PATH"
            ) from None
        return
    path = location.removeprefix("file://")
    if not path:
        raise ConfigError("--tune-storage is empty; give a folder, or leave it out")
    check_output_dir(path, option="--tune-storage")


# -- the tracking URI ----------------------------------------------------------------------------
# Schemes MLflow can track to; anything else (a word such as `notaurl`) is a typo, not a store.
TRACKING_SCHEMES = frozenset(
    {"http", "https", "file", "sqlite", "postgresql", "mysql", "mssql", "databricks", "uc"}
)


def check_tracking_uri(uri: str, *, option: str = "--mlflow-uri") -> None:
    """`uri` is an http(s) URL with a host, a database URI, or a folder path (with a `/`)."""
    shown = redact_uri(uri)
    advice = "give http://HOST:PORT of an MLflow server, or a folder such as ./mlruns"
    scheme = uri.split("://", 1)[0].split("+", 1)[0].lower() if "://" in uri else ""
    if scheme:
        if scheme not in TRACKING_SCHEMES:
            raise ConfigError(f"{option} {shown!r}: unknown scheme {scheme!r}; {advice}")
        if scheme in ("http", "https"):
            from urllib.parse import urlsplit

            try:
                parts = urlsplit(uri)
                port = parts.port  # raises on a port that is not a number
            except ValueError as error:
                raise ConfigError(f"{option} {shown!r}: {error}; {advice}") from None
            if not parts.hostname:
                raise ConfigError(f"{option} {shown!r}: no host; {advice}")
            del port
        elif scheme == "file":
            check_output_dir(uri.removeprefix("file://"), option=option)
        return
    if uri in ("databricks", "databricks-uc"):
        return
    if os.sep not in uri and not uri.startswith("~"):
        raise ConfigError(f"{option} {shown!r} is neither a URL nor a folder path; {advice}")
    check_output_dir(uri, option=option)
