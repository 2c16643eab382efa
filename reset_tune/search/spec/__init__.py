"""Search specifications: the schema of `search_spaces/*.yaml`, checked before anything starts.

A spec names the problem (dataset, noise, model, budget: the `train` settings every trial shares),
what the search ranks configurations by (`objective`), how many configurations to try and how
(`trials`, `concurrency`, `seeds`, `resources`, `scheduler`, `sampler`), and the searched
parameters (`params`). Parameter names are `TrainConfig` field names, so a trial's parameters
rebuild its config directly (`SearchSpec.config_for`). Every problem is reported as one line
``FILE: KEY.PATH: what is wrong and what is allowed``; pydantic checks shapes and types, then
the checks that need the engine (settings, models' layer groups) run.

Resetting is conditional: when `params.reset_prob` has an off arm, a trial either resets (r drawn
log-uniformly, and the reset sub-parameters `RESET_SUBPARAMETERS` drawn too) or is the r = 0
baseline, in which those sub-parameters do not exist (they keep `TrainConfig` defaults).

One concern per module: `_vocabulary` (shared names), `_params` (searched parameters),
`_sections` (objective, resources, scheduler, sampler, racing), `_schema` (`SearchSpec`),
`_loading` (YAML), `_errors` (messages), `_checks` (the checks that need the engine).
"""

from reset_tune.search.spec._errors import SpecError
from reset_tune.search.spec._loading import load_spec
from reset_tune.search.spec._params import (
    Categorical,
    IntRange,
    LogUniform,
    Param,
    Range,
    Scalar,
    Uniform,
)
from reset_tune.search.spec._schema import SearchSpec
from reset_tune.search.spec._sections import (
    AshaScheduler,
    NoScheduler,
    Objective,
    Racing,
    Resources,
    Sampler,
)
from reset_tune.search.spec._vocabulary import (
    NOT_SEARCHABLE,
    OBJECTIVE_METRICS,
    RESET_PROB,
    RESET_SUBPARAMETERS,
    RESETTING,
    RESETTING_OFF,
    RESETTING_ON,
)

__all__ = [
    "NOT_SEARCHABLE",
    "OBJECTIVE_METRICS",
    "RESETTING",
    "RESETTING_OFF",
    "RESETTING_ON",
    "RESET_PROB",
    "RESET_SUBPARAMETERS",
    "AshaScheduler",
    "Categorical",
    "IntRange",
    "LogUniform",
    "NoScheduler",
    "Objective",
    "Param",
    "Racing",
    "Range",
    "Resources",
    "Sampler",
    "Scalar",
    "SearchSpec",
    "SpecError",
    "Uniform",
    "load_spec",
]
