"""The label-free memorisation signal: the detector on fabricated histories, and the engine's
signal against the true memorisation fraction on digits and Fashion-MNIST, in a regime that
memorises and in one that does not; arming on memorisation; resumption with the detector."""

from __future__ import annotations

import io
import math
import multiprocessing
from concurrent.futures import Future, ProcessPoolExecutor
from pathlib import Path

import numpy as np
import pytest
import torch

from reset_tune import names
from reset_tune.config import TrainConfig
from reset_tune.engine import Callback, TrainingRun, prepare_data, train
from reset_tune.engine.memorisation import (
    MemorisationDetector,
    MemorisationFinding,
    detect_memorisation,
    gap_threshold,
)

DEBIAN_FASHION = Path("/usr/share/datasets/fashion-mnist")
needs_fashion = pytest.mark.skipif(
    not DEBIAN_FASHION.exists(), reason="Debian's dataset-fashion-mnist not installed"
)


# ----------------------------------------------------------------------------- the detector


def feed(detector: MemorisationDetector, gaps, *, start: int = 0, every: int = 50, n_seen=1600):
    """Evaluations with train acc 0.5 + gap and val acc 0.5, `every` steps apart."""
    return [
        detector.observe(
            step=start + every * (i + 1), train_acc=0.5 + g, val_acc=0.5, n_seen=n_seen
        )
        for i, g in enumerate(gaps)
    ]


def test_threshold_is_margin_plus_standard_errors_and_shrinks_with_more_samples():
    kwargs = dict(train_acc=0.7, val_acc=0.5, margin=0.05, z=2.0)
    values = [gap_threshold(**kwargs, n_seen=1600, n_val=n) for n in (50, 100, 400, 1600, 10**6)]
    assert all(a > b for a, b in zip(values, values[1:], strict=False))  # monotone in n_val
    by_seen = [gap_threshold(**kwargs, n_seen=n, n_val=400) for n in (32, 320, 3200)]
    assert all(a > b for a, b in zip(by_seen, by_seen[1:], strict=False))
    assert values[-1] == pytest.approx(0.05 + 2 * math.sqrt(0.21 / 1600 + 0.25 / 10**6))
    # Certain accuracies (0 or 1) carry no sampling noise: only the margin is left.
    assert gap_threshold(train_acc=1.0, val_acc=0.0, n_seen=1, n_val=1, margin=0.05) == 0.05


def test_one_signalling_evaluation_is_not_enough_and_onset_is_the_streaks_first_step():
    detector = MemorisationDetector(n_val=1000, confirm=2)
    # 0.4 is far above the threshold (~0.05 + 2·0.026); 0.0 is far below.
    feed(detector, [0.0, 0.4, 0.0, 0.4])
    assert detector.onset_step is None and not detector.memorising  # streaks of one
    feed(detector, [0.4], start=200)  # evaluations at 200 (0.4) and 250 (0.4): confirmed
    assert detector.onset_step == 200 and detector.memorising

    three = MemorisationDetector(n_val=1000, confirm=3)
    feed(three, [0.4, 0.4, 0.0, 0.4, 0.4, 0.4])
    assert three.onset_step == 200


def test_onset_latches_and_nan_never_signals():
    detector = MemorisationDetector(n_val=1000)
    feed(detector, [math.nan, math.nan, 0.4, 0.4, 0.0, 0.0, -0.3])
    assert detector.onset_step == 150 and detector.memorising  # later small gaps change nothing
    gaps = feed(MemorisationDetector(n_val=1000), [0.1, -0.2])
    assert gaps == pytest.approx([0.1, -0.2])  # observe returns the gap itself


def test_state_dict_round_trip_continues_mid_streak():
    gaps = [0.0, 0.4, 0.0, 0.4, 0.4, 0.0, 0.4]
    straight = MemorisationDetector(n_val=500, confirm=3)
    feed(straight, gaps)
    for cut in range(len(gaps) + 1):
        first = MemorisationDetector(n_val=500, confirm=3)
        feed(first, gaps[:cut])
        second = MemorisationDetector(n_val=500, confirm=3)
        second.load_state_dict(first.state_dict())
        feed(second, gaps[cut:], start=50 * cut)
        assert second.state_dict() == straight.state_dict(), cut
    assert straight.onset_step is None  # the streak of 3 never happened: the test can fail


def test_detector_rejects_bad_arguments():
    with pytest.raises(ValueError, match="n_val=0"):
        MemorisationDetector(n_val=0)
    with pytest.raises(ValueError, match="confirm=0"):
        MemorisationDetector(n_val=10, confirm=0)


