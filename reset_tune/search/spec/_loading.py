"""Reading a YAML spec file with the project's one YAML reader (`reset_tune.yaml_files`: YAML 1.2
floats, duplicate keys refused, every problem a `ConfigError` naming the file)."""

from __future__ import annotations

import os

from reset_tune.search.spec._schema import SearchSpec
from reset_tune.yaml_files import read_yaml_file


def load_spec(path: str | os.PathLike[str]) -> SearchSpec:
    """Read and validate a YAML search spec; every problem is a `ConfigError` naming `path`."""
    source = os.fspath(path)
    data = read_yaml_file(source, "search spec file")
    return SearchSpec.from_dict(data if data is not None else {}, source=source)
