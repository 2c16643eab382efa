"""Every Kubernetes manifest under deploy/, and a RayJob rendered for each shipped spec, is valid:
KubeRay kinds against KubeRay v1.7.0's CRD schema plus the operator's rules, built-in kinds with
kubernetes-validate. Known-bad manifests fail with a message naming the field."""

from __future__ import annotations

import copy
import gzip
import json
import os
import shlex
import subprocess
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from reset_tune.cli.main import main
from reset_tune.deploy import manifest_problems, spec_problems
from reset_tune.deploy.crd_schema import CRD_FILES, convert_crd, schema_file
from reset_tune.deploy.kuberay import trials_per_pod
from reset_tune.deploy.validate import is_kuberay
from reset_tune.search import load_spec

REPO = Path(__file__).resolve().parents[2]
CRDS = REPO.parent / "shared" / "kuberay-crds" / "v1.7.0"
K8S_VERSION = "1.33.0"  # what kubernetes-validate checks built-in kinds against
SPECS = sorted((REPO / "search_spaces").glob("*.yaml"))
NOT_KUBERNETES = {"deploy/local/stack.yaml"}  # reset-tune's own settings file


def kubernetes_documents() -> list[tuple[str, int, dict[str, Any]]]:
    found = []
    for path in sorted((REPO / "deploy").rglob("*.yaml")):
        relative = str(path.relative_to(REPO))
        if relative in NOT_KUBERNETES or relative.startswith("deploy/cluster-launcher/"):
            continue
        for i, document in enumerate(yaml.safe_load_all(path.read_text())):
            if document is not None:
                found.append((relative, i, document))
    return found


def check_document(document: dict[str, Any]) -> list[str]:
    """Problems of one manifest: KubeRay's checks, or kubernetes-validate for built-in kinds."""
    if is_kuberay(document):
        return manifest_problems(document)
    try:
        kubernetes_validate.validate(document, K8S_VERSION, strict=True)
    except kubernetes_validate.ValidationError as error:
        return [f"{'.'.join(map(str, error.path))}: {error.message}"]
    return []


def render_rayjob(tmp_path: Path, spec: Path, *extra: str) -> list[dict[str, Any]]:
    out = tmp_path / f"{spec.stem}.yaml"
    assert main(["deploy", "rayjob", str(spec), "-o", str(out), *extra]) == 0
    return [d for d in yaml.safe_load_all(out.read_text()) if d is not None]


def test_the_shipped_schemas_are_the_conversion_of_kuberays_crds():
    if not CRDS.is_dir():
        pytest.skip(f"KubeRay's CRDs are not beside the repository ({CRDS})")
    for kind, name in CRD_FILES.items():
        loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # libyaml: 2 MB in 2 s, not 25
        converted = convert_crd(yaml.load((CRDS / name).read_text(), Loader=loader))
        shipped = json.loads(gzip.decompress(schema_file(kind).read_bytes()))
        assert shipped == converted, f"{schema_file(kind)} is stale: regenerate with write_schema"


def test_deploy_holds_kuberay_and_builtin_manifests():
    kinds = {document["kind"] for _, _, document in kubernetes_documents()}
    assert {"RayJob", "RayCluster", "ConfigMap", "PersistentVolumeClaim"} <= kinds


@pytest.mark.parametrize(
    "where,index,document",
    kubernetes_documents(),
    ids=lambda value: value if isinstance(value, str) else None,
)
def test_every_manifest_under_deploy_is_valid(where, index, document):
    assert check_document(document) == [], f"{where} document {index + 1}"


