"""Search spaces: bit counts (FairTune §4.1: 36 and 12 bits for ViT-B) and the modules each bit trains."""

from __future__ import annotations

import optuna
import pytest
import torch

from medequity.fairtune.space import LR_RANGE, group_space, search_space, vit_groups, vit_space
from medequity.models import create_backbone
from medequity.usages import UsageContext, create_usage


def vit(depth: int):
    torch.manual_seed(0)
    return create_backbone("vit_tiny_patch16_224", input_size=32, depth=depth, embed_dim=32, num_heads=2, patch_size=8)


def test_vit_b_bit_counts():
    assert vit_space("full").n_bits == 36
    assert vit_space("attn").n_bits == 12
    assert vit_space("ln").n_bits == 12
    assert vit_space("full", depth=4).n_bits == 12
    assert LR_RANGE == (1e-5, 1e-3)  # the public FairTune code's log-uniform range


def test_spaces_over_a_real_12_block_vit_match_its_module_groups():
    backbone = vit(12)
    full = search_space("full", backbone)
    assert full.searched == tuple(backbone.module_groups()) == vit_groups(12)
    attn, ln = search_space("attn", backbone), search_space("ln", backbone)
    assert attn.searched == tuple(f"blocks.{i}.attn" for i in range(12))
    assert ln.searched == tuple(f"blocks.{i}.norm" for i in range(12))
    assert attn.groups == full.groups  # unsearched groups stay in the mask, frozen


def trained_names(mask) -> set[str]:
    model, _ = create_usage("mask", mask=mask).build(vit(2), {}, UsageContext())
    return {name for name, p in model.named_parameters() if p.requires_grad}


def test_each_bit_trains_exactly_its_modules():
    space = vit_space("full", depth=2)
    head = {"head.weight", "head.bias"}
    # Names written out from timm's ViT block layout, independently of module_groups.
    expected = {
        "blocks.1.attn": {"blocks.1.attn.qkv.weight", "blocks.1.attn.qkv.bias", "blocks.1.attn.proj.weight", "blocks.1.attn.proj.bias"},
        "blocks.0.mlp": {"blocks.0.mlp.fc1.weight", "blocks.0.mlp.fc1.bias", "blocks.0.mlp.fc2.weight", "blocks.0.mlp.fc2.bias"},
        "blocks.0.norm": {"blocks.0.norm1.weight", "blocks.0.norm1.bias", "blocks.0.norm2.weight", "blocks.0.norm2.bias"},
    }
    for group, names in expected.items():
        assert trained_names(space.mask({group: 1})) == {f"backbone.{n}" for n in names} | head
    assert trained_names(space.mask({})) == head  # all-zero mask: linear readout


def test_12_bit_attention_space_never_trains_mlp_or_norm():
    space = vit_space("attn", depth=2)
    trial = optuna.trial.FixedTrial({"blocks.0.attn": 1, "blocks.1.attn": 1, "lr": 3e-4})
    mask, lr = space.suggest(trial)
    assert lr == 3e-4
    assert mask == {"blocks.0.attn": 1, "blocks.0.mlp": 0, "blocks.0.norm": 0, "blocks.1.attn": 1, "blocks.1.mlp": 0, "blocks.1.norm": 0}
    names = trained_names(mask)
    assert names and not any(".mlp." in n or ".norm" in n for n in names)


def test_generic_space_is_one_bit_per_named_group_of_any_timm_model():
    backbone = create_backbone("resnet18")
    groups = tuple(backbone.module_groups())
    assert {"conv1", "bn1", "layer1", "layer4"} <= set(groups)
    assert search_space("groups", backbone).n_bits == len(groups) == group_space(groups).n_bits
    with pytest.raises(ValueError, match="no groups"):
        search_space("attn", backbone)


def test_space_rejects_unknown_kind_and_bad_lr_range():
    with pytest.raises(ValueError, match="unknown search space"):
        vit_space("mlp")
    with pytest.raises(ValueError, match="lr_range"):
        vit_space("full", lr_range=(0.0, 1e-3))
