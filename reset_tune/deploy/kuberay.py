"""KubeRay manifests for reset-tune: a RayJob per search, and a long-lived RayCluster.

The RayJob of a search is generated from its spec, so the worker groups agree with what the
spec's trials ask for: a trial needs `resources.cpus` CPUs and `resources.gpus` of a GPU, and
`concurrency` of them run at once. A worker pod holds `trials_per_pod` trials, and the group's
`maxReplicas` is what `concurrency` trials need; the autoscaler starts pods as trials wait and
removes idle ones. The head runs the search's driver only (`num-cpus: "0"`).

Stores reach the pods through the environment (`reset_tune.search.stores`), credentials by
reference to one Secret (`STORE_SECRET_KEYS` names its keys), never inline:

    head (the driver)  RESET_TUNE_OPTUNA_STORAGE, MLFLOW_TRACKING_URI (+ USERNAME/PASSWORD),
                       RESET_TUNE_TUNE_STORAGE, RESET_TUNE_STATE_DIR (a volume that outlives the
                       cluster, so a later RayJob can `--resume`), the spec from a ConfigMap
    workers (trials)   AWS credentials and endpoint, to write checkpoints to s3:// Tune storage
"""

from __future__ import annotations

import math
import re
import shlex
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from reset_tune.deploy.crd_schema import API_VERSION
from reset_tune.errors import ConfigError
from reset_tune.redact import redact_uri
from reset_tune.search.spec import SearchSpec
from reset_tune.search.stores import (
    MLFLOW_PASSWORD_ENV,
    MLFLOW_USERNAME_ENV,
    OPTUNA_STORAGE_ENV,
    TUNE_STORAGE_ENV,
)
from reset_tune.state import STATE_DIR_ENV

RAY_VERSION = "2.60.0"  # pyproject.toml's ray pin; token auth needs KubeRay >= 1.5.1, Ray >= 2.52
DEFAULT_IMAGE = "reset-tune:0.1.0"  # what deploy/docker/Dockerfile builds; push it to your registry
STORE_SECRET = "reset-tune-stores"
# Environment variable -> key in the stores Secret.
STORE_SECRET_KEYS = {
    OPTUNA_STORAGE_ENV: "optuna-storage-url",
    MLFLOW_USERNAME_ENV: "mlflow-username",
    MLFLOW_PASSWORD_ENV: "mlflow-password",
    "AWS_ACCESS_KEY_ID": "s3-access-key-id",
    "AWS_SECRET_ACCESS_KEY": "s3-secret-access-key",
}
SPEC_MOUNT = "/home/ray/spec"
STATE_MOUNT = "/home/ray/state"
DATA_MOUNT = "/data"
GPU_RESOURCE = "nvidia.com/gpu"
GPU_TOLERATION = {"key": GPU_RESOURCE, "operator": "Exists", "effect": "NoSchedule"}
LABELS = {"app.kubernetes.io/name": "reset-tune", "app.kubernetes.io/part-of": "reset-tune"}


@dataclass(frozen=True)
class PodShape:
    """One worker pod: whole CPUs, memory (a Kubernetes quantity), whole GPUs."""

    cpus: int
    memory: str
    gpus: int = 0


@dataclass
class WorkerGroup:
    name: str
    shape: PodShape
    min_replicas: int
    max_replicas: int


@dataclass
class Stores:
    """Where the search's state lives; credentials come from Secret `secret` (never here)."""

    secret: str = STORE_SECRET
    mlflow_uri: str | None = None  # e.g. http://mlflow.reset-tune.svc:5000 (deploy/mlflow)
    mlflow_auth: bool = True  # MLFLOW_TRACKING_USERNAME/PASSWORD from the Secret
    optuna_from_secret: bool = True  # RESET_TUNE_OPTUNA_STORAGE from the Secret
    tune_storage: str | None = None  # s3://bucket/prefix
    s3_endpoint: str | None = None  # http(s)://host:port of an S3-compatible server


@dataclass
class ClusterOptions:
    """The Ray cluster's shape, image and stores (RayJob and RayCluster alike)."""

    name: str
    namespace: str | None = None
    image: str = DEFAULT_IMAGE
    ray_version: str = RAY_VERSION
    head_cpus: int = 2
    head_memory: str = "8Gi"
    groups: list[WorkerGroup] = field(default_factory=list)
    idle_timeout_s: int = 300
    stores: Stores = field(default_factory=Stores)
    state_pvc: str | None = "reset-tune-state"  # the head's state directory (search records)
    data_pvc: str | None = None  # datasets, mounted read-only at /data on every pod
    token_secret: str | None = None  # authOptions.secretName (key auth_token); None: generated