@pytest.mark.parametrize("spec_path", SPECS, ids=lambda p: p.stem)
def test_a_rayjob_rendered_for_each_shipped_spec_is_valid_and_fits_the_spec(tmp_path, spec_path):
    documents = render_rayjob(
        tmp_path,
        spec_path,
        "--mlflow-uri",
        "http://mlflow:5000",
        "--tune-storage",
        "s3://bucket/tune",
    )
    assert [d["kind"] for d in documents] == ["ConfigMap", "RayJob"]
    for document in documents:
        assert check_document(document) == []
    config_map, rayjob = documents
    spec = load_spec(spec_path)
    job = rayjob["spec"]
    assert shlex.split(job["entrypoint"])[:3] == [
        "reset-tune",
        "search",
        f"/home/ray/spec/{spec_path.name}",
    ]
    assert config_map["data"][spec_path.name] == spec_path.read_text()
    assert job["submissionMode"] == "K8sJobMode" and job["backoffLimit"] == 0
    assert job["shutdownAfterJobFinishes"] is True and job["ttlSecondsAfterFinished"] > 0
    cluster = job["rayClusterSpec"]
    assert cluster["authOptions"]["mode"] == "token"
    assert cluster["headGroupSpec"]["rayStartParams"]["num-cpus"] == "0"
    assert spec_problems(spec, rayjob) == []
    # The group the trials run on holds whole trials and, at its maximum, `concurrency` of them.
    (group,) = cluster["workerGroupSpecs"]
    limits = group["template"]["spec"]["containers"][0]["resources"]["limits"]
    wants_gpu = spec.resources.gpus > 0
    assert ("nvidia.com/gpu" in limits) == wants_gpu
    assert bool(group["template"]["spec"].get("tolerations")) == wants_gpu
    from reset_tune.deploy.kuberay import PodShape

    shape = PodShape(int(limits["cpu"]), limits["memory"], int(limits.get("nvidia.com/gpu", 0)))
    per_pod = trials_per_pod(spec, shape)
    assert per_pod >= 1
    assert group["maxReplicas"] * per_pod >= spec.concurrency
    assert (group["maxReplicas"] - 1) * per_pod < spec.concurrency  # no idle pod at the maximum
    # Secrets only by reference.
    envs = [e for c in _containers(cluster) for e in c.get("env", [])]
    secret_names = {
        "RESET_TUNE_OPTUNA_STORAGE",
        "MLFLOW_TRACKING_PASSWORD",
        "AWS_SECRET_ACCESS_KEY",
    }
    for env in envs:
        if env["name"] in secret_names:
            assert "value" not in env and "secretKeyRef" in env["valueFrom"]


def _containers(cluster: dict[str, Any]) -> list[dict[str, Any]]:
    pods = [cluster["headGroupSpec"]["template"]] + [
        g["template"] for g in cluster["workerGroupSpecs"]
    ]
    return [c for pod in pods for c in pod["spec"]["containers"]]


def test_the_example_manifests_are_what_the_command_generates(tmp_path):
    """deploy/kuberay/*.yaml are regenerated by regenerate.sh, never edited by hand."""
    script = (REPO / "deploy/kuberay/regenerate.sh").read_text()
    stores = shlex.split(script.split('STORES="', 1)[1].split('"', 1)[0])
    commands = [line for line in script.splitlines() if line.startswith("reset-tune deploy")]
    assert len(commands) >= 3
    for line in commands:
        argv = [a for a in shlex.split(line.replace("$STORES", "")) if a][1:]
        target = argv[argv.index("-o") + 1]
        argv[argv.index("-o") + 1] = str(tmp_path / "out.yaml")
        import os

        cwd = os.getcwd()
        os.chdir(REPO)
        try:
            assert main(argv[:2] + stores + argv[2:]) == 0
        finally:
            os.chdir(cwd)
        assert (tmp_path / "out.yaml").read_text() == (REPO / target).read_text(), (
            f"{target} is stale: run deploy/kuberay/regenerate.sh"
        )


# -- known-bad manifests --------------------------------------------------------------------------
def _example_job() -> dict[str, Any]:
    text = (REPO / "deploy/kuberay/rayjob-fashion-mnist.yaml").read_text()
    return copy.deepcopy([d for d in yaml.safe_load_all(text) if d and d["kind"] == "RayJob"][0])


def _cluster_example() -> dict[str, Any]:
    return yaml.safe_load((REPO / "deploy/kuberay/raycluster.yaml").read_text())


def _one_problem(document: dict[str, Any], field: str) -> str:
    problems = manifest_problems(document)
    assert problems, "the bad manifest passed"
    assert any(field in p for p in problems), problems
    return next(p for p in problems if field in p)


def test_a_misspelled_key_is_refused_with_its_name_and_the_likely_one():
    job = _example_job()
    job["spec"]["shutdownAfterJobFinish"] = job["spec"].pop("shutdownAfterJobFinishes")
    problem = _one_problem(job, "spec.shutdownAfterJobFinish:")
    assert "unknown field" in problem and "did you mean shutdownAfterJobFinishes" in problem


