"""Checks of KubeRay manifests before anything reaches a cluster: schema, operator, policy.

Three layers, each problem reported as one line naming the field (`spec.rayClusterSpec...`):

1. KubeRay's CRD schema (`crd_schema`), as the API server applies it with strict field
   validation: types, enums, minimums, required fields, unknown (misspelled) keys.
2. What KubeRay's operator refuses although the schema admits it (its `validation.go` and the
   CRD's CEL rules): `ttlSecondsAfterFinished` > 0 without `shutdownAfterJobFinishes`, exactly one
   of `rayClusterSpec` / `clusterSelector`, token auth on Ray older than 2.52.0, worker groups
   with duplicate or invalid names or `minReplicas` > `maxReplicas`, a head without containers,
   an object name that is not a DNS label.
3. reset-tune's deployment policy: no secret inline (environment variables that carry a
   password, token or key must come from a Secret by reference; no URI with a password in it),
   the head runs no trials (`num-cpus: "0"`), a RayJob is never retried (`backoffLimit: 0`: a
   retry would start a new search; `--resume` continues one).

Built-in Kubernetes kinds (ConfigMap, Deployment, Service, ...) are not checked here; the tests
validate them with `kubernetes-validate`.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

from reset_tune.deploy.crd_schema import API_VERSION, CRD_FILES, load_schema
from reset_tune.errors import ConfigError

TOKEN_AUTH_MIN_RAY = (2, 52, 0)
SUBMISSION_MODES = ("K8sJobMode", "HTTPMode", "InteractiveMode", "SidecarMode")
_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
# Environment variable names whose value is a credential.
_SECRET_NAME = re.compile(r"PASSWORD|PASSWD|SECRET|TOKEN|ACCESS_KEY|API_KEY|CREDENTIAL", re.I)
_PASSWORD_IN_URI = re.compile(r"[A-Za-z][A-Za-z0-9+.\-]*://[^/\s:@]+:[^/\s@]+@")


class ManifestError(ConfigError):
    """A manifest the API server or KubeRay's operator would refuse, or that leaks a secret."""


def is_kuberay(document: Mapping[str, Any]) -> bool:
    return document.get("apiVersion") == API_VERSION and document.get("kind") in CRD_FILES


def manifest_problems(document: Mapping[str, Any]) -> list[str]:
    """Every problem of one KubeRay manifest (RayJob or RayCluster), one line each."""
    kind = document.get("kind")
    if document.get("apiVersion") != API_VERSION or kind not in CRD_FILES:
        return [
            f"apiVersion/kind: expected {API_VERSION} RayJob or RayCluster, got "
            f"{document.get('apiVersion')!r} {kind!r}"
        ]
    pruned = _prune_nulls(document)
    problems = list(_schema_problems(str(kind), pruned))
    problems += _operator_problems(str(kind), pruned)
    problems += _policy_problems(str(kind), pruned)
    return problems


def check_manifest(document: Mapping[str, Any], where: str = "manifest") -> None:
    """Raise `ManifestError` listing every problem of `document` (see `manifest_problems`)."""
    problems = manifest_problems(document)
    if problems:
        raise ManifestError(f"{where}: " + "; ".join(problems))


# -- 1. the schema --------------------------------------------------------------------------------
def _schema_problems(kind: str, document: Mapping[str, Any]) -> Iterator[str]:
    from jsonschema import Draft7Validator

    validator = Draft7Validator(load_schema(kind))
    errors = sorted(validator.iter_errors(document), key=lambda e: list(map(str, e.path)))
    for error in errors:
        where = _path(error.absolute_path)
        if error.validator == "additionalProperties" and isinstance(error.instance, dict):
            known = list(error.schema.get("properties", {}))
            for key in sorted(set(error.instance) - set(known)):
                field = f"{where}.{key}" if where else key
                yield f"{field}: unknown field{_did_you_mean(key, known)}"
        else:
            yield f"{where or '(top level)'}: {error.message}"


def _did_you_mean(key: str, known: Iterable[str]) -> str:
    close = difflib.get_close_matches(key, list(known), n=1, cutoff=0.6)
    return f" (did you mean {close[0]}?)" if close else ""


