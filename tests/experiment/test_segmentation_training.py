"""Segmentation as a task of the experiment layer that trains: a usage's model, any method through
the shared trainer (ERM, resampling, FEBS), checkpoints selected by worst-group validation Dice."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

from medequity.experiment import ExperimentSpec, prepare, run_experiment
from medequity.experiment.train import train_config


def spec(tmp_path, **changes) -> ExperimentSpec:
    base = {"dataset": "synthetic-segmentation", "dataset_options": {"preset": "seg-derm-lesion", "n": 40, "image_size": 32,
                                                                  "split_fractions": {"train": 0.5, "val": 0.25, "test": 0.25}},
            "attribute": "skin_tone", "task": "segmentation", "model": "sam_tiny", "usage": "seg_decoder",
            "n_boot": 10, "n_permutations": 10, "cache_dir": str(tmp_path), "eval_attributes": ["skin_tone"],
            "train": {"epochs": 2, "batch_size": 8, "lr": 1e-3}}
    return ExperimentSpec(**{**base, **changes})


def run(prepared):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return run_experiment(prepared)


def test_erm_resampling_and_febs_train_the_decoder_through_the_same_interface(tmp_path):
    prepared = prepare(spec(tmp_path))
    assert train_config(prepared.spec).selection == "worst_group_dice"  # the segmentation task's default
    results = {}
    for method, params in (("erm", {}), ("resampling", {}), ("febs", {"mode": "coded"})):
        result = run(prepared.with_spec(method=method, method_params=params))
        results[method] = result
        history = result.history
        assert len(history) == 2 and {"val_dice", "val_worst_group_dice", "val_es_dice"} <= set(history.columns)
        best = history.val_worst_group_dice.idxmax()
        assert result.best_epoch == int(history.epoch[best])  # kept by worst-group validation Dice
        rows = result.predictions
        assert set(rows.split) == {"val", "test"} and (rows.prompt == "none").all()
        scored = rows[~rows.skipped]
        assert scored.dice.between(0, 1).all()
        assert result.threshold["rule"] == "argmax over C + 1 classes" and result.threshold["usage"] == "seg_decoder"
        dice = result.metrics.query("attribute == 'skin_tone' and metric == 'dice' and group == 'overall'")
        test = scored[scored.split == "test"].groupby("sample_id").dice.mean()
        assert float(dice.value.iloc[0]) == pytest.approx(float(test.mean()))
    # resampling drew from its balanced cells (groups reached it through the batches' codes)
    assert {cell["group"] for cell in results["resampling"].method_log["cells"]} == set(prepared.group_names)
    weights = results["febs"].method_log["weights"]
    assert len(weights) == 2 and all(0 < w <= np.tanh(1) + 1e-6 for epoch in weights for w in epoch if np.isfinite(w))
    # all three started from the same weights and data: ERM and FEBS differ only by the loss
    assert not np.allclose(results["erm"].history.train_loss, results["febs"].history.train_loss)


def test_a_classification_selection_criterion_on_a_segmentation_model_is_a_clear_error(tmp_path):
    prepared = prepare(spec(tmp_path, train={"epochs": 1, "batch_size": 8, "selection": "worst_group_auc"}))
    with pytest.raises(ValueError, match="selection 'worst_group_auc' is not measured.*worst_group_dice"):
        run(prepared)
