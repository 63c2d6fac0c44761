"""Every zoo entry, loaded from random weights in its official layout (``checkpoint:``), runs the
usages a spec can name through the experiment layer: LP on cached features, FT, LoRA, and CLIP
zero-shot and CLIP-Adapt where it has a text tower — one epoch on a tiny synthetic chest X-ray set.
Each trains (finite losses, scores in [0, 1]) with the right parameters trainable: the head for LP;
the image tower, never the text tower, for FT; only the adapters for LoRA (which leave zero); the
prototypes for CLIP-Adapt (which leave zero-shot's); nothing for zero-shot. The other PEFT usages
(bitfit, ln, attn) find their parameters in every family they suit."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from test_zoo import TINY, official_file, randomise  # this folder's zoo test: tiny configs, published layouts

from medequity.models import create_backbone
from medequity.models.zoo import ZOO
from medequity.models.zoo.base import merge
from medequity.usages import UsageContext, create_usage

pytestmark = pytest.mark.filterwarnings("ignore::medequity.metrics._validation.GroupMetricWarning")  # tiny groups

# The zoo test's tiny configs at the smallest sizes their patches allow (BiomedCLIP's tiny ViT at 32 px, not 160).
OPTIONS = {name: merge(TINY[name], {"arch": merge(TINY[name]["arch"], {"vision_cfg": {"image_size": 32}})})
           if name == "biomedclip" else TINY[name] for name in TINY}
SIZES = {"dinov2-vitb14": 28, "rad-dino": 28, "lvm-med": 64}  # others: 32 px
CNNS = ("c2l", "moco-cxr")


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    """name -> the path of random weights written in the entry's official layout."""
    root = tmp_path_factory.mktemp("weights")
    paths = {}
    for name in OPTIONS:
        (root / name).mkdir()
        paths[name] = official_file(name, randomise(create_backbone(name, **OPTIONS[name]).module, seed=2), root / name)
    return paths


def image_parameter(model, name: str) -> bool:
    check = getattr(model.backbone, "is_image_parameter", None)
    return check is None or check(name.removeprefix("backbone."))


@pytest.mark.parametrize("name", sorted(OPTIONS))
def test_each_entry_runs_lp_ft_lora_and_zero_shot_through_the_experiment(name, weights, tmp_path):
    from medequity.experiment import ExperimentSpec, prepare, run_experiment

    size = SIZES.get(name, 32)
    spec = ExperimentSpec(dataset_options={"preset": "cxr-sex-prevalence", "n": 80, "image_size": 32}, attribute="sex",
                          model=name, model_options={**OPTIONS[name], "checkpoint": str(weights[name])},
                          transform={"name": "2d", "resize": size, "crop": None}, train={"epochs": 1, "batch_size": 32},
                          n_boot=2, eval_attributes=["sex"], cache_dir=str(tmp_path))
    prepared = prepare(spec)
    usages = ["lp", "ft", "lora"] + (["clip_zs", "clip_adapt"] if ZOO[name].zero_shot else [])
    for usage in usages:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*fewer than 30 samples")
            result = run_experiment(prepared.with_spec(usage=usage))
        scores = result.predictions["score"].to_numpy()
        assert np.isfinite(scores).all() and ((scores >= 0) & (scores <= 1)).all(), (name, usage)
        model = result.model
        trainable = {n for n, p in model.named_parameters() if p.requires_grad}
        if usage == "clip_zs":
            assert result.best_epoch == -1 and trainable == set()
            assert model.usage_record["prompts"]["positive"] == ["a chest X-ray of a diseased"]
            zero_shot_prototypes = model.head.prototypes.detach().clone()
            continue
        assert np.isfinite(result.history["train_loss"]).all() and len(result.history) == 1, (name, usage)
        if usage == "clip_adapt":  # the prototypes train from the zero-shot ones, on cached image embeddings
            assert trainable == {"head.prototypes"} and model.usage_record["prompts"]["negative"] == ["a chest X-ray of a normal"]
            assert not torch.allclose(model.head.prototypes, zero_shot_prototypes)  # moved from zero-shot's in training
        elif usage == "lp":
            assert isinstance(model.backbone, torch.nn.Identity) and trainable == {"head.weight", "head.bias"}
            assert result.data["train"].items.x.shape[1] == prepared.backbone.feature_dim  # cached features, not images
        elif usage == "ft":
            backbone = {n for n, _ in model.named_parameters() if n.startswith("backbone.")}
            assert {n for n in backbone if image_parameter(model, n)} <= trainable  # the whole image tower trains
            assert not {n for n in backbone if not image_parameter(model, n)} & trainable  # the text tower never does
        else:  # lora: only the adapters and the head; the adapters' B matrices left zero in training
            adapters = trainable - {"head.weight", "head.bias"}
            assert adapters and all(".lora_" in n for n in adapters) and all(image_parameter(model, n) for n in adapters)
            grown = [n for n, p in model.named_parameters() if ".lora_B." in n and p.abs().sum() > 0]
            assert grown, f"{name}: no LoRA B matrix moved from zero in one epoch"
            if name in CNNS:
                assert any(isinstance(getattr(m, "base_layer", None), torch.nn.Conv2d)
                           for m in model.backbone.modules())  # convolutions adapted: the ResNet has no linear layer


@pytest.mark.parametrize("name", sorted(OPTIONS))
def test_the_other_peft_usages_find_their_parameters(name):
    backbone = create_backbone(name, **OPTIONS[name])
    is_image = getattr(backbone.module, "is_image_parameter", lambda _: True)
    for usage in ("bitfit", "ln", "attn") if name not in CNNS else ("bitfit",):
        model, _ = create_usage(usage).build(create_backbone(name, **OPTIONS[name]), {}, UsageContext())
        tuned = {n for n, p in model.backbone.named_parameters() if p.requires_grad}
        assert tuned and all(is_image(n) for n in tuned), (name, usage)
        if usage == "bitfit":
            assert all(n.endswith("bias") for n in tuned)
        if usage == "attn":
            assert all(".attn" in n or "attention" in n or "self_attn" in n for n in tuned), sorted(tuned)[:4]
    if name in CNNS:
        with pytest.raises(ValueError, match="no LayerNorm"):
            create_usage("ln").build(backbone, {}, UsageContext())
