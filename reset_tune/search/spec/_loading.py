"""Reading a YAML spec file: YAML 1.2 floats, duplicate keys refused, every problem a
`ConfigError` naming the file."""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

import yaml

from reset_tune.errors import ConfigError
from reset_tune.search.spec._schema import SearchSpec


class _SpecLoader(yaml.SafeLoader):
    """PyYAML's safe loader, plus YAML 1.2 floats (``1e-3``) and an error on duplicate keys."""


_SpecLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    # YAML 1.1 (PyYAML) reads 1e-3 as a *string*; YAML 1.2 and every user read it as a float.
    re.compile(r"^[-+]?(?:[0-9][0-9_]*)(?:\.[0-9_]*)?[eE][-+]?[0-9]+$"),
    list("-+0123456789"),
)


def _construct_mapping(loader: _SpecLoader, node: yaml.MappingNode, deep: bool = False) -> dict:
    seen: set[Any] = set()
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=deep)
        if key in seen:
            mark = key_node.start_mark
            raise yaml.constructor.ConstructorError(
                None, None, f"duplicate key {key!r} (line {mark.line + 1})", mark
            )
        seen.add(key)
    return loader.construct_mapping(node, deep=deep)


_SpecLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


def load_spec(path: str | os.PathLike[str]) -> SearchSpec:
    """Read and validate a YAML search spec; every problem is a `ConfigError` naming `path`."""
    source = os.fspath(path)
    try:
        text = Path(source).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{source}: no such search spec file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{source}: cannot read the search spec: {exc}") from None
    try:
        data = yaml.load(text, Loader=_SpecLoader)  # noqa: S506 - a SafeLoader subclass
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise ConfigError(f"{source}: invalid YAML: {where}{problem}") from None
    return SearchSpec.from_dict(data if data is not None else {}, source=source)
