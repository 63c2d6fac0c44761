"""The experiment layer: prepare once, run several times from the same start; pre-training resolved
in prepare (cold and warm cache give the same model); the task selects the evaluation."""

from __future__ import annotations

import functools
import warnings

import numpy as np
import pytest
import torch

from medequity.experiment import ExperimentSpec, create_task, prepare, run_experiment
from medequity.experiment.pretrain import synthetic_checkpoint


def tiny_spec(**changes) -> ExperimentSpec:
    base = {"dataset_options": {"preset": "cxr-sex-prevalence", "n": 240, "image_size": 32}, "attribute": "sex",
            "model": "small_cnn", "model_options": {"input_size": 32, "width": 4}, "usage": "ft",
            "train": {"epochs": 1, "batch_size": 64, "device": "cpu"}, "n_boot": 0, "n_permutations": 0,
            "eval_attributes": ["sex"]}
    return ExperimentSpec(**{**base, **changes})


def weights(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in module.state_dict().items()}


def test_every_backbone_of_a_prepared_experiment_starts_from_the_same_weights():
    prepared = prepare(tiny_spec())
    first = weights(prepared.take_backbone().module)
    torch.randn(1000)  # whatever happens in between
    second = weights(prepared.take_backbone().module)
    assert first.keys() == second.keys() and all(torch.equal(first[k], second[k]) for k in first)
    assert prepared.take_backbone() is not prepared.backbone  # later runs get a new module, not a trained one


def test_runs_of_one_prepared_experiment_equal_runs_prepared_each_time():
    spec = tiny_spec()
    prepared = prepare(spec)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        shared = [run_experiment(prepared.with_spec(method=m)) for m in ("erm", "resampling")]
        alone = [run_experiment(tiny_spec(method=m)) for m in ("erm", "resampling")]
    for a, b in zip(shared, alone):
        np.testing.assert_array_equal(a.predictions["score"].to_numpy(), b.predictions["score"].to_numpy())


def test_with_spec_refuses_changes_that_need_new_data_or_a_new_backbone():
    prepared = prepare(tiny_spec())
    with pytest.raises(ValueError, match="call prepare"):
        prepared.with_spec(attribute="age")
    assert prepared.with_spec(method="groupdro").spec.method == "groupdro"


def test_split_views_can_merge_splits_and_an_empty_view_is_an_error():
    spec = tiny_spec()
    merged = prepare(spec, splits={"train": ["train", "test"], "val": ["val"]})
    apart = prepare(spec)
    assert len(merged.data["train"]) == len(apart.data["train"]) + len(apart.data["test"])
    assert set(merged.data) == {"train", "val"}
    with pytest.raises(ValueError, match="empty"):
        prepare(spec, splits={"train": ["no-such-split"]})


def test_an_intersection_attribute_has_one_spelling():
    assert tiny_spec(attribute="sex&age").attribute == "sex & age" == tiny_spec(attribute="sex & age").attribute


def test_the_task_is_chosen_by_name():
    assert create_task("classification").name == "classification"
    with pytest.raises(KeyError):
        create_task("no-such-task")


def test_cold_and_warm_pretraining_caches_give_the_same_model(tmp_path, monkeypatch):
    """Pre-training happens in prepare and is seeded by itself: a run that pre-trains in-process
    (cold cache) and one that reads the cached weights (warm) train the same model."""
    import importlib

    prepare_module = importlib.import_module("medequity.experiment.prepare")  # the module, not the function

    monkeypatch.setattr(prepare_module, "synthetic_checkpoint", functools.partial(synthetic_checkpoint, n=300, epochs=1))
    spec = tiny_spec(model_options={"input_size": 32, "width": 4, "checkpoint": "synthetic:cxr"}, cache_dir=str(tmp_path))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        cold = run_experiment(spec)
        assert len(list((tmp_path / "pretrained").glob("*.safetensors"))) == 1
        warm = run_experiment(spec)
    np.testing.assert_array_equal(cold.predictions["score"].to_numpy(), warm.predictions["score"].to_numpy())
    assert cold.spec.model_options["checkpoint"] == "synthetic:cxr"  # the record names what the user asked for
