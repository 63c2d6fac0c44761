"""Synthetic pre-training of a promptable segmenter (``checkpoint: synthetic:<preset>`` on a segmentation spec)."""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch

from medequity.data.prompts import make_prompts
from medequity.data.synthetic_segmentation import make_synthetic_segmentation
from medequity.experiment.seg_pretrain import _decode_batch, _prompt_tensors, promptable_loss, synthetic_segmenter_checkpoint
from medequity.models.segmenter import create_segmenter

SMALL = {"image_size": 32}  # sam_tiny at 32 px: a 4 × 4 embedding grid, fast on a CPU
SETTINGS = {"n": 64, "epochs": 20, "image_size": 32, "batch_size": 8, "lr": 3e-3, "options": SMALL}


def _box_dice(segmenter, n: int = 16) -> float:
    """Mean Dice of box-prompted masks on held-out unbiased images (another seed than pre-training)."""
    data = make_synthetic_segmentation("seg-derm-unbiased", n=n, seed=5, image_size=32)
    scores = []
    for i in range(n):
        mask = np.asarray(data.masks[i]) > 0
        if not mask.any():
            continue
        x, geometry = segmenter.profile.prepare(data.images[i])
        prompt = _prompt_tensors(make_prompts(data.masks[i], "bbox", seed=0, sample_id=i, classes=[1])[1], geometry)
        points = prompt["points"]
        logits, _ = segmenter.decode(segmenter.encode(x[None])[0], boxes=prompt["boxes"], multimask=False,
                                     points=None if points is None else points[0])
        predicted = segmenter.upscale(logits, geometry)[0, 0].numpy() > 0
        scores.append(2 * (predicted & mask).sum() / (predicted.sum() + mask.sum()))
    return float(np.mean(scores))


def test_pretraining_is_cached_keeps_the_callers_random_state_and_learns_to_segment(tmp_path):
    random.seed(1)
    np.random.seed(1)
    torch.manual_seed(1)
    expected = (random.random(), np.random.rand(), torch.rand(1).item())
    random.seed(1)
    np.random.seed(1)
    torch.manual_seed(1)
    path = synthetic_segmenter_checkpoint("sam_tiny", "synthetic:seg-derm-unbiased", cache_dir=tmp_path, **SETTINGS)
    assert (random.random(), np.random.rand(), torch.rand(1).item()) == expected  # pre-training left no trace
    modified = path.stat().st_mtime_ns
    again = synthetic_segmenter_checkpoint("sam_tiny", "synthetic:seg-derm-unbiased", cache_dir=tmp_path, **SETTINGS)
    assert again == path and path.stat().st_mtime_ns == modified  # warm cache: read, not retrained

    pretrained = create_segmenter("sam_tiny", checkpoint=path, **SMALL)
    torch.manual_seed(0)
    untrained = create_segmenter("sam_tiny", **SMALL)
    trained_dice, random_dice = _box_dice(pretrained), _box_dice(untrained)
    assert trained_dice > random_dice + 0.2 and trained_dice > 0.5, (trained_dice, random_dice)


def test_pretraining_refuses_a_biased_or_unknown_preset(tmp_path):
    with pytest.raises(ValueError, match="unbiased preset"):
        synthetic_segmenter_checkpoint("sam_tiny", "synthetic:seg-derm-contrast", cache_dir=tmp_path)
    with pytest.raises(ValueError, match="not a synthetic segmentation preset.*seg-derm-unbiased"):
        synthetic_segmenter_checkpoint("sam_tiny", "synthetic:derm", cache_dir=tmp_path)


def test_the_batched_decoder_call_gives_the_logits_of_one_call_per_image():
    torch.manual_seed(0)
    sam = create_segmenter("sam_tiny", **SMALL).module
    data = make_synthetic_segmentation("seg-derm-irregular", n=6, seed=1, image_size=32)
    segmenter = create_segmenter("sam_tiny", **SMALL)
    inputs, prompts = [], []
    for i in range(6):
        x, geometry = segmenter.profile.prepare(data.images[i])
        inputs.append(x)
        prompts.append(_prompt_tensors(make_prompts(data.masks[i], "rands", seed=0, sample_id=i, classes=[1], k=5)[1],
                                       geometry))
    with torch.no_grad():
        embeddings = sam.image_encoder(torch.stack(inputs))
        logits, iou = _decode_batch(sam, embeddings, prompts)
        for i, prompt in enumerate(prompts):
            sparse, dense = sam.prompt_encoder(points=prompt["points"], boxes=None, masks=None)
            one, one_iou = sam.mask_decoder(image_embeddings=embeddings[i:i + 1], image_pe=sam.prompt_encoder.get_dense_pe(),
                                            sparse_prompt_embeddings=sparse, dense_prompt_embeddings=dense,
                                            multimask_output=True)
            torch.testing.assert_close(logits[i, 1:], one[0], rtol=1e-4, atol=1e-4)  # SAM's three multi-mask outputs
            torch.testing.assert_close(iou[i, 1:], one_iou[0], rtol=1e-4, atol=1e-4)


def test_the_promptable_loss_is_zero_only_for_perfect_masks_and_iou_predictions():
    target = torch.zeros(8, 8)
    target[2:6, 2:6] = 1
    perfect = (target * 2 - 1)[None].repeat(4, 1, 1) * 50  # every output certain and right
    assert promptable_loss(perfect, torch.ones(4), target).item() < 1e-6
    # a wrong IoU prediction costs its squared error: (1 - 0.5)^2 averaged over the 4 outputs
    assert promptable_loss(perfect, torch.tensor([0.5, 1, 1, 1]), target).item() == pytest.approx(0.25 / 4, abs=1e-6)
    inverted = -perfect
    assert promptable_loss(inverted, torch.zeros(4), target).item() > 1.0
