"""The trained segmentation usages on tiny models: seg_decoder (cached embeddings shared with seg_zs),
seg_lora (SAMed's LoRA on q and v), seg_ft (MONAI UNet / SwinUNETR, 2D and 3D)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from medequity.data import create_dataset
from medequity.models.segmenter import create_segmenter
from medequity.training.data import make_segmentation_split
from medequity.usages import UsageContext, create_usage
from medequity.usages.seg_lora import LoRAQKV
from medequity.usages.seg_zero_shot import PromptedSegmenter


def splits(preset="seg-derm-lesion", n=12, **options):
    dataset = create_dataset("synthetic-segmentation", preset=preset, n=n, **options)
    names = tuple(sorted(dataset.groups("sex").dropna().astype(str).unique()))
    return {"train": make_segmentation_split(dataset, "sex", names)}


def test_seg_decoder_reads_the_zero_shot_embedding_cache_and_outputs_c_plus_1_channels(tmp_path):
    data = splits(image_size=40)
    context = UsageContext(cache_dir=tmp_path)
    segmenter = create_segmenter("sam_tiny")
    zero_shot = PromptedSegmenter(segmenter, dict(create_usage("seg_zs").params), tmp_path)
    embeddings = np.asarray(zero_shot.embeddings(data["train"]))
    assert zero_shot.encoded == 12
    model, views = create_usage("seg_decoder").build(segmenter, data, context)
    assert model.encoded == 0  # the embeddings came from the cache zero-shot filled
    item = views["train"].items[0]
    np.testing.assert_array_equal(item["x"].numpy(), embeddings[0])
    logits = model(torch.stack([views["train"].items[i]["x"] for i in range(3)]))
    assert logits.shape == (3, 2, 32, 32)  # C + 1 = 2 channels at the decoder's 4 × 8 grid
    assert item["y"].shape == (32, 32) and set(np.unique(item["y"].numpy())) <= {0, 1}
    # only the head trains; the segmenter's own weights stay frozen and untouched
    assert not any(p.requires_grad for p in segmenter.module.parameters())
    assert all(p.requires_grad for p in model.parameters())
    # the head starts from SAM's decoder: class 1's token is SAM's single-mask token 0
    torch.testing.assert_close(model.head.mask_decoder.mask_tokens.weight[1], segmenter.module.mask_decoder.mask_tokens.weight[0])
    # the mask target lies where the image lies in the decoder frame (padded geometry): the
    # upscaled one-hot of the target at the original size is the original mask
    mask = data["train"].items[0]["mask"]
    onehot = torch.nn.functional.one_hot(item["y"], 2).permute(2, 0, 1)[None].float() * 20 - 10
    back = segmenter.upscale(onehot, segmenter.profile.geometry(mask.shape))[0].argmax(0).numpy()
    assert (back == mask).mean() > 0.95


def test_seg_lora_wraps_q_and_v_of_every_block_and_starts_as_the_frozen_model():
    data = splits(image_size=40)
    segmenter = create_segmenter("sam_tiny")
    x = segmenter.profile.prepare(data["train"].items[0]["image"])[0][None]
    before = segmenter.module.image_encoder(x).detach()
    model, views = create_usage("seg_lora").build(segmenter, data, UsageContext())
    assert len(model.lora_layers) == 2 and all(isinstance(b.attn.qkv, LoRAQKV) for b in model.image_encoder.blocks)
    torch.testing.assert_close(model.image_encoder(x), before)  # B = 0: unchanged at the start
    trainable = {name for name, p in model.named_parameters() if p.requires_grad}
    encoder_trainable = {n for n in trainable if n.startswith("image_encoder.")}
    assert encoder_trainable and all(".a_q." in n or ".b_q." in n or ".a_v." in n or ".b_v." in n for n in encoder_trainable)
    assert any(n.startswith("head.mask_decoder.") for n in trainable)
    # an update of B changes the q and v slices of the fused output only, never k
    layer = model.image_encoder.blocks[0].attn.qkv
    tokens = torch.randn(1, 2, 2, layer.dim)
    plain = layer(tokens)
    with torch.no_grad():
        layer.b_q.weight.normal_()
        layer.b_v.weight.normal_()
    changed = (layer(tokens) - plain).abs().reshape(-1, 3, layer.dim).amax(dim=(0, 2))
    assert changed[0] > 0 and changed[1] == 0 and changed[2] > 0
    assert views["train"].items[0]["x"].shape == (3, 64, 64)
    assert create_usage("seg_lora").train_defaults["scheduler"] == "poly"


@pytest.mark.parametrize("three_d", [False, True])
def test_seg_ft_monai_unet_2d_and_3d_learns_and_segments_at_the_original_size(three_d):
    torch.manual_seed(0)
    if three_d:
        data = splits("seg-organ-3d", n=6, volume_shape=(8, 16, 16))
        options = {"spatial_dims": 3, "roi_size": [8, 16, 16]}
    else:
        data = splits(n=8, image_size=24)
        options = {"spatial_dims": 2, "roi_size": 16}
    segmenter = create_segmenter("monai_unet", channels=[4, 8], strides=[2], num_res_units=0, out_channels=2, **options)
    model, views = create_usage("seg_ft").build(segmenter, data, UsageContext())
    items = [views["train"].items[i] for i in range(len(views["train"]))]
    x, y = torch.stack([i["x"] for i in items]), torch.stack([i["y"] for i in items])
    from medequity.methods import create_method

    erm = create_method("erm")
    optimizer = torch.optim.Adam(model.parameters(), lr=0.05)
    losses = []
    for _ in range(8):
        optimizer.zero_grad()
        loss = erm.loss(model, {"x": x, "y": y, "group": torch.zeros(len(y), dtype=torch.long)})
        loss.backward()
        optimizer.step()
        losses.append(float(loss.detach()))
    assert losses[-1] < losses[0]
    rows = list(model.segment(views["train"]))
    mask = data["train"].items[0]["mask"]
    assert len(rows) == len(items) and rows[0]["true_area"] == int((mask == 1).sum())
    assert all(0 <= r["dice"] <= 1 for r in rows if not r["skipped"])


def test_swin_unetr_2d_tiny_runs_through_seg_ft():
    data = splits(n=4, image_size=32)
    segmenter = create_segmenter("swin_unetr", spatial_dims=2, in_channels=3, out_channels=2, feature_size=12,
                                 depths=[1, 1, 1, 1], num_heads=[1, 1, 1, 1], roi_size=64)
    model, views = create_usage("seg_ft").build(segmenter, data, UsageContext())
    item = views["train"].items[0]
    assert item["x"].shape == (3, 64, 64)
    assert model(item["x"][None]).shape == (1, 2, 64, 64)


def test_wrong_family_or_channel_count_is_a_clear_error():
    data = splits(n=4, image_size=24)
    unet = create_segmenter("monai_unet", spatial_dims=2, channels=[4, 8], strides=[2], num_res_units=0, out_channels=3,
                            roi_size=16)
    with pytest.raises(ValueError, match="out_channels=3 but the data have 2 classes"):
        create_usage("seg_ft").build(unet, data, UsageContext())
    with pytest.raises(ValueError, match="seg_decoder needs a 2D SAM-family segmenter"):
        create_usage("seg_decoder").build(unet, data, UsageContext())
    with pytest.raises(ValueError, match="seg_ft trains MONAI networks"):
        create_usage("seg_ft").build(create_segmenter("sam_tiny"), data, UsageContext())
