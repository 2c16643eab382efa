"""The training engine on real (digits) data: results, determinism, resumption, control."""

from __future__ import annotations

import importlib.metadata
import io
import json
import math
import subprocess
import sys

import pytest
import torch

from reset_tune import names
from reset_tune.config import TrainConfig
from reset_tune.engine import Callback, TrainingRun, prepare_data, train
from reset_tune.errors import ConfigError, TrainingDiverged

FAST = dict(
    dataset="digits",
    model="mlp",
    steps=120,
    eval_every=20,
    batch_size=32,
    lr=0.05,
    noise="symmetric:0.4",
    patience=20,
    device="cpu",
)


@pytest.fixture(scope="module")
def digits_data():
    return prepare_data(TrainConfig(**FAST), "cpu")


@pytest.mark.integration
def test_engine_imports_no_ray_optuna_or_mlflow():
    # Nor, for a run on digits with a small model, torchvision or scikit-learn: each costs a
    # trial worker or a search driver about 2 s on one CPU, for a version string or a CSV file.
    code = (
        "import sys, reset_tune.engine, reset_tune.cli.main\n"
        "print([m for m in ('ray', 'optuna', 'mlflow') if m in sys.modules])\n"
        "from reset_tune.config import TrainConfig\n"
        "result = reset_tune.engine.train(TrainConfig(dataset='digits', model='mlp', steps=4,"
        " eval_every=2, device='cpu'))\n"
        "print([m for m in ('torchvision', 'sklearn') if m in sys.modules])\n"
        "print(result.provenance['torchvision'])\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    lines = out.stdout.strip().splitlines()
    assert lines[:2] == ["[]", "[]"]
    assert lines[2] == importlib.metadata.version("torchvision")


def test_result_reports_theta_best_on_clean_test_data(digits_data):
    result = train(TrainConfig(**FAST, reset_prob=0.05), data=digits_data)
    assert result.steps_completed == 120
    assert [h[names.STEP] for h in result.history] == [20.0, 40.0, 60.0, 80.0, 100.0, 120.0]
    best = [h for h in result.history if h[names.STEP] == result.best_step]
    assert best and best[0][names.VAL_LOSS] == min(h[names.VAL_LOSS] for h in result.history)
    assert result.best_val_loss == best[0][names.VAL_LOSS]
    # 40 % of digits' labels are wrong, yet θbest generalises well above chance on clean labels.
    assert 0.6 < result.test_acc <= 1.0
    assert math.isclose(result.data["train_wrong_fraction"], 0.4, abs_tol=0.05)
    for key in (
        names.TRAIN_LOSS,
        names.VAL_ACC,
        names.MEMORISATION,
        names.LR,
        names.RESET_COUNT,
        names.RESET_ARMED,
        names.STEPS_PER_S,
    ):
        assert all(math.isfinite(h[key]) for h in result.history), key
    json.dumps(result.to_dict())  # the result is JSON-able as it is


@pytest.mark.integration  # trains for real, for many seconds
def test_reset_events_follow_arming(digits_data):
    result = train(TrainConfig(**FAST, reset_prob=0.2), data=digits_data)
    assert result.armed_step is not None
    assert result.num_resets == len(result.reset_steps) > 0
    assert min(result.reset_steps) > result.armed_step
    counts = [h[names.RESET_COUNT] for h in result.history]
    assert counts == sorted(counts) and counts[-1] == result.num_resets


@pytest.mark.integration  # trains for real, for many seconds
def test_same_seed_same_run_and_reset_settings_share_the_data_stream(digits_data):
    base = TrainConfig(**FAST, reset_prob=0.0)
    a = train(base, data=digits_data)
    b = train(base, data=digits_data)
    assert strip(a) == strip(b) and a.test_acc == b.test_acc
    # A trial that differs only in r sees identical training until its first reset.
    c = train(base.replace(reset_prob=0.3), data=digits_data)
    first_reset = min(c.reset_steps)
    before = [h for h in strip(c) if h[names.STEP] < first_reset]
    assert before and before == [h for h in strip(a) if h[names.STEP] < first_reset]
    assert strip(c) != strip(a)


def strip(result):
    """History without the timing column, which legitimately differs between runs."""
    return [{k: v for k, v in h.items() if k != names.STEPS_PER_S} for h in result.history]


class StopAndSave(Callback):
    def __init__(self, at_step: int) -> None:
        self.at_step = at_step
        self.saved: bytes | None = None

    def on_evaluation(self, run, metrics):
        if metrics[names.STEP] == self.at_step:
            buffer = io.BytesIO()
            torch.save(run.state_dict(), buffer)
            self.saved = buffer.getvalue()
            run.request_stop("test: simulated worker death")


@pytest.mark.integration  # trains for real, for many seconds
def test_resume_from_saved_state_equals_uninterrupted_run(digits_data):
    config = TrainConfig(**{**FAST, "steps": 200}, reset_prob=0.1)
    straight = train(config, data=digits_data)
    assert straight.num_resets > 0  # resets happen in the resumed half too

    stopper = StopAndSave(at_step=100)
    first_half = train(config, data=digits_data, callbacks=[stopper])
    assert first_half.steps_completed == 100 and first_half.stopped_early
    state = torch.load(io.BytesIO(stopper.saved), weights_only=False)
    resumed = train(config, data=digits_data, resume_state=state)

    assert strip(resumed) == strip(straight)
    assert resumed.reset_steps == straight.reset_steps
    assert resumed.test_acc == straight.test_acc
    assert resumed.best_step == straight.best_step


def test_resume_refuses_a_state_of_other_settings(digits_data):
    stopper = StopAndSave(at_step=20)
    train(TrainConfig(**FAST), data=digits_data, callbacks=[stopper])
    state = torch.load(io.BytesIO(stopper.saved), weights_only=False)
    other = TrainingRun(TrainConfig(**{**FAST, "lr": 0.01}), data=digits_data)
    with pytest.raises(ValueError, match="lr"):
        other.load_state_dict(state)


def test_divergence_is_reported_not_hidden(digits_data):
    run = TrainingRun(TrainConfig(**FAST), data=digits_data)
    with torch.no_grad():
        next(run.model.parameters()).fill_(float("nan"))
    with pytest.raises(TrainingDiverged, match="step 20"):
        run.run()


def test_bad_settings_fail_before_training(digits_data):
    with pytest.raises(ConfigError, match="batch_size"):
        TrainingRun(TrainConfig(**{**FAST, "batch_size": 5000}), data=digits_data)
    with pytest.raises(ConfigError, match="bf16"):
        TrainingRun(TrainConfig(**FAST, precision="bf16"), data=digits_data)
    with pytest.raises(ConfigError, match="layer9"):
        TrainingRun(TrainConfig(**FAST, reset_layers="layer9"), data=digits_data)


@pytest.mark.integration  # trains for real, for many seconds
@pytest.mark.parametrize("loss", ["gce", "sce", "mae"])
def test_robust_losses_train(loss, digits_data):
    result = train(TrainConfig(**{**FAST, "steps": 60}, loss=loss), data=digits_data)
    assert result.test_acc > 0.3  # well above the 10 % of chance after 60 steps


def test_global_rng_is_left_alone(digits_data):
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    train(TrainConfig(**{**FAST, "steps": 20}), data=digits_data)
    assert torch.equal(torch.rand(3), expected)


def test_shared_data_must_match_the_run_settings(digits_data):
    with pytest.raises(ValueError, match="seed"):
        TrainingRun(TrainConfig(**FAST, seed=5), data=digits_data)
    # Settings that do not touch the data (here r and lr) may share it.
    TrainingRun(TrainConfig(**{**FAST, "lr": 0.01}, reset_prob=0.3), data=digits_data)
