"""The dataset/noise/batch settings of the leave-one-dataset-out benchmark, and their search specs.

Every setting is a small-data regime where memorisation starts within a few hundred steps
(docs/method.md §8), so resetting can act within the budget on a 2-core CPU. The batch size is
fixed per setting (it is part of what describes a setting); lr and the reset settings are searched.
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
    weight_decay: float | None = None  # None: TrainConfig's default

    @property
    def name(self) -> str:
        if ":" in self.noise:
            name = f"{self.dataset}-sym{self.noise.split(':')[1].replace('.', '')}"
        else:
            name = f"{self.dataset}-{self.noise.replace('none', 'clean')}"
        name += f"-b{self.batch_size}"
        if self not in SETTINGS + EXTRA_SETTINGS:  # the searches' names stay as they were
            subset = "" if self.train_subset is None else f"-n{self.train_subset}"
            decay = "" if self.weight_decay is None else f"-wd{self.weight_decay:g}"
            name += f"{subset}-s{self.steps}{decay}"
        return name

    @property
    def label(self) -> str:
        noise = "clean" if self.noise == "none" else f"{float(self.noise.split(':')[1]):.0%}"
        parts = [self.dataset if self.dataset == "digits" else "F-MNIST", noise,
                 f"b{self.batch_size}"]  # fmt: skip
        if self.train_subset is not None:
            parts.append(f"n{self.train_subset}")
        parts.append(f"{self.steps} steps")
        if self.weight_decay is not None:
            parts.append(f"wd {self.weight_decay:g}")
        return " ".join(parts)

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
        if self.weight_decay is not None:
            train["weight_decay"] = self.weight_decay
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

# The sign test (`lodo.py --signs`): does the verdict ("helps" or not) match paired runs? Both
# signs on purpose: regimes that memorise within the budget (small sets, enough steps, real
# noise) and regimes that do not (clean labels, a budget too short, heavy weight decay, a
# larger set with few steps), on digits and Fashion-MNIST subsets. Cheap enough for a 2-core CPU.
SIGN_SETTINGS = (
    Setting("digits", "symmetric:0.4", 32, None, 2000),
    Setting("digits", "symmetric:0.5", 16, None, 1500),
    Setting("digits", "symmetric:0.6", 32, None, 2000),
    Setting("digits", "symmetric:0.2", 32, None, 1500),
    Setting("digits", "symmetric:0.1", 32, None, 2000),  # low noise
    Setting("digits", "none", 32, None, 2000),  # clean labels: nothing to memorise
    Setting("digits", "symmetric:0.4", 32, None, 2000, weight_decay=0.05),  # heavy decay
    Setting("digits", "symmetric:0.4", 32, None, 300),  # budget too short
    Setting("fashion-mnist", "symmetric:0.6", 16, 1000, 600),
    Setting("fashion-mnist", "symmetric:0.4", 32, 600, 800),
    Setting("fashion-mnist", "symmetric:0.2", 32, 3000, 300),  # larger set, few steps
    Setting("fashion-mnist", "symmetric:0.4", 16, 1000, 600, weight_decay=0.02),
)

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
