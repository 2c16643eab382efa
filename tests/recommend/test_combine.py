"""Recommendation logic on fabricated histories: similarity, the theory prior, the combination."""

from __future__ import annotations

import math

import pytest

from reset_tune.recommend.combine import OTHER_MODEL_FACTOR, combine, confidence_label, similarity

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
