"""Names that cross into MLflow: run tags, run statuses, client limits, environment variables."""

from __future__ import annotations

# -- tags on every run reset-tune creates (values are strings; MLflow caps them at 8000 chars) ----
TAG_PREFIX = "reset_tune."
SEARCH_ID = "reset_tune.search_id"
TRIAL_ID = "reset_tune.trial_id"
KIND = "reset_tune.kind"  # one of RUN_KINDS
DATASET = "reset_tune.dataset"
NOISE = "reset_tune.noise"  # the full noise spec as given, e.g. "symmetric:0.6", "human:worst"
NOISE_KIND = "reset_tune.noise_kind"  # e.g. "symmetric", "human"
NOISE_RATE = "reset_tune.noise_rate"  # the nominal rate, or the measured wrong fraction for human
MODEL = "reset_tune.model"
SEED = "reset_tune.seed"
DATA_FINGERPRINT = "reset_tune.data_fingerprint"
CODE_VERSION = "reset_tune.code_version"  # git commit of the code that ran, when known
PACKAGE_VERSION = "reset_tune.version"
FAILURE_REASON = "reset_tune.failure_reason"
# Racing: every seed run of one configuration carries its configuration's label and its seed, so
# MLflow's runs table groups them (group by tag) and `recommend` reads a configuration as one.
CONFIGURATION = "reset_tune.configuration"
RACE_SEED = "reset_tune.race_seed"
# The sink's own handle of a run. Run creation is looked up by it before retrying, so a retried
# or replayed creation never makes a second run.
RUN_KEY = "reset_tune.run_key"
PARENT_RUN_KEY = "reset_tune.parent_run_key"

KIND_SEARCH = "search"
KIND_TRIAL = "trial"
KIND_RECOMMENDATION = "recommendation"
RUN_KINDS = (KIND_SEARCH, KIND_TRIAL, KIND_RECOMMENDATION)

# -- MLflow's own system tags ---------------------------------------------------------------------
MLFLOW_PARENT_RUN_ID = "mlflow.parentRunId"  # nests a run under another in the UI
MLFLOW_RUN_NAME = "mlflow.runName"
MLFLOW_NOTE = "mlflow.note.content"  # a run's markdown description (the run page's Description)
# An experiment's kind. MLflow 3.17's UI does not yet read it to pick its view (the URL's
# `workflowType` decides, see `queries.run_url`), but it is the declared way to say "training".
MLFLOW_EXPERIMENT_KIND = "mlflow.experimentKind"
EXPERIMENT_KIND_TRAINING = "custom_model_development"
# The UI's model-training view (runs, charts, models) rather than its GenAI view (traces, judges).
UI_TRAINING_VIEW = "workflowType=machine_learning"
# Default experiment of searches: never the look-alike of MLflow's own "Default".
DEFAULT_EXPERIMENT = "reset-tune"
# A search's winners among its trials: "best" (the best trial), "best r=0" (the best trial
# without resetting), or both joined by ", ". Filter: tags.`reset_tune.best` LIKE 'best%'.
BEST = "reset_tune.best"
BEST_OVERALL = "best"
BEST_R0 = "best r=0"

# -- run statuses a run can end with --------------------------------------------------------------
FINISHED = "FINISHED"
FAILED = "FAILED"
KILLED = "KILLED"  # stopped on purpose: pruned by a scheduler, or cancelled
END_STATUSES = (FINISHED, FAILED, KILLED)

# -- limits of MLflow 3.17 (mlflow/utils/validation.py) -------------------------------------------
MAX_METRICS_PER_BATCH = 1000
MAX_PARAMS_TAGS_PER_BATCH = 100  # each of params and tags
MAX_ENTITIES_PER_BATCH = 1000  # metrics + params + tags in one log_batch call
MAX_BATCH_REQUEST_BYTES = 1_000_000  # the server rejects larger log_batch request bodies
MAX_PARAM_VALUE_LENGTH = 6000
MAX_TAG_VALUE_LENGTH = 8000
TRUNCATION_MARKER = "...[truncated]"

# -- environment variables ------------------------------------------------------------------------
TRACKING_URI_ENV = "MLFLOW_TRACKING_URI"
# MLflow's HTTP client retries a refused connection 7 times with exponential backoff (~4 min per
# call). The sink retries on its own schedule, so it asks MLflow to fail fast instead (see
# `_delivery.configure_http_client`); values a user has set explicitly are kept.
HTTP_MAX_RETRIES_ENV = "MLFLOW_HTTP_REQUEST_MAX_RETRIES"
HTTP_TIMEOUT_ENV = "MLFLOW_HTTP_REQUEST_TIMEOUT"  # seconds per HTTP request
SUPPRESS_URL_PRINTING_ENV = "MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT"
SERVER_JOB_EXECUTION_ENV = "MLFLOW_SERVER_ENABLE_JOB_EXECUTION"
