"""`combine` refuses a past search it cannot compare, with the project's error and the fix."""

from __future__ import annotations

import dataclasses

import pytest

from reset_tune.errors import ConfigError
from reset_tune.recommend.combine import combine

from .fabricate import description, past_search


def test_a_past_search_without_a_description_is_named_not_asserted():
    undescribed = dataclasses.replace(past_search("old-search", gain=0.05), description=None)
    with pytest.raises(ConfigError, match="'old-search' has no description"):
        combine(description(), [past_search("fine", gain=0.05), undescribed], model="cnn")
