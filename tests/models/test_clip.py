"""The open_clip backbone factory: image embeddings, frozen text tower, groups, configs, errors."""

from __future__ import annotations

import open_clip
import pytest
import torch

from medequity.models import create_backbone
from medequity.models.clip import TINY_CLIP_CONFIG, clip_bundle


def test_tiny_clip_is_an_image_embedding_backbone_with_openai_normalisation():
    backbone = create_backbone("open_clip:medequity-tiny")
    assert (backbone.feature_dim, backbone.input_size) == (16, 32)
    assert backbone.mean == pytest.approx(open_clip.OPENAI_DATASET_MEAN)
    assert backbone.std == pytest.approx(open_clip.OPENAI_DATASET_STD)
    images = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(backbone(images), backbone.module.encode_image(images))
    assert backbone(images).shape == (2, 16)


def test_only_the_image_tower_is_trainable_and_grouped():
    module = create_backbone("open_clip:medequity-tiny").module
    trainable = {n for n, p in module.named_parameters() if p.requires_grad}
    assert trainable and all(n.startswith("visual.") for n in trainable)
    assert not module.transformer.resblocks[0].attn.in_proj_weight.requires_grad  # text tower


def test_module_groups_cover_each_vision_block():
    backbone = create_backbone("open_clip:medequity-tiny")
    groups = backbone.module_groups()
    assert list(groups) == ["blocks.0.attn", "blocks.0.mlp", "blocks.0.norm", "blocks.1.attn", "blocks.1.mlp", "blocks.1.norm"]
    names = [n for n, _ in backbone.module.named_parameters()]
    for prefixes in groups.values():
        assert any(n.startswith(tuple(prefixes)) for n in names)
        assert all(p.startswith("visual.") for p in prefixes)


def test_text_bundle_gives_unit_norm_embeddings_and_the_model_scale():
    bundle = clip_bundle(create_backbone("open_clip:medequity-tiny"))
    text = bundle.encode_text(["there is pneumonia.", "there is no pneumonia."])
    assert text.shape == (2, 16)
    torch.testing.assert_close(text.norm(dim=-1), torch.ones(2))
    assert bundle.logit_scale == pytest.approx(1 / 0.07, rel=1e-5)  # open_clip's initial temperature


def test_builtin_open_clip_config_builds_randomly_initialised():
    backbone = create_backbone("open_clip:ViT-B-32")
    assert (backbone.feature_dim, backbone.input_size, backbone.config["open_clip"]) == (512, 224, "ViT-B-32")
    assert len(backbone.module_groups()) == 36  # FairTune's 36-bit space for a 12-block ViT


def test_config_dicts_input_size_and_normalisation_overrides():
    config = {**TINY_CLIP_CONFIG, "preprocess_cfg": {"mean": [0.5] * 3, "std": [0.5] * 3}}
    backbone = create_backbone("open_clip:custom", model_cfg=config, input_size=48)
    assert backbone.input_size == 48 and backbone.mean == (0.5, 0.5, 0.5)
    assert backbone(torch.randn(1, 3, 48, 48)).shape == (1, 16)
    assert backbone.transform_config()["mean"] == [0.5, 0.5, 0.5]


def test_unknown_names_and_tags_are_errors():
    with pytest.raises(KeyError, match="unknown open_clip model"):
        create_backbone("open_clip:ViT-Q-99")
    with pytest.raises(KeyError, match="no pretrained tag"):
        create_backbone("open_clip:medequity-tiny", pretrained_tag="openai")
