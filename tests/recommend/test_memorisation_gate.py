"""`recommend` on real short probes: "helps" only where the probe sees memorisation.

Two regimes of digits at 40 % symmetric noise, batch 32, the same everything else: with the
default weight decay it memorises the wrong labels within a few hundred steps; with heavy weight
decay (0.05) validation still plateaus (resetting would arm) but the model never fits the wrong
labels, and the drift the probe measures there is wandering.
"""

from __future__ import annotations

import pytest
import torch

from reset_tune.config import TrainConfig
from reset_tune.recommend import recommend
from reset_tune.recommend.combine import CANNOT_ACT, HELPS

SETTING = dict(dataset="digits", noise="symmetric:0.4", batch_size=32, steps=800, patience=100,
               device="cpu")  # fmt: skip


@pytest.mark.integration  # trains for many seconds
def test_heavy_weight_decay_never_memorises_so_resetting_cannot_act():
    torch.set_num_threads(1)
    answer = recommend(TrainConfig(weight_decay=0.05, **SETTING), tracking_uri=None, log=False)
    probe = answer.description.probe
    assert probe.armed_step is not None  # a plateau: resetting would have armed
    assert probe.memorisation_checked and not probe.memorised
    # It looked for memorisation past its window, to the end of the budget.
    assert probe.window_end_step is not None and probe.steps_trained == SETTING["steps"]
    assert probe.extension_steps > 0
    assert answer.verdict == CANNOT_ACT and not answer.combined.resetting
    assert answer.reset_prob == 0.0 and answer.config["reset_prob"] == 0.0
    assert any("--weight-decay, now 0.05" in item for item in answer.combined.advice)


def test_the_same_setting_with_ordinary_weight_decay_memorises_and_resetting_helps():
    torch.set_num_threads(1)
    answer = recommend(TrainConfig(**SETTING), tracking_uri=None, log=False)
    probe = answer.description.probe
    assert probe.memorisation_checked and probe.memorised
    assert probe.steps_trained < SETTING["steps"]  # it stopped once it had seen it
    assert answer.verdict == HELPS and answer.combined.resetting and answer.reset_prob > 0
    assert answer.combined.advice == ()
