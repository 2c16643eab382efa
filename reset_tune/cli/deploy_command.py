"""`reset-tune deploy`: KubeRay manifests for a search (RayJob) or a team's cluster (RayCluster),
and `deploy check` for manifests edited by hand. Everything printed is validated first."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from reset_tune import __version__
from reset_tune.cli.jobs_command import _with_search_args
from reset_tune.errors import ConfigError


def register(commands: argparse._SubParsersAction) -> None:
    deploy = commands.add_parser(
        "deploy",
        help="KubeRay manifests: a RayJob per search, a long-lived RayCluster; check manifests",
        description=(
            "Print Kubernetes manifests for KubeRay (ray.io/v1, KubeRay >= 1.5.1) that run "
            "reset-tune on a cluster, validated against KubeRay's CRD schema and the operator's "
            "rules before they are printed. Credentials are never written into a manifest: pods "
            "read them from a Secret (see deploy/README.md)."
        ),
    )
    actions = deploy.add_subparsers(dest="deploy_command", metavar="WHAT")
    actions.required = True

    rayjob = actions.add_parser(
        "rayjob",
        help="a RayJob that runs one search (plus the ConfigMap holding its spec)",
        description=(
            "A ConfigMap with the spec and a RayJob whose cluster runs `reset-tune search SPEC` "
            "and is deleted after it ends. The worker groups are sized from the spec: pods hold "
            "whole trials (resources.cpus, resources.gpus) and scale up to the spec's "
            "concurrency. Arguments after `--` go to `reset-tune search` (e.g. -- --resume)."
        ),
    )
    rayjob.__class__ = _with_search_args(type(rayjob))
    rayjob.add_argument("spec", help="search spec YAML (search_spaces/*.yaml)")
    rayjob.add_argument("--trials", type=int, help="target number of trials (default: the spec's)")
    rayjob.add_argument(
        "--ttl", type=int, default=600, metavar="S", help="seconds the cluster stays after the end"
    )
    rayjob.add_argument(
        "--deadline", type=int, default=7 * 24 * 3600, metavar="S", help="the job's time limit"
    )
    rayjob.add_argument(
        "--pre-running-deadline",
        type=int,
        default=1800,
        metavar="S",
        help="fail when the cluster is not running the search after S seconds",
    )
    _cluster_options(rayjob)
    rayjob.set_defaults(handler=run_rayjob, search_args=[])

    cluster = actions.add_parser(
        "raycluster",
        help="a long-lived RayCluster for `reset-tune submit --address`",
        description=(
            "A RayCluster with token authentication (the token in Secret --token-secret, key "
            "auth_token), an idle head and autoscaling CPU and GPU worker groups."
        ),
    )
    _cluster_options(cluster, spec_sized=False)
    cluster.add_argument(
        "--token-secret",
        default="reset-tune-ray-token",
        help="Secret holding the cluster's token under key auth_token (create it first)",
    )
    cluster.set_defaults(handler=run_raycluster)

    check = actions.add_parser(
        "check",
        help="validate KubeRay manifests (RayJob, RayCluster) as the API server and operator would",
    )
    check.add_argument("files", nargs="+", metavar="FILE")
    check.set_defaults(handler=run_check)


def _cluster_options(parser: argparse.ArgumentParser, spec_sized: bool = True) -> None:
    parser.add_argument("--name", help="the resource's name (default: the spec's name)")
    parser.add_argument("--namespace", help="Kubernetes namespace (default: kubectl's)")
    parser.add_argument("--image", default="reset-tune:0.1.0", help="image with reset-tune")
    sized = "default: sized from the spec" if spec_sized else "default: %(default)s"
    parser.add_argument(
        "--cpu-workers",
        metavar="MIN:MAX",
        default=None if spec_sized else "0:4",
        help=f"CPU worker pods, autoscaling bounds ({sized})",
    )
    parser.add_argument(
        "--gpu-workers",
        metavar="MIN:MAX",
        default=None if spec_sized else "0:2",
        help=f"GPU worker pods, autoscaling bounds ({sized})",
    )
    parser.add_argument("--cpu-pod-cpus", type=int, help="CPUs of a CPU worker pod")
    parser.add_argument("--gpu-pod-cpus", type=int, help="CPUs of a GPU worker pod")
    parser.add_argument("--gpu-pod-gpus", type=int, default=1, help="GPUs of a GPU worker pod")
    parser.add_argument(
        "--mlflow-uri", help="the MLflow server as pods reach it (see deploy/mlflow)"
    )
    parser.add_argument("--tune-storage", help="s3://BUCKET/PREFIX for trial files")
    parser.add_argument("--s3-endpoint", help="http(s)://HOST:PORT of an S3-compatible store")
    parser.add_argument(
        "--stores-secret", default="reset-tune-stores", help="Secret with the stores' credentials"
    )
    parser.add_argument(
        "--state-pvc",
        default="reset-tune-state",
        help="PersistentVolumeClaim for the head's state directory (search records); "
        "'none' for a scratch directory that goes with the cluster",
    )
    parser.add_argument("--data-pvc", help="PersistentVolumeClaim with datasets (at /data)")
    parser.add_argument("-o", "--output", metavar="FILE", help="write here instead of stdout")


def run_rayjob(args: argparse.Namespace) -> int:
    from reset_tune.deploy import JobOptions, groups_for_spec, render_rayjob, spec_problems
    from reset_tune.deploy.kuberay import resource_name
    from reset_tune.search import load_spec

    path = Path(args.spec)
    if not path.is_file():
        raise ConfigError(f"{args.spec}: no such spec file")
    for option, value in (
        ("--trials", args.trials),
        ("--ttl", args.ttl),
        ("--deadline", args.deadline),
        ("--pre-running-deadline", args.pre_running_deadline),
    ):
        if value is not None and value < 1:
            raise ConfigError(f"{option} must be at least 1, got {value}")
    spec = load_spec(path)
    groups = groups_for_spec(
        spec,
        cpu_shape=_shape(args, gpu=False),
        gpu_shape=_shape(args, gpu=True),
        cpu_bounds=_bounds("--cpu-workers", args.cpu_workers),
        gpu_bounds=_bounds("--gpu-workers", args.gpu_workers),
    )
    cluster = _cluster(args, args.name or resource_name(spec.name), groups)
    job = JobOptions(
        trials=args.trials,
        search_args=tuple(args.search_args),
        ttl_s=args.ttl,
        active_deadline_s=args.deadline,
        pre_running_deadline_s=args.pre_running_deadline,
    )
    documents = render_rayjob(spec, path, cluster, job)
    extra = spec_problems(spec, documents[-1])
    if extra:
        raise ConfigError("; ".join(extra))
    _emit(documents, args, f"deploy rayjob {path.name}")
    return 0


def run_raycluster(args: argparse.Namespace) -> int:
    from reset_tune.deploy import WorkerGroup, render_raycluster
    from reset_tune.deploy.kuberay import PodShape

    groups = []
    for kind, option, value in (
        ("cpu", "--cpu-workers", args.cpu_workers),
        ("gpu", "--gpu-workers", args.gpu_workers),
    ):
        bounds = _bounds(option, value)
        if bounds is None or bounds[1] == 0:
            continue
        shape = _shape(args, gpu=kind == "gpu") or (
            PodShape(8, "32Gi", 1) if kind == "gpu" else PodShape(4, "16Gi")
        )
        groups.append(WorkerGroup(f"{kind}-workers", shape, *bounds))
    cluster = _cluster(args, args.name or "reset-tune", groups)
    cluster.token_secret = args.token_secret
    _emit([render_raycluster(cluster)], args, "deploy raycluster")
    return 0


def run_check(args: argparse.Namespace) -> int:
    import yaml

    from reset_tune.deploy.validate import is_kuberay, manifest_problems

    failed = 0
    for name in args.files:
        path = Path(name)
        if not path.is_file():
            raise ConfigError(f"{name}: no such file")
        try:
            documents = [d for d in yaml.safe_load_all(path.read_text()) if d is not None]
        except yaml.YAMLError as error:
            raise ConfigError(f"{name}: not valid YAML: {error}") from None
        for i, document in enumerate(documents):
            if not isinstance(document, dict) or not is_kuberay(document):
                continue
            where = f"{name} (document {i + 1}, {document.get('kind')})"
            problems = manifest_problems(document)
            for problem in problems:
                print(f"{where}: {problem}", file=sys.stderr)
            failed += bool(problems)
            if not problems:
                print(f"{where}: ok")
    return 1 if failed else 0


def _cluster(args: argparse.Namespace, name: str, groups: list[Any]) -> Any:
    from reset_tune.deploy import ClusterOptions, Stores

    stores = Stores(
        secret=args.stores_secret,
        mlflow_uri=args.mlflow_uri,
        tune_storage=args.tune_storage,
        s3_endpoint=args.s3_endpoint,
    )
    return ClusterOptions(
        name=name,
        namespace=args.namespace,
        image=args.image,
        groups=groups,
        stores=stores,
        state_pvc=None if args.state_pvc == "none" else args.state_pvc,
        data_pvc=args.data_pvc,
    )


def _shape(args: argparse.Namespace, *, gpu: bool) -> Any:
    from reset_tune.deploy.kuberay import PodShape

    cpus = args.gpu_pod_cpus if gpu else args.cpu_pod_cpus
    if cpus is None:
        return None
    if cpus < 1:
        raise ConfigError(f"--{'gpu' if gpu else 'cpu'}-pod-cpus must be at least 1, got {cpus}")
    if gpu and args.gpu_pod_gpus < 1:
        raise ConfigError(f"--gpu-pod-gpus must be at least 1, got {args.gpu_pod_gpus}")
    return PodShape(cpus=cpus, memory="", gpus=args.gpu_pod_gpus if gpu else 0)


def _bounds(option: str, value: str | None) -> tuple[int, int] | None:
    if value is None:
        return None
    low, sep, high = value.partition(":")
    try:
        bounds = (int(low), int(high)) if sep else (int(low), int(low))
    except ValueError:
        raise ConfigError(f"{option} {value!r}: expected MIN:MAX, e.g. 0:4") from None
    if bounds[0] < 0 or bounds[0] > bounds[1]:
        raise ConfigError(f"{option} {value!r}: expected 0 <= MIN <= MAX")
    return bounds


def _emit(documents: list[dict[str, Any]], args: argparse.Namespace, what: str) -> None:
    """Validate every KubeRay document, then print or write all of them (whole or nothing)."""
    import yaml

    from reset_tune.atomic import write_bytes_atomic
    from reset_tune.deploy.validate import check_manifest, is_kuberay

    for document in documents:
        if is_kuberay(document):
            check_manifest(document, where=f"the generated {document['kind']}")
    header = (
        f"# Generated by `reset-tune {what}` (reset-tune {__version__}); regenerate rather than "
        "edit.\n# Credentials come from Secrets by reference (deploy/README.md).\n"
    )
    text = header + yaml.dump_all(
        documents, Dumper=_block_dumper(), sort_keys=False, allow_unicode=True, width=100
    )
    if args.output:
        write_bytes_atomic(args.output, text.encode())
        print(f"wrote {args.output}", file=sys.stderr)
    else:
        sys.stdout.write(text)


def _block_dumper() -> Any:
    import yaml

    class BlockDumper(yaml.SafeDumper):
        """Multi-line strings (a spec in a ConfigMap) as literal blocks, readable in review."""

    def string(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
        style = "|" if "\n" in value else None
        return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)

    BlockDumper.add_representer(str, string)
    return BlockDumper