def test_detect_memorisation_on_a_fabricated_history_matches_the_online_detector():
    train_acc = [0.40, 0.55, 0.58, 0.60, 0.75, 0.90, 0.99]
    val_acc = [0.45, 0.55, 0.57, 0.55, 0.45, 0.40, 0.41]
    steps = [100, 200, 300, 400, 500, 600, 700]
    history = [
        {names.STEP: float(s), names.TRAIN_ACC: t, names.VAL_ACC: v}
        for s, t, v in zip(steps, train_acc, val_acc, strict=True)
    ]
    finding = detect_memorisation(history, n_val=200, batch_size=32)
    online = MemorisationDetector(n_val=200)
    for s, t, v in zip(steps, train_acc, val_acc, strict=True):
        online.observe(step=s, train_acc=t, val_acc=v, n_seen=100 * 32)
    assert finding.onset_step == online.onset_step == 500
    assert finding.memorised
    assert finding.max_gap == pytest.approx(0.58) and finding.final_gap == pytest.approx(0.58)
    empty = detect_memorisation([], n_val=200, batch_size=32)
    assert isinstance(empty, MemorisationFinding) and not empty.memorised
    assert math.isnan(empty.max_gap) and math.isnan(empty.final_gap)


def test_detect_memorisation_prefers_the_train_probe_to_the_running_accuracy():
    # The running accuracy says "memorising" from step 200; the probe (same model and mode as
    # the validation pass) says it from 400. Rows without a probe are older results.
    running = [0.50, 0.90, 0.90, 0.95, 0.99]
    probe = [0.50, 0.50, 0.52, 0.90, 0.95]
    history = [
        {names.STEP: 100.0 * (i + 1), names.TRAIN_ACC: r, names.TRAIN_PROBE_ACC: p,
         names.VAL_ACC: 0.5}
        for i, (r, p) in enumerate(zip(running, probe, strict=True))
    ]  # fmt: skip
    assert detect_memorisation(history, n_val=500, batch_size=32).onset_step == 400
    old = [{k: v for k, v in h.items() if k != names.TRAIN_PROBE_ACC} for h in history]
    assert detect_memorisation(old, n_val=500, batch_size=32).onset_step == 200


# ----------------------------------------------------------------------------- on real runs

# Memorising: small data, enough steps (docs/method.md §8). Not memorising: heavy weight
# decay on digits; 18,000 Fashion-MNIST images for 800 steps of batch 32 (under 1.5 epochs).
REGIMES = {
    "digits-memorising": dict(dataset="digits", model="cnn", steps=1500, eval_every=50),
    "digits-not-memorising": dict(
        dataset="digits", model="cnn", steps=1500, eval_every=50, weight_decay=0.05
    ),
    "fashion-memorising": dict(
        dataset="fashion-mnist",
        model="mlp",
        train_subset=1000,
        val_fraction=0.2,
        steps=600,
        eval_every=50,
    ),
    "fashion-not-memorising": dict(
        dataset="fashion-mnist", model="mlp", train_subset=20000, steps=800, eval_every=100
    ),
}
COMMON = dict(noise="symmetric:0.4", batch_size=32, lr=0.05, patience=100, device="cpu")


def regime_config(name: str, **changes) -> TrainConfig:
    return TrainConfig(**{**COMMON, **REGIMES[name], **changes})


# Each configuration trains once per test session (the tests below share runs), two at a time in
# worker processes (`train_ahead`): a process of its own per run, so two runs never share torch's
# global RNG (model initialisation seeds it) or its thread setting.
_RUNS: dict[TrainConfig, Future] = {}
_TRAINERS: list[ProcessPoolExecutor] = []


def _start(config: TrainConfig) -> Future:
    if config not in _RUNS:
        if not _TRAINERS:
            _TRAINERS.append(
                ProcessPoolExecutor(
                    max_workers=2,
                    mp_context=multiprocessing.get_context("spawn"),  # no forked torch state
                    initializer=torch.set_num_threads,  # one thread per run, as everywhere here
                    initargs=(1,),
                )
            )
        _RUNS[config] = _TRAINERS[0].submit(train, config)
    return _RUNS[config]


def run_config(config: TrainConfig):
    return _start(config).result()


def run_regime(name: str, **changes):
    """The regime's r = 0 run (with `changes`)."""
    if name.startswith("fashion") and not DEBIAN_FASHION.exists():
        pytest.skip("Debian's dataset-fashion-mnist not installed")
    return run_config(regime_config(name, reset_prob=0.0, **changes))


