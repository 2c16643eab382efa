"""Recommendation logic on fabricated histories: similarity, the theory prior, the combination."""

from __future__ import annotations

import math

import pytest

from reset_tune.recommend.combine import (
    CANNOT_ACT,
    DOES_NOT_HELP,
    HELPS,
    HISTORY_MARGIN_P,
    OTHER_MODEL_FACTOR,
    UNKNOWN,
    combine,
    confidence_label,
    similarity,
)

from .fabricate import description, past_search


def test_similarity_is_one_for_the_same_setting_and_falls_with_distance():
    new = description()
    assert similarity(new, description()) == pytest.approx(1.0)
    near = similarity(new, description(noise_rate=0.45))
    far = similarity(new, description(noise_rate=0.1, batch_size=256))
    assert 1.0 > near > far
    assert similarity(new, description(model="mlp")) == pytest.approx(OTHER_MODEL_FACTOR)


def test_empty_history_answers_from_the_theory_with_low_confidence():
    new = description(theory_prob=0.004)
    combined, evidence = combine(new, [], model="cnn")
    assert evidence == []
    assert combined.resetting
    assert combined.basis.startswith("theory only")
    assert combined.expected_gain is None and combined.probability_of_gain is None
    # The theory's rate is the prior's centre, and its interval is wide (model uncertainty).
    assert combined.reset_prob == pytest.approx(0.004)
    low, high = combined.reset_prob_interval
    assert low < 0.004 / 3 and high > 0.004 * 3
    assert confidence_label(combined) == "low"


def test_the_answer_says_whether_history_was_empty_or_not_consulted():
    from reset_tune.config import TrainConfig
    from reset_tune.recommend import recommend
    from reset_tune.recommend.history import History

    new = description()
    config = TrainConfig.from_dict(new.probe.config)

    unconsulted = recommend(config, tracking_uri=None, description=new, log=False)
    empty = recommend(config, tracking_uri=None, description=new, log=False,
                      history=History(source="http://127.0.0.1:5000"))  # fmt: skip

    assert any("no tracking server" in note for note in unconsulted.notes)
    assert not any("no finished search in history" in note for note in unconsulted.notes)
    assert any("no finished search in history" in note for note in empty.notes)


def test_a_theory_that_says_no_turns_resetting_off_without_history():
    combined, _ = combine(description(peclet=50.0), [], model="cnn")
    assert not combined.resetting and combined.reset_prob == 0.0
    assert any("does not help" in r for r in combined.reasons)


def test_similar_searches_pull_the_rate_and_decide_the_layers():
    new = description(theory_prob=0.004)
    history = [
        past_search("same-a", gain=0.04, reset_prob=0.02, layers="head"),
        past_search("same-b", gain=0.05, reset_prob=0.02, layers="head"),
    ]
    combined, evidence = combine(new, history, model="cnn")
    assert [e.name for e in evidence] == ["same-a", "same-b"]
    assert combined.resetting and combined.reset_layers == "head"
    # Posterior between the theory (0.004) and history (0.02), nearer the two searches.
    assert 0.004 < combined.reset_prob < 0.02
    assert math.log(combined.reset_prob) > (math.log(0.004) + math.log(0.02)) / 2
    assert combined.expected_gain == pytest.approx((0.04 + 0.05) / (0.5 + 2.0))
    assert combined.probability_of_gain > 0.9
    assert combined.patience == 150
    assert confidence_label(combined) == "high"


def test_history_where_resetting_lost_turns_it_off_even_if_the_theory_says_yes():
    new = description(theory_prob=0.004)
    history = [past_search("a", gain=-0.03), past_search("b", gain=-0.02)]
    combined, _ = combine(new, history, model="cnn")
    assert not combined.resetting and combined.reset_prob == 0.0
    assert combined.expected_gain < 0
    assert any("disagrees" in r for r in combined.reasons)


def test_dissimilar_searches_weigh_little_and_are_dropped_when_negligible():
    new = description(noise_rate=0.6, batch_size=16)
    history = [
        past_search("close", gain=0.02, noise_rate=0.55, batch_size=16),
        past_search("remote", gain=-0.05, noise_rate=0.05, batch_size=512, num_train=50000),
    ]
    combined, evidence = combine(new, history, model="cnn")
    assert [e.name for e in evidence] == ["close"]
    assert combined.resetting


def test_layer_choices_that_the_model_lacks_are_not_voted_for():
    new = description(model="mlp")
    history = [
        past_search(f"cnn-{i}", gain=0.05, layers="block3,head", model="cnn") for i in range(3)
    ]
    combined, evidence = combine(new, history, model="mlp")
    assert len(evidence) == 3
    assert combined.reset_layers == "all"  # the method's default: block3 is not an mlp layer


# -- the verdict: resetting only where there is memorisation to counter ------------------------


