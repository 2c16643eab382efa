"""`reset-tune train` from the outside: help, bad input, and an end-to-end run on digits."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
from pathlib import Path

import pytest

from reset_tune.cli.main import main
from reset_tune.config import TrainConfig


def reset_tune_cmd(*args: str) -> subprocess.CompletedProcess:
    script = Path(sys.executable).parent / "reset-tune"
    command = [str(script)] if script.exists() else [sys.executable, "-m", "reset_tune.cli.main"]
    return subprocess.run([*command, *args], capture_output=True, text=True, timeout=600)


def test_help_documents_every_setting(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["train", "--help"])
    assert exit_info.value.code == 0
    text = capsys.readouterr().out
    for field in dataclasses.fields(TrainConfig):
        assert "--" + field.name.replace("_", "-") in text, field.name
    for option in ("--baseline", "--json", "--out", "--config"):
        assert option in text


@pytest.mark.parametrize(
    "args, fragment",
    [
        (["--reset-prob", "1.5"], "reset_prob"),
        (["--noise", "gaussian:0.2"], "gaussian"),
        (["--noise", "symmetric:1.4"], "1.4"),
        (["--dataset", "imagenet"], "imagenet"),
        (["--model", "resnet50"], "resnet50"),
        (["--reset-layers", "layer9", "--reset-prob", "0.1"], "layer9"),
        (["--steps", "0"], "steps"),
        (["--batch-size", "100000"], "batch_size"),
        (["--lr", "abc"], "--lr"),
        (["--frobnicate"], "--frobnicate"),
        (["--config", "/nonexistent/spec.yaml"], "/nonexistent/spec.yaml"),
        (["--baseline", "--reset-prob", "0"], "--reset-prob"),
        (["--dataset", "cifar10", "--data-root", "/nonexistent"], "/nonexistent"),
    ],
)
def test_bad_input_is_one_line_exit_2_and_writes_nothing(args, fragment, tmp_path, capsys):
    out = tmp_path / "out"
    with pytest.raises(SystemExit) as exit_info:
        code = main(["train", "--steps", "20", "--eval-every", "10", "--out", str(out), *args])
        raise SystemExit(code)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    assert fragment in err
    assert "Traceback" not in err
    assert not out.exists()


def test_config_file_unknown_key_is_named(tmp_path, capsys):
    spec = tmp_path / "run.yaml"
    spec.write_text("dataset: digits\nreset_probability: 0.1\n")
    assert main(["train", "--config", str(spec)]) == 2
    err = capsys.readouterr().err
    assert "reset_probability" in err and "reset_prob" in err and str(spec) in err


@pytest.mark.integration
def test_end_to_end_baseline_and_resetting_on_digits(tmp_path):
    out = tmp_path / "run"
    done = reset_tune_cmd(
        "train",
        "--dataset",
        "digits",
        "--noise",
        "symmetric:0.4",
        "--model",
        "mlp",
        "--steps",
        "200",
        "--eval-every",
        "25",
        "--patience",
        "25",
        "--reset-prob",
        "0.05",
        "--baseline",
        "--seed",
        "3",
        "--device",
        "cpu",
        "--out",
        str(out),
        "--json",
    )
    assert done.returncode == 0, done.stderr
    payload = json.loads(done.stdout)
    assert set(payload) == {"resetting", "baseline", "test_acc_difference"}
    resetting, baseline = payload["resetting"], payload["baseline"]
    assert resetting["config"]["reset_prob"] == 0.05 and baseline["config"]["reset_prob"] == 0.0
    assert resetting["config"]["seed"] == baseline["config"]["seed"] == 3
    assert baseline["num_resets"] == 0 and resetting["num_resets"] > 0
    assert payload["test_acc_difference"] == pytest.approx(
        resetting["test_acc"] - baseline["test_acc"]
    )
    assert json.loads((out / "result.json").read_text()) == payload
    for run in (resetting, baseline):  # the label-free onset, or None: the key is always there
        assert "memorisation_step" in run
        onset = run["memorisation_step"]
        assert onset is None or any(h["step"] == onset for h in run["history"])
        assert all("train/memorisation_gap" in h for h in run["history"])
    # In --json mode the memorisation verdicts go to stderr, the r = 0 run's first.
    verdicts = [
        line
        for line in done.stderr.splitlines()
        if line.startswith(("baseline (r=0):", "resetting:"))
    ]
    assert [v.split(":")[0] for v in verdicts] == ["baseline (r=0)", "resetting"]
    png = (out / "curves.png").read_bytes()
    assert png.startswith(b"\x89PNG") and len(png) > 10_000
    assert "step" in done.stderr  # progress went to stderr, the JSON alone to stdout


def test_rerun_from_a_result_json(tmp_path):
    first = tmp_path / "first"
    assert (
        main(
            [
                "train",
                "--model",
                "mlp",
                "--steps",
                "40",
                "--eval-every",
                "20",
                "--quiet",
                "--out",
                str(first),
            ]
        )
        == 0
    )
    again = tmp_path / "again"
    assert (
        main(["train", "--config", str(first / "result.json"), "--quiet", "--out", str(again)]) == 0
    )
    a = json.loads((first / "result.json").read_text())
    b = json.loads((again / "result.json").read_text())
    assert a["config"] == b["config"] and a["test_acc"] == b["test_acc"]


def short_mlp_run(out: Path, *, patience: int, extra: tuple[str, ...] = ()) -> int:
    return main(["train", "--model", "mlp", "--steps", "40", "--eval-every", "20",
                 "--patience", str(patience), "--quiet", "--out", str(out), *extra])  # fmt: skip


def test_warns_when_resetting_never_armed(tmp_path, capsys):
    # 40 steps is far too short for memorisation on digits; patience 1000 cannot elapse.
    assert short_mlp_run(tmp_path / "o", patience=1000) == 0
    captured = capsys.readouterr()
    assert "resetting never armed" in captured.err and "--steps" in captured.err
    assert "validation kept improving" in captured.err
    result = json.loads((tmp_path / "o" / "result.json").read_text())
    assert result["memorisation_step"] is None
    assert (
        "no memorisation within 40 steps: resetting has nothing to counter — train longer"
        in captured.out
    )


def test_arming_on_memorisation_says_why_it_never_armed(tmp_path, capsys):
    # Patience 0 would arm at once; with --arm-on-memorisation it waits for memorisation,
    # which 40 steps do not reach.
    assert short_mlp_run(tmp_path / "o", patience=0, extra=("--arm-on-memorisation",)) == 0
    captured = capsys.readouterr()
    result = json.loads((tmp_path / "o" / "result.json").read_text())
    assert result["config"]["arm_on_memorisation"] is True
    assert result["armed_step"] is None and result["memorisation_step"] is None
    assert "resetting never armed: memorisation never began" in captured.err


@pytest.mark.integration  # 1,000 training steps of a cnn (~30 s)
def test_summary_says_when_memorisation_began(tmp_path, capsys):
    # digits, 40 % noise, cnn, batch 32: memorises within a few hundred steps (docs/method.md §8).
    out = tmp_path / "o"
    args = ["train", "--model", "cnn", "--steps", "1000", "--reset-prob", "0", "--quiet"]
    assert main([*args, "--device", "cpu", "--out", str(out)]) == 0
    result = json.loads((out / "result.json").read_text())
    onset = result["memorisation_step"]
    assert onset is not None
    text = capsys.readouterr().out
    assert f"memorisation began at step {onset} (label-free signal)" in text
    assert "nothing to counter" not in text


def test_no_warning_when_resetting_armed(tmp_path, capsys):
    assert short_mlp_run(tmp_path / "o", patience=0) == 0
    assert "never armed" not in capsys.readouterr().err
