"""FEBS (FairSeg): group weights from each group's Dice loss, the paper's and the coded form, the
fixes of the coded form, and the direction it pushes (gradient on the worse vs the better group)."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from medequity.methods import create_method
from medequity.training.segmentation import one_hot, pooled_dice_loss

H = 12


def febs(n_groups=2, **params):
    method = create_method("febs", **params)
    method.n_groups = n_groups  # what setup() takes from the training split
    return method


def toy(qualities, seed=0):
    """Logits whose margin towards the true class is ``quality`` per sample (plus noise): a larger
    quality = a better-segmented sample. Two classes, a square object."""
    torch.manual_seed(seed)
    target = torch.zeros(len(qualities), H, H, dtype=torch.long)
    target[:, 3:9, 3:9] = 1
    sign = one_hot(target, 2) * 2 - 1
    logits = sign * torch.tensor(qualities).view(-1, 1, 1, 1) + torch.randn(len(qualities), 2, H, H)
    return logits, target


def dice_by_hand(probs, onehot):
    """FairSeg's coded Dice loss, written out independently: Σ over classes of 1 − (2Σst+ε)/(Σs²+Σt²+ε)."""
    total = 0.0
    for c in range(probs.shape[1]):
        s, t = probs[:, c].flatten(), onehot[:, c].flatten()
        total += 1 - (2 * float((s * t).sum()) + 1e-5) / (float((s * s).sum()) + float((t * t).sum()) + 1e-5)
    return total


def test_weights_are_tanh_of_the_min_group_loss_over_each_group_loss():
    logits, target = toy([2.0, 2.0, 0.5, 0.5, 0.5])
    groups = torch.tensor([0, 0, 1, 1, 1])
    probs, onehot = torch.softmax(logits, 1), one_hot(target, 2)
    losses = [dice_by_hand(probs[groups == g], onehot[groups == g]) for g in (0, 1)]
    assert losses[1] > losses[0]  # group 1 is the worse one
    for gamma in (1.0, 3.0):
        weights = febs(gamma=gamma).group_weights(probs, onehot, groups)
        expected = [math.tanh((min(losses) / loss) ** gamma) for loss in losses]
        torch.testing.assert_close(weights, torch.tensor(expected), rtol=1e-5, atol=1e-6)
        assert weights[0] == pytest.approx(math.tanh(1.0), rel=1e-5)  # the best group: tanh(1)


def test_paper_mode_scales_each_groups_dice_loss_and_coded_mode_scales_the_probabilities():
    logits, target = toy([2.0, 0.5, 0.5])
    groups = torch.tensor([0, 1, 1])
    probs, onehot = torch.softmax(logits, 1), one_hot(target, 2)
    w = febs().group_weights(probs, onehot, groups)
    ce = F.cross_entropy(logits, target)
    paper = 0.2 * ce + 0.8 * (1 / 3 * w[0] * pooled_dice_loss(probs[:1], onehot[:1])
                              + 2 / 3 * w[1] * pooled_dice_loss(probs[1:], onehot[1:]))
    torch.testing.assert_close(febs(mode="paper").febs_loss(logits, target, groups), paper)
    scaled = probs * w[groups].view(-1, 1, 1, 1)
    coded = 0.2 * ce + 0.8 * dice_by_hand(scaled, onehot)
    assert float(febs(mode="coded").febs_loss(logits, target, groups)) == pytest.approx(float(coded), rel=1e-5)


def test_a_group_absent_from_the_batch_does_not_zero_every_weight():
    # FairSeg's coded minimum ran over every group slot: an absent group's loss 0 made every weight 0
    logits, target = toy([2.0, 0.5])
    groups = torch.tensor([0, 2])  # group 1 of 3 is absent
    method = febs(n_groups=3, mode="coded")
    weights = method.group_weights(torch.softmax(logits, 1), one_hot(target, 2), groups)
    assert torch.isnan(weights[1]) and bool((weights[[0, 2]] > 0).all())
    logits.requires_grad_(True)
    method.febs_loss(logits, target, groups).backward()
    assert float(logits.grad[1].norm()) > 0


