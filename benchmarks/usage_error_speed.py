"""How long a usage error takes to answer, before and after issue 11, side by side in one run.

A usage error (`reset-tune train --steps -1`, `reset-tune search SPEC --address 127.0.0.1:1`) needs
no torch, Ray or MLflow; before the fix `train` imported torch before checking its settings and
`search` imported the driver (torch, Ray, Optuna, MLflow) before checking its addresses. Each
command runs as a fresh `python -m reset_tune.cli.main` process, alternating between the code of
`--before` (a commit, checked out into a temporary git worktree) and the working tree, `--repeats`
times each; the median and the range of wall-clock seconds are printed, and the ratio.

    python benchmarks/usage_error_speed.py                       # before = 7afcf99
    python benchmarks/usage_error_speed.py --before HEAD~20 --repeats 7

Measured on the 2-core development machine (x86_64, Python 3.11, CPU only, other jobs running),
n = 3 per cell: train --steps -1 5.76 s (5.19-6.45) before, 0.22 s (0.16-0.31) after, 27x;
search --address to a dead port 12.7 s (10.3-41.1) before, 0.86 s (0.71-1.18) after, 15x. The
figures vary with machine load, the ratio much less.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable, Iterator
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SPEC = "search_spaces/default.yaml"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def commands(port: int, state: str) -> dict[str, list[str]]:
    return {
        "train --steps -1": ["train", "--steps", "-1"],
        "search --address (nothing listens)": [
            "search",
            str(REPO / SPEC),
            "--address",
            f"127.0.0.1:{port}",
            "--state-dir",
            state,
        ],
    }


def time_command(tree: Path, argv: list[str], cwd: str) -> tuple[float, int, str]:
    env = {**os.environ, "PYTHONPATH": str(tree)}
    for name in ("RAY_ADDRESS", "MLFLOW_TRACKING_URI", "RESET_TUNE_STATE_DIR"):
        env.pop(name, None)
    started = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-m", "reset_tune.cli.main", *argv],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    elapsed = time.perf_counter() - started
    return elapsed, done.returncode, done.stderr.strip().splitlines()[-1:][0] if done.stderr else ""


@contextlib.contextmanager
def before_worktree(commit: str, scratch: Path) -> Iterator[Path]:
    """`commit` checked out into a temporary git worktree under `scratch`, removed afterwards."""
    tree = scratch / "before"
    subprocess.run(
        ["git", "-C", str(REPO), "worktree", "add", "--detach", str(tree), commit],
        check=True,
        capture_output=True,
    )
    try:
        yield tree
    finally:
        subprocess.run(
            ["git", "-C", str(REPO), "worktree", "remove", "--force", str(tree)],
            capture_output=True,
        )


def print_before_after(
    results: dict[tuple[str, str], list[float]],
    last: dict[tuple[str, str], str],
    names: Iterable[str],
    repeats: int,
) -> None:
    """Per command: median and range of seconds before and after, the last answer, the ratio."""
    names = list(names)
    width = max(len(name) for name in names) + 2
    print(f"python {sys.version.split()[0]}, {os.cpu_count()} CPUs, n = {repeats} per cell")
    print(f"{'command':<{width}} {'code':<7} {'median s':>9} {'min-max s':>13}  answer")
    for name in names:
        medians = {}
        for label in ("before", "after"):
            times = results[(name, label)]
            medians[label] = statistics.median(times)
            print(
                f"{name:<{width}} {label:<7} {medians[label]:>9.2f} "
                f"{min(times):>6.2f}-{max(times):<6.2f}  {last[(name, label)]}"
            )
        saved = medians["before"] - medians["after"]
        ratio = medians["before"] / medians["after"]
        print(f"{'':<{width}} ratio   {ratio:>9.2f}x ({saved:+.2f} s saved)")


def _stop_local_server(state: Path) -> None:
    from reset_tune.tracking.server import find_local_server

    server = find_local_server(state / "mlflow")
    if server is not None:
        server.stop()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--before", default="7afcf99", help="commit of the 'before' code")
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="rt-usage-") as scratch:
        state = Path(scratch) / "state"
        try:
            with before_worktree(args.before, Path(scratch)) as before:
                trees = {"before": before, "after": REPO}
                port = _free_port()  # nothing listens there
                results: dict[tuple[str, str], list[float]] = {}
                last: dict[tuple[str, str], str] = {}
                for _ in range(args.repeats):
                    for name, argv in commands(port, str(state)).items():
                        for label, tree in trees.items():
                            seconds, code, line = time_command(tree, argv, scratch)
                            results.setdefault((name, label), []).append(seconds)
                            last[(name, label)] = f"exit {code}: {line[:90]}"
        finally:
            # The old `search` started an MLflow server before it checked the address (the
            # bug measured here): stop it by its recorded process id.
            _stop_local_server(state)

    print_before_after(results, last, commands(0, "").keys(), args.repeats)
    return 0


if __name__ == "__main__":
    sys.exit(main())
