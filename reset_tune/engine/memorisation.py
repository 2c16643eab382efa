"""Memorisation measured without clean labels: whether and when a run began fitting wrong labels.

The signal is the generalisation gap on the *noisy* labels, ``gap = train_acc - val_acc``: the
accuracy of the evaluated model on a fixed random subset of the training split (the *train
probe*, as large as the validation split, at most `TRAIN_PROBE_MAX`) against its (noisy) labels,
minus the validation accuracy against its (noisy) labels. Both splits carry the same noise, so a
model that fits only the clean majority scores about the same on both; every wrong label it
memorises raises training accuracy and not validation accuracy. With a wrong-label fraction ε and
a memorisation fraction m, ``gap ≈ ε·m`` plus the clean generalisation gap, and it grows further
once memorisation erodes validation accuracy. With ``clean_val`` the validation side has no
wrong labels, the gap starts near −ε·accuracy and the detector fires late (conservatively).

Why a probe and not the running accuracy of the training minibatches (free, but from the model
in training mode, averaged over the steps since the previous evaluation): under heavy weight
decay (digits, `cnn`, 40 % noise, weight decay 0.05) the evaluated model's validation accuracy
swings by ±0.15 between evaluations (BatchNorm statistics lag fast-changing weights), so the
running accuracy sat 0.1–0.25 above it with the true memorisation fraction at 0.02–0.13, and
the rule below fired in 3 of 5 seeds of a run that never memorised. Measured on the evaluated
model in the same mode, both sides swing together: 0 of 5 fired, at the cost of one pass over
at most `n_val` training images per evaluation. Histories without the probe's column (results
from before it) fall back to the running accuracy (`replay_detector`).

An evaluation *signals* memorisation when the gap exceeds what noise and an honest clean gap
explain::

    threshold = margin + z · sqrt(p_t(1 - p_t) / n_seen + p_v(1 - p_v) / n_val)

with ``n_seen`` the training samples behind the training accuracy (the probe's size; for the
running accuracy, steps since the previous evaluation × batch size), ``n_val`` the validation
split's size (binomial standard errors), z = 2 and margin = 0.05 (the clean generalisation gap a
small model shows before it memorises). Memorisation *begins* at the first of `confirm`
consecutive signalling evaluations (default 2, so one noisy evaluation does not count); the
detector is causal, so the engine can act on it at the evaluation it is decided. How these
constants fare against the true memorisation fraction, and the alternatives replayed on the same
runs: ``benchmarks/README.md``, section "Memorisation signal and arming".

Where clean labels are known (injected noise) the engine also logs the true memorisation
fraction (`names.MEMORISATION`); the tests check this signal against it.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from reset_tune import names

MARGIN = 0.05  # clean generalisation gap allowed before memorisation is called
Z = 2.0  # standard errors of the gap's sampling noise
CONFIRM = 2  # consecutive signalling evaluations that confirm memorisation
TRAIN_PROBE_MAX = 2048  # most training samples the engine's train probe holds
TRAIN_PROBE_STREAM = 106  # seeding stream (reset_tune.seeding.torch_seed) of the probe's choice


def gap_threshold(
    *,
    train_acc: float,
    val_acc: float,
    n_seen: int,
    n_val: int,
    margin: float = MARGIN,
    z: float = Z,
) -> float:
    """The gap above which an evaluation signals memorisation (see the module docstring)."""
    p_t = min(max(train_acc, 0.0), 1.0)
    p_v = min(max(val_acc, 0.0), 1.0)
    variance = p_t * (1 - p_t) / max(n_seen, 1) + p_v * (1 - p_v) / max(n_val, 1)
    return margin + z * math.sqrt(variance)


class MemorisationDetector:
    """Online detector, fed one evaluation at a time; `onset_step` latches once decided."""

    def __init__(
        self, *, n_val: int, confirm: int = CONFIRM, margin: float = MARGIN, z: float = Z
    ) -> None:
        if isinstance(n_val, bool) or not isinstance(n_val, int) or n_val < 1:
            raise ValueError(f"n_val must be an integer >= 1, but got n_val={n_val!r}")
        if isinstance(confirm, bool) or not isinstance(confirm, int) or confirm < 1:
            raise ValueError(f"confirm must be an integer >= 1, but got confirm={confirm!r}")
        self.n_val = n_val
        self.confirm = confirm
        self.margin = float(margin)
        self.z = float(z)
        self.onset_step: int | None = None
        self._streak_start: int | None = None
        self._streak = 0

    @property
    def memorising(self) -> bool:
        return self.onset_step is not None

    def observe(self, *, step: int, train_acc: float, val_acc: float, n_seen: int) -> float:
        """Take one evaluation; returns its gap (train - val accuracy on the noisy labels)."""
        gap = float(train_acc) - float(val_acc)
        threshold = gap_threshold(
            train_acc=train_acc,
            val_acc=val_acc,
            n_seen=n_seen,
            n_val=self.n_val,
            margin=self.margin,
            z=self.z,
        )
        if math.isfinite(gap) and gap > threshold:
            if self._streak == 0:
                self._streak_start = int(step)
            self._streak += 1
            if self.onset_step is None and self._streak >= self.confirm:
                self.onset_step = self._streak_start
        else:
            self._streak, self._streak_start = 0, None
        return gap

    def state_dict(self) -> dict[str, int | None]:
        return {
            "onset_step": self.onset_step,
            "streak_start": self._streak_start,
            "streak": self._streak,
        }

    def load_state_dict(self, state: Mapping[str, int | None]) -> None:
        onset, start, streak = state["onset_step"], state["streak_start"], state["streak"]
        self.onset_step = None if onset is None else int(onset)
        self._streak_start = None if start is None else int(start)
        self._streak = int(streak or 0)


@dataclass(frozen=True)
class MemorisationFinding:
    """What a finished run's evaluations say about memorisation."""

    onset_step: int | None  # first step of the confirmed streak; None: not within the budget
    max_gap: float  # the largest gap seen (nan without evaluations)
    final_gap: float  # the last evaluation's gap

    @property
    def memorised(self) -> bool:
        return self.onset_step is not None


