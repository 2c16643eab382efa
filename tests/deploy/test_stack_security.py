"""Nobody reaches the shared stores or the cluster without credentials: MLflow (basic auth, no
default permission, allowed hosts), the Ray Jobs API (token), S3 and PostgreSQL."""

from __future__ import annotations

import json
import urllib.request

import psycopg
import pytest
from botocore.exceptions import ClientError

pytestmark = pytest.mark.integration


def test_mlflow_refuses_requests_without_or_with_wrong_credentials(stack):
    url = f"{stack.mlflow_uri}/api/2.0/mlflow/experiments/search?max_results=5"
    assert stack.status(url) == 401
    assert stack.status(url, stack.basic("admin", "not-the-password")) == 401
    assert stack.status(url, stack.basic(stack.search_user, "wrong")) == 401
    assert stack.status(url, stack.basic("admin", stack.mlflow_admin_password)) == 200
    assert stack.status(url, stack.basic(stack.search_user, stack.search_password)) == 200


def test_mlflow_gives_no_access_by_default(stack):
    """An experiment another user created is closed to the search's user (default: none)."""
    admin = stack.basic("admin", stack.mlflow_admin_password)
    request = urllib.request.Request(
        f"{stack.mlflow_uri}/api/2.0/mlflow/experiments/create",
        data=json.dumps({"name": "admins-only"}).encode(),
        headers={"Content-Type": "application/json", **admin},
        method="POST",
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        experiment_id = json.load(response)["experiment_id"]
    url = f"{stack.mlflow_uri}/api/2.0/mlflow/experiments/get?experiment_id={experiment_id}"
    assert stack.status(url, admin) == 200
    assert stack.status(url, stack.basic(stack.search_user, stack.search_password)) == 403


def test_mlflow_refuses_a_foreign_host_header(stack):
    url = f"{stack.mlflow_uri}/api/2.0/mlflow/experiments/search?max_results=5"
    admin = stack.basic("admin", stack.mlflow_admin_password)
    assert stack.status(url, {**admin, "Host": "evil.example.com"}) in (400, 403)
    assert stack.status(url, admin) == 200


def test_the_jobs_api_refuses_requests_without_or_with_a_wrong_token(stack):
    url = f"{stack.dashboard_url}/api/jobs/"
    assert stack.status(url) in (401, 403)
    assert stack.status(url, {"Authorization": "Bearer " + "0" * 48}) in (401, 403)
    assert stack.status(url, {"Authorization": f"Bearer {stack.ray_token}"}) == 200


def test_s3_refuses_a_wrong_secret(stack):
    with pytest.raises(ClientError) as refused:
        stack.s3_client(secret="wrong-secret").list_objects_v2(Bucket="reset-tune")
    assert refused.value.response["Error"]["Code"] in ("SignatureDoesNotMatch", "AccessDenied")
    stack.s3_client().list_objects_v2(Bucket="reset-tune")  # the right one works


def test_postgresql_refuses_a_wrong_password(stack):
    wrong = stack.pg_url("optuna").replace(stack.pg_password, "wrong")
    with pytest.raises(psycopg.OperationalError, match="password authentication failed"):
        psycopg.connect(wrong, connect_timeout=5)
    psycopg.connect(stack.pg_url("optuna"), connect_timeout=5).close()
