"""Recommendations for a new dataset: a profile of its data, a probe of its dynamics, the
drift-diffusion-with-resetting theory, and the finished searches in MLflow.

    from reset_tune.config import TrainConfig
    from reset_tune.recommend import recommend

    answer = recommend(TrainConfig(dataset="digits", noise="symmetric:0.4", batch_size=32),
                       tracking_uri="http://127.0.0.1:5000")
    print(answer.table()); answer.reset_settings()

Only `tracking` talks to MLflow; nothing here imports Ray.
"""

from reset_tune.recommend.combine import Combined, Evidence, combine, similarity
from reset_tune.recommend.history import (
    History,
    PastSearch,
    SettingDescription,
    describe_setting,
    read_history,
)
from reset_tune.recommend.probe import ProbeResult, probe_dynamics
from reset_tune.recommend.profile import DatasetProfile, NoiseEstimate, profile_dataset
from reset_tune.recommend.recommend import Recommendation, log_recommendation, recommend

__all__ = [
    "Combined",
    "DatasetProfile",
    "Evidence",
    "History",
    "NoiseEstimate",
    "PastSearch",
    "ProbeResult",
    "Recommendation",
    "SettingDescription",
    "combine",
    "describe_setting",
    "log_recommendation",
    "probe_dynamics",
    "profile_dataset",
    "read_history",
    "recommend",
    "similarity",
]