def train_probe_size(*, n_train: int, n_val: int) -> int:
    """How many training samples the engine's train probe holds (at least 1)."""
    return max(1, min(n_train, n_val, TRAIN_PROBE_MAX))


def replay_detector(
    history: Sequence[Mapping[str, float]],
    *,
    n_val: int,
    batch_size: int,
    confirm: int = CONFIRM,
    margin: float = MARGIN,
    z: float = Z,
    probe_size: int | None = None,
) -> tuple[MemorisationDetector, list[float]]:
    """Feed a run's evaluations to a fresh detector, as the engine did; returns it and the gaps.

    Rows with the train probe's accuracy (`names.TRAIN_PROBE_ACC`) use it, with `probe_size`
    samples (default: `train_probe_size` with n_train ≥ n_val, true unless val_fraction > 0.5);
    older rows fall back to the running training accuracy of the steps since the previous row.
    """
    detector = MemorisationDetector(n_val=n_val, confirm=confirm, margin=margin, z=z)
    probe_n = probe_size or train_probe_size(n_train=n_val, n_val=n_val)
    gaps: list[float] = []
    previous = 0
    for row in history:
        step = int(row[names.STEP])
        if names.TRAIN_PROBE_ACC in row:
            train_acc, n_seen = float(row[names.TRAIN_PROBE_ACC]), probe_n
        else:
            train_acc, n_seen = float(row[names.TRAIN_ACC]), max(step - previous, 1) * batch_size
        previous = step
        gaps.append(
            detector.observe(
                step=step, train_acc=train_acc, val_acc=float(row[names.VAL_ACC]), n_seen=n_seen
            )
        )
    return detector, gaps


def detect_memorisation(
    history: Sequence[Mapping[str, float]],
    *,
    n_val: int,
    batch_size: int,
    confirm: int = CONFIRM,
) -> MemorisationFinding:
    """Run the detector over a run's evaluations (`TrainResult.history`), as the engine does."""
    detector, gaps = replay_detector(history, n_val=n_val, batch_size=batch_size, confirm=confirm)
    finite = [g for g in gaps if math.isfinite(g)]
    return MemorisationFinding(
        onset_step=detector.onset_step,
        max_gap=max(finite) if finite else math.nan,
        final_gap=gaps[-1] if gaps else math.nan,
    )
