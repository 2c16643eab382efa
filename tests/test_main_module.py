"""`python -m reset_tune` is the `reset-tune` command."""

from __future__ import annotations

import subprocess
import sys


def test_python_dash_m_runs_the_cli_and_passes_its_exit_code_through():
    shown = subprocess.run(
        [sys.executable, "-m", "reset_tune", "--help"], capture_output=True, text=True, timeout=120
    )
    assert shown.returncode == 0, shown.stderr
    assert "train" in shown.stdout and "search" in shown.stdout
    refused = subprocess.run(
        [sys.executable, "-m", "reset_tune", "no-such-command"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert refused.returncode == 2  # argparse's usage error, not 0
