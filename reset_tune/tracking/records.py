"""What a run records, as MLflow wants it: string params and tags; a result's tags and artifacts."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from reset_tune.tracking import names


def truncate(text: str, limit: int) -> str:
    """`text` if it fits in `limit` characters, else its head followed by `TRUNCATION_MARKER`."""
    if len(text) <= limit:
        return text
    return text[: limit - len(names.TRUNCATION_MARKER)] + names.TRUNCATION_MARKER


def param_value(value: Any) -> str:
    """One parameter as MLflow stores it (a string of at most 6000 characters).

    Scalars use `str` (so "0.05", "True", "None" read back as Python literals and the UI's
    parallel-coordinates view sees numbers); lists and mappings are JSON.
    """
    if isinstance(value, str):
        text = value
    elif isinstance(value, list | tuple | dict):
        text = json.dumps(value, sort_keys=True, default=str)
    else:
        text = str(value)
    return truncate(text, names.MAX_PARAM_VALUE_LENGTH)


def string_params(params: Mapping[str, Any] | None) -> dict[str, str]:
    """Parameters keyed by name (config field names for trials) with MLflow string values."""
    return {str(key): param_value(value) for key, value in (params or {}).items()}


def string_tags(tags: Mapping[str, Any] | None) -> dict[str, str]:
    return {
        str(key): truncate(str(value), names.MAX_TAG_VALUE_LENGTH)
        for key, value in (tags or {}).items()
        if value is not None
    }


def config_tags(config: Mapping[str, Any]) -> dict[str, str]:
    """Tags that identify what a trial trained: dataset, noise (kind and rate), model, seed."""
    tags: dict[str, str] = {}
    for tag, key in ((names.DATASET, "dataset"), (names.MODEL, "model"), (names.SEED, "seed")):
        if config.get(key) is not None:
            tags[tag] = str(config[key])
    noise = config.get("noise")
    if noise is not None:
        tags[names.NOISE] = str(noise)
        kind, _, argument = str(noise).partition(":")
        tags[names.NOISE_KIND] = kind.strip().lower()
        try:
            tags[names.NOISE_RATE] = repr(float(argument))
        except ValueError:
            pass  # human:SET, matrix:PATH: no nominal rate (`result_tags` adds the measured one)
    return tags


def result_tags(result: Any) -> dict[str, str]:
    """Tags of a finished `TrainResult`: its config's tags, data fingerprint and code version."""
    tags = config_tags(result.config or {})
    data = result.data or {}
    provenance = result.provenance or {}
    if data.get("fingerprint"):
        tags[names.DATA_FINGERPRINT] = str(data["fingerprint"])
    if names.NOISE_RATE not in tags and data.get("train_wrong_fraction") is not None:
        tags[names.NOISE_RATE] = repr(float(data["train_wrong_fraction"]))
    if provenance.get("commit"):
        tags[names.CODE_VERSION] = str(provenance["commit"])
    if provenance.get("reset_tune"):
        tags[names.PACKAGE_VERSION] = str(provenance["reset_tune"])
    return tags


def result_artifacts(result: Any, *, label: str = "trial") -> dict[str, bytes | str]:
    """A trial's artifacts: the curve plot (PNG), the resolved config and the full result (JSON)."""
    from reset_tune.plots import render_curves

    return {
        "curves.png": render_curves({label: result}),
        "config.json": json.dumps(result.config, indent=2, sort_keys=True, default=str) + "\n",
        "result.json": json.dumps(result.to_dict(), indent=2, default=str) + "\n",
    }


def config_from_params(params: Mapping[str, str]) -> dict[str, Any]:
    """The `TrainConfig` values among a run's MLflow params, typed again (inverse of `str`).

    Keys that are not config fields are left out; `TrainConfig.from_dict` of the result rebuilds
    the trial's config.
    """
    from reset_tune.config import FIELD_KINDS

    values: dict[str, Any] = {}
    for name, (kind, optional) in FIELD_KINDS.items():
        if name not in params:
            continue
        text = params[name]
        if text == "None" and optional:
            values[name] = None
        elif kind is bool:
            values[name] = {"True": True, "False": False}.get(text, text)
        elif kind is int:
            values[name] = _number(text, int)
        elif kind is float:
            values[name] = _number(text, float)
        else:
            values[name] = text
    return values


def _number(text: str, kind: type) -> Any:
    try:
        return kind(text)
    except ValueError:
        return text  # left as text: `TrainConfig.from_dict` names the key and the bad value
