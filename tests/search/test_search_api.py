"""`reset_tune.search.run` checks its arguments before anything starts (no state, no cluster)."""

from __future__ import annotations

import pytest

from reset_tune import search
from reset_tune.errors import ConfigError

SPEC = "search_spaces/default.yaml"


@pytest.mark.parametrize(
    ("args", "kwargs", "message"),
    [
        ((), {}, "give a search spec file"),
        (("no/such.yaml",), {}, "no/such.yaml: no such spec file"),
        ((SPEC,), {"trials": 0}, "trials must be at least 1, got 0"),
        ((SPEC,), {"max_failures": -1}, "max_failures must be at least 0, got -1"),
        ((SPEC,), {"checkpoint_every": 0}, "checkpoint_every must be at least 1, got 0"),
        ((SPEC,), {"trials": 2.5}, "trials must be an integer, got 2.5"),
        ((SPEC,), {"report_interval_s": -1.0}, "report_interval_s must be at least 0"),
        ((SPEC,), {"search_id": "x"}, "pass resume=True"),
        ((42,), {}, "spec_path must be the path of a search spec file, got int"),
    ],
)
def test_bad_arguments_are_one_clear_error_before_anything_starts(tmp_path, args, kwargs, message):
    with pytest.raises(ConfigError, match=message):
        search.run(*args, state_dir=tmp_path, **kwargs)
    assert list(tmp_path.iterdir()) == []  # nothing was created


def test_arguments_are_keyword_only():
    with pytest.raises(TypeError):
        search.run(SPEC, 3)  # a positional trials count
