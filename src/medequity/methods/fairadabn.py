"""FairAdaBN — Xu, Zhao, Quan, Yao & Zhou, "FairAdaBN: mitigating unfairness with adaptive batch
normalization and its application to dermatological disease classification", MICCAI 2023 (§2).

Every BatchNorm layer of the backbone becomes group-adaptive: one set of running statistics and
affine parameters (γ_s, β_s) per sensitive group s, while convolutions and the head are shared.
Each sample is normalised by its own group's BN (in training, batch statistics over the batch's
samples of that group, as the authors' code forwards each group's sub-batch separately). Each
group's BN starts as a copy of the pre-trained BN. Samples of unknown group (−1) go through the
original, shared BN. The group is needed at inference (``needs_groups_at_inference``).

Loss: the task loss plus the statistical-parity term, weighted by α:

    L = mean_s L_CE(group s) + α · L_SP,
    L_SP = Σ_{s<s'} Σ_{c∈{0,1}} ( P̂(ŷ=c | s) − P̂(ŷ=c | s') )²  =  Σ_{s<s'} 2·(p̄_s − p̄_{s'})²

with p̄_s the mean predicted probability in group s of the batch. The authors' code (their
``SPD_Loss``) computes P̂(ŷ=c|s) from arg-max predictions, which has no gradient; we use the soft
probabilities so the term trains the network (the paper presents it as a loss term). For two
groups L_SP is the authors' sum of squared differences over classes; with more groups we sum over
pairs. The task term: the authors' code adds the groups' mean losses (loss_0 + loss_1); we average
them (a constant factor, equivalent to a learning-rate change). Samples of unknown group form one more
"group" in that mean (and take no part in L_SP). α = 1 as in the authors' code
(the term is added unweighted); we do not recall a tuned value in the paper.

Needs BatchNorm layers in a trainable backbone (fine-tuning, e.g. ``small_cnn`` or a ResNet); a
frozen or BN-free backbone is an error naming the fix.
"""

from __future__ import annotations

import copy
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from medequity.methods.adversarial import require_trainable_backbone
from medequity.methods.base import Method, register_method


class GroupBatchNorm(nn.Module):
    """One BatchNorm per group (copies of ``bn``) and ``bn`` itself for samples of unknown group.

    The groups of the current batch are set in :attr:`groups` before the forward pass."""

    def __init__(self, bn: _BatchNorm, n_groups: int):
        super().__init__()
        self.shared = bn
        self.per_group = nn.ModuleList(copy.deepcopy(bn) for _ in range(n_groups))
        self.groups: torch.Tensor | None = None

    @staticmethod
    def _normalise(bn: _BatchNorm, x: torch.Tensor) -> torch.Tensor:
        if bn.training and x.shape[0] == 1 and x[0, 0].numel() == 1:
            # one sample without spatial extent has no batch statistics: use the running ones
            return F.batch_norm(x, bn.running_mean, bn.running_var, bn.weight, bn.bias, False, 0.0, bn.eps)
        return bn(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.groups is None:
            raise RuntimeError("FairAdaBN: the batch's groups were not set before the forward pass "
                               "(call the method's logits(model, x, groups))")
        groups = self.groups.to(x.device).long()
        out = torch.zeros_like(x)
        for code in groups.unique().tolist():
            rows = (groups == code).nonzero().squeeze(1)
            bn = self.per_group[code] if code >= 0 else self.shared
            out = out.index_copy(0, rows, self._normalise(bn, x.index_select(0, rows)))
        return out


def statistical_parity_loss(probabilities: torch.Tensor, groups: torch.Tensor) -> torch.Tensor:
    """Σ_{s<s'} 2·(p̄_s − p̄_{s'})² over the known groups present in the batch."""
    means = [probabilities[groups == g].mean() for g in groups[groups >= 0].unique().tolist()]
    total = probabilities.sum() * 0.0
    for i in range(len(means)):
        for j in range(i + 1, len(means)):
            total = total + 2.0 * (means[i] - means[j]) ** 2
    return total


def group_batchnorms(model: nn.Module) -> list[GroupBatchNorm]:
    return [m for m in model.modules() if isinstance(m, GroupBatchNorm)]


@register_method
class FairAdaBN(Method):
    """Group-specific BatchNorm statistics and affine parameters + a statistical-parity loss (Xu et al. 2023)."""

    name = "fairadabn"
    defaults = {"alpha": 1.0}
    needs_groups_at_inference = True
    search_space: ClassVar[dict[str, Any]] = {"alpha": ("uniform", 0.01, 5.0), "lr": ("uniform", 1e-5, 1e-3)}

    def __init__(self, **params):
        super().__init__(**params)
        self.require_non_negative("alpha")

    def setup(self, model, train, config) -> None:
        require_trainable_backbone(model, "FairAdaBN")
        existing = group_batchnorms(model)
        if existing:  # a later stage of the same model: already adapted
            if len(existing[0].per_group) != train.n_groups:
                raise ValueError("FairAdaBN: the model's group BatchNorms were made for "
                                 f"{len(existing[0].per_group)} groups, the data has {train.n_groups}")
            return
        replaced = 0
        for parent in list(model.backbone.modules()):
            for name, child in list(parent.named_children()):
                if isinstance(child, _BatchNorm):
                    setattr(parent, name, GroupBatchNorm(child, train.n_groups))
                    replaced += 1
        if not replaced:
            raise ValueError("FairAdaBN adapts BatchNorm layers, and this backbone has none; use a backbone with "
                             "BatchNorm (e.g. small_cnn, a ResNet)")
        self.log["adapted_batchnorms"] = replaced

    def logits(self, model, x: torch.Tensor, groups: torch.Tensor | None = None) -> torch.Tensor:
        layers = group_batchnorms(model)
        if layers and groups is None:
            raise ValueError("FairAdaBN needs each sample's group at inference (group-specific BatchNorm)")
        for layer in layers:
            layer.groups = groups
        try:
            return model(x)
        finally:
            for layer in layers:
                layer.groups = None

    def loss(self, model, batch: dict) -> torch.Tensor:
        groups = batch["group"]
        logits = self.logits(model, batch["x"], groups)
        per_sample = self.per_sample_loss(logits, batch["y"])
        codes = groups.unique().tolist()
        task = torch.stack([per_sample[groups == g].mean() for g in codes]).mean()
        return task + float(self.params["alpha"]) * statistical_parity_loss(torch.sigmoid(logits), groups)
