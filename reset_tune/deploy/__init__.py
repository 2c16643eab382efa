"""Deployments beyond one machine: KubeRay manifests generated from a search spec, and their checks.

`render_rayjob` / `render_raycluster` build the manifests (`reset-tune deploy rayjob|raycluster`
prints them); `check_manifest` validates one against KubeRay's CRD schema, the operator's own
rules and reset-tune's policy (no inline secrets); `spec_problems` checks that a RayJob's worker
groups can run its spec's trials.
"""

from reset_tune.deploy.kuberay import (
    ClusterOptions,
    JobOptions,
    PodShape,
    Stores,
    WorkerGroup,
    groups_for_spec,
    render_raycluster,
    render_rayjob,
    spec_problems,
)
from reset_tune.deploy.validate import ManifestError, check_manifest, manifest_problems

__all__ = [
    "ClusterOptions",
    "JobOptions",
    "ManifestError",
    "PodShape",
    "Stores",
    "WorkerGroup",
    "check_manifest",
    "groups_for_spec",
    "manifest_problems",
    "render_raycluster",
    "render_rayjob",
    "spec_problems",
]
