"""`TrainConfig`'s construction surface: keyword-only settings and field kinds from type hints."""

from __future__ import annotations

import dataclasses

import pytest

from reset_tune.config import FIELD_KINDS, FieldKind, TrainConfig


def test_settings_are_keyword_only():
    with pytest.raises(TypeError):
        TrainConfig("digits")  # would otherwise land silently on the first field
    assert TrainConfig(dataset="digits").dataset == "digits"


def test_field_kinds_cover_every_field_with_its_type_and_optionality():
    assert list(FIELD_KINDS) == [f.name for f in dataclasses.fields(TrainConfig)]
    assert FIELD_KINDS["deterministic"] == FieldKind(bool, False)
    assert FIELD_KINDS["steps"] == FieldKind(int, False)
    assert FIELD_KINDS["train_subset"] == FieldKind(int, True)
    assert FIELD_KINDS["lr"] == FieldKind(float, False)
    assert FIELD_KINDS["label_file"] == FieldKind(str, True)
    assert FIELD_KINDS["reset_layers"] == FieldKind(str, False)


def test_from_dict_coerces_by_field_kind():
    config = TrainConfig.from_dict({"lr": 1, "train_subset": None, "clean_val": True})
    assert config.lr == 1.0 and isinstance(config.lr, float)
    assert config.train_subset is None and config.clean_val is True
