"""Property tests: whatever a spec file or a train config holds, loading it raises only the
project's own errors (`reset_tune.errors`), never another exception."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from reset_tune.cli.train_command import _read_config_file
from reset_tune.config import TrainConfig
from reset_tune.errors import ResetTuneError
from reset_tune.search.spec import SearchSpec, load_spec

BASE = yaml.safe_load(
    (Path(__file__).resolve().parents[2] / "search_spaces/default.yaml").read_text()
)

SPEC_KEYS = [*BASE, "name", "first_trials", "extra", ""]
PARAM_KEYS = [*BASE["params"], "augment", "momentum", "x"]
TRAIN_FIELDS = [*TrainConfig.__dataclass_fields__, "reset_probability", "lr ", ""]
PARAM_TYPES = ["loguniform", "uniform", "int", "categorical", "fixed", "bogus"]

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=12),
    st.sampled_from(["all", "head", "cnn", "digits", "symmetric:0.4", "tpe", "val_acc", "1e-3"]),
)
values = st.recursive(
    scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4),
        st.dictionaries(
            st.one_of(st.text(max_size=8), st.sampled_from(PARAM_KEYS)), inner, max_size=4
        ),
    ),
    max_leaves=12,
)
param_specs = st.one_of(
    values,
    st.fixed_dictionaries(
        {"type": st.sampled_from(PARAM_TYPES)},
        optional={
            "low": scalars,
            "high": scalars,
            "step": scalars,
            "choices": st.lists(values, max_size=4),
            "off_arm": scalars,
        },
    ),
)


@st.composite
def spec_documents(draw: st.DrawFn) -> dict[str, Any]:
    """The default spec with some keys replaced, dropped or added at random."""
    document: dict[str, Any] = {k: v for k, v in BASE.items() if draw(st.booleans())}
    for key in draw(st.lists(st.sampled_from(SPEC_KEYS), max_size=4)):
        document[key] = draw(values)
    if draw(st.booleans()):
        document["params"] = draw(
            st.dictionaries(st.sampled_from(PARAM_KEYS), param_specs, max_size=5)
        )
    if draw(st.booleans()):
        train = dict(BASE["train"])
        for key in draw(st.lists(st.sampled_from(TRAIN_FIELDS), max_size=3)):
            train[key] = draw(scalars)
        document["train"] = train
    return document


def _load_text(text: str | bytes, suffix: str = ".yaml") -> None:
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / f"spec{suffix}"
        if isinstance(text, bytes):
            path.write_bytes(text)
        else:
            path.write_text(text, encoding="utf-8")
        load_spec(path)


FAST = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@FAST
@given(spec_documents())
def test_any_spec_document_loads_or_raises_our_error(document):
    try:
        SearchSpec.from_dict(document, source="spec.yaml")
    except ResetTuneError:
        pass


@FAST
@given(spec_documents())
def test_any_spec_file_loads_or_raises_our_error(document):
    try:
        _load_text(yaml.safe_dump(document, allow_unicode=True))
    except ResetTuneError:
        pass


@FAST
@given(st.one_of(st.binary(max_size=200), st.text(max_size=200)))
def test_any_bytes_as_a_spec_file_raise_only_our_error(data):
    try:
        _load_text(data)
    except ResetTuneError:
        pass


@FAST
@given(st.dictionaries(st.sampled_from(TRAIN_FIELDS), values, max_size=6))
def test_any_train_config_mapping_builds_or_raises_our_error(mapping):
    try:
        TrainConfig.from_dict(mapping, source="run.yaml")
    except ResetTuneError:
        pass


@FAST
@given(
    st.one_of(
        st.binary(max_size=200),
        st.text(max_size=200),
        st.dictionaries(st.sampled_from(TRAIN_FIELDS), values, max_size=6).map(
            lambda d: yaml.safe_dump(d, allow_unicode=True)
        ),
    )
)
def test_any_train_config_file_reads_or_raises_our_error(data):
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "run.yaml"
        if isinstance(data, bytes):
            path.write_bytes(data)
        else:
            path.write_text(data, encoding="utf-8")
        try:
            TrainConfig.from_dict(_read_config_file(path), source=str(path))
        except ResetTuneError:
            pass


def test_a_float_in_exponent_form_is_a_float_in_train_configs_as_in_specs(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text("lr: 1e-3\nweight_decay: 5E-4\n")
    config = TrainConfig.from_dict(_read_config_file(path), source=str(path))
    assert config.lr == 0.001 and config.weight_decay == 0.0005
