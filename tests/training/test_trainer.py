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


# --- callbacks -----------------------------------------------------------------------------------------

from medequity.methods import Method  # noqa: E402
from medequity.training.callbacks import (  # noqa: E402
    Callback,
    OptunaPruning,
    ProgressCallback,
    RecordFits,
    RecordScores,
)


def _without_seconds(rows):
    return [{k: v for k, v in row.items() if k != "seconds"} for row in rows]


def test_progress_argument_is_a_progress_callback(data):
    train, val = data
    config = TrainConfig(epochs=3, lr=0.05, batch_size=64, patience=None)
    by_argument, by_callback = [], []
    torch.manual_seed(0)
    Trainer(progress=by_argument.append).fit(Classifier(None, 4), create_method("erm"), train, val, config, stage="s")
    torch.manual_seed(0)
    fit = Trainer(callbacks=[ProgressCallback(by_callback.append)]).fit(Classifier(None, 4), create_method("erm"),
                                                                         train, val, config, stage="s")
    assert _without_seconds(by_argument) == _without_seconds(by_callback)
    assert [row["epoch"] for row in by_argument] == [0, 1, 2]
    first = by_argument[0]
    assert (first["epochs"], first["selection"], first["stage"]) == (3, "worst_group_auc", "s")
    assert by_argument[-1]["best_epoch"] == fit.best_epoch
    assert _without_seconds(fit.history.to_dict(orient="records")) == \
        _without_seconds([{k: v for k, v in row.items() if k not in ("epochs", "selection", "best_epoch")} for row in by_argument])


def test_callbacks_run_in_order_with_progress_last(data):
    train, val = data
    calls = []

    class Named(Callback):
        def __init__(self, name):
            self.name = name

        def on_fit_start(self, trainer, model, method, train, val, config, stage):
            calls.append((self.name, "start", stage))

        def on_epoch_end(self, info):
            calls.append((self.name, "epoch", info.epoch))

        def on_fit_end(self, result):
            calls.append((self.name, "end", result.best_epoch))

    trainer = Trainer(progress=lambda row: calls.append(("progress", "epoch", row["epoch"])),
                      callbacks=[Named("a"), Named("b")])
    fit = trainer.fit(Classifier(None, 4), create_method("erm"), train, val,
                      TrainConfig(epochs=2, lr=0.05, batch_size=64, selection="last"), stage="x")
    assert calls == [("a", "start", "x"), ("b", "start", "x"),
                     ("a", "epoch", 0), ("b", "epoch", 0), ("progress", "epoch", 0),
                     ("a", "epoch", 1), ("b", "epoch", 1), ("progress", "epoch", 1),
                     ("a", "end", 1), ("b", "end", 1)]
    assert fit.best_epoch == 1


def test_record_scores_keeps_the_last_validation_scores(data):
    train, val = data
    recorder = RecordScores()
    trainer = Trainer(callbacks=[recorder])
    model, method = Classifier(None, 4), create_method("erm")
    config = TrainConfig(epochs=3, lr=0.05, batch_size=64, selection="last")
    trainer.fit(model, method, train, val, config)
    # selection "last": the restored model is the last epoch's, whose validation scores were recorded
    np.testing.assert_array_equal(recorder.last_scores, trainer.predict(model, method, val, config))


def test_record_fits_keeps_every_stage_and_the_predicted_splits(data):
    train, val = data
    recorder = RecordFits()
    torch.manual_seed(0)
    model = Classifier(torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU()), 8)
    method = create_method("fair_diagnosis", adversarial_epochs=2)
    fit = method.fit(model, train, val, TrainConfig(epochs=2, batch_size=64, device="cpu"), Trainer(callbacks=[recorder]))
    assert [f.stage for f in recorder.fits] == ["classifier", "adversarial"]
    assert recorder.fits[0].method.name == "erm" and recorder.fits[1].method is method
    assert recorder.results["classifier"] is fit.stages["classifier"]
    assert len(recorder.results["adversarial"].history) == 2 and recorder.train_data is train
    assert len(recorder.predicted) == 1 and recorder.predicted[0] is val  # validation passes only


class _FakeTrial:
    """The part of optuna.Trial the pruning callback uses; prunes after ``prune_after`` reports."""

    def __init__(self, prune_after):
        self.prune_after, self.reports, self.attrs = prune_after, [], {}

    def report(self, value, step):
        self.reports.append((step, value))

    def should_prune(self):
        return len(self.reports) >= self.prune_after

    def set_user_attr(self, key, value):
        self.attrs[key] = value


def test_optuna_pruning_reports_each_epoch_and_prunes_when_told(data):
    optuna = pytest.importorskip("optuna")
    train, val = data
    trial = _FakeTrial(prune_after=2)
    pruning = OptunaPruning(trial, lambda info: info.row["val_auc"])
    seen = []
    trainer = Trainer(progress=seen.append, callbacks=[pruning])
    with pytest.raises(optuna.TrialPruned, match="pruned after epoch 2 of 5"):
        trainer.fit(Classifier(None, 4), create_method("erm"), train, val,
                    TrainConfig(epochs=5, lr=0.05, batch_size=64, patience=None))
    assert [step for step, _ in trial.reports] == [1, 2] and trial.attrs["epochs_run"] == 2
    assert pruning.values == [value for _, value in trial.reports] and pruning.values[0] == seen[0]["val_auc"]
    assert len(seen) == 1  # the exception leaves fit at once: progress (after it) never saw epoch 2

    never = _FakeTrial(prune_after=99)
    fit = Trainer(callbacks=[OptunaPruning(never, lambda info: info.row["val_auc"])]).fit(
        Classifier(None, 4), create_method("erm"), train, val, TrainConfig(epochs=3, lr=0.05, batch_size=64, patience=None))
    assert [v for _, v in never.reports] == list(fit.history["val_auc"])


