"""The search service: specs (`search_spaces/*.yaml`) and their Optuna space; Ray lives here too.

`run` runs (or resumes) a search, as `reset-tune search` does; Ray is imported only then.
"""

from reset_tune.search.api import run
from reset_tune.search.space import (
    enqueue_configurations,
    make_sampler,
    space_function,
    suggest,
    to_trial_params,
)
from reset_tune.search.spec import (
    OBJECTIVE_METRICS,
    RESET_SUBPARAMETERS,
    RESETTING,
    RESETTING_OFF,
    RESETTING_ON,
    SearchSpec,
    SpecError,
    load_spec,
)

__all__ = [
    "OBJECTIVE_METRICS",
    "RESETTING",
    "RESETTING_OFF",
    "RESETTING_ON",
    "RESET_SUBPARAMETERS",
    "SearchSpec",
    "SpecError",
    "enqueue_configurations",
    "load_spec",
    "make_sampler",
    "run",
    "space_function",
    "suggest",
    "to_trial_params",
]
