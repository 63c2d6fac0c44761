"""The trainer keeps the epoch its selection rule names, and stops early as configured."""

import numpy as np
import pytest
import torch

from medequity.methods import create_method
from medequity.models import Classifier
from medequity.training.data import ArrayItems, SplitData
from medequity.training.trainer import TrainConfig, Trainer


def split(n: int, seed: int) -> SplitData:
    rng = np.random.default_rng(seed)
    groups = rng.integers(0, 2, n)
    labels = rng.integers(0, 2, n)
    x = rng.normal(size=(n, 4)) + labels[:, None] * np.array([1.0, 0.5, 0.0, 0.0]) * (1 + groups[:, None])
    return SplitData(ArrayItems(x.astype(np.float32), labels, groups), labels, groups, ("a", "b"),
                     table=None, fingerprint=f"toy{seed}")


@pytest.fixture
def data():
    return split(300, 0), split(200, 1)


@pytest.mark.parametrize("selection", ["worst_group_auc", "auc", "neg_loss"])
def test_the_kept_epoch_is_the_best_on_the_selection_criterion(data, selection):
    train, val = data
    torch.manual_seed(0)
    model = Classifier(None, 4)
    config = TrainConfig(epochs=8, lr=0.05, batch_size=32, patience=None, selection=selection)
    trainer = Trainer()
    fit = trainer.fit(model, create_method("erm"), train, val, config)
    history = fit.history[f"val_{selection}"].to_numpy()
    assert fit.best_epoch == int(np.argmax(history))  # first epoch reaching the maximum
    # the restored model is that epoch's model: re-scoring it gives the recorded value
    scores = trainer.predict(model, create_method("erm"), val, config)
    from medequity.training.trainer import validation_summary

    assert validation_summary(val.labels, scores, val.groups, 2)[selection] == pytest.approx(history[fit.best_epoch])


def test_selection_last_keeps_the_final_epoch(data):
    train, val = data
    torch.manual_seed(0)
    model = Classifier(None, 4)
    fit = Trainer().fit(model, create_method("erm"), train, val,
                        TrainConfig(epochs=5, lr=0.05, batch_size=32, patience=1, selection="last"))
    assert fit.best_epoch == 4 and len(fit.history) == 5  # never "stale", so never stopped early


def test_patience_stops_training(data):
    train, val = data
    torch.manual_seed(0)
    fit = Trainer().fit(Classifier(None, 4), create_method("erm"), train, val,
                        TrainConfig(epochs=50, lr=0.0, batch_size=64, patience=2, selection="auc"))
    # lr 0: nothing improves after the first epoch, so training stops after 1 + patience + 1 epochs
    assert len(fit.history) == 4 and fit.best_epoch == 0


def test_unknown_selection_is_rejected():
    with pytest.raises(ValueError, match="worst_group_auc"):
        TrainConfig(selection="best")
