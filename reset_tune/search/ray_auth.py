"""How clients and the local Ray head authenticate: RAY_AUTH_MODE and the loopback-only switch.

Ray 2.60 turns token authentication on by default for a fresh `ray.init()` (which writes
~/.ray/auth_token), while `ray start --head` turns it on only when a token already exists, and
clients must agree with the cluster (docs/architecture.md §8). So the mode is set explicitly: the
local stack (`reset_tune.search.cluster`) runs with RAY_AUTH_MODE=disabled unless the user set it.
That is only safe because every port of the stack is bound to the loopback interface — and Ray does
not do that by itself: `--node-ip-address=127.0.0.1` is rewritten to the machine's routable address
and the GCS, raylet and object manager listen on all interfaces. With
RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0 (Ray's "single-node cluster" switch; it also refuses `ray start
--address` of a second node) the node's address is 127.0.0.1 and every Ray port listens on 127.0.0.1
only. The head gets both variables (`head_environment`).
"""

from __future__ import annotations

import os
import sys
import urllib.parse
from collections.abc import Mapping
from pathlib import Path

AUTH_MODE_ENV = "RAY_AUTH_MODE"
AUTH_TOKEN_ENV = "RAY_AUTH_TOKEN"
AUTH_TOKEN_PATH_ENV = "RAY_AUTH_TOKEN_PATH"
# Ray's switch for "no multi-node clusters": the node address becomes 127.0.0.1 and every port
# (GCS, raylet, object manager, agents) binds to it instead of all interfaces.
LOOPBACK_ONLY_ENV = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"
LOOPBACK_HOSTS = frozenset({"127.0.0.1", "localhost", "::1"})


def address_host(address: str) -> str | None:
    """The host of a Ray address (`h:p`, `http://h:p`, `ray://h:p`); None for `auto`."""
    if not address or address == "auto":
        return None
    parsed = urllib.parse.urlsplit(address if "://" in address else f"//{address}")
    return parsed.hostname


def is_loopback_address(address: str | None) -> bool:
    """True for no address (a cluster started here) and for addresses on 127.0.0.0/8, localhost."""
    if address is None:
        return True
    host = address_host(address)
    return host is not None and (host in LOOPBACK_HOSTS or host.startswith("127."))


def ensure_auth_mode(address: str | None) -> None:
    """Set RAY_AUTH_MODE explicitly (in `os.environ`) for talking to the cluster at `address`.

    - The user set it: respected, nothing changes.
    - `address` is None (Ray will be started here) or on loopback (the local stack): `disabled`.
      The local stack binds loopback only and runs with `disabled` (see the module docstring); for
      address None, RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0 is set too (unless the user set it), so
      that a cluster `ray.init()` starts binds loopback only as well.
    - A remote address: left to Ray, except that when a token is at hand (RAY_AUTH_TOKEN,
      RAY_AUTH_TOKEN_PATH or ~/.ray/auth_token) the mode becomes `token`. `ray.init(address=...)`
      does that by itself, but the Jobs API client (`JobSubmissionClient`) sends the token only
      when the mode is `token`.

    Ray reads the mode once per process (its cached config); when Ray is imported but not
    initialised, the cache is refreshed here. Call this before `ray.init()`.
    """
    if os.environ.get(AUTH_MODE_ENV):
        return
    if is_loopback_address(address):
        if address is None:
            os.environ.setdefault(LOOPBACK_ONLY_ENV, "0")
            if os.environ[LOOPBACK_ONLY_ENV].lower() not in ("0", "false"):
                return  # the user wants a multi-node cluster: Ray's default (token) stays
            _loopback_only_in_process()
        os.environ[AUTH_MODE_ENV] = "disabled"
    elif _token_available():
        os.environ[AUTH_MODE_ENV] = "token"
    else:
        return
    _refresh_ray_config()


def join_local_stack() -> None:
    """Prepare this process to connect to the stack of `reset-tune up` (call before `ray.init`).

    The stack's head runs with RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0, so it listens on 127.0.0.1
    only; a driver without that setting would look for it at the machine's routable address and
    never reach it. Auth follows `ensure_auth_mode` (disabled on loopback, unless set).
    """
    if os.environ.get(LOOPBACK_ONLY_ENV, "0").lower() in ("0", "false"):
        os.environ[LOOPBACK_ONLY_ENV] = "0"
        _loopback_only_in_process()
    ensure_auth_mode("127.0.0.1")


def head_listens_on_loopback_only(address: str, timeout_s: float = 5.0) -> bool | None:
    """Whether the Ray head at `address` runs loopback-only (its node address is 127.0.0.1, as
    the local stack's is, whichever state directory started it); None when the GCS cannot be
    asked. A driver joining such a head needs `join_local_stack`, else Ray dials the machine's
    routable address and hangs for minutes."""
    try:
        import ray._raylet

        # A compiled class the type stubs of `ray._raylet` do not declare.
        client = vars(ray._raylet)["GcsClient"](address=address)
        nodes = client.get_all_node_info(timeout=timeout_s).values()
        addresses = {n.node_manager_address for n in nodes if n.is_head_node}
    except Exception:  # noqa: BLE001 - an old head, a refused call: the caller decides without
        return None
    if not addresses:
        return None
    return all(a.startswith("127.") or a in LOOPBACK_HOSTS for a in addresses)


def head_environment(base: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment of the local Ray head (and so of every job and worker it starts)."""
    env = dict(os.environ if base is None else base)
    env.pop("RAY_ADDRESS", None)  # a job's driver must connect to this head, whatever the shell had
    if not env.get(AUTH_MODE_ENV):
        env[AUTH_MODE_ENV] = "disabled"
    env[LOOPBACK_ONLY_ENV] = "0"
    env["RAY_USAGE_STATS_ENABLED"] = "0"
    # A job's entrypoint says `python`: make that this interpreter, with reset-tune's packages.
    bindir = str(Path(sys.executable).parent)
    env["PATH"] = os.pathsep.join(
        [bindir, *[p for p in env.get("PATH", "").split(os.pathsep) if p]]
    )
    return env


def _token_available() -> bool:
    if os.environ.get(AUTH_TOKEN_ENV):
        return True
    path = os.environ.get(AUTH_TOKEN_PATH_ENV)
    if path:
        return Path(path).expanduser().is_file()
    return (Path.home() / ".ray" / "auth_token").is_file()


def _refresh_ray_config() -> None:
    """Make an already imported Ray see the new RAY_AUTH_MODE (it caches its config)."""
    raylet = sys.modules.get("ray._raylet")  # looked up, not imported: Ray may not be loaded
    if raylet is None:
        return
    import ray

    if not ray.is_initialized():
        # `Config` is a compiled class the type stubs of `ray._raylet` do not declare.
        raylet.Config.initialize("")


def _loopback_only_in_process() -> None:
    """RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER is read when Ray is imported; follow a later change."""
    constants = sys.modules.get("ray._private.ray_constants")
    if constants is not None:
        # Through the module's namespace: the constant is a plain global Ray reads at use.
        vars(constants)["ENABLE_RAY_CLUSTER"] = False
