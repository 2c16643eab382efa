"""The dataset/noise/batch settings of the leave-one-dataset-out benchmark, and their search specs.

Every setting is a small-data regime where memorisation starts within a few hundred steps (DESIGN
§1, lessons), so resetting can act within the budget on a 2-core CPU. The batch size is fixed per
setting (it is part of what describes a setting); lr and the reset settings are searched.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import yaml


@dataclass(frozen=True)
class Setting:
    dataset: str
    noise: str
    batch_size: int
    train_subset: int | None
    steps: int

    @property
    def name(self) -> str:
        rate = self.noise.split(":")[1].replace(".", "")
        return f"{self.dataset}-sym{rate}-b{self.batch_size}"

    def train(self) -> dict:
        train = {
            "dataset": self.dataset,
            "noise": self.noise,
            "model": "cnn",
            "steps": self.steps,
            "eval_every": 50,
            "batch_size": self.batch_size,
            "device": "cpu",
        }
        if self.train_subset is not None:
            train["train_subset"] = self.train_subset
        return train


SETTINGS = tuple(
    [
        Setting("digits", noise, batch, None, 1500)
        for noise in ("symmetric:0.2", "symmetric:0.5")
        for batch in (16, 64)
    ]
    + [
        Setting("fashion-mnist", noise, batch, 1500, 1200)
        for noise in ("symmetric:0.3", "symmetric:0.6")
        for batch in (16, 64)
    ]
)

# Near neighbours of the digits settings above (half a noise step, or half the batch ratio, away),
# close enough in the similarity kernel that history, not the theory alone, decides.
EXTRA_SETTINGS = tuple(
    Setting("digits", noise, batch, None, 1500)
    for noise, batch in (
        ("symmetric:0.2", 32), ("symmetric:0.5", 32), ("symmetric:0.35", 16), ("symmetric:0.35", 64)
    )
)  # fmt: skip

PARAMS = {
    "reset_prob": {"type": "loguniform", "low": 0.001, "high": 0.05, "off_arm": True},
    "reset_layers": {"type": "categorical", "choices": ["all", "head", ["block3", "head"]]},
    "patience": {"type": "int", "low": 100, "high": 300, "step": 50},
    "lr": {"type": "loguniform", "low": 0.01, "high": 0.2},
}


def spec_for(setting: Setting, *, trials: int = 10) -> dict:
    return {
        "description": f"leave-one-dataset-out benchmark: {setting.name}",
        "train": setting.train(),
        "objective": "val_acc",
        "trials": trials,
        "concurrency": 2,
        "seeds": [0],
        "resources": {"cpus": 1, "gpus": 0},
        "scheduler": "none",
        "sampler": {"type": "tpe", "seed": 0, "startup_trials": trials // 2},
        "params": PARAMS,
    }


def write_specs(
    folder: Path, settings: tuple[Setting, ...] = SETTINGS, *, trials: int = 10
) -> dict[str, Path]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = {}
    for setting in settings:
        path = folder / f"lodo-{setting.name}.yaml"
        path.write_text(yaml.safe_dump(spec_for(setting, trials=trials), sort_keys=False))
        paths[setting.name] = path
    return paths
