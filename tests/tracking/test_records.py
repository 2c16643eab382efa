"""What runs record: string params that rebuild the config, identifying tags, result artifacts."""

from __future__ import annotations

import json

import pytest

from reset_tune import names as metric_names
from reset_tune.config import TrainConfig
from reset_tune.engine.result import TrainResult
from reset_tune.tracking import (
    config_from_params,
    config_tags,
    names,
    result_artifacts,
    result_tags,
    string_params,
    trial_run_name,
)
from reset_tune.tracking.records import param_value, truncate


def test_params_rebuild_the_config():
    config = TrainConfig(
        reset_prob=0.003, train_subset=2000, reset_layers="head,layer4", lr_step_every=None
    )
    params = string_params(config.to_dict())
    assert set(params) == set(config.to_dict())
    assert params["reset_prob"] == "0.003" and params["adaptive"] == "True"
    assert params["lr_step_every"] == "None"
    assert TrainConfig.from_dict(config_from_params(params)) == config
    assert config_from_params({"lr": "0.1", "not_a_field": "x"}) == {"lr": 0.1}


def test_param_values_are_strings_within_the_limit():
    assert param_value([1, "a"]) == '[1, "a"]'
    assert param_value({"b": 1, "a": 2}) == '{"a": 2, "b": 1}'
    long = param_value("x" * 10_000)
    assert len(long) == names.MAX_PARAM_VALUE_LENGTH and long.endswith(names.TRUNCATION_MARKER)
    assert truncate("short", 10) == "short"


@pytest.mark.parametrize(
    ("noise", "expected"),
    [
        ("symmetric:0.6", {names.NOISE_KIND: "symmetric", names.NOISE_RATE: "0.6"}),
        ("pairflip:0.45", {names.NOISE_KIND: "pairflip", names.NOISE_RATE: "0.45"}),
        ("human:worst", {names.NOISE_KIND: "human"}),
        ("none", {names.NOISE_KIND: "none"}),
    ],
)
def test_config_tags_name_dataset_noise_model_seed(noise, expected):
    tags = config_tags(TrainConfig(noise=noise, seed=3, model="vcnn").to_dict())
    assert tags == {
        names.DATASET: "digits",
        names.MODEL: "vcnn",
        names.SEED: "3",
        names.NOISE: noise,
        **expected,
    }


def make_result(noise: str = "human:worst") -> TrainResult:
    history = [
        {
            metric_names.STEP: float(step),
            metric_names.VAL_ACC: 0.5 + step / 1000,
            metric_names.VAL_LOSS: 1.0 - step / 1000,
            metric_names.MEMORISATION: step / 1000,
        }
        for step in (50, 100, 150)
    ]
    return TrainResult(
        test_acc=0.9,
        final_test_acc=0.85,
        best_step=100,
        best_val_loss=0.9,
        best_val_acc=0.6,
        num_resets=2,
        reset_steps=[110, 140],
        armed_step=100,
        checkpoint_step=100,
        steps_completed=150,
        stopped_early=None,
        wall_time_s=3.0,
        steps_per_s=50.0,
        history=history,
        data={"fingerprint": "abc123", "train_wrong_fraction": 0.402},
        config=TrainConfig(noise=noise).to_dict(),
        provenance={"commit": "deadbeef", "reset_tune": "0.1.0"},
    )


def test_result_tags_add_fingerprint_code_version_and_measured_noise():
    tags = result_tags(make_result())
    assert tags[names.DATA_FINGERPRINT] == "abc123"
    assert tags[names.CODE_VERSION] == "deadbeef"
    assert tags[names.PACKAGE_VERSION] == "0.1.0"
    assert tags[names.NOISE_RATE] == "0.402"  # human labels: the measured wrong fraction
    assert result_tags(make_result("symmetric:0.4"))[names.NOISE_RATE] == "0.4"


def test_result_artifacts_are_a_png_plot_and_the_resolved_config():
    result = make_result()
    artifacts = result_artifacts(result)
    assert sorted(artifacts) == ["config.json", "curves.png", "result.json"]
    assert artifacts["curves.png"][:8] == b"\x89PNG\r\n\x1a\n"
    assert json.loads(artifacts["config.json"]) == result.config
    assert TrainResult.from_dict(json.loads(artifacts["result.json"])) == result


def test_trial_run_names():
    assert trial_run_name(7) == "trial-0007"
    assert trial_run_name("12") == "trial-0012"
    assert trial_run_name("a1b2_00003") == "trial-a1b2_00003"
