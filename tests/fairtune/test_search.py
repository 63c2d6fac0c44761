"""FairTune search: whole-validation objective, pruning that stops training, resumable studies,
the searched LR carried into the final training, attribute-balanced subsampling."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import optuna
import pandas as pd
import pytest

from medequity.fairtune import FairTuneConfig, Objective, SearchSetup, balanced_subsample, fairtune, search
from medequity.fairtune.search import open_study
from medequity.metrics import group_metrics
from medequity.training.callbacks import RecordFits
from medequity.training.trainer import Trainer

from .conftest import tiny_spec

ALL_ON = {f"blocks.{i}.{p}": 1 for i in range(2) for p in ("attn", "mlp", "norm")}


def test_objective_is_worst_group_auc_of_the_whole_validation_set():
    spec = tiny_spec(epochs=1)
    setup = SearchSetup(spec, Objective.parse("val_worst_group_auc"), subsample=None)
    candidate = setup.train("mask", {"mask": ALL_ON}, 1e-3)
    val = setup.data["val"]
    scores = Trainer().predict(candidate.model, candidate.method, val, setup.config(1e-3))
    names = pd.Series(np.array(val.group_names)[val.groups], name="sex")
    expected = group_metrics(val.labels, scores, sensitive_features=names, metrics=["auc"], n_boot=0, n_permutations=0)
    assert candidate.epochs_run == 1
    assert candidate.value == pytest.approx(expected.summary("auc", "worst"), abs=1e-12)
    # a metric:summary objective goes through group_metrics on the same whole-set scores
    gap = Objective.parse("auc:gap")
    assert gap.direction == "minimize"
    assert gap.value({}, scores, val) == pytest.approx(expected.summary("auc", "gap"), abs=1e-12)


def test_objective_names_and_directions():
    assert Objective.parse("worst_group_auc").name == "val_worst_group_auc"
    assert Objective.parse("val_auc").selection == "auc"
    assert Objective.parse("val_bce").direction == "minimize"
    assert Objective.parse("fnr:worst").direction == "minimize"
    with pytest.raises(ValueError, match="unknown objective"):
        Objective.parse("fairness")


def test_pruning_stops_a_bad_trial_after_its_first_epoch(tmp_path):
    epochs = 3
    spec = tiny_spec(epochs=epochs)
    config = FairTuneConfig(trials=3, objective="val_neg_loss", storage=f"sqlite:///{tmp_path / 'p.db'}", study_name="prune")
    study = open_study("prune", config, "maximize")
    good = {**{g: 1 for g in ALL_ON}, "lr": 1e-4}  # validation loss falls from the first epoch
    bad = {**{g: 0 for g in ALL_ON}, "lr": 1e-5}  # linear readout at the smallest LR: the model hardly moves
    for params in (good, good, bad):
        study.enqueue_trial(params)
    result = search(spec, config)
    trials = result.study.trials
    assert [t.state for t in trials[:2]] == [optuna.trial.TrialState.COMPLETE] * 2
    assert [t.user_attrs["epochs_run"] for t in trials[:2]] == [epochs, epochs]
    assert trials[2].state == optuna.trial.TrialState.PRUNED
    assert trials[2].user_attrs["epochs_run"] == 1 < epochs  # training really stopped
    assert list(trials[2].intermediate_values) == [1]
    assert list(trials[0].intermediate_values) == [1, 2, 3]  # reported every epoch
    assert result.best_mask == ALL_ON


def test_stopped_search_resumes_on_sqlite_without_rerunning(tmp_path):
    spec = tiny_spec(epochs=1)
    config = FairTuneConfig(trials=3, storage=f"sqlite:///{tmp_path / 'study.db'}")
    first = search(spec, config)
    before = [(t.number, t.datetime_start, t.params) for t in first.study.trials]
    assert len(before) == 3
    second = search(spec, FairTuneConfig(trials=5, storage=config.storage))  # a new process would do the same
    assert second.study.study_name == first.study.study_name
    trials = second.study.trials
    assert len(trials) == 5
    assert [(t.number, t.datetime_start, t.params) for t in trials[:3]] == before
    assert all(t.state in (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED) for t in trials)
    # the resumed sampler does not redraw the first trials' start-up samples
    assert trials[3].params != trials[0].params
    again = search(spec, FairTuneConfig(trials=5, storage=config.storage))
    assert len(again.study.trials) == 5


def test_final_training_uses_searched_lr_and_mask_on_all_training_data():
    spec = tiny_spec(epochs=1)
    recorder = RecordFits()
    result = fairtune(spec, FairTuneConfig(trials=2, subsample=0.5), trainer=Trainer(callbacks=[recorder]))
    final = recorder.fits[-1]
    trainer = SimpleNamespace(config=final.config, n_train=len(final.train),
                              trainable={n for n, p in final.model.named_parameters() if p.requires_grad})
    best = result.search
    assert best.best_lr == best.study.best_params["lr"]
    assert trainer.config.lr == best.best_lr != 2.5e-4
    assert best.n_train_search < best.n_train_full == trainer.n_train  # searched on half, retrained on all
    assert result.run.spec.usage == "mask" and result.run.spec.usage_params["mask"] == best.best_mask
    trained_groups = {g for g, on in best.best_mask.items() if on}
    assert all(any(n.startswith(f"backbone.{g}") for g in trained_groups) or n.startswith("head.") for n in trainer.trainable)
    row = result.test_row()
    assert set(row) >= {"auc", "worst_group_auc", "auc_gap", "es_auc"} and row["worst_group_auc"] <= row["auc"] + 1


def test_balanced_subsample_keeps_group_label_ratios():
    rng = np.random.default_rng(0)
    groups = rng.choice(3, size=5000, p=[0.6, 0.3, 0.1])
    labels = (rng.random(5000) < np.where(groups == 2, 0.05, 0.3)).astype(int)
    rows = balanced_subsample(groups, labels, 0.1, seed=1)
    assert len(np.unique(rows)) == len(rows)
    for g in range(3):
        for y in (0, 1):
            n = np.sum((groups == g) & (labels == y))
            k = np.sum((groups[rows] == g) & (labels[rows] == y))
            assert k == max(2, round(0.1 * n))
    np.testing.assert_array_equal(rows, balanced_subsample(groups, labels, 0.1, seed=1))
