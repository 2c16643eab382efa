"""The training engine: plain PyTorch, no Ray, Optuna or MLflow."""

from reset_tune.engine.callbacks import Callback, ProgressPrinter
from reset_tune.engine.group import TrainingGroup, train_group
from reset_tune.engine.loop import TrainingRun, data_settings, prepare_data, train
from reset_tune.engine.result import TrainResult

__all__ = [
    "Callback",
    "ProgressPrinter",
    "TrainResult",
    "TrainingGroup",
    "TrainingRun",
    "data_settings",
    "prepare_data",
    "train",
    "train_group",
]