# --- the step interface ----------------------------------------------------------------------------------


class _TwoOptimisers(Method):
    """The head by SGD and an extra bias by Adam, a frozen BatchNorm kept in eval mode, and a column."""

    name = "two_optimisers_test"

    def setup(self, model, train, config):
        self.extra["shift"] = torch.nn.Linear(1, 1)
        self.log["mean_shift"] = []

    def make_optimizers(self, model, config):
        return {"head": torch.optim.SGD(model.head.parameters(), lr=0.1),
                "shift": torch.optim.Adam(self.extra["shift"].parameters(), lr=0.01)}

    def make_schedulers(self, optimizers, config, steps_per_epoch):
        return {}

    def train_mode(self, model):
        model.eval()
        self.extra.train()

    def logits(self, model, x, groups=None):
        return model(x) + self.extra["shift"].bias

    def training_step(self, model, batch, optimizers):
        self.modes = (model.training, self.extra.training)
        for optimizer in optimizers.values():
            optimizer.zero_grad()
        loss = self.loss(model, batch)
        loss.backward()
        for optimizer in optimizers.values():
            optimizer.step()
        return {"loss": float(loss.detach()), "shift": float(self.extra["shift"].bias.detach())}

    def epoch_metrics(self, steps):
        self.log["mean_shift"].append(float(np.mean([s["shift"] for s in steps])))
        return {"train_loss": float(np.mean([s["loss"] for s in steps])), "shift": self.log["mean_shift"][-1]}


def test_a_method_with_two_optimisers_its_modes_and_columns(data):
    train, val = data
    torch.manual_seed(0)
    model = Classifier(torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.BatchNorm1d(4)), 4)
    for p in model.backbone.parameters():
        p.requires_grad_(False)
    stats_before = model.backbone[1].running_mean.clone()
    method = _TwoOptimisers()
    fit = Trainer().fit(model, method, train, val, TrainConfig(epochs=3, batch_size=64, patience=None, selection="last"))
    assert method.modes == (False, True)
    torch.testing.assert_close(model.backbone[1].running_mean, stats_before)  # eval mode: BatchNorm untouched
    assert list(fit.history.columns[:6]) == ["stage", "epoch", "train_loss", "lr", "seconds", "shift"]
    assert list(fit.history["lr"]) == [0.1, 0.1, 0.1]  # the first optimiser's, no scheduler
    assert list(fit.history["shift"]) == method.log["mean_shift"] and len(method.log["mean_shift"]) == 3
    assert float(method.extra["shift"].bias.detach()) != 0.0


def test_the_default_single_optimiser_keeps_the_cosine_schedule(data):
    import math

    train, val = data
    method = create_method("erm")
    config = TrainConfig(epochs=3, lr=0.05, batch_size=100, patience=None, optimizer="sgd")
    fit = Trainer().fit(Classifier(None, 4), method, train, val, config)
    optimizers = method.make_optimizers(Classifier(None, 4), config)
    assert list(optimizers) == ["model"] and isinstance(optimizers["model"], torch.optim.SGD)
    steps = 3  # 300 samples, batches of 100
    expected = [0.05 * (1 + math.cos(math.pi * (e + 1) * steps / (3 * steps))) / 2 for e in range(3)]
    np.testing.assert_allclose(fit.history["lr"], expected, atol=1e-12)


def test_keep_last_epoch_keeps_the_final_weights_and_never_stops_early(data):
    train, val = data

    class Last(Method):
        name = "keep_last_test"
        keep_last_epoch = True

    torch.manual_seed(0)
    fit = Trainer().fit(Classifier(None, 4), Last(), train, val,
                        TrainConfig(epochs=6, lr=0.0, batch_size=64, patience=1, selection="auc"))
    assert len(fit.history) == 6 and fit.best_epoch == 5 and fit.selection == "auc"
    assert fit.best_value == pytest.approx(fit.history["val_auc"].iloc[-1])


def test_predict_gives_groups_only_to_methods_that_need_them(data):
    _, val = data
    seen = []

    class Recording(Method):
        name = "recording_groups_test"

        def logits(self, model, x, groups=None):
            seen.append(groups)
            return model(x)

    class NeedsGroups(Recording):
        needs_groups_at_inference = True

    model, config = Classifier(None, 4), TrainConfig(eval_batch_size=1000)
    Trainer().predict(model, Recording(), val, config)
    assert seen == [None]
    Trainer().predict(model, NeedsGroups(), val, config)
    np.testing.assert_array_equal(seen[-1].numpy(), val.groups)


def test_explain_defaults_to_nothing(data):
    _, val = data
    assert create_method("erm").explain(Classifier(None, 4), val) is None


def test_the_trainer_imports_no_method_and_nothing_above_training():
    import subprocess
    import sys

    code = ("import sys, medequity.training, medequity.training.trainer, medequity.training.callbacks\n"
            "bad = [m for m in sys.modules if m.split('.')[:2] in (['medequity', n] for n in "
            "('methods', 'experiment', 'bench', 'fairtune', 'cli', 'fairdi', 'fair_diagnosis', 'usages', 'report'))]\n"
            "assert not bad, bad\n")
    subprocess.run([sys.executable, "-c", code], check=True)
