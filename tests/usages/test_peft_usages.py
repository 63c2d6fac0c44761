"""PEFT usages on a tiny timm ViT: exactly which parameters train, LoRA's zero delta, masks."""

from __future__ import annotations

import copy
import warnings

import numpy as np
import pytest
import torch

from medequity.models import create_backbone
from medequity.usages import UsageContext, create_usage

DEPTH, WIDTH, MLP_HIDDEN = 2, 32, 128  # vit: mlp_ratio 4


def tiny_vit():
    torch.manual_seed(0)
    return create_backbone("vit_tiny_patch16_224", input_size=32, depth=DEPTH, embed_dim=WIDTH, num_heads=2, patch_size=8)


def block(i: int, *parts: str) -> set[str]:
    return {f"blocks.{i}.{part}" for part in parts}


# Expected parameter names written out from timm's ViT layout, independently of the usages' rules.
BIASES = {"patch_embed.proj.bias", "norm.bias"} | set().union(*(
    block(i, "norm1.bias", "attn.qkv.bias", "attn.proj.bias", "norm2.bias", "mlp.fc1.bias", "mlp.fc2.bias") for i in range(DEPTH)))
LAYERNORMS = {"norm.weight", "norm.bias"} | set().union(*(
    block(i, "norm1.weight", "norm1.bias", "norm2.weight", "norm2.bias") for i in range(DEPTH)))
ATTENTION = set().union(*(block(i, "attn.qkv.weight", "attn.qkv.bias", "attn.proj.weight", "attn.proj.bias") for i in range(DEPTH)))
HEAD = {"head.weight", "head.bias"}


def build(usage: str, **params):
    backbone = tiny_vit()
    usage_obj = create_usage(usage, **params)
    model, _ = usage_obj.build(backbone, {}, UsageContext())
    return model, usage_obj


def trainable(model) -> set[str]:
    return {name.removeprefix("backbone.") for name, p in model.named_parameters() if p.requires_grad}


def numel(model, names: set[str]) -> int:
    params = dict(model.named_parameters())
    return sum(params[n if n in HEAD else f"backbone.{n}"].numel() for n in names)


@pytest.mark.parametrize(("usage", "expected"), [("bitfit", BIASES), ("ln", LAYERNORMS), ("attn", ATTENTION)])
def test_only_the_selected_parameters_and_the_head_train(usage, expected):
    model, usage_obj = build(usage)
    assert trainable(model) == expected | HEAD
    summary = model.trainable_summary
    assert summary["trainable"] == numel(model, expected | HEAD)
    assert summary["head_trainable"] == WIDTH + 1
    assert summary["total"] == sum(p.numel() for p in model.parameters())
    assert usage_obj.trainable_summary == summary


def test_a_training_step_changes_only_trainable_parameters():
    model, _ = build("bitfit")
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.5)
    loss = torch.nn.functional.binary_cross_entropy_with_logits(model(torch.randn(4, 3, 32, 32)), torch.tensor([0.0, 1, 0, 1]))
    loss.backward()
    optimizer.step()
    changed = {n.removeprefix("backbone.") for n, p in model.named_parameters() if not torch.equal(p, before[n])}
    assert changed and changed <= BIASES | HEAD
    assert "head.weight" in changed


GROUP_ORDER = ["blocks.0.attn", "blocks.0.mlp", "blocks.0.norm", "blocks.1.attn", "blocks.1.mlp", "blocks.1.norm"]


def test_mask_groups_follow_fairtunes_per_block_layout():
    assert list(tiny_vit().module_groups()) == GROUP_ORDER


@pytest.mark.parametrize("mask", ["010001", [0, 1, 0, 0, 0, 1], {"blocks.0.mlp": 1, "blocks.1.norm": 1}])
def test_mask_trains_the_selected_groups(mask):
    model, usage_obj = build("mask", mask=mask)
    expected = {f"blocks.0.mlp.{layer}.{k}" for layer in ("fc1", "fc2") for k in ("weight", "bias")}
    expected |= block(1, "norm1.weight", "norm1.bias", "norm2.weight", "norm2.bias")
    assert trainable(model) == expected | HEAD
    assert usage_obj.mask == dict(zip(GROUP_ORDER, [False, True, False, False, False, True]))


def test_mask_with_others_trains_the_ungrouped_parameters_too():
    model, _ = build("mask", mask="000000", others=True)
    assert trainable(model) == {"cls_token", "pos_embed", "patch_embed.proj.weight", "patch_embed.proj.bias",
                                "norm.weight", "norm.bias"} | HEAD
    full, _ = build("mask", mask="111111", others=True)
    assert full.trainable_summary["trainable"] == full.trainable_summary["total"]  # = full fine-tuning


