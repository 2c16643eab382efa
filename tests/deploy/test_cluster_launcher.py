"""The cluster-launcher YAML passes Ray's own checks: `prepare_config` (defaults, the on-prem
provider's rules) and `validate_config` (ray/autoscaler/ray-schema.json of the pinned wheel)."""

from __future__ import annotations

import copy
import re
from pathlib import Path
from typing import Any

import pytest
import ray
import yaml
from ray.autoscaler._private.util import prepare_config, validate_config

from reset_tune.deploy.kuberay import DEFAULT_IMAGE, RAY_VERSION
from reset_tune.redact import redact_text

REPO = Path(__file__).resolve().parents[2]
LAUNCHER = sorted((REPO / "deploy" / "cluster-launcher").glob("*.yaml"))


def ray_checks(config: dict[str, Any]) -> dict[str, Any]:
    prepared = prepare_config(copy.deepcopy(config))
    validate_config(prepared)
    return prepared


def test_ray_is_the_pinned_version():
    pinned = re.search(r'"ray\[[^]]*\]==([^"]+)"', (REPO / "pyproject.toml").read_text())
    assert pinned is not None and ray.__version__ == pinned.group(1) == RAY_VERSION


@pytest.mark.parametrize("path", LAUNCHER, ids=lambda p: p.name)
def test_the_cluster_launcher_yaml_passes_rays_checks(path):
    config = yaml.safe_load(path.read_text())
    prepared = ray_checks(config)
    assert prepared["provider"]["type"] in ("local", "aws", "gcp", "azure")
    assert prepared["docker"]["image"] == DEFAULT_IMAGE
    head = " ".join(prepared["head_start_ray_commands"])
    worker = " ".join(prepared["worker_start_ray_commands"])
    assert "--num-cpus=0" in head  # the head runs no trials
    for commands in (head, worker):
        assert "RAY_AUTH_MODE=token" in commands and "RAY_AUTH_TOKEN_PATH=" in commands
    # Credentials travel as files over SSH, never written in the YAML.
    text = path.read_text()
    assert redact_text(text) == text
    assert not re.search(r"(PASSWORD|SECRET_ACCESS_KEY|TOKEN)=\S", text)


def test_a_misspelled_key_fails_rays_schema_naming_it():
    config = yaml.safe_load((REPO / "deploy/cluster-launcher/onprem.yaml").read_text())
    config["idle_timeout_minute"] = config.pop("idle_timeout_minutes")
    with pytest.raises(Exception, match="idle_timeout_minute"):
        ray_checks(config)


def test_an_onprem_cluster_without_machines_fails_rays_checks():
    config = yaml.safe_load((REPO / "deploy/cluster-launcher/onprem.yaml").read_text())
    del config["provider"]["worker_ips"]
    with pytest.raises(Exception, match="worker_ips"):
        ray_checks(config)