@dataclass
class JobOptions:
    """The RayJob's own settings (the cluster's are `ClusterOptions`)."""

    trials: int | None = None
    search_args: Sequence[str] = ()
    ttl_s: int = 600  # the cluster stays this long after the search ends (logs, debugging)
    active_deadline_s: int = 7 * 24 * 3600  # the whole job, cluster start included
    pre_running_deadline_s: int = 1800  # image pulls and node scale-up; stuck before Running: fail


# -- sizing ---------------------------------------------------------------------------------------
def trials_per_pod(spec: SearchSpec, shape: PodShape) -> int:
    """How many of `spec`'s trials fit in one pod of `shape` (0: not even one)."""
    cpus, gpus = spec.resources.cpus, spec.resources.gpus
    by_cpu = math.floor(shape.cpus / cpus + 1e-9) if cpus > 0 else 10**6
    if gpus > 0:
        by_gpu = math.floor(shape.gpus / gpus + 1e-9)
        return min(by_cpu, by_gpu)
    return by_cpu


def groups_for_spec(
    spec: SearchSpec,
    *,
    cpu_shape: PodShape | None = None,
    gpu_shape: PodShape | None = None,
    cpu_bounds: tuple[int, int] | None = None,
    gpu_bounds: tuple[int, int] | None = None,
) -> list[WorkerGroup]:
    """Worker groups that run `spec.concurrency` trials at once.

    Trials that need a GPU go to the GPU group, sized by default so that a pod holds the trials
    its GPU(s) take (e.g. 0.25 GPU and 2 CPUs a trial: 4 trials, 8 CPUs a pod); CPU-only trials
    go to the CPU group. A group gets `maxReplicas = ceil(concurrency / trials per pod)` unless
    bounds are given; the other group is added only when its bounds are given.
    """
    cpus, gpus = spec.resources.cpus, spec.resources.gpus
    if gpus > 0:
        if gpu_shape is None:
            per_gpu_pod = math.floor(1 / gpus + 1e-9)
            gpu_shape = PodShape(cpus=max(1, math.ceil(per_gpu_pod * cpus)), memory="", gpus=1)
        needed = "gpu"
    else:
        if cpu_shape is None:
            cpu_shape = PodShape(cpus=max(4, math.ceil(cpus)), memory="")
        needed = "cpu"
    groups = []
    for kind, shape, bounds in (("cpu", cpu_shape, cpu_bounds), ("gpu", gpu_shape, gpu_bounds)):
        if kind != needed and bounds is None:
            continue
        if shape is None:
            shape = PodShape(cpus=8, memory="", gpus=1) if kind == "gpu" else PodShape(4, "")
        shape = _with_memory(shape)
        if kind == needed:
            per_pod = trials_per_pod(spec, shape)
            if per_pod < 1:
                raise ConfigError(
                    f"a {kind} worker pod of {shape.cpus} CPU(s) and {shape.gpus} GPU(s) cannot "
                    f"hold one trial of {spec.source} (resources: {cpus:g} CPU(s), {gpus:g} "
                    "GPU); give larger pods"
                )
            bounds = bounds or (0, math.ceil(spec.concurrency / per_pod))
        assert bounds is not None  # (set above for the needed group, given for the other)
        groups.append(WorkerGroup(f"{kind}-workers", shape, *bounds))
    return groups


def _with_memory(shape: PodShape) -> PodShape:
    """Memory defaults to 4 GiB a CPU (data splits are held in each trial's memory)."""
    if shape.memory:
        return shape
    return PodShape(cpus=shape.cpus, memory=f"{4 * shape.cpus}Gi", gpus=shape.gpus)


def capacity(spec: SearchSpec, groups: Sequence[WorkerGroup]) -> int:
    """Trials of `spec` the groups run at once when scaled to their maximum."""
    return sum(g.max_replicas * trials_per_pod(spec, g.shape) for g in groups)


# -- rendering ------------------------------------------------------------------------------------
def resource_name(text: str, limit: int = 40) -> str:
    """`text` as a DNS label (lowercase, '-' for anything else), at most `limit` characters."""
    name = re.sub(r"[^a-z0-9-]+", "-", text.lower()).strip("-")[:limit].strip("-")
    if not name:
        raise ConfigError(f"cannot make a Kubernetes name of {text!r}; give --name")
    return name


