"""The training loop shared by every method and usage."""

from medequity.training.data import SplitData, make_split_data
from medequity.training.trainer import FitResult, TrainConfig, Trainer, predict_scores

__all__ = ["FitResult", "SplitData", "TrainConfig", "Trainer", "make_split_data", "predict_scores"]