def test_an_unknown_group_keeps_weight_one_and_does_not_wrap_to_the_last_group():
    logits, target = toy([2.0, 1.0, -1.0])  # the unknown sample is segmented very badly
    groups = torch.tensor([0, 1, -1])
    probs, onehot = torch.softmax(logits, 1), one_hot(target, 2)
    method = febs(mode="coded")
    weights = method.group_weights(probs, onehot, groups)
    without_unknown = method.group_weights(probs[:2], onehot[:2], groups[:2])
    torch.testing.assert_close(weights, without_unknown)  # the unknown sample's loss changes no group's weight
    per_sample = method.sample_weights(weights, groups)
    assert float(per_sample[2]) == 1.0 and float(per_sample[1]) == pytest.approx(float(weights[1]))
    assert float(weights[1]) != pytest.approx(1.0)


def test_the_weights_carry_no_gradient():
    logits, target = toy([2.0, 0.5, 0.5])
    groups = torch.tensor([0, 1, 1])
    for mode in ("paper", "coded"):
        method = febs(mode=mode)
        leaf = logits.clone().requires_grad_(True)
        method.febs_loss(leaf, target, groups).backward()
        # the same loss with the weights as constants computed outside: the same gradient
        const = method.group_weights(torch.softmax(logits, 1), one_hot(target, 2), groups)
        assert not const.requires_grad
        frozen = febs(mode=mode)
        frozen.group_weights = lambda *args, w=const: w  # type: ignore[method-assign]
        other = logits.clone().requires_grad_(True)
        frozen.febs_loss(other, target, groups).backward()
        torch.testing.assert_close(leaf.grad, other.grad)


def gradient_ratio(loss_fn, logits, groups) -> float:
    """‖∂loss/∂logits‖ over the worse group's samples / over the better group's."""
    leaf = logits.clone().requires_grad_(True)
    loss_fn(leaf).backward()
    return float(leaf.grad[groups == 1].norm() / leaf.grad[groups == 0].norm())


def test_direction_febs_shrinks_the_worse_groups_share_of_the_gradient_in_both_modes(capsys):
    """The measurement the closing note reports: worse/better gradient-norm ratio, plain FairSeg
    loss vs FEBS per mode and γ, on a toy where group 1 is segmented worse."""
    logits, target = toy([1.2, 1.2, 0.8, 0.8])
    groups = torch.tensor([0, 0, 1, 1])
    onehot = one_hot(target, 2)
    plain = gradient_ratio(lambda x: 0.2 * F.cross_entropy(x, target) + 0.8 * pooled_dice_loss(torch.softmax(x, 1), onehot),
                           logits, groups)
    ratios = {}
    for mode in ("paper", "coded"):
        for gamma in (1.0, 3.0):
            method = febs(mode=mode, gamma=gamma)
            ratios[(mode, gamma)] = gradient_ratio(lambda x, m=method: m.febs_loss(x, target, groups), logits, groups)
    with capsys.disabled():
        print(f"\nFEBS direction (worse/better gradient norm): plain {plain:.3f}; "
              + "; ".join(f"{m} γ={g:g} {r:.3f}" for (m, g), r in ratios.items()))
    assert plain > 1  # without FEBS the worse group already gets the larger gradient
    for mode in ("paper", "coded"):
        # FEBS as defined (w_g = tanh((min L / L_g)^γ) ≤ tanh(1), smallest for the worse group) lowers
        # the worse group's relative gradient, more so at larger γ: it favours the better group
        assert ratios[(mode, 1.0)] < plain
        assert ratios[(mode, 3.0)] < ratios[(mode, 1.0)]


def test_febs_needs_mask_targets_and_valid_options():
    with pytest.raises(ValueError, match="mode must be one of"):
        create_method("febs", mode="other")
    with pytest.raises(ValueError, match="gamma must be > 0"):
        create_method("febs", gamma=0)
    method = febs()
    with pytest.raises(ValueError, match="segmentation method"):
        method.loss(lambda x: x, {"x": torch.zeros(2), "y": torch.zeros(2), "group": torch.zeros(2, dtype=torch.long)})
