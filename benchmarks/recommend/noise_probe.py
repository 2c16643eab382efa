"""Which probe classifier, and how many samples, for the label-noise estimate.

`recommend`'s profile estimates the wrong-label fraction with cleanlab's confident joint on a
probe classifier's out-of-sample probabilities. This compares probes on data with injected noise
(so the truth is known): the shipped k-NN on a PCA of the pixels, a logistic regression on the
same PCA, and a small CNN trained briefly with SGD on each fold, each on the first 3,000
and 10,000 training images (digits has fewer). Prints, per setting and probe, the estimate, the
true rate, the error, the probe's agreement with the noisy labels, and the seconds it took.

    .venv/bin/python benchmarks/recommend/noise_probe.py          # ~5 min on 2 cores
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import warnings
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parents[1]))

import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from torch import nn  # noqa: E402

from reset_tune.config import TrainConfig  # noqa: E402
from reset_tune.engine import prepare_data  # noqa: E402
from reset_tune.recommend.profile import (  # noqa: E402
    out_of_sample_probabilities,
    wrong_label_fraction,
)

SETTINGS = [
    ("digits", "none"),
    ("digits", "symmetric:0.3"),
    ("digits", "pairflip:0.3"),
    ("fashion-mnist", "none"),
    ("fashion-mnist", "symmetric:0.3"),
    ("fashion-mnist", "pairflip:0.3"),
    ("fashion-mnist", "symmetric:0.6"),
]
FOLDS = 5


def _folds(labels: np.ndarray, seed: int):
    from sklearn.model_selection import StratifiedKFold

    return StratifiedKFold(FOLDS, shuffle=True, random_state=seed).split(labels, labels)


def _flat(images: np.ndarray) -> np.ndarray:
    return images.reshape(images.shape[0], -1).astype(np.float32) / 255.0


def knn_probabilities(images, labels, *, num_classes, seed):
    """The probe `recommend` ships (`reset_tune.recommend.profile`)."""
    return out_of_sample_probabilities(_flat(images), labels, num_classes=num_classes, seed=seed)


def logistic_probabilities(images, labels, *, num_classes, seed):
    features = _flat(images)
    from sklearn.decomposition import PCA
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import cross_val_predict
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    model = make_pipeline(
        PCA(min(80, features.shape[1]), random_state=seed),
        StandardScaler(),
        LogisticRegression(C=0.1, max_iter=300),
    )
    return cross_val_predict(
        model, features, labels, cv=list(_folds(labels, seed)), method="predict_proba"
    )


def lenet(in_channels: int, num_classes: int, image_size: int) -> nn.Module:
    """Two conv layers and a linear head: trains in seconds per fold on a CPU."""
    size = image_size // 4
    return nn.Sequential(
        nn.Conv2d(in_channels, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(), nn.Linear(32 * size * size, num_classes),
    )  # fmt: skip


def cnn_probabilities(images, labels, *, num_classes, seed, steps=400, batch=64, lr=0.05):
    """A small CNN, a few hundred SGD steps per fold: short enough not to memorise."""
    x = torch.as_tensor(images, dtype=torch.float32) / 255.0
    y = torch.as_tensor(labels)
    probs = np.zeros((labels.shape[0], num_classes))
    for fold, (train, test) in enumerate(_folds(labels, seed)):
        torch.manual_seed(seed * 100 + fold)
        net = lenet(x.shape[1], num_classes, x.shape[2])
        optimizer = torch.optim.SGD(net.parameters(), lr=lr, momentum=0.9)
        train = torch.as_tensor(train)
        for _ in range(steps):
            pick = train[torch.randint(train.shape[0], (batch,))]
            loss = F.cross_entropy(net(x[pick]), y[pick])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
        with torch.no_grad():
            probs[test] = F.softmax(net(x[torch.as_tensor(test)]), dim=1).numpy()
    return probs


PROBES = {  # each takes uint8 images (N, C, H, W) and their labels
    "knn": knn_probabilities,
    "logistic": logistic_probabilities,
    "cnn": cnn_probabilities,
}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--samples", type=int, nargs="+", default=[3000, 10000])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", default=str(HERE.parent / "results" / "noise_probe.json"))
    args = parser.parse_args()
    torch.set_num_threads(1)
    warnings.simplefilter("ignore")
    rows = []
    print(f"{'setting':<28} {'probe':<10} {'n':>6} {'estimate':>8} {'true':>6} {'error':>7} "
          f"{'agree':>6} {'s':>6}")  # fmt: skip
    for dataset, noise in SETTINGS:
        data = prepare_data(TrainConfig(dataset=dataset, noise=noise, seed=args.seed))
        images = data.train_x.cpu().numpy()
        labels = data.train_y.cpu().numpy().astype(np.int64)
        wrong = data.train_is_wrong.cpu().numpy()
        order = np.random.default_rng(args.seed).permutation(labels.shape[0])
        for n in sorted({min(s, labels.shape[0]) for s in args.samples}):
            pick = order[:n]
            for probe in PROBES:
                start = time.perf_counter()
                probs = PROBES[probe](
                    images[pick], labels[pick], num_classes=data.num_classes, seed=args.seed
                )
                seconds = time.perf_counter() - start
                estimate = wrong_label_fraction(labels[pick], probs)
                truth = float(wrong[pick].mean())
                row = dict(
                    dataset=dataset, noise=noise, probe=probe, samples=n, estimate=estimate,
                    true=truth, error=estimate - truth, seconds=seconds,
                    agreement=float((probs.argmax(axis=1) == labels[pick]).mean()),
                )  # fmt: skip
                rows.append(row)
                print(f"{dataset + ' ' + noise:<28} {probe:<10} {n:>6} {estimate:>8.3f} "
                      f"{truth:>6.3f} {estimate - truth:>+7.3f} {row['agreement']:>6.3f} "
                      f"{seconds:>6.1f}", flush=True)  # fmt: skip
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