def render_rayjob(
    spec: SearchSpec, spec_path: Path, cluster: ClusterOptions, job: JobOptions
) -> list[dict[str, Any]]:
    """The ConfigMap holding the spec and the RayJob that runs its search, in apply order."""
    spec_map = f"{cluster.name}-spec"
    args = ["reset-tune", "search", f"{SPEC_MOUNT}/{spec_path.name}"]
    if job.trials is not None:
        args += ["--trials", str(job.trials)]
    args += list(job.search_args)
    config_map = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": _metadata(spec_map, cluster, {"reset-tune/spec": spec.name}),
        "data": {spec_path.name: spec_path.read_text()},
    }
    rayjob = {
        "apiVersion": API_VERSION,
        "kind": "RayJob",
        "metadata": _metadata(cluster.name, cluster, {"reset-tune/spec": spec.name}),
        "spec": {
            "entrypoint": shlex.join(args),
            "submissionMode": "K8sJobMode",
            "shutdownAfterJobFinishes": True,
            "ttlSecondsAfterFinished": job.ttl_s,
            "activeDeadlineSeconds": job.active_deadline_s,
            "preRunningDeadlineSeconds": job.pre_running_deadline_s,
            # A retry would create a new cluster and start a new search; a search continues
            # with `reset-tune search --resume` (a new RayJob with the same state volume).
            "backoffLimit": 0,
            "rayClusterSpec": _cluster_spec(cluster, spec_map=spec_map),
        },
    }
    return [config_map, rayjob]


def render_raycluster(cluster: ClusterOptions) -> dict[str, Any]:
    """A long-lived RayCluster for `reset-tune submit --address` (its Jobs API on port 8265)."""
    return {
        "apiVersion": API_VERSION,
        "kind": "RayCluster",
        "metadata": _metadata(cluster.name, cluster, {}),
        "spec": _cluster_spec(cluster, spec_map=None),
    }


def _metadata(name: str, cluster: ClusterOptions, labels: dict[str, str]) -> dict[str, Any]:
    metadata: dict[str, Any] = {"name": name, "labels": {**LABELS, **labels}}
    if cluster.namespace:
        metadata["namespace"] = cluster.namespace
    return metadata


def _cluster_spec(cluster: ClusterOptions, spec_map: str | None) -> dict[str, Any]:
    _check_store_uris(cluster.stores)
    auth: dict[str, Any] = {"mode": "token"}
    if cluster.token_secret:
        auth["secretName"] = cluster.token_secret
    head_volumes, head_mounts = _volumes(cluster, head=True, spec_map=spec_map)
    head = {
        # The head runs the search's driver (and the Jobs API), never a trial.
        "rayStartParams": {"num-cpus": "0", "dashboard-host": "0.0.0.0"},
        "template": {
            "metadata": {"labels": dict(LABELS)},
            "spec": {
                "containers": [
                    {
                        "name": "ray-head",
                        "image": cluster.image,
                        "resources": _resources(cluster.head_cpus, cluster.head_memory, 0),
                        "env": _head_env(cluster),
                        "volumeMounts": head_mounts,
                    }
                ],
                "volumes": head_volumes,
                # Ray's image runs as uid 1000 in group users (100): a fresh volume is writable
                # for it only through the pod's fsGroup.
                "securityContext": {"fsGroup": 100},
            },
        },
    }
    return {
        "rayVersion": cluster.ray_version,
        "enableInTreeAutoscaling": True,
        "autoscalerOptions": {
            "upscalingMode": "Default",
            "idleTimeoutSeconds": cluster.idle_timeout_s,
        },
        "authOptions": auth,
        "headGroupSpec": head,
        "workerGroupSpecs": [_worker_group(cluster, g) for g in cluster.groups],
    }


def _worker_group(cluster: ClusterOptions, group: WorkerGroup) -> dict[str, Any]:
    volumes, mounts = _volumes(cluster, head=False, spec_map=None)
    params = {"num-cpus": str(group.shape.cpus)}
    pod: dict[str, Any] = {
        "containers": [
            {
                "name": "ray-worker",
                "image": cluster.image,
                "resources": _resources(group.shape.cpus, group.shape.memory, group.shape.gpus),
                "env": _worker_env(cluster),
                "volumeMounts": mounts,
            }
        ],
        "volumes": volumes,
    }
    if group.shape.gpus:
        params["num-gpus"] = str(group.shape.gpus)
        pod["tolerations"] = [dict(GPU_TOLERATION)]
    return {
        "groupName": group.name,
        "replicas": group.min_replicas,
        "minReplicas": group.min_replicas,
        "maxReplicas": group.max_replicas,
        "rayStartParams": params,
        "template": {"metadata": {"labels": dict(LABELS)}, "spec": pod},
    }


def _resources(cpus: int, memory: str, gpus: int) -> dict[str, Any]:
    # Requests equal limits: Ray schedules by the limits, Kubernetes must reserve as much.
    amounts: dict[str, Any] = {"cpu": str(cpus), "memory": memory}
    if gpus:
        amounts[GPU_RESOURCE] = str(gpus)
    return {"requests": dict(amounts), "limits": dict(amounts)}


def _secret_env(name: str, secret: str) -> dict[str, Any]:
    key = STORE_SECRET_KEYS[name]
    return {"name": name, "valueFrom": {"secretKeyRef": {"name": secret, "key": key}}}


