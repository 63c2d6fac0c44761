"""Shared tiny fixtures for method tests (additive: add new fixtures, keep existing ones unchanged)."""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest
import torch

from medequity.training.data import ArrayItems, SplitData


def _split_data(x, labels, groups, group_names=("g0", "g1")) -> SplitData:
    labels = np.asarray(labels, dtype=np.int64)
    groups = np.asarray(groups, dtype=np.int64)
    table = pd.DataFrame({"sample_id": [f"s{i}" for i in range(len(labels))]})
    x = torch.as_tensor(np.asarray(x, dtype=np.float32))
    return SplitData(ArrayItems(x, labels, groups), labels, groups, tuple(group_names), table, "tiny")


@pytest.fixture
def make_split():
    """``make_split(x, labels, groups, group_names=("g0", "g1"))`` -> SplitData on in-memory arrays."""
    return _split_data


@pytest.fixture
def tiny_features():
    """``tiny_features(n, dim, seed, s_strength, y_strength, p_group1, n_groups)`` -> (x, y, s) arrays.

    Features carry the label in dimension 0 and the group in dimension 1 (so S is decodable).
    """

    def make(n=400, dim=8, seed=0, s_strength=2.0, y_strength=1.5, p_group1=0.5, n_groups=2):
        rng = np.random.default_rng(seed)
        if n_groups == 2:
            s = (rng.random(n) < p_group1).astype(np.int64)
        else:
            s = rng.integers(0, n_groups, n)
        y = (rng.random(n) < 0.5).astype(np.int64)
        x = rng.normal(size=(n, dim)).astype(np.float32)
        x[:, 0] += y_strength * (2 * y - 1)
        x[:, 1] += s_strength * (2 * (s / max(n_groups - 1, 1)) - 1)
        return x, y, s

    return make


@pytest.fixture
def run_tiny_experiment(tmp_path):
    """``run_tiny_experiment(method, usage="lp", method_params=None, epochs=2, **spec)`` -> RunResult.

    A 240-image synthetic derm dataset at 32 px with the small CNN, on CPU, no bootstrap; features
    are cached under the test's tmp_path.
    """
    from medequity.experiment import ExperimentSpec, run_experiment

    def run(method, usage="lp", method_params=None, epochs=2, **spec):
        options = dict(dataset="synthetic", dataset_options={"preset": "derm-unbiased", "n": 240, "image_size": 32},
                       attribute="sex", model="small_cnn", model_options={"input_size": 32}, usage=usage,
                       method=method, method_params=method_params or {},
                       train={"epochs": epochs, "batch_size": 32, "device": "cpu", "lr": 1e-3},
                       n_boot=0, n_permutations=0, cache_dir=str(tmp_path / "cache"))
        options.update(spec)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # tiny groups warn that their metrics are unreliable
            return run_experiment(ExperimentSpec(**options))

    return run


def _assert_finite_run(result) -> None:
    metrics = result.metrics
    overall_auc = metrics[(metrics.group == "overall") & (metrics.metric == "auc")]["value"].to_numpy()
    assert overall_auc.size > 0 and np.all(np.isfinite(overall_auc))
    assert np.all(np.isfinite(result.history["train_loss"].to_numpy()))
    assert np.all(np.isfinite(result.predictions["score"].to_numpy()))
    assert len(result.history) >= 1


@pytest.fixture
def assert_finite_run():
    """``assert_finite_run(result)``: the RunResult's test AUC, training losses and scores are finite."""
    return _assert_finite_run
