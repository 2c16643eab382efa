"""Reading the YAML/JSON files users write (search specs, train configs, seed configurations, stack
configs): one reader, so every file reads the same way and every problem is one `ConfigError`
line naming the file (and the line and column where YAML points at one).

The reader is PyYAML's safe loader with two changes users expect: YAML 1.2 floats (``1e-3`` is a
number, not the string PyYAML 1.1 makes of it) and duplicate keys refused (a silently ignored
first value is a setting the user believes in but never got).
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

import yaml

from reset_tune.errors import ConfigError


class SettingsLoader(yaml.SafeLoader):
    """PyYAML's safe loader, plus YAML 1.2 floats (``1e-3``) and an error on duplicate keys."""


SettingsLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    # YAML 1.1 (PyYAML) reads 1e-3 as a *string*; YAML 1.2 and every user read it as a float.
    re.compile(r"^[-+]?(?:[0-9][0-9_]*)(?:\.[0-9_]*)?[eE][-+]?[0-9]+$"),
    list("-+0123456789"),
)


def _construct_mapping(
    loader: SettingsLoader, node: yaml.MappingNode, deep: bool = False
) -> dict[Any, Any]:
    first_line: dict[Any, int] = {}
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=deep)
        try:
            duplicate = key in first_line
        except TypeError:  # an unhashable key (a list or mapping): PyYAML names it next
            break
        if duplicate:
            raise yaml.constructor.ConstructorError(
                None,
                None,
                f"duplicate key {key!r} (first given on line {first_line[key]})",
                key_node.start_mark,
            )
        first_line[key] = key_node.start_mark.line + 1
    return loader.construct_mapping(node, deep=deep)


SettingsLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


def parse_yaml(text: str, source: str) -> Any:
    """The document in `text` (read from `source`); a problem is one line naming where it is."""
    try:
        return yaml.load(text, Loader=SettingsLoader)  # noqa: S506 - a SafeLoader subclass
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise ConfigError(f"{source}: invalid YAML: {where}{problem}") from None
    except RecursionError:
        raise ConfigError(f"{source}: invalid YAML: nested too deeply") from None
    except (ValueError, OverflowError) as exc:  # e.g. a timestamp such as 2024-02-30
        raise ConfigError(f"{source}: invalid YAML: {exc}") from None


def read_text_file(path: str | os.PathLike[str], what: str) -> str:
    """The UTF-8 text of the file `path` (a `what`, e.g. "search spec file"); a missing file, a
    directory, an unreadable or non-UTF-8 (binary) file is one `ConfigError` line."""
    source = os.fspath(path)
    file = Path(source)
    try:
        if file.is_dir():
            raise ConfigError(f"{source}: is a directory, not a {what}")
        data = file.read_bytes()
    except FileNotFoundError:
        raise ConfigError(f"{source}: no such {what} (the path does not exist)") from None
    except PermissionError:
        raise ConfigError(f"{source}: cannot read the {what}: permission denied") from None
    except OSError as exc:
        raise ConfigError(f"{source}: cannot read the {what}: {exc.strerror or exc}") from None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(
            f"{source}: not a text {what}: byte 0x{data[exc.start]:02x} at offset {exc.start} "
            "is not UTF-8; save it as UTF-8 YAML or JSON"
        ) from None


def read_yaml_file(path: str | os.PathLike[str], what: str) -> Any:
    """The YAML/JSON document in the file `path` (a `what`); every problem a `ConfigError`."""
    return parse_yaml(read_text_file(path, what), os.fspath(path))
