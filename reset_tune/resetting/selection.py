"""Which tensors a reset restores: resolves `reset_layers` to parameter and buffer names."""

from __future__ import annotations

import fnmatch
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch

from reset_tune.errors import ConfigError
from reset_tune.resetting.groups import layer_groups as declared_layer_groups
from reset_tune.resetting.groups import matches_prefixes

_GLOB_CHARS = frozenset("*?[")


@dataclass(frozen=True)
class ResetSelection:
    """Names (as in `named_parameters` / `named_buffers`) that a reset restores."""

    parameter_names: tuple[str, ...]
    buffer_names: tuple[str, ...]


def parse_reset_layers(spec: str | Sequence[str]) -> tuple[str, ...]:
    """Split `"layer3,layer4"` (or a list) into tokens; empty specs are rejected."""
    tokens = spec.split(",") if isinstance(spec, str) else list(spec)
    tokens = [t.strip() for t in tokens if t and t.strip()]
    if not tokens:
        raise ConfigError(
            f"reset_layers must name at least one layer group or glob, but got {spec!r}; "
            "use 'all', 'head', a group the model declares, or a pattern such as 'layer4.*'."
        )
    return tuple(tokens)


def _owner(name: str) -> str:
    return name.rpartition(".")[0]


def select_reset_tensors(
    model: torch.nn.Module,
    reset_layers: str | Sequence[str] = "all",
    *,
    layer_groups: Mapping[str, Sequence[str]] | None = None,
) -> ResetSelection:
    """Resolve `reset_layers` against `model`.

    Tokens: `all`; a group name (`head`, or one the model declares in `layer_groups`); or a glob
    over parameter names (`layer4.*`, `*.bn*.weight`). The buffers selected are those of every
    module owning a selected parameter (BatchNorm running statistics travel with their layer) and
    every buffer under a selected group's prefixes.
    """
    groups: dict[str, tuple[str, ...]] | None = (
        {k: tuple(v) for k, v in layer_groups.items()} if layer_groups is not None else None
    )
    param_names = [n for n, _ in model.named_parameters()]
    buffer_names = [n for n, _ in model.named_buffers()]
    chosen_params: set[str] = set()
    chosen_buffers: set[str] = set()
    for token in parse_reset_layers(reset_layers):
        if token == "all":
            chosen_params.update(param_names)
            chosen_buffers.update(buffer_names)
        elif _GLOB_CHARS & set(token):
            matched = fnmatch.filter(param_names, token)
            if not matched:
                raise ConfigError(
                    f"reset_layers pattern {token!r} matches no parameter name; parameter names "
                    f"look like {param_names[:3]} (see model.named_parameters())."
                )
            chosen_params.update(matched)
        else:
            if groups is None:  # resolved only when a group is named: `all` needs none
                groups = declared_layer_groups(model)
            if token not in groups:
                allowed = ", ".join(["all", *sorted(groups)])
                raise ConfigError(
                    f"reset_layers has unknown layer group {token!r}; allowed: {allowed}, "
                    "or a glob pattern over parameter names such as 'layer4.*'."
                )
            prefixes = groups[token]
            matched = [n for n in param_names if matches_prefixes(n, prefixes)]
            if not matched:
                raise ConfigError(
                    f"reset_layers group {token!r} matches no parameter of this model "
                    f"(its prefixes {list(prefixes)} are stale); fix the model's layer_groups."
                )
            chosen_params.update(matched)
            chosen_buffers.update(n for n in buffer_names if matches_prefixes(n, prefixes))
    owners = {_owner(n) for n in chosen_params}
    chosen_buffers.update(n for n in buffer_names if _owner(n) in owners)
    return ResetSelection(
        parameter_names=tuple(n for n in param_names if n in chosen_params),
        buffer_names=tuple(n for n in buffer_names if n in chosen_buffers),
    )