def _path(parts: Iterable[Any]) -> str:
    out = ""
    for part in parts:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def _prune_nulls(node: Any) -> Any:
    """The API server drops null fields before it validates."""
    if isinstance(node, Mapping):
        return {k: _prune_nulls(v) for k, v in node.items() if v is not None}
    if isinstance(node, list):
        return [_prune_nulls(v) for v in node]
    return node


# -- 2. the operator ------------------------------------------------------------------------------
def _operator_problems(kind: str, document: Mapping[str, Any]) -> list[str]:
    problems: list[str] = []
    name = _get(document, "metadata", "name")
    if not isinstance(name, str) or not _DNS_LABEL.match(name) or len(name) > 63:
        problems.append(
            f"metadata.name: {name!r} must be a DNS label (lowercase letters, digits and '-', "
            "at most 63 characters)"
        )
    spec = document.get("spec")
    if not isinstance(spec, Mapping):
        return problems + ["spec: missing"]
    if kind == "RayJob":
        problems += _rayjob_problems(spec)
        cluster = spec.get("rayClusterSpec")
        if isinstance(cluster, Mapping):
            problems += _cluster_problems(cluster, "spec.rayClusterSpec")
    else:
        problems += _cluster_problems(spec, "spec")
    return problems


def _rayjob_problems(spec: Mapping[str, Any]) -> list[str]:
    problems = []
    if ("rayClusterSpec" in spec) == bool(spec.get("clusterSelector")):
        problems.append(
            "spec.rayClusterSpec / spec.clusterSelector: give exactly one (a cluster to create, "
            "or labels of an existing one)"
        )
    ttl = spec.get("ttlSecondsAfterFinished", 0)
    if isinstance(ttl, int) and ttl > 0 and not spec.get("shutdownAfterJobFinishes", False):
        problems.append(
            "spec.ttlSecondsAfterFinished: a TTL needs spec.shutdownAfterJobFinishes: true (the "
            "operator refuses it otherwise)"
        )
    for field in ("ttlSecondsAfterFinished", "activeDeadlineSeconds", "backoffLimit"):
        value = spec.get(field)
        if isinstance(value, int) and value < 0:
            problems.append(f"spec.{field}: must not be negative, got {value}")
    mode = spec.get("submissionMode", "K8sJobMode")
    if mode not in SUBMISSION_MODES:
        problems.append(
            f"spec.submissionMode: {mode!r} is not one of {', '.join(SUBMISSION_MODES)}"
        )
    if mode != "InteractiveMode" and not spec.get("entrypoint"):
        problems.append(f"spec.entrypoint: required in {mode}")
    strategy = spec.get("deletionStrategy")
    if isinstance(strategy, Mapping):
        legacy = "onSuccess" in strategy or "onFailure" in strategy
        if legacy and "deletionRules" in strategy:
            problems.append(
                "spec.deletionStrategy: onSuccess/onFailure and deletionRules exclude each other"
            )
    return problems


def _cluster_problems(cluster: Mapping[str, Any], where: str) -> list[str]:
    problems = []
    auth = cluster.get("authOptions")
    if isinstance(auth, Mapping) and auth.get("mode") == "token":
        version = _version(cluster.get("rayVersion"))
        if version is None or version < TOKEN_AUTH_MIN_RAY:
            problems.append(
                f"{where}.rayVersion: token authentication (authOptions.mode: token) needs Ray "
                f">= 2.52.0, got {cluster.get('rayVersion')!r}"
            )
    head = cluster.get("headGroupSpec")
    if isinstance(head, Mapping) and not _get(head, "template", "spec", "containers"):
        problems.append(
            f"{where}.headGroupSpec.template.spec.containers: the head needs a container"
        )
    seen: set[str] = set()
    for i, group in enumerate(cluster.get("workerGroupSpecs") or []):
        at = f"{where}.workerGroupSpecs[{i}]"
        if not isinstance(group, Mapping):
            continue
        name = group.get("groupName")
        if not isinstance(name, str) or not _DNS_LABEL.match(name) or name == "headgroup":
            problems.append(f"{at}.groupName: {name!r} must be a DNS label other than headgroup")
        elif name in seen:
            problems.append(f"{at}.groupName: {name!r} is used by another worker group")
        if isinstance(name, str):
            seen.add(name)
        low, high = group.get("minReplicas", 0), group.get("maxReplicas", 2**31 - 1)
        if isinstance(low, int) and isinstance(high, int):
            if low > high:
                problems.append(f"{at}.minReplicas: {low} is above maxReplicas {high}")
            replicas = group.get("replicas")
            if isinstance(replicas, int) and not low <= replicas <= high:
                problems.append(f"{at}.replicas: {replicas} is outside [{low}, {high}]")
        if not _get(group, "template", "spec", "containers"):
            problems.append(f"{at}.template.spec.containers: a worker needs a container")
    return problems


