"""Synthetic pre-training of a promptable segmenter (``checkpoint: synthetic:<preset>`` on a segmentation spec)."""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch

from medequity.data.prompts import make_prompts
from medequity.data.synthetic_segmentation import make_synthetic_segmentation
from medequity.experiment.seg_pretrain import _prompt_tensors, synthetic_segmenter_checkpoint
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
