"""Same spec and seed, same model, whatever the pre-training cache held: synthetic pre-training
neither depends on nor changes the caller's random state, and a run that pre-trains in a fresh
process (cold cache) equals one that reads the cached weights (warm) — scores and group metrics."""

from __future__ import annotations

import functools
import importlib
import json
import random
import subprocess
import sys
import warnings

import numpy as np
import pandas as pd
import torch

from medequity.experiment import ExperimentSpec, run_experiment
from medequity.experiment.pretrain import synthetic_checkpoint

TINY_PRETRAINING = {"n": 200, "epochs": 1}


def spec(cache_dir) -> ExperimentSpec:
    return ExperimentSpec(dataset_options={"preset": "cxr-sex-prevalence", "n": 240, "image_size": 32}, attribute="sex",
                          model="small_cnn", model_options={"input_size": 32, "width": 4, "checkpoint": "synthetic:cxr"},
                          usage="ft", method="resampling", train={"epochs": 1, "batch_size": 64, "device": "cpu"},
                          n_boot=10, n_permutations=10, eval_attributes=["sex"], cache_dir=str(cache_dir))


COLD_RUN = """
import functools, importlib, json, sys, warnings
import torch
torch.set_num_threads(1)
from medequity.experiment import ExperimentSpec, run_experiment
from medequity.experiment.pretrain import synthetic_checkpoint
prepare_module = importlib.import_module("medequity.experiment.prepare")
prepare_module.synthetic_checkpoint = functools.partial(synthetic_checkpoint, **json.loads(sys.argv[2]))
warnings.simplefilter("ignore")
result = run_experiment(ExperimentSpec.from_dict(json.loads(sys.argv[1])))
result.predictions.to_parquet(sys.argv[3] + "/predictions.parquet")
result.metrics.to_parquet(sys.argv[3] + "/metrics.parquet")
"""


def draws() -> tuple:
    return random.random(), float(np.random.rand()), float(torch.rand(1))


def test_pretraining_leaves_the_callers_random_state_as_it_was(tmp_path):
    torch.manual_seed(7), np.random.seed(7), random.seed(7)
    expected = draws()
    torch.manual_seed(7), np.random.seed(7), random.seed(7)
    path = synthetic_checkpoint("small_cnn", "synthetic:cxr", cache_dir=tmp_path, backbone_options={"input_size": 32, "width": 4},
                                **TINY_PRETRAINING)
    assert path.is_file()  # it did pre-train (cold cache), seeding and drawing on its own
    assert draws() == expected


def test_a_cold_run_in_a_fresh_process_equals_a_warm_run(tmp_path, monkeypatch):
    cold_dir = tmp_path / "cold"
    cold_dir.mkdir()
    cache = tmp_path / "cache"
    subprocess.run([sys.executable, "-c", COLD_RUN, json.dumps(spec(cache).to_dict()), json.dumps(TINY_PRETRAINING),
                    str(cold_dir)], check=True, timeout=120)
    assert len(list((cache / "pretrained").glob("*.safetensors"))) == 1  # the cold run pre-trained and cached

    prepare_module = importlib.import_module("medequity.experiment.prepare")
    # the same pre-training settings as the cold run (they are part of the cache key)
    monkeypatch.setattr(prepare_module, "synthetic_checkpoint", functools.partial(synthetic_checkpoint, **TINY_PRETRAINING))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        np.random.seed(123), torch.manual_seed(123)  # whatever state this process is in
        warm = run_experiment(spec(cache))
    cold_predictions = pd.read_parquet(cold_dir / "predictions.parquet")
    np.testing.assert_array_equal(cold_predictions["score"].to_numpy(), warm.predictions["score"].to_numpy())
    cold_metrics = pd.read_parquet(cold_dir / "metrics.parquet")
    pd.testing.assert_frame_equal(cold_metrics.reset_index(drop=True), warm.metrics.reset_index(drop=True),
                                  check_dtype=False, check_exact=True)
    assert warm.metrics.value.notna().any()
