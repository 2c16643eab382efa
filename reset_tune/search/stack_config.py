"""Settings of the local stack that `reset-tune up` starts (a Ray head and an MLflow server).

The built-in defaults are written out in `deploy/local/stack.yaml` (a test keeps the two equal);
`reset-tune up --config FILE` reads a file of the same shape, where every key is optional::

    host: 127.0.0.1
    ray:
      num_cpus: null              # null: what Ray detects
      num_gpus: null
      object_store_memory: 1GB    # bytes, or a size such as 500MB, 2GiB
      memory: null                # memory for tasks and actors; null: Ray's default
      port: null                  # GCS port; null: a free one
      dashboard_port: null        # dashboard and Ray Jobs API port; null: a free one
      temp_dir: auto              # auto | default | a folder
      start_timeout_s: 120
      stop_timeout_s: 45
    mlflow:
      enabled: true
      port: null
      start_timeout_s: 90

Every problem is a `ConfigError` naming the file and the key.
"""

from __future__ import annotations

import dataclasses
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from reset_tune.errors import ConfigError

# The local stack runs Ray without token authentication (see ray_auth.py), which is only safe while
# every port of it is bound to the loopback interface.
LOOPBACK_HOSTS = ("127.0.0.1", "localhost")
TEMP_DIR_CHOICES = ("auto", "default")

_UNITS = {
    "": 1,
    "b": 1,
    "kb": 10**3,
    "mb": 10**6,
    "gb": 10**9,
    "tb": 10**12,
    "kib": 2**10,
    "mib": 2**20,
    "gib": 2**30,
    "tib": 2**40,
    "k": 10**3,
    "m": 10**6,
    "g": 10**9,
}
_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([a-zA-Z]*)\s*$")


@dataclass(frozen=True)
class StackConfig:
    host: str = "127.0.0.1"
    # ray
    num_cpus: int | None = None
    num_gpus: int | None = None
    object_store_memory: int | None = 10**9
    memory: int | None = None
    ray_port: int | None = None
    dashboard_port: int | None = None
    temp_dir: str = "auto"
    start_timeout_s: float = 120.0
    stop_timeout_s: float = 45.0
    # mlflow
    mlflow: bool = True
    mlflow_port: int | None = None
    mlflow_timeout_s: float = 90.0

    def replace(self, **changes: Any) -> StackConfig:
        return dataclasses.replace(self, **changes)


# (section, key) -> (StackConfig field, parser). Section "" is the top level.
def _int(minimum: int) -> Any:
    def parse(value: Any) -> int | None:
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
            raise ValueError(f"must be an integer >= {minimum} or null, got {value!r}")
        return value

    return parse


def _port(value: Any) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not 1024 <= value <= 65535:
        raise ValueError(f"must be a port number 1024-65535 or null (a free one), got {value!r}")
    return value


