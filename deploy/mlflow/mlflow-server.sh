#!/usr/bin/env bash
# The team's MLflow tracking server: runs and metrics in PostgreSQL, artifacts in S3-compatible
# storage served through the server (--serve-artifacts: clients and Ray workers never need S3
# credentials), basic authentication with no access by default, only the listed Host headers.
# Used as it is by the Kubernetes Deployment (mlflow.yaml), the systemd unit
# (reset-tune-mlflow.service) and tests/deploy. Needs `pip install 'reset-tune[mlflow-server]'`.
#
# Settings, all from the environment (credentials from a Secret or a root-only EnvironmentFile):
#   MLFLOW_BACKEND_STORE_URI        postgresql://USER:PASSWORD@HOST:5432/mlflow        (required)
#   MLFLOW_AUTH_DATABASE_URI        users and permissions, e.g. .../mlflow_auth        (required)
#   MLFLOW_ARTIFACTS_DESTINATION    s3://BUCKET/mlflow                                  (required)
#   MLFLOW_AUTH_ADMIN_PASSWORD      the admin user's password, set on first start      (required)
#   MLFLOW_FLASK_SERVER_SECRET_KEY  signs the UI's sessions and CSRF tokens             (required)
#   MLFLOW_ALLOWED_HOSTS            Host headers served, e.g. mlflow.example.com,mlflow (required)
#   MLFLOW_CORS_ALLOWED_ORIGINS     origins allowed to call the API from a browser (default: none)
#   AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, MLFLOW_S3_ENDPOINT_URL (S3-compatible stores)
#   MLFLOW_AUTH_ADMIN_USERNAME (admin), MLFLOW_HOST (0.0.0.0), MLFLOW_PORT (5000),
#   MLFLOW_WORKERS (4), MLFLOW_RUNTIME_DIR (where the private auth config goes; default a temp dir)
#   MLFLOW_AUTH_CACHE_TTL_SECONDS (60): how long a worker trusts a password it has verified. Each
#     verification is a scrypt hash (~0.1 s of CPU), and trials send a request every few
#     evaluations; a changed password or a deleted user reaches the other workers within this
#     time. 0 verifies every request.
set -euo pipefail
umask 077

for name in MLFLOW_BACKEND_STORE_URI MLFLOW_AUTH_DATABASE_URI MLFLOW_ARTIFACTS_DESTINATION \
  MLFLOW_AUTH_ADMIN_PASSWORD MLFLOW_FLASK_SERVER_SECRET_KEY MLFLOW_ALLOWED_HOSTS; do
  if [ -z "${!name:-}" ]; then
    echo "mlflow-server: set $name (see the header of $0)" >&2
    exit 2
  fi
done

auth_cache_ttl="${MLFLOW_AUTH_CACHE_TTL_SECONDS:-60}"
if ! [[ "$auth_cache_ttl" =~ ^[0-9]+$ ]]; then
  echo "mlflow-server: MLFLOW_AUTH_CACHE_TTL_SECONDS must be a whole number of seconds" \
    "(0 verifies every request), got '$auth_cache_ttl'" >&2
  exit 2
fi

# basic-auth reads its database from an INI file only: write it where only this user reads it.
# The admin password stays in the environment (MLflow reads MLFLOW_AUTH_ADMIN_PASSWORD).
runtime="${MLFLOW_RUNTIME_DIR:-$(mktemp -d -t mlflow-server.XXXXXX)}"
mkdir -p "$runtime"
cat >"$runtime/basic_auth.ini" <<INI
[mlflow]
default_permission = NO_PERMISSIONS
database_uri = ${MLFLOW_AUTH_DATABASE_URI}
admin_username = ${MLFLOW_AUTH_ADMIN_USERNAME:-admin}
authorization_function = mlflow.server.auth:authenticate_request_basic_auth
auth_cache_ttl_seconds = ${auth_cache_ttl}
INI
export MLFLOW_AUTH_CONFIG_PATH="$runtime/basic_auth.ini"
# MLflow's job runner (GenAI evaluation jobs) is not used by reset-tune: fewer processes.
export MLFLOW_SERVER_ENABLE_JOB_EXECUTION="${MLFLOW_SERVER_ENABLE_JOB_EXECUTION:-false}"

# The store URIs (with their passwords) stay in the environment, where MLflow reads
# MLFLOW_BACKEND_STORE_URI and MLFLOW_ARTIFACTS_DESTINATION: a command line is readable by every
# user of the machine (ps).
args=(
  server
  --app-name basic-auth
  --serve-artifacts
  --host "${MLFLOW_HOST:-0.0.0.0}"
  --port "${MLFLOW_PORT:-5000}"
  --workers "${MLFLOW_WORKERS:-4}"
  --allowed-hosts "$MLFLOW_ALLOWED_HOSTS"
)
if [ -n "${MLFLOW_CORS_ALLOWED_ORIGINS:-}" ]; then
  args+=(--cors-allowed-origins "$MLFLOW_CORS_ALLOWED_ORIGINS")
fi
exec "${MLFLOW_BIN:-mlflow}" "${args[@]}"
