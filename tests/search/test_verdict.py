"""The search's verdict on fabricated per-seed results (`reset_tune.search.verdict`)."""

from __future__ import annotations

import math

import pytest

from reset_tune.search.verdict import (
    CANNOT_ACT,
    HELPS,
    HURTS,
    NO_COMPARISON,
    NO_EVIDENCE,
    ONE_SEED,
    SeedValues,
    decide,
    paired_difference,
    t_quantile_975,
)


def seeds(objectives, tests, *, resets=5, memorised=True, n_val=150, n_test=360):
    return {
        s: SeedValues(
            objective=o,
            test_acc=t,
            num_resets=resets,
            memorisation_step=300 if memorised else None,
            n_val=n_val,
            n_test=n_test,
        )
        for s, (o, t) in enumerate(zip(objectives, tests, strict=True))
    }


def judge(resetting, baseline, **kwargs):
    return decide(
        resetting,
        baseline,
        mode=kwargs.pop("mode", "max"),
        objective_metric=kwargs.pop("objective_metric", "val_acc"),
        resetting_label="trial-0002",
        baseline_label="trial-0001",
        steps=1500,
        **kwargs,
    )


def test_a_consistent_gain_over_four_seeds_helps():
    verdict = judge(
        seeds([0.66, 0.67, 0.65, 0.68], [0.95, 0.96, 0.94, 0.96]),
        seeds([0.55, 0.56, 0.54, 0.55], [0.90, 0.91, 0.90, 0.92]),
    )
    assert verdict.word == HELPS
    assert verdict.objective.low > 0
    assert verdict.test_acc.mean == pytest.approx(0.045)
    assert "helps" in verdict.line() and "4 paired seed(s)" in verdict.line()


def test_a_consistent_loss_hurts_and_a_mixed_one_is_no_evidence():
    hurt = judge(seeds([0.45, 0.46, 0.44, 0.45], [0.8] * 4), seeds([0.60] * 4, [0.9] * 4))
    assert hurt.word == HURTS
    mixed = judge(seeds([0.60, 0.50, 0.62, 0.52], [0.9] * 4), seeds([0.56] * 4, [0.9] * 4))
    assert mixed.word == NO_EVIDENCE
    assert mixed.objective.low < 0 < mixed.objective.high


def test_one_seed_is_labelled_not_a_verdict():
    verdict = judge(seeds([0.70], [0.95]), seeds([0.55], [0.9]))
    assert verdict.word == ONE_SEED
    assert math.isnan(verdict.objective.low)
    assert "1 seed" in verdict.line()


def test_no_memorisation_in_the_r0_arm_means_resetting_cannot_act_whatever_the_difference():
    verdict = judge(
        seeds([0.70] * 4, [0.95] * 4),
        seeds([0.55] * 4, [0.90] * 4, memorised=False),
    )
    assert verdict.word == CANNOT_ACT
    assert "did not memorise within 1500 steps" in verdict.reason
    assert "train longer" in verdict.reason


def test_a_resetting_configuration_that_never_reset_cannot_act():
    verdict = judge(seeds([0.70] * 4, [0.95] * 4, resets=0), seeds([0.55] * 4, [0.90] * 4))
    assert verdict.word == CANNOT_ACT
    assert "never reset" in verdict.reason


def test_only_common_seeds_are_paired_and_a_missing_arm_is_no_comparison():
    resetting = seeds([0.66, 0.67, 0.65, 0.68], [0.95] * 4)
    baseline = {s: v for s, v in seeds([0.55] * 4, [0.9] * 4).items() if s < 2}
    verdict = judge(resetting, baseline)
    assert verdict.seeds == [0, 1]
    assert judge(resetting, None).word == NO_COMPARISON


def test_minimised_objectives_are_signed_so_that_positive_is_better():
    verdict = judge(
        seeds([1.00, 1.01, 0.99, 1.00], [0.9] * 4),
        seeds([1.30, 1.31, 1.29, 1.32], [0.9] * 4),
        mode="min",
        objective_metric="val_loss",
    )
    assert verdict.word == HELPS
    assert verdict.objective.mean == pytest.approx(0.305)


