"""The model zoo: models by name, each declaring named layer groups for partial resetting."""

from reset_tune.models._build import MODEL_NAMES, build_model
from reset_tune.resetting.groups import LayerGroups, layer_groups, matches_prefixes

__all__ = ["MODEL_NAMES", "LayerGroups", "build_model", "layer_groups", "matches_prefixes"]