def test_mask_rejects_unknown_groups_and_wrong_lengths_naming_the_valid_groups():
    with pytest.raises(ValueError, match=r"unknown mask group.*blocks\.9\.attn.*blocks\.0\.attn"):
        build("mask", mask={"blocks.9.attn": 1})
    with pytest.raises(ValueError, match="5 bits but the backbone has 6 groups"):
        build("mask", mask="01010")
    with pytest.raises(ValueError, match="0 or 1"):
        build("mask", mask="01x010")
    with pytest.raises(ValueError, match="needs a 'mask'"):
        build("mask")


def test_usages_that_need_transformer_parts_refuse_a_cnn():
    cnn = create_backbone("small_cnn", input_size=32)
    with pytest.raises(ValueError, match="no LayerNorm"):
        create_usage("ln").build(cnn, {}, UsageContext())
    with pytest.raises(ValueError, match="no (attention|module) groups"):
        create_usage("attn").build(cnn, {}, UsageContext())


def test_lora_trains_only_adapters_and_head_with_fairmedfm_defaults():
    model, usage_obj = build("lora")
    assert usage_obj.params == {"r": 8, "alpha": 8, "dropout": 0.0, "target_modules": "auto"}
    names = trainable(model)
    expected = {f"blocks.{i}.attn.{m}.lora_{ab}.default.weight" for i in range(DEPTH) for m in ("qkv", "proj") for ab in "AB"}
    assert names == expected | HEAD
    r = 8  # per adapted Linear(in, out): A is r×in, B is out×r
    adapter_params = DEPTH * (r * (WIDTH + 3 * WIDTH) + r * (WIDTH + WIDTH))
    assert model.trainable_summary["backbone_trainable"] == adapter_params


def test_lora_delta_is_zero_at_init_and_training_moves_only_adapters():
    backbone = tiny_vit()
    reference = copy.deepcopy(backbone.module).eval()
    x = torch.randn(3, 3, 32, 32)
    model, _ = create_usage("lora", r=4, alpha=8).build(backbone, {}, UsageContext())
    model.eval()
    with torch.no_grad():
        torch.testing.assert_close(model.features(x), reference(x), rtol=0, atol=0)
    frozen = {n: p.detach().clone() for n, p in model.named_parameters() if not p.requires_grad}
    model.train()
    optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=1.0)
    for _ in range(2):  # B starts at zero: A gets no gradient in the first step, both move in the second
        optimizer.zero_grad()
        model(x).pow(2).mean().backward()
        optimizer.step()
    assert all(torch.equal(p, frozen[n]) for n, p in model.named_parameters() if n in frozen)
    model.eval()
    with torch.no_grad():
        assert not torch.allclose(model.features(x), reference(x))


def test_lora_explicit_targets():
    model, _ = build("lora", target_modules=["mlp.fc1"], r=2)
    assert trainable(model) == {f"blocks.{i}.mlp.fc1.lora_{ab}.default.weight" for i in range(DEPTH) for ab in "AB"} | HEAD


def test_unknown_usage_parameter_is_rejected():
    with pytest.raises(ValueError, match="valid"):
        create_usage("lora", rank=4)


def test_end_to_end_run_with_a_peft_usage():
    from medequity.experiment import ExperimentSpec, run_experiment

    spec = ExperimentSpec(
        dataset_options={"preset": "cxr-sex-prevalence", "n": 240, "image_size": 32}, attribute="sex",
        model="vit_tiny_patch16_224",
        model_options={"input_size": 32, "depth": DEPTH, "embed_dim": WIDTH, "num_heads": 2, "patch_size": 8},
        transform={"name": "2d", "resize": 32, "crop": None}, usage="lora", usage_params={"r": 2},
        train={"epochs": 1, "batch_size": 64}, n_boot=5, n_permutations=5, eval_attributes=["sex"],
    )
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*fewer than 30 samples")  # tiny test groups
        result = run_experiment(spec)
    assert len(result.history) == 1
    assert set(result.predictions["split"]) == {"val", "test"}
    scores = result.predictions["score"].to_numpy()
    assert np.all((scores > 0) & (scores < 1))
    assert result.model.trainable_summary["backbone_trainable"] == DEPTH * 2 * (WIDTH + 3 * WIDTH + WIDTH + WIDTH)
    assert {"sex"} == set(result.summaries["attribute"])