def test_a_misspelled_key_deep_in_a_pod_template_is_refused():
    job = _example_job()
    container = job["spec"]["rayClusterSpec"]["workerGroupSpecs"][0]["template"]["spec"]
    container["containers"][0]["volumeMount"] = container["containers"][0].pop("volumeMounts")
    _one_problem(job, "workerGroupSpecs[0].template.spec.containers[0].volumeMount:")


def test_an_integer_in_ray_start_params_is_refused():
    cluster = _cluster_example()
    cluster["spec"]["workerGroupSpecs"][0]["rayStartParams"]["num-cpus"] = 4
    problem = _one_problem(cluster, "spec.workerGroupSpecs[0].rayStartParams.num-cpus")
    assert "is not of type 'string'" in problem


def test_a_ttl_without_shutdown_is_refused():
    job = _example_job()
    job["spec"]["shutdownAfterJobFinishes"] = False
    _one_problem(job, "spec.ttlSecondsAfterFinished")


@pytest.mark.parametrize(
    "change,field",
    [
        (lambda d: d["spec"].update(clusterSelector={"a": "b"}), "spec.clusterSelector"),
        (lambda d: d["spec"]["rayClusterSpec"].update(rayVersion="2.50.0"), "rayVersion"),
        (lambda d: d["spec"].update(backoffLimit=2), "spec.backoffLimit"),
        (lambda d: d["spec"].update(submissionMode="K8sMode"), "spec.submissionMode"),
        (lambda d: d["spec"].update(preRunningDeadlineSeconds=0), "spec.preRunningDeadlineSeconds"),
        (lambda d: d["metadata"].update(name="Search_1"), "metadata.name"),
        (
            lambda d: d["spec"]["rayClusterSpec"]["workerGroupSpecs"][0].update(minReplicas=5),
            "workerGroupSpecs[0].minReplicas",
        ),
        (
            lambda d: d["spec"]["rayClusterSpec"]["headGroupSpec"]["rayStartParams"].update(
                {"num-cpus": "4"}
            ),
            "headGroupSpec.rayStartParams.num-cpus",
        ),
    ],
)
def test_what_the_operator_or_our_policy_refuses_is_refused(change, field):
    job = _example_job()
    change(job)
    _one_problem(job, field)


def test_an_inline_secret_is_refused():
    job = _example_job()
    env = job["spec"]["rayClusterSpec"]["headGroupSpec"]["template"]["spec"]["containers"][0]["env"]
    env.append({"name": "MLFLOW_TRACKING_PASSWORD", "value": "hunter2"})
    env.append({"name": "DATABASE", "value": "postgresql://u:pw@db/optuna"})
    problems = manifest_problems(job)
    assert sum("never inline" in p for p in problems) == 2, problems
    assert not any("hunter2" in p or "pw@" in p for p in problems)


def test_a_rayjob_too_small_for_its_spec_is_refused():
    spec = load_spec(REPO / "search_spaces/cifar10-sym60.yaml")
    text = (REPO / "deploy/kuberay/rayjob-cifar10-sym60.yaml").read_text()
    job = [d for d in yaml.safe_load_all(text) if d and d["kind"] == "RayJob"][0]
    job["spec"]["rayClusterSpec"]["workerGroupSpecs"][0]["maxReplicas"] = 1
    (problem,) = spec_problems(spec, job)
    assert "concurrency is 8" in problem and "run 4 trial(s)" in problem


def test_deploy_check_exits_1_naming_the_field(tmp_path, capsys):
    job = _example_job()
    job["spec"]["rayClusterSpec"]["headGroupSpec"]["rayStartParams"]["num-cpus"] = 0
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump(job))
    assert main(["deploy", "check", str(bad)]) == 1
    assert "headGroupSpec.rayStartParams.num-cpus" in capsys.readouterr().err
    assert main(["deploy", "check", str(REPO / "deploy/kuberay/raycluster.yaml")]) == 0


def test_rendering_refuses_credentials_in_uris_and_pods_too_small(tmp_path, capsys):
    spec = str(REPO / "search_spaces/cifar10-sym60.yaml")
    out = str(tmp_path / "x.yaml")
    code = main(["deploy", "rayjob", spec, "--mlflow-uri", "http://u:secret@m:5000", "-o", out])
    err = capsys.readouterr().err
    assert code == 2 and "secret" not in err and "Secret" in err
    assert main(["deploy", "rayjob", spec, "--gpu-pod-cpus", "1", "-o", out]) == 2
    assert "cannot hold one trial" in capsys.readouterr().err
    assert not Path(out).exists()


