"""`reset-tune train` never loses a finished result: a plot that cannot be written is a warning
beside a whole result.json, and output folders are checked before any training."""

from __future__ import annotations

import json

import pytest

import reset_tune.plots
from reset_tune.cli.main import main

TINY = ["train", "--dataset", "digits", "--model", "mlp", "--steps", "20", "--eval-every", "10"]


def test_a_failing_plot_keeps_the_result(tmp_path, monkeypatch, capsys):
    def broken_plot(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(reset_tune.plots, "write_curves", broken_plot)
    out = tmp_path / "run"
    assert main([*TINY, "--quiet", "--out", str(out)]) == 0
    captured = capsys.readouterr()
    result = json.loads((out / "result.json").read_text())
    assert result["steps_completed"] == 20
    assert not (out / "curves.png").exists()
    assert "could not write" in captured.err and "result.json" in captured.err
    assert "Traceback" not in captured.err
    assert f"wrote {out / 'result.json'}" in captured.out


@pytest.mark.parametrize("make_out", ["file", "curves-folder"])
def test_an_unusable_out_folder_fails_before_torch_is_imported(make_out, tmp_path, capsys):
    import sys

    out = tmp_path / "out"
    if make_out == "file":
        out.write_text("not a folder")
    else:
        (out / "curves.png").mkdir(parents=True)
    loaded_before = "reset_tune.engine.loop" in sys.modules
    assert main([*TINY, "--out", str(out)]) == 2
    assert "--out" in capsys.readouterr().err
    if not loaded_before:  # in a fresh process the engine (and torch) are never imported
        assert "reset_tune.engine.loop" not in sys.modules
