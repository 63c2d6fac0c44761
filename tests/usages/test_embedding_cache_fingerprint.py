"""The embedding cache key hashes the segmenter's weights once per run, not once per split: the
zero-shot model memoises the hash while its weights' version stamp is unchanged, seg_decoder hashes
once for its three splits; the keys (and so the cache files) are the ones hashing every time gives."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch

import medequity.models.feature_cache as feature_cache
import medequity.usages.linear_probe as linear_probe
import medequity.usages.seg_zero_shot as seg_zero_shot
from medequity.experiment import ExperimentSpec, prepare, run_experiment
from medequity.models.checkpoint import state_fingerprint
from medequity.models.feature_cache import cache_key, cached_features


@pytest.fixture
def hashes(monkeypatch):
    """Every call of state_fingerprint made by the feature cache, the segmentation usages and linear probing."""
    calls: list[str] = []

    def counted(module):
        calls.append(type(module).__name__)
        return state_fingerprint(module)

    monkeypatch.setattr(feature_cache, "state_fingerprint", counted)
    monkeypatch.setattr(seg_zero_shot, "state_fingerprint", counted)
    monkeypatch.setattr(linear_probe, "state_fingerprint", counted)
    return calls


def spec(tmp_path, usage: str, **changes) -> ExperimentSpec:
    return ExperimentSpec(**{"dataset": "synthetic-segmentation", "dataset_options": {"preset": "seg-derm-lesion", "n": 30,
                                                                                        "image_size": 32},
                             "attribute": "skin_tone", "task": "segmentation", "model": "sam_tiny", "usage": usage,
                             "n_boot": 10, "n_permutations": 10, "train": {"epochs": 1, "batch_size": 8},
                             "cache_dir": str(tmp_path), **changes})


def expected_keys(spec: ExperimentSpec, splits: tuple[str, ...]) -> set[str]:
    """The cache keys of the splits, with the segmenter's weights hashed the original way, here."""
    prepared = prepare(spec)
    segmenter = prepared.backbone
    weights = state_fingerprint(seg_zero_shot._FlatEncoder(segmenter))
    return {cache_key(segmenter.name, segmenter.config, weights, prepared.data[s].fingerprint, segmenter.profile.to_dict())
            for s in splits}


def run(spec):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return run_experiment(spec)


def test_a_zero_shot_run_hashes_the_weights_once_for_val_test_and_the_probe(tmp_path, hashes):
    result = run(spec(tmp_path, "seg_zs"))
    assert result.model.encoded == len(result.data["val"]) + len(result.data["test"])
    result.model.embeddings(result.data["test"])  # the bench's representation probe asks again
    assert hashes == ["_FlatEncoder"]
    hashes.clear()
    keys = expected_keys(spec(tmp_path, "seg_zs"), ("val", "test"))
    assert {p.stem for p in tmp_path.glob("*.npy")} == keys


def test_a_decoder_run_hashes_once_for_its_three_splits_and_shares_the_zero_shot_entries(tmp_path, hashes):
    result = run(spec(tmp_path, "seg_decoder", usage_params={}))
    assert hashes == ["_FlatEncoder"] and result.model.encoded == sum(len(result.data[s]) for s in ("train", "val", "test"))
    hashes.clear()
    assert {p.stem for p in tmp_path.glob("*.npy")} == expected_keys(spec(tmp_path, "seg_zs"), ("train", "val", "test"))
    assert run(spec(tmp_path, "seg_zs")).model.encoded == 0  # zero-shot finds the decoder run's entries


def test_changed_weights_are_hashed_again(tmp_path, hashes):
    result = run(spec(tmp_path, "seg_zs"))
    model, test = result.model, result.data["test"]
    before = np.array(model.embeddings(test))
    assert len(hashes) == 1
    with torch.no_grad():  # an in-place change (as an optimiser step) bumps the weights' version
        model.segmenter.module.image_encoder.patch_embed.proj.weight.mul_(2)
    after = np.array(model.embeddings(test))
    assert len(hashes) == 2 and model.encoded == 2 * len(test) + len(result.data["val"])  # a new key: encoded again
    assert not np.allclose(before, after)
    assert len(list(tmp_path.glob("*.npy"))) == 3


def test_a_given_fingerprint_gives_the_key_hashing_gives(tmp_path):
    module = torch.nn.Linear(3, 2)
    items = [{"x": torch.full((3,), float(i))} for i in range(4)]
    options = {"backbone_name": "lin", "backbone_config": {}, "data_fingerprint": "d", "transform_config": {},
               "feature_dim": 2, "cache_dir": tmp_path}
    first, hit = cached_features(module, items, **options)
    assert not hit
    again, hit = cached_features(module, items, fingerprint=state_fingerprint(module), **options)
    assert hit and np.array_equal(first, again) and len(list(tmp_path.glob("*.npy"))) == 1
    _, hit = cached_features(module, items, fingerprint="another-model", **options)
    assert not hit and len(list(tmp_path.glob("*.npy"))) == 2


def test_a_linear_probe_hashes_its_backbone_once_for_its_three_splits(tmp_path, hashes):
    lp = ExperimentSpec(dataset="synthetic", dataset_options={"preset": "cxr-unbiased", "n": 120, "image_size": 32},
                        attribute="sex", model="small_cnn", model_options={"input_size": 32}, usage="lp",
                        n_boot=10, n_permutations=10, train={"epochs": 1, "batch_size": 32}, cache_dir=str(tmp_path))
    result = run(lp)
    assert len(hashes) == 1
    hashes.clear()
    # the cache files carry the keys hashing each split's backbone would give (same cache as before)
    prepared = prepare(lp)
    weights = state_fingerprint(prepared.backbone.module)
    keys = {cache_key(prepared.backbone.name, prepared.backbone.config, weights, prepared.data[s].fingerprint,
                      prepared.data[s].extra.get("transform", {})) for s in ("train", "val", "test")}
    assert {p.stem for p in tmp_path.glob("*.npy")} == keys and len(result.data) == 3