def test_search_args_after_a_double_dash_reach_the_entrypoint(tmp_path):
    spec = REPO / "search_spaces/default.yaml"
    documents = render_rayjob(tmp_path, spec, "--trials", "20", "--", "--resume")
    entry = shlex.split(documents[1]["spec"]["entrypoint"])
    assert entry[-3:] == ["--trials", "20", "--resume"]


def test_the_image_builds_on_rays_gpu_image_at_the_pinned_versions():
    dockerfile = (REPO / "deploy/docker/Dockerfile").read_text()
    (base,) = [line.split()[1] for line in dockerfile.splitlines() if line.startswith("FROM ")]
    from reset_tune.deploy.kuberay import RAY_VERSION

    assert base == f"rayproject/ray:{RAY_VERSION}-py311-gpu"
    # The package is installed from the copied pyproject.toml: its pins, not others.
    assert 'pip install --no-cache-dir "/tmp/reset-tune[cluster,mlflow-server]"' in dockerfile
    for extra in ("cluster", "mlflow-server"):
        assert f"\n{extra} = [" in (REPO / "pyproject.toml").read_text()


def _render_mlflow_server(tmp_path: Path, **env: str) -> subprocess.CompletedProcess:
    """The server script up to its `exec`, with `true` in place of mlflow: what it writes."""
    required = {
        name: "set"
        for name in (
            "MLFLOW_BACKEND_STORE_URI", "MLFLOW_AUTH_DATABASE_URI", "MLFLOW_ARTIFACTS_DESTINATION",
            "MLFLOW_AUTH_ADMIN_PASSWORD", "MLFLOW_FLASK_SERVER_SECRET_KEY", "MLFLOW_ALLOWED_HOSTS",
        )
    }  # fmt: skip
    return subprocess.run(
        ["bash", str(REPO / "deploy/mlflow/mlflow-server.sh")],
        env={"PATH": os.environ["PATH"], **required, "MLFLOW_BIN": "true",
             "MLFLOW_RUNTIME_DIR": str(tmp_path), **env},
        capture_output=True, text=True, timeout=30,
    )  # fmt: skip


def test_the_mlflow_server_trusts_a_verified_password_for_a_minute_unless_told_otherwise(
    tmp_path,
):
    # Each verification is a scrypt hash (~0.1 s of CPU) per request; with the cache a search on
    # the deployment tests' stack took 129 CPU-s instead of 189.
    ini = tmp_path / "basic_auth.ini"
    assert _render_mlflow_server(tmp_path).returncode == 0
    assert "\nauth_cache_ttl_seconds = 60\n" in ini.read_text()
    assert _render_mlflow_server(tmp_path, MLFLOW_AUTH_CACHE_TTL_SECONDS="0").returncode == 0
    assert "\nauth_cache_ttl_seconds = 0\n" in ini.read_text()
    ini.unlink()
    refused = _render_mlflow_server(tmp_path, MLFLOW_AUTH_CACHE_TTL_SECONDS="1m")
    assert refused.returncode == 2 and not ini.exists()
    assert refused.stderr.count("\n") == 1 and "MLFLOW_AUTH_CACHE_TTL_SECONDS" in refused.stderr


def test_the_mlflow_server_is_authenticated_and_keeps_credentials_off_its_command_line():
    script = (REPO / "deploy/mlflow/mlflow-server.sh").read_text()
    for flag in ("--app-name basic-auth", "--serve-artifacts", "--allowed-hosts"):
        assert flag in script
    assert "default_permission = NO_PERMISSIONS" in script
    assert "--backend-store-uri" not in script  # read from the environment, not argv (ps)
    deployment = next(
        d
        for d in yaml.safe_load_all((REPO / "deploy/mlflow/mlflow.yaml").read_text())
        if d["kind"] == "Deployment"
    )
    env = {e["name"]: e for e in deployment["spec"]["template"]["spec"]["containers"][0]["env"]}
    for name in ("MLFLOW_BACKEND_STORE_URI", "MLFLOW_AUTH_ADMIN_PASSWORD", "AWS_SECRET_ACCESS_KEY"):
        assert "secretKeyRef" in env[name]["valueFrom"]