def _seconds(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
        raise ValueError(f"must be a number of seconds > 0, got {value!r}")
    return float(value)


def _bool(value: Any) -> bool:
    if not isinstance(value, bool):
        raise ValueError(f"must be true or false, got {value!r}")
    return value


def _host(value: Any) -> str:
    if value not in LOOPBACK_HOSTS:
        raise ValueError(
            f"must be 127.0.0.1, got {value!r}: the local stack runs Ray without token "
            "authentication, which is only safe on the loopback interface; for a cluster of "
            "several machines start Ray there (ray start) and pass its dashboard to --address"
        )
    return "127.0.0.1"


def _temp_dir(value: Any) -> str:
    if not isinstance(value, str) or not value:
        raise ValueError(
            f"must be {' | '.join(TEMP_DIR_CHOICES)} or a folder, got {value!r} (auto: "
            "<state dir>/ray/tmp when Ray's socket paths fit in it, else Ray's default)"
        )
    return value


def parse_size(value: Any) -> int | None:
    """Bytes from an int or a size such as '100MB', '1.5GB', '512MiB'; None stays None."""
    if value is None:
        return None
    if isinstance(value, bool):
        raise ValueError(f"must be a size in bytes (e.g. 1GB, 500MB) or null, got {value!r}")
    if isinstance(value, int):
        number, unit = float(value), ""
    else:
        match = _SIZE.match(str(value))
        if not match or match.group(2).lower() not in _UNITS:
            raise ValueError(
                f"must be a size in bytes (e.g. 1GB, 500MB, 512MiB) or null, got {value!r}"
            )
        number, unit = float(match.group(1)), match.group(2).lower()
    size = int(number * _UNITS[unit])
    if size < 78 * 2**20:
        raise ValueError(f"must be at least 78MiB (Ray's minimum object store), got {value!r}")
    return size


def _size(value: Any) -> int | None:
    return parse_size(value)


_KEYS: dict[str, dict[str, tuple[str, Any]]] = {
    "": {"host": ("host", _host)},
    "ray": {
        "num_cpus": ("num_cpus", _int(0)),
        "num_gpus": ("num_gpus", _int(0)),
        "object_store_memory": ("object_store_memory", _size),
        "memory": ("memory", _size),
        "port": ("ray_port", _port),
        "dashboard_port": ("dashboard_port", _port),
        "temp_dir": ("temp_dir", _temp_dir),
        "start_timeout_s": ("start_timeout_s", _seconds),
        "stop_timeout_s": ("stop_timeout_s", _seconds),
    },
    "mlflow": {
        "enabled": ("mlflow", _bool),
        "port": ("mlflow_port", _port),
        "start_timeout_s": ("mlflow_timeout_s", _seconds),
    },
}
_SECTIONS = tuple(name for name in _KEYS if name)


def stack_config_from_dict(values: Mapping[str, Any], source: str = "stack config") -> StackConfig:
    """Validate a mapping shaped like `deploy/local/stack.yaml`; unknown keys are errors."""
    if not isinstance(values, Mapping):
        raise ConfigError(f"{source}: must hold a mapping of settings, got {values!r}")
    changes: dict[str, Any] = {}
    problems: list[str] = []
    top_allowed = sorted([*_KEYS[""], *_SECTIONS])
    for key, value in values.items():
        if key in _SECTIONS:
            if value is None:
                continue
            if not isinstance(value, Mapping):
                problems.append(f"{source}: {key}: must be a mapping of settings, got {value!r}")
                continue
            for sub, sub_value in value.items():
                if sub in _KEYS[key]:
                    _take(source, f"{key}.{sub}", _KEYS[key][sub], sub_value, changes, problems)
                else:
                    allowed = ", ".join(_KEYS[key])
                    problems.append(f"{source}: {key}.{sub}: unknown key; allowed: {allowed}")
        elif key in _KEYS[""]:
            _take(source, str(key), _KEYS[""][key], value, changes, problems)
        else:
            problems.append(f"{source}: {key}: unknown key; allowed: {', '.join(top_allowed)}")
    if problems:
        raise ConfigError("\n".join(problems))
    return StackConfig(**changes)


def _take(
    source: str,
    path: str,
    entry: tuple[str, Any],
    value: Any,
    changes: dict[str, Any],
    problems: list[str],
) -> None:
    field, parse = entry
    try:
        changes[field] = parse(value)
    except ValueError as error:
        problems.append(f"{source}: {path}: {error}")


def load_stack_config(path: str | os.PathLike | None) -> StackConfig:
    """The built-in defaults, or a YAML file's settings over them."""
    if path is None:
        return StackConfig()
    from reset_tune.yaml_files import read_yaml_file

    loaded = read_yaml_file(path, "--config file")
    return stack_config_from_dict(loaded or {}, source=os.fspath(path))


def with_overrides(
    config: StackConfig,
    *,
    num_cpus: Any = None,
    num_gpus: Any = None,
    object_store_memory: Any = None,
) -> StackConfig:
    """`config` with command-line values (None: keep), checked like the file's."""
    changes: dict[str, Any] = {}
    problems: list[str] = []
    for option, field, value, parse in (
        ("--num-cpus", "num_cpus", num_cpus, _int(0)),
        ("--num-gpus", "num_gpus", num_gpus, _int(0)),
        ("--object-store-memory", "object_store_memory", object_store_memory, _size),
    ):
        if value is None:
            continue
        try:
            changes[field] = parse(value)
        except ValueError as error:
            problems.append(f"{option}: {error}")
    if problems:
        raise ConfigError("; ".join(problems))
    return config.replace(**changes)