def _s3_env(stores: Stores) -> list[dict[str, Any]]:
    if not (stores.tune_storage or "").startswith("s3://"):
        return []
    env = [
        _secret_env("AWS_ACCESS_KEY_ID", stores.secret),
        _secret_env("AWS_SECRET_ACCESS_KEY", stores.secret),
    ]
    if stores.s3_endpoint:
        env.append({"name": "AWS_ENDPOINT_URL_S3", "value": stores.s3_endpoint})
    return env


def _head_env(cluster: ClusterOptions) -> list[dict[str, Any]]:
    stores = cluster.stores
    env: list[dict[str, Any]] = [{"name": STATE_DIR_ENV, "value": STATE_MOUNT}]
    if stores.optuna_from_secret:
        env.append(_secret_env(OPTUNA_STORAGE_ENV, stores.secret))
    if stores.mlflow_uri:
        env.append({"name": "MLFLOW_TRACKING_URI", "value": stores.mlflow_uri})
        if stores.mlflow_auth:
            env.append(_secret_env(MLFLOW_USERNAME_ENV, stores.secret))
            env.append(_secret_env(MLFLOW_PASSWORD_ENV, stores.secret))
    if stores.tune_storage:
        env.append({"name": TUNE_STORAGE_ENV, "value": stores.tune_storage})
    return env + _s3_env(stores)


def _worker_env(cluster: ClusterOptions) -> list[dict[str, Any]]:
    return _s3_env(cluster.stores)


def _volumes(
    cluster: ClusterOptions, *, head: bool, spec_map: str | None
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    # Shared memory for PyTorch and Ray's object store: a container's /dev/shm is 64 MiB.
    volumes: list[dict[str, Any]] = [{"name": "dshm", "emptyDir": {"medium": "Memory"}}]
    mounts: list[dict[str, Any]] = [{"name": "dshm", "mountPath": "/dev/shm"}]
    if head and spec_map:
        volumes.append({"name": "spec", "configMap": {"name": spec_map}})
        mounts.append({"name": "spec", "mountPath": SPEC_MOUNT, "readOnly": True})
    if head:
        if cluster.state_pvc:
            volumes.append(
                {"name": "state", "persistentVolumeClaim": {"claimName": cluster.state_pvc}}
            )
        else:
            volumes.append({"name": "state", "emptyDir": {}})
        mounts.append({"name": "state", "mountPath": STATE_MOUNT})
    if cluster.data_pvc:
        volumes.append(
            {
                "name": "data",
                "persistentVolumeClaim": {"claimName": cluster.data_pvc, "readOnly": True},
            }
        )
        mounts.append({"name": "data", "mountPath": DATA_MOUNT, "readOnly": True})
    return volumes, mounts


def _check_store_uris(stores: Stores) -> None:
    for what, uri in (
        ("--mlflow-uri", stores.mlflow_uri),
        ("--tune-storage", stores.tune_storage),
        ("--s3-endpoint", stores.s3_endpoint),
    ):
        if uri and redact_uri(uri) != uri:
            raise ConfigError(
                f"{what} {redact_uri(uri)}: a credential in a URI would be written into the "
                f"manifest; put it in Secret {stores.secret!r} instead (see deploy/README.md)"
            )


def spec_problems(spec: SearchSpec, rayjob: dict[str, Any]) -> list[str]:
    """Where a RayJob's worker groups disagree with `spec` (a trial fits no pod, or the groups
    at their maximum run fewer than `concurrency` trials at once)."""
    cluster = rayjob.get("spec", {}).get("rayClusterSpec") or {}
    groups = []
    for group in cluster.get("workerGroupSpecs") or []:
        limits = group["template"]["spec"]["containers"][0].get("resources", {}).get("limits", {})
        params = group.get("rayStartParams", {})
        shape = PodShape(
            cpus=int(float(params.get("num-cpus", limits.get("cpu", 0)))),
            memory=str(limits.get("memory", "")),
            gpus=int(params.get("num-gpus", limits.get(GPU_RESOURCE, 0))),
        )
        groups.append(
            WorkerGroup(group["groupName"], shape, group["minReplicas"], group["maxReplicas"])
        )
    problems = []
    if not any(trials_per_pod(spec, g.shape) >= 1 for g in groups):
        problems.append(
            f"spec.rayClusterSpec.workerGroupSpecs: no worker pod can hold a trial of "
            f"{spec.source} ({spec.resources.cpus:g} CPU(s), {spec.resources.gpus:g} GPU)"
        )
    elif capacity(spec, groups) < spec.concurrency:
        problems.append(
            f"spec.rayClusterSpec.workerGroupSpecs: at maxReplicas they run "
            f"{capacity(spec, groups)} trial(s) at once; the spec's concurrency is "
            f"{spec.concurrency}"
        )
    return problems