def gated_config(name: str) -> TrainConfig:
    """The regime with resetting armed on memorisation only."""
    return regime_config(name, reset_prob=0.01, arm_on_memorisation=True)


def _runs_for(item: pytest.Item) -> list[TrainConfig]:
    """The runs a test of this module trains (none for the fabricated-history tests)."""
    regime = getattr(getattr(item, "callspec", None), "params", {}).get("regime")
    if regime is not None:
        return [regime_config(regime, reset_prob=0.0)]
    gated = {
        "test_arming_on_memorisation_waits_for_memorisation_that_never_comes": (
            "digits-not-memorising"
        ),
        "test_arming_on_memorisation_arms_no_earlier_than_the_onset": "digits-memorising",
    }.get(item.originalname)
    if gated is not None:
        return [regime_config(gated, reset_prob=0.0), gated_config(gated)]
    return []


@pytest.fixture(scope="module", autouse=True)
def train_ahead(request):
    """Start every run the selected tests of this module need, in their order, two at a time."""
    fashion = DEBIAN_FASHION.exists()
    for item in request.session.items:
        if item.module is request.module:
            for config in _runs_for(item):
                if fashion or config.dataset != "fashion-mnist":
                    _start(config)
    yield
    for trainer in _TRAINERS:
        trainer.shutdown(cancel_futures=True)  # runs no test asked for (e.g. after -x stopped)
    _TRAINERS.clear()
    for config in [c for c, run in _RUNS.items() if run.cancelled()]:
        del _RUNS[config]


def ranks(values) -> np.ndarray:
    order = np.argsort(values, kind="stable")
    out = np.empty(len(values))
    out[order] = np.arange(len(values))
    return out


def spearman(a, b) -> float:
    return float(np.corrcoef(ranks(np.asarray(a)), ranks(np.asarray(b)))[0, 1])


@pytest.mark.integration  # trains for real, for many seconds
@pytest.mark.parametrize(
    "regime",
    [
        "digits-memorising",
        pytest.param("fashion-memorising", marks=needs_fashion),
    ],
)
def test_signal_tracks_the_true_memorisation_fraction_where_the_model_memorises(regime):
    result = run_regime(regime)
    history = result.history
    true = [h[names.MEMORISATION] for h in history]
    gap = [h[names.MEMORISATION_GAP] for h in history]
    assert gap == pytest.approx([h[names.TRAIN_PROBE_ACC] - h[names.VAL_ACC] for h in history])
    onset = result.memorisation_step
    assert onset is not None, "the detector never fired on a run that memorised"
    assert max(true) > 0.8  # the regime does memorise: the test is about a real event
    assert spearman(gap, true) > 0.8
    before = [m for h, m in zip(history, true, strict=True) if h[names.STEP] < onset]
    after = [m for h, m in zip(history, true, strict=True) if h[names.STEP] >= onset]
    at_onset = next(m for h, m in zip(history, true, strict=True) if h[names.STEP] == onset)
    # At the onset the model already fits clearly more wrong labels than it did early on
    # (~1/C by chance) and memorisation goes on from there; the onset is not at the end.
    assert at_onset > 0.15 and at_onset > min(true[:3]) + 0.1
    assert np.median(after) > np.median(before) + 0.3
    assert onset < history[-1][names.STEP] - 200
    # The metric the engine logs latches at the onset and agrees with the offline rule.
    memorising = [h[names.MEMORISING] for h in history]
    assert memorising == sorted(memorising) and memorising[-1] == 1.0
    first = next(h[names.STEP] for h in history if h[names.MEMORISING])
    assert onset <= first
    finding = detect_memorisation(
        history, n_val=result.data["num_val"], batch_size=result.config["batch_size"]
    )
    assert finding.onset_step == onset


@pytest.mark.integration  # trains for real, for many seconds
@pytest.mark.parametrize(
    "regime",
    [
        "digits-not-memorising",
        pytest.param("fashion-not-memorising", marks=needs_fashion),
    ],
)
def test_no_signal_where_the_model_does_not_memorise(regime):
    result = run_regime(regime)
    true = [h[names.MEMORISATION] for h in result.history]
    assert max(true) < 0.15  # the regime does not memorise (chance is ~0.1)
    assert result.memorisation_step is None
    assert all(h[names.MEMORISING] == 0.0 for h in result.history)
    assert result.test_acc > 0.6  # it learns: this is not a run that learnt nothing


# ----------------------------------------------------------------------------- arming on it


