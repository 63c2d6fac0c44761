"""The training loop shared by every method and usage, and its callbacks."""

from medequity.training.callbacks import (
    Callback,
    EpochInfo,
    OptunaPruning,
    ProgressCallback,
    RecordedFit,
    RecordFits,
    RecordScores,
)
from medequity.training.data import SplitData, make_split_data
from medequity.training.trainer import FitResult, TrainableMethod, TrainConfig, Trainer, predict_scores

__all__ = ["Callback", "EpochInfo", "FitResult", "OptunaPruning", "ProgressCallback", "RecordFits", "RecordScores",
           "RecordedFit", "SplitData", "TrainConfig", "TrainableMethod", "Trainer", "make_split_data", "predict_scores"]