def test_paired_interval_is_a_t_interval_floored_at_one_image():
    diff = paired_difference([0.1, 0.2, 0.3], [0.5] * 6, n_images=None)
    se = 0.1 / math.sqrt(3)
    assert diff.low == pytest.approx(0.2 - 4.303 * se)
    assert diff.high == pytest.approx(0.2 + 4.303 * se)
    tied = paired_difference([0.02, 0.02], [0.5] * 4, n_images=100)
    assert tied.se == pytest.approx(0.01 / math.sqrt(2))
    assert tied.low < 0.02 < tied.high  # identical differences are not a certainty
    one = paired_difference([0.05], [0.5, 0.55], n_images=100)
    assert math.isnan(one.low) and one.se == pytest.approx(math.sqrt(0.525 * 0.475 / 100))


def test_t_quantiles():
    assert t_quantile_975(1) == pytest.approx(12.706)
    assert t_quantile_975(11) == pytest.approx(2.179)  # conservative between table rows
    assert t_quantile_975(100) == pytest.approx(1.96)
    with pytest.raises(ValueError):
        t_quantile_975(0)


def _outcome(label, r, objectives, tests, *, memorised=True, race_status=None):
    from reset_tune.search.report import TrialOutcome

    per_seed = seeds(objectives, tests, memorised=memorised, resets=5 if r else 0)
    return TrialOutcome(
        label=label,
        tune_trial_id=label,
        outcome="complete",
        params={},
        config={"reset_prob": r, "lr": 0.1, "batch_size": 32},
        objective=sum(objectives) / len(objectives),
        test_acc=sum(tests) / len(tests),
        num_resets=5 if r else 0,
        per_seed=per_seed,
        n_seeds=len(objectives),
        race_status=race_status,
    )


def test_a_report_judges_its_best_trial_of_each_arm_and_marks_ties():
    from reset_tune.search.report import SearchReport

    trials = [
        _outcome("trial-0000", 0.01, [0.66, 0.67, 0.65], [0.95, 0.96, 0.94]),
        _outcome("trial-0001", 0.0, [0.55, 0.56, 0.54], [0.90, 0.91, 0.90]),
        _outcome("trial-0002", 0.02, [0.65, 0.66, 0.65], [0.93, 0.93, 0.93]),  # within noise
        _outcome("trial-0003", 0.0, [0.30, 0.31, 0.29], [0.60, 0.61, 0.62]),
    ]
    report = SearchReport("s", "val_acc", "max", trials, {}, steps=1500)
    verdict = report.verdict()
    assert (verdict.resetting, verdict.baseline) == ("trial-0000", "trial-0001")
    assert verdict.word == HELPS and verdict.seeds == [0, 1, 2]
    assert [t.label for t in report.tied_with_best()] == ["trial-0002"]
    table = report.table()
    assert "≈" in table.splitlines()[3] and "tied with the best" in table
    assert report.summary_metrics()["verdict/n_seeds"] == 3
    assert report.to_json()["verdict"]["word"] == HELPS


def test_with_racing_the_incumbents_rank_first_whatever_a_lucky_single_seed_says():
    from reset_tune.search.report import SearchReport

    trials = [
        _outcome("trial-0000", 0.01, [0.62, 0.61, 0.63, 0.62], [0.9] * 4, race_status="incumbent"),
        _outcome("trial-0001", 0.0, [0.58, 0.57, 0.59, 0.58], [0.9] * 4, race_status="incumbent"),
        _outcome("trial-0002", 0.02, [0.70], [0.9], race_status="rejected"),
    ]
    report = SearchReport("s", "val_acc", "max", trials, {}, racing=True)
    assert [t.label for t in report.ranked()] == ["trial-0000", "trial-0001", "trial-0002"]
    assert report.best.label == "trial-0000"
    assert report.verdict().seeds == [0, 1, 2, 3]
