"""Shared tiny set-up: a 2-block ViT (embed 32) on 300 synthetic 32-pixel images."""

from __future__ import annotations

from medequity.experiment import ExperimentSpec

TINY_VIT = {"input_size": 32, "depth": 2, "embed_dim": 32, "num_heads": 2, "patch_size": 8}


def tiny_spec(epochs: int = 1, **changes) -> ExperimentSpec:
    spec = dict(dataset="synthetic", dataset_options={"preset": "cxr-sex-prevalence", "n": 300, "seed": 0, "image_size": 32},
                attribute="sex", model="vit_tiny_patch16_224", model_options=dict(TINY_VIT), usage="mask",
                train={"epochs": epochs, "batch_size": 64, "patience": None, "device": "cpu"}, n_boot=0, n_permutations=0,
                eval_attributes=["sex"])
    spec.update(changes)
    return ExperimentSpec(**spec)
