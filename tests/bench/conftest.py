"""Shared tiny specs for the bench tests; the Ray test runs last (it is the slowest)."""

from __future__ import annotations

import copy

import pytest


def pytest_collection_modifyitems(config, items):
    items.sort(key=lambda item: item.path.name == "test_ray.py")  # stable: everything else keeps its order


TINY = {
    "name": "tiny",
    "datasets": [{"name": "synthetic", "options": {"preset": "cxr-sex-prevalence", "n": 300}}],
    "models": [{"name": "small_cnn", "options": {"input_size": 32, "width": 8}}],
    "usages": ["lp"],
    "methods": ["erm"],
    "attributes": ["sex"],
    "seeds": [0],
    "train": {"epochs": 1},
    "evaluation": {"n_boot": 20, "n_permutations": 20, "embedding": "pca"},
}


@pytest.fixture
def tiny_spec():
    """A fresh copy of the tiny spec (a dict the test may change)."""
    return copy.deepcopy(TINY)