@pytest.mark.integration  # trains for real, for many seconds
def test_arming_on_memorisation_waits_for_memorisation_that_never_comes():
    plain = run_regime("digits-not-memorising")
    assert plain.memorisation_step is None
    # The patience rule arms on this run (in the r = 0 run it arms too, with nothing to reset;
    # until arming, runs differing only in r are identical, so r = 0.01 would arm there too).
    assert plain.armed_step is not None
    gated = run_config(gated_config("digits-not-memorising"))
    assert gated.armed_step is None and gated.num_resets == 0
    assert all(h[names.RESET_ARMED] == 0.0 for h in gated.history)
    # Never armed, it trains exactly as the r = 0 run (common random numbers); only the armed
    # flag differs.
    assert strip(gated, names.RESET_ARMED) == strip(plain, names.RESET_ARMED)
    assert gated.test_acc == plain.test_acc


@pytest.mark.integration  # trains for real, for many seconds
def test_arming_on_memorisation_arms_no_earlier_than_the_onset():
    plain = run_regime("digits-memorising")
    assert plain.memorisation_step is not None
    gated = run_config(gated_config("digits-memorising"))
    assert gated.armed_step is not None and gated.num_resets > 0
    # Until it arms, the gated run is the r = 0 run, so it sees the same onset.
    assert gated.memorisation_step == plain.memorisation_step
    assert gated.armed_step >= gated.memorisation_step
    # The patience rule alone armed before memorisation began (the r = 0 run's arming step is
    # the patience rule's), so the gate did delay arming.
    assert plain.armed_step is not None and plain.armed_step < plain.memorisation_step
    armed_flags = [(h[names.STEP], h[names.RESET_ARMED]) for h in gated.history]
    assert all(flag == (step >= gated.armed_step) for step, flag in armed_flags)


def strip(result, *also):
    """History without timing (and the `also` keys)."""
    drop = {names.STEPS_PER_S, *also}
    return [{k: v for k, v in h.items() if k not in drop} for h in result.history]


# ----------------------------------------------------------------------------- resumption


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


@pytest.fixture(scope="module")
def resume_case():
    """digits memorising with arming on memorisation, stopped at the first evaluation of the
    streak that confirms memorisation: the detector is mid-streak and resetting not yet armed,
    so the detector's saved state decides when the resumed run arms."""
    torch.set_num_threads(1)
    config = regime_config(
        "digits-memorising", steps=900, reset_prob=0.05, arm_on_memorisation=True
    )
    data = prepare_data(config, "cpu")
    straight = train(config, data=data)
    onset = straight.memorisation_step
    assert onset is not None and straight.armed_step is not None and straight.num_resets > 0
    stop_at = onset
    stopper = StopAndSave(at_step=stop_at)
    first = train(config, data=data, callbacks=[stopper])
    assert first.steps_completed == stop_at
    return config, data, straight, stopper.saved


@pytest.mark.integration  # trains for real, for many seconds
def test_resume_with_the_detector_is_bit_exact(resume_case):
    config, data, straight, saved = resume_case
    state = torch.load(io.BytesIO(saved), weights_only=False)
    assert state["memorisation"]["onset_step"] is None  # mid-streak: decided after resuming
    assert state["memorisation"]["streak_start"] == straight.memorisation_step
    resumed = train(config, data=data, resume_state=state)
    assert strip(resumed) == strip(straight)
    assert resumed.memorisation_step == straight.memorisation_step
    assert resumed.armed_step == straight.armed_step
    assert resumed.reset_steps == straight.reset_steps and resumed.test_acc == straight.test_acc


@pytest.mark.integration  # trains for real, for many seconds
def test_a_state_saved_before_the_detector_existed_rebuilds_it(resume_case):
    config, data, straight, saved = resume_case
    state = torch.load(io.BytesIO(saved), weights_only=False)
    del state["memorisation"]
    state["version"] = 1
    state["config"].pop("arm_on_memorisation")  # old states lack the setting: default False
    plain = config.replace(arm_on_memorisation=False)
    run = TrainingRun(plain, data=data)
    run.load_state_dict(state)
    saved_detector = torch.load(io.BytesIO(saved), weights_only=False)["memorisation"]
    assert run.memorisation.state_dict() == saved_detector  # replayed from the history
    assert saved_detector["streak_start"] == straight.memorisation_step
    with pytest.raises(ValueError, match="arm_on_memorisation"):
        TrainingRun(config, data=data).load_state_dict(state)  # saved with the default, False
    broken = torch.load(io.BytesIO(saved), weights_only=False)
    del broken["memorisation"]
    with pytest.raises(ValueError, match="memorisation"):
        TrainingRun(config, data=data).load_state_dict(broken)
