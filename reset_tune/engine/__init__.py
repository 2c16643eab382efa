"""The training engine: plain PyTorch, no Ray, Optuna or MLflow."""

from reset_tune.engine.callbacks import Callback, ProgressPrinter
from reset_tune.engine.loop import TrainingRun, prepare_data, train
from reset_tune.engine.result import TrainResult

__all__ = ["Callback", "ProgressPrinter", "TrainResult", "TrainingRun", "prepare_data", "train"]
