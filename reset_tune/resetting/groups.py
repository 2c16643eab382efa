"""Named layer groups: which module-name prefixes a partial reset of each group covers."""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from torch import nn

from reset_tune.errors import ConfigError

LayerGroups = dict[str, tuple[str, ...]]


def matches_prefixes(name: str, prefixes: Iterable[str]) -> bool:
    """Whether a parameter/buffer/module ``name`` lies under one of the module-name ``prefixes``.

    A prefix covers the module of that name and everything inside it: ``layer4`` covers
    ``layer4.0.conv1.weight`` but not ``layer40.weight``. The empty prefix is the root module and
    covers everything.
    """
    return any(p == "" or name == p or name.startswith(p + ".") for p in prefixes)


def layer_groups(model: nn.Module) -> LayerGroups:
    """The model's named layer groups: group name -> module-name prefixes it covers.

    Models from :func:`reset_tune.models.build_model` declare them in a ``layer_groups``
    attribute. For any other module the only group that can be inferred is ``head``: the last
    ``nn.Linear`` in ``named_modules()`` order.
    """
    declared = getattr(model, "layer_groups", None)
    if declared is not None:
        return _checked_copy(declared, model)
    last_linear = None
    for name, module in model.named_modules():
        if isinstance(module, nn.Linear):
            last_linear = name
    if last_linear is None:
        raise ConfigError(
            f"{type(model).__name__} declares no `layer_groups` and has no nn.Linear to infer "
            "the `head` group from; select layers to reset with glob patterns over parameter "
            "names instead (e.g. reset_layers: ['classifier.*'])."
        )
    return {"head": (last_linear,)}


def _checked_copy(declared: object, model: nn.Module) -> LayerGroups:
    # A foreign model may declare the attribute by hand; catch a wrong shape here rather than
    # as a silent empty selection at the first reset.
    where = f"{type(model).__name__}.layer_groups"
    if not isinstance(declared, Mapping):
        raise ConfigError(
            f"`{where}` must map group names to tuples of module-name prefixes, "
            f"but got {type(declared).__name__}."
        )
    groups: LayerGroups = {}
    for group, prefixes in declared.items():
        if (
            not isinstance(group, str)
            or isinstance(prefixes, str)
            or not isinstance(prefixes, Iterable)
        ):
            raise ConfigError(
                f"`{where}` must map group names to tuples of module-name prefixes, "
                f"but got {group!r}: {prefixes!r}."
            )
        prefixes = tuple(prefixes)
        if not prefixes or not all(isinstance(p, str) for p in prefixes):
            raise ConfigError(
                f"`{where}[{group!r}]` must be a non-empty tuple of module-name prefixes, "
                f"but got {prefixes!r}."
            )
        groups[group] = prefixes
    return groups