def test_no_memorisation_within_the_budget_means_cannot_act_even_if_the_theory_says_helps():
    new = description(peclet=-167.0, memorised=False, steps=3000, weight_decay=5e-4)
    assert new.probe.figures.verdict == "helps"  # the wandering drift looks like latent bias
    combined, _ = combine(new, [], model="cnn")
    assert combined.verdict == CANNOT_ACT and combined.memorised is False
    assert not combined.resetting and combined.reset_prob == 0.0
    assert combined.rate_if_on > 0  # what a confirming search would try
    advice = " ".join(combined.advice)
    assert "--steps, now 3000" in advice and "--train-subset" in advice
    assert "--weight-decay, now 0.0005" in advice
    assert "no memorisation" in combined.verdict_reason
    assert any("wandering" in r for r in combined.reasons)


def test_validation_that_never_stops_improving_means_cannot_act():
    combined, _ = combine(description(armed=False, memorised=False, weight_decay=0.0), [],
                          model="cnn")  # fmt: skip
    assert combined.verdict == CANNOT_ACT and not combined.resetting
    assert "never arm" in combined.verdict_reason
    assert not any("weight decay" in a for a in combined.advice)  # there is none to lower


def test_clean_looking_labels_are_named_in_the_advice():
    combined, _ = combine(description(noise_rate=0.01, memorised=False), [], model="cnn")
    assert combined.verdict == CANNOT_ACT and "nearly clean" in combined.advice[0]


def test_an_unchecked_probe_gives_unknown_and_leaves_resetting_off():
    combined, _ = combine(description(checked=False, memorised=False), [], model="cnn")
    assert combined.verdict == UNKNOWN and combined.memorised is None
    assert not combined.resetting and "unknown" in combined.verdict_reason


def test_history_where_resetting_won_by_a_margin_overrides_a_probe_without_memorisation():
    new = description(memorised=False)
    history = [past_search(f"won-{i}", gain=g, memorised=False)
               for i, g in enumerate((0.05, 0.06, 0.05))]  # fmt: skip
    combined, evidence = combine(new, history, model="cnn")
    assert len(evidence) == 3 and combined.probability_of_gain >= HISTORY_MARGIN_P
    assert combined.verdict == HELPS and combined.resetting and combined.reset_prob > 0
    assert combined.basis.startswith("history")
    assert any("history overrides" in r for r in combined.reasons)


def test_history_without_a_margin_does_not_override_a_probe_without_memorisation():
    new = description(memorised=False)
    history = [past_search("won", gain=0.04, memorised=False),
               past_search("lost", gain=-0.03, memorised=False)]  # fmt: skip
    combined, _ = combine(new, history, model="cnn")
    assert combined.evidence_weight >= 0.5 and combined.expected_gain > 0
    assert combined.probability_of_gain < HISTORY_MARGIN_P
    assert combined.verdict == CANNOT_ACT and not combined.resetting


def test_memorising_past_settings_are_not_similar_to_one_without_memorisation():
    new = description(memorised=False)
    history = [past_search(f"mem-{i}", gain=0.06) for i in range(3)]  # they memorised, Pe -50
    assert similarity(new, history[0].description) < 0.05
    combined, _ = combine(new, history, model="cnn")
    assert combined.verdict == CANNOT_ACT and not combined.resetting


def test_memorisation_seen_keeps_the_theory_and_history_rule():
    helps, _ = combine(description(peclet=-50.0), [], model="cnn")
    assert helps.verdict == HELPS and helps.resetting and helps.memorised is True
    no, _ = combine(description(peclet=50.0), [], model="cnn")
    assert no.verdict == DOES_NOT_HELP and not no.resetting
    lost, _ = combine(description(), [past_search("a", gain=-0.03), past_search("b", gain=-0.02)],
                      model="cnn")  # fmt: skip
    assert lost.verdict == DOES_NOT_HELP and not lost.resetting


def test_table_json_and_spec_agree_on_a_cannot_act_answer():
    import yaml

    from reset_tune.config import TrainConfig
    from reset_tune.recommend import recommend

    new = description(memorised=False, steps=3000)
    answer = recommend(TrainConfig.from_dict(new.probe.config), tracking_uri=None,
                       description=new, log=False)  # fmt: skip
    assert answer.verdict == CANNOT_ACT and answer.memorised is False and answer.reset_prob == 0
    payload = answer.to_json()
    rec = payload["recommendation"]
    assert rec["verdict"] == CANNOT_ACT and rec["resetting"] is False and rec["reset_prob"] == 0
    assert rec["advice"] == list(answer.combined.advice) and rec["reset_prob_if_on"] > 0
    assert payload["probe"]["memorisation"]["seen"] is False
    assert payload["probe"]["verdict"] == CANNOT_ACT and payload["probe"]["theory_verdict"] == HELPS
    table = answer.table()
    assert table.splitlines()[0].startswith("verdict") and "resetting cannot act" in table
    assert "to change" in table and "0 (no resetting" in table
    text = answer.spec_text()
    assert "# Verdict: resetting cannot act (off)" in text and "--steps, now 3000" in text
    spec = yaml.safe_load(text)
    assert spec["first_trials"][0]["reset_prob"] == 0.0
    assert spec["first_trials"][1]["reset_prob"] > 0
    assert "cannot act" in spec["description"]