def _version(text: Any) -> tuple[int, ...] | None:
    match = re.match(r"^(\d+)\.(\d+)(?:\.(\d+))?", str(text or ""))
    return None if match is None else tuple(int(p or 0) for p in match.groups())


# -- 3. reset-tune's policy -----------------------------------------------------------------------
def _policy_problems(kind: str, document: Mapping[str, Any]) -> list[str]:
    spec = document.get("spec") or {}
    problems: list[str] = []
    cluster = spec.get("rayClusterSpec") if kind == "RayJob" else spec
    where = "spec.rayClusterSpec" if kind == "RayJob" else "spec"
    if kind == "RayJob" and spec.get("backoffLimit", 0) != 0:
        problems.append(
            "spec.backoffLimit: must be 0 (a retry starts a new cluster and a new search; "
            "`reset-tune search --resume` continues one)"
        )
    if isinstance(cluster, Mapping):
        params = _get(cluster, "headGroupSpec", "rayStartParams") or {}
        if params.get("num-cpus") != "0":
            problems.append(
                f'{where}.headGroupSpec.rayStartParams.num-cpus: must be "0" (the head runs the '
                "search's driver, no trials)"
            )
    for path, container in _containers(document):
        for j, env in enumerate(container.get("env") or []):
            if not isinstance(env, Mapping):
                continue
            at = f"{path}.env[{j}]"
            value = env.get("value")
            if value is None:
                continue
            if _SECRET_NAME.search(str(env.get("name", ""))):
                problems.append(
                    f"{at}.value: {env.get('name')} is a credential; take it from a Secret "
                    "(valueFrom.secretKeyRef), never inline"
                )
            elif _PASSWORD_IN_URI.search(str(value)):
                problems.append(
                    f"{at}.value: {env.get('name')} holds a URI with a password; take it from a "
                    "Secret (valueFrom.secretKeyRef), never inline"
                )
    return problems


def _containers(document: Mapping[str, Any]) -> Iterator[tuple[str, Mapping[str, Any]]]:
    """Every container of the manifest's pod templates, with its field path."""
    spec = document.get("spec") or {}
    templates: list[tuple[str, Any]] = []
    cluster, base = (spec.get("rayClusterSpec"), "spec.rayClusterSpec")
    if document.get("kind") != "RayJob":
        cluster, base = spec, "spec"
    if isinstance(cluster, Mapping):
        templates.append(
            (f"{base}.headGroupSpec.template", _get(cluster, "headGroupSpec", "template"))
        )
        for i, group in enumerate(cluster.get("workerGroupSpecs") or []):
            if isinstance(group, Mapping):
                templates.append((f"{base}.workerGroupSpecs[{i}].template", group.get("template")))
    if document.get("kind") == "RayJob":
        templates.append(("spec.submitterPodTemplate", spec.get("submitterPodTemplate")))
    for path, template in templates:
        if not isinstance(template, Mapping):
            continue
        for key in ("initContainers", "containers"):
            for i, container in enumerate(_get(template, "spec", key) or []):
                if isinstance(container, Mapping):
                    yield f"{path}.spec.{key}[{i}]", container


def _get(node: Any, *keys: str) -> Any:
    for key in keys:
        if not isinstance(node, Mapping):
            return None
        node = node.get(key)
    return node
