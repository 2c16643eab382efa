"""A training group: several runs stepped in lockstep in one process, each as it would be alone."""

from __future__ import annotations

import pytest

from reset_tune.config import TrainConfig
from reset_tune.engine import Callback, TrainingGroup, TrainingRun, train, train_group
from reset_tune.errors import ConfigError

BASE = dict(
    dataset="digits",
    model="mlp",
    steps=60,
    eval_every=20,
    batch_size=32,
    lr=0.05,
    noise="symmetric:0.4",
    patience=0,
    device="cpu",
)
CONFIGS = [
    TrainConfig(**BASE, reset_prob=0.0),
    TrainConfig(**BASE, reset_prob=0.2, seed=1),
    TrainConfig(**{**BASE, "steps": 40, "batch_size": 16}, reset_prob=0.1, reset_layers="head"),
]


def _comparable(result):
    values = result.to_dict()
    for key in ("wall_time_s", "steps_per_s", "provenance"):
        values.pop(key)
    for row in values["history"]:
        row.pop("perf/steps_per_s")
    return values


def test_each_run_of_a_group_gets_exactly_its_result_alone():
    grouped = train_group(CONFIGS)
    alone = [train(config) for config in CONFIGS]
    assert [r.steps_completed for r in grouped] == [60, 60, 40]
    assert any(r.num_resets > 0 for r in grouped)  # resets happen between the others' steps
    for g, a in zip(grouped, alone, strict=True):
        assert _comparable(g) == _comparable(a)


class _Recorder(Callback):
    def __init__(self, log, name):
        self.log, self.name = log, name

    def on_evaluation(self, run, metrics):
        self.log.append((self.name, run.step))


def test_a_group_steps_its_runs_in_lockstep_and_calls_each_runs_callbacks():
    log: list[tuple[str, int]] = []
    runs = [TrainingRun(c) for c in CONFIGS[:2]]
    TrainingGroup(runs).run([[_Recorder(log, "a")], [_Recorder(log, "b")]])
    assert log == [(name, step) for step in (20, 40, 60) for name in ("a", "b")]


def test_a_group_refuses_runs_whose_kernel_settings_differ():
    runs = [TrainingRun(CONFIGS[0]), TrainingRun(TrainConfig(**BASE, deterministic=False))]
    with pytest.raises(ConfigError, match="deterministic"):
        TrainingGroup(runs)
    with pytest.raises(ConfigError, match="at least one run"):
        TrainingGroup([])
