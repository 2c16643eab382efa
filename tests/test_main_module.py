"""`python -m reset_tune` is the `reset-tune` command."""

from __future__ import annotations

import subprocess
import sys

import pytest


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


def test_the_script_exits_with_mains_code_and_leaves_the_exit_collection_nothing_to_walk(
    monkeypatch, capsys
):
    import gc

    from reset_tune.cli.main import console_main

    monkeypatch.setattr(sys, "argv", ["reset-tune", "train", "--steps", "-1"])
    assert gc.get_freeze_count() == 0
    try:
        with pytest.raises(SystemExit) as exited:
            console_main()
        assert exited.value.code == 2  # main's usage-error code, passed through
        assert "steps must be" in capsys.readouterr().err
        assert gc.get_freeze_count() > 0
    finally:
        gc.unfreeze()
