"""The segmentation pieces of the shared training loop: FairSeg's loss, per-sample validation Dice,
the Dice summary used for checkpoint selection, SAMed's warm-up + poly schedule."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from medequity.methods import create_method
from medequity.metrics.segmentation import dice_per_sample
from medequity.training.segmentation import (
    hard_dice_per_sample,
    is_mask_target,
    per_sample_dice_loss,
    pooled_dice_loss,
    segmentation_per_sample_loss,
    segmentation_validation_summary,
)
from medequity.training.trainer import TrainConfig, build_scheduler


def test_dice_loss_matches_a_hand_computed_case():
    # one sample, 2 classes, 4 pixels; probabilities of class 1: 0.9, 0.8, 0.2, 0.1; truth 1, 1, 0, 0
    p1 = torch.tensor([0.9, 0.8, 0.2, 0.1])
    probs = torch.stack([1 - p1, p1])[None, :, None, :]  # (1, 2, 1, 4)
    onehot = torch.stack([torch.tensor([0.0, 0, 1, 1]), torch.tensor([1.0, 1, 0, 0])])[None, :, None, :]
    eps = 1e-5
    # class 1: 2Σst = 2·1.7 = 3.4; Σs² = .81+.64+.04+.01 = 1.5; Σt² = 2 → 1 − 3.4/3.5
    # class 0: s = .1,.2,.8,.9; 2Σst = 2·1.7 = 3.4; Σs² = 1.5; Σt² = 2 → same
    expected = 2 * (1 - (3.4 + eps) / (3.5 + eps))
    assert float(per_sample_dice_loss(probs, onehot)[0]) == pytest.approx(expected, rel=1e-5)
    assert float(pooled_dice_loss(probs, onehot)) == pytest.approx(expected, rel=1e-5)  # one sample: pooled = per sample


def test_per_sample_loss_is_fairseg_weights_of_torch_ce_and_the_dice_loss():
    torch.manual_seed(0)
    logits = torch.randn(3, 3, 5, 6)
    target = torch.randint(0, 3, (3, 5, 6))
    loss = segmentation_per_sample_loss(logits, target)
    ce = torch.stack([F.cross_entropy(logits[i : i + 1], target[i : i + 1]) for i in range(3)])
    dice = torch.stack([pooled_dice_loss(torch.softmax(logits[i : i + 1], 1),
                                         F.one_hot(target[i : i + 1], 3).movedim(-1, 1).float()) for i in range(3)])
    torch.testing.assert_close(loss, 0.2 * ce + 0.8 * dice)
    # the methods' per-sample loss dispatches on an integer mask target, and keeps BCE for labels
    erm = create_method("erm")
    torch.testing.assert_close(erm.per_sample_loss(logits, target), loss)
    assert is_mask_target(target) and not is_mask_target(torch.ones(3))
    y = torch.tensor([0.0, 1.0])
    torch.testing.assert_close(erm.per_sample_loss(torch.zeros(2), y), torch.full((2,), float(np.log(2))))


def test_a_mask_label_beyond_the_channels_or_a_size_mismatch_is_a_clear_error():
    with pytest.raises(ValueError, match=r"labels must be in \[0, 1\]"):
        segmentation_per_sample_loss(torch.zeros(1, 2, 4, 4), torch.full((1, 4, 4), 2))
    with pytest.raises(ValueError, match="at the logits' resolution"):
        segmentation_per_sample_loss(torch.zeros(1, 2, 4, 4), torch.zeros(1, 8, 8, dtype=torch.long))


def test_hard_dice_per_sample_matches_the_metrics_module():
    rng = np.random.default_rng(1)
    target = rng.integers(0, 3, size=(5, 8, 8))
    target[4] = 0  # no foreground in truth ...
    logits = torch.as_tensor(rng.normal(size=(5, 3, 8, 8)), dtype=torch.float32)
    logits[4, 0] = 10.0  # ... nor in the prediction: NaN, excluded (the metrics' default)
    pred = logits.argmax(1).numpy()
    expected = dice_per_sample(pred, target, classes=[1, 2]).values
    got = hard_dice_per_sample(logits, torch.as_tensor(target)).numpy()
    np.testing.assert_allclose(got, expected, rtol=1e-6)
    assert np.isnan(got[4])


def test_validation_summary_by_hand():
    scores = np.array([0.8, 0.6, np.nan, 0.4, 0.2, 0.9])
    groups = np.array([0, 0, 0, 1, 1, -1])
    summary = segmentation_validation_summary(scores, groups, ("a", "b"))
    overall = (0.8 + 0.6 + 0.4 + 0.2 + 0.9) / 5
    assert summary["dice"] == pytest.approx(overall)
    assert summary["dice_group0"] == pytest.approx(0.7) and summary["dice_group1"] == pytest.approx(0.3)
    assert summary["worst_group_dice"] == pytest.approx(0.3) and summary["dice_gap"] == pytest.approx(0.4)
    assert summary["es_dice"] == pytest.approx(overall / (1 + abs(overall - 0.7) + abs(overall - 0.3)))


def test_poly_schedule_warms_up_linearly_then_decays_as_samed():
    param = torch.nn.Parameter(torch.zeros(1))
    optimizer = torch.optim.SGD([param], lr=1.0)
    config = TrainConfig(epochs=2, scheduler="poly", warmup_steps=4, power=0.9)
    scheduler = build_scheduler(optimizer, config, steps_per_epoch=7)  # 14 steps: 4 warm-up, 10 decay
    lrs = []
    for _ in range(14):
        lrs.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    np.testing.assert_allclose(lrs[:4], [0.25, 0.5, 0.75, 1.0])
    np.testing.assert_allclose(lrs[4:], [(1 - k / 10) ** 0.9 for k in range(10)])
    with pytest.raises(ValueError, match="scheduler must be one of"):
        TrainConfig(scheduler="linear")
