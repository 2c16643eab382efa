"""KubeRay's CRDs as JSON Schema: the conversion, and the converted schemas this package ships.

A CustomResourceDefinition carries an OpenAPI v3 schema per served version; the API server
applies it after filling defaults and pruning nulls, and (with `kubectl --validate=strict`,
the default since Kubernetes 1.27) rejects unknown fields. `convert_crd` turns such a schema
into a JSON Schema with the same meaning:

- a field with a `default` is dropped from `required` (the server fills it before validating);
- every object that lists `properties` and neither `additionalProperties` nor
  `x-kubernetes-preserve-unknown-fields` gets `additionalProperties: false` (strict field
  validation: a misspelled key is an error, not silently pruned);
- `x-kubernetes-int-or-string` accepts an integer or a string; `nullable` admits null;
- the `x-kubernetes-*` extensions and CEL rules are dropped (the CEL rules the operator's
  validation relies on are re-checked in `reset_tune.deploy.validate`).

The converted schemas of KubeRay v1.7.0 (`ray.io/v1`) ship gzipped beside this module
(`schemas/`), so validation works without the CRD files; `tests/deploy` checks that they equal
the conversion of the CRDs as KubeRay ships them (`../shared/kuberay-crds/v1.7.0/`).
"""

from __future__ import annotations

import copy
import gzip
import json
from functools import cache
from pathlib import Path
from typing import Any

KUBERAY_VERSION = "v1.7.0"
API_VERSION = "ray.io/v1"
SCHEMA_DIR = Path(__file__).parent / "schemas"
# kind -> the CRD file KubeRay ships it in, and the converted schema's file here.
CRD_FILES = {"RayJob": "ray.io_rayjobs.yaml", "RayCluster": "ray.io_rayclusters.yaml"}


def schema_file(kind: str) -> Path:
    return SCHEMA_DIR / f"{kind.lower()}.{KUBERAY_VERSION}.schema.json.gz"


def convert_crd(crd: dict[str, Any], version: str = "v1") -> dict[str, Any]:
    """The JSON Schema of `version` of the CRD document `crd` (see the module docstring)."""
    versions = {v["name"]: v for v in crd["spec"]["versions"]}
    if version not in versions:
        raise ValueError(f"the CRD has no version {version!r} (it has {sorted(versions)})")
    schema = copy.deepcopy(versions[version]["schema"]["openAPIV3Schema"])
    converted = _convert(schema)
    converted["$schema"] = "http://json-schema.org/draft-07/schema#"
    return converted


def _convert(node: Any) -> Any:
    if isinstance(node, list):
        return [_convert(item) for item in node]
    if not isinstance(node, dict):
        return node
    out: dict[str, Any] = {}
    for key, value in node.items():
        if key.startswith("x-kubernetes-") or key == "nullable":
            continue
        if key == "properties":
            out[key] = {name: _convert(sub) for name, sub in value.items()}
        else:
            out[key] = _convert(value)
    properties = node.get("properties")
    if properties and "required" in node:
        defaulted = {name for name, sub in properties.items() if "default" in sub}
        out["required"] = [name for name in node["required"] if name not in defaulted]
        if not out["required"]:
            del out["required"]
    if (
        properties
        and "additionalProperties" not in node
        and not node.get("x-kubernetes-preserve-unknown-fields")
    ):
        out["additionalProperties"] = False
    if node.get("x-kubernetes-int-or-string"):
        out.pop("type", None)
        out.setdefault("anyOf", [{"type": "integer"}, {"type": "string"}])
    if node.get("nullable") and "type" in out:
        out["type"] = [out["type"], "null"]
    return out


def write_schema(kind: str, crd: dict[str, Any]) -> Path:
    """Convert `crd` and store it as this package's schema of `kind` (deterministic bytes)."""
    path = schema_file(kind)
    path.parent.mkdir(parents=True, exist_ok=True)
    text = json.dumps(convert_crd(crd), sort_keys=True, separators=(",", ":"))
    path.write_bytes(gzip.compress(text.encode(), mtime=0))
    return path


@cache
def load_schema(kind: str) -> dict[str, Any]:
    """The shipped JSON Schema of the KubeRay kind `kind` (RayJob, RayCluster)."""
    if kind not in CRD_FILES:
        raise KeyError(kind)
    loaded: dict[str, Any] = json.loads(gzip.decompress(schema_file(kind).read_bytes()))
    return loaded
