"""FairPrune: fairness by pruning the trained model (Wu, Zeng, Xu, Shi, Hu, MICCAI 2022).

Wu et al., "FairPrune: Achieving fairness through pruning for dermatological disease diagnosis"
(a FairTune baseline; review §2.2.3 "Pruning"). After training, the saliency of every parameter
θ_j for a group g is the Optimal-Brain-Damage second-order term of the loss change when θ_j is
set to zero (the paper's eq. for S, a diagonal-Hessian Taylor expansion):

    S_j^g = ½ · θ_j² · H_jj^g,     H^g = ∂²L_g/∂θ² on the samples of group g,

and the parameters with the largest

    S_j^priv − β · S_j^unpriv

(important to the privileged group, unimportant to the unprivileged one) are set to zero: a
fraction ``prune_ratio`` of each parameter tensor (layer-wise, as in the paper), no retraining.

Choice of Hessian diagonal: we use the exact Gauss–Newton diagonal of the BCE loss,
``H_jj ≈ mean_i p_i(1 − p_i) (∂z_i/∂θ_j)²`` (z_i the logit, p_i = σ(z_i)), computed from
per-sample logit gradients (``torch.func``). It is the positive part of the Hessian (BackPACK's
``DiagGGNExact`` used by public re-implementations) and *equals* the Hessian diagonal when the
logit is linear in the parameters — the linear head of linear probing. Saliency is measured on
the training split (at most ``max_samples_per_group`` samples per group), in eval mode.

Groups: privileged = the group with the highest validation AUC of the trained model,
unprivileged = the lowest (so any number of groups works; pass ``privileged``/``unprivileged``
as group names to fix them). Defaults ``prune_ratio = 0.05`` and ``beta = 0.3`` are taken from the
range of the paper's ablation (β ∈ (0, 1), small pruning ratios); tune them per task.
Only trainable model parameters are candidates (a frozen backbone stays intact).
"""

from __future__ import annotations

import numpy as np
import torch
from torch.func import functional_call, grad, vmap

from medequity.methods.base import Method, register_method
from medequity.metrics.summary import group_aucs


def gauss_newton_diagonal(model: torch.nn.Module, x: torch.Tensor, chunk_size: int = 32) -> dict[str, torch.Tensor]:
    """mean_i p_i(1 − p_i) (∂z_i/∂θ)² for every trainable parameter θ of a one-logit model."""
    trainable = {n: p.detach() for n, p in model.named_parameters() if p.requires_grad}
    fixed = {n: p.detach() for n, p in model.named_parameters() if not p.requires_grad}
    fixed.update(dict(model.named_buffers()))

    def logit(params, sample):
        return functional_call(model, {**params, **fixed}, (sample.unsqueeze(0),)).reshape(())

    per_sample = vmap(grad(logit), in_dims=(None, 0), chunk_size=chunk_size)(trainable, x)
    with torch.no_grad():
        probability = torch.sigmoid(vmap(logit, in_dims=(None, 0), chunk_size=chunk_size)(trainable, x))
        weight = probability * (1 - probability)
        return {n: torch.einsum("i,i...->...", weight, g.pow(2)) / len(x) for n, g in per_sample.items()}


def _worst_group_auc(labels, scores, groups, n_groups) -> float:
    """Lowest AUC over the groups where it is defined (one-class groups skipped)."""
    aucs = group_aucs(labels, scores, groups, n_groups)
    return float(np.nanmin(aucs)) if np.isfinite(aucs).any() else float("nan")


@register_method
class FairPrune(Method):
    """Post-training pruning by the difference of group saliencies (Wu et al. 2022)."""

    name = "fairprune"
    defaults = {"prune_ratio": 0.05, "beta": 0.3, "max_samples_per_group": 1024, "privileged": None,
                "unprivileged": None, "chunk_size": 32, "seed": 0}

    def choose_groups(self, labels, scores, groups, group_names) -> tuple[int, int]:
        """(privileged, unprivileged) codes: named by the user, else best and worst validation AUC."""
        aucs = {g: float(a) for g, a in enumerate(group_aucs(labels, scores, groups, len(group_names))) if np.isfinite(a)}
        names = list(group_names)
        privileged = names.index(self.params["privileged"]) if self.params["privileged"] is not None else max(aucs, key=aucs.get)
        unprivileged = names.index(self.params["unprivileged"]) if self.params["unprivileged"] is not None else min(aucs, key=aucs.get)
        if privileged == unprivileged:
            raise ValueError("FairPrune needs two different groups (privileged and unprivileged)")
        return privileged, unprivileged

    def _group_inputs(self, data, group: int) -> torch.Tensor:
        rows = np.flatnonzero(data.groups == group)
        if len(rows) > self.params["max_samples_per_group"]:
            rng = np.random.default_rng(self.params["seed"])
            rows = np.sort(rng.choice(rows, self.params["max_samples_per_group"], replace=False))
        return torch.stack([data.items[int(i)]["x"] for i in rows])

    def saliency(self, model, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """S_j = ½ θ_j² H_jj on inputs ``x`` (one group's samples)."""
        device = next(model.parameters()).device
        hessian = gauss_newton_diagonal(model, x.to(device), self.params["chunk_size"])
        parameters = dict(model.named_parameters())
        return {n: 0.5 * parameters[n].detach().pow(2) * h for n, h in hessian.items()}

    def prune(self, model, x_privileged: torch.Tensor, x_unprivileged: torch.Tensor) -> int:
        """Zero the top ``prune_ratio`` of each trainable tensor by S_priv − β S_unpriv; returns the count."""
        was_training = model.training
        model.eval()
        privileged = self.saliency(model, x_privileged)
        unprivileged = self.saliency(model, x_unprivileged)
        pruned = 0
        with torch.no_grad():
            for name, p in model.named_parameters():
                if name not in privileged:
                    continue
                k = int(self.params["prune_ratio"] * p.numel())
                if k == 0:
                    continue
                score = (privileged[name] - self.params["beta"] * unprivileged[name]).flatten()
                p.view(-1)[torch.topk(score, k).indices] = 0
                pruned += k
        model.train(was_training)
        return pruned

    def finalize(self, model, train, val, predict) -> None:
        scores = predict(model, val)
        privileged, unprivileged = self.choose_groups(val.labels, scores, val.groups, val.group_names)
        worst_before = _worst_group_auc(val.labels, scores, val.groups, val.n_groups)
        count = self.prune(model, self._group_inputs(train, privileged), self._group_inputs(train, unprivileged))
        worst_after = _worst_group_auc(val.labels, predict(model, val), val.groups, val.n_groups)
        total = sum(p.numel() for p in model.parameters() if p.requires_grad)
        self.log["fairprune_pruned"] = [count]
        self.log["fairprune_candidates"] = [total]
        self.log["fairprune_privileged"] = [val.group_names[privileged]]
        self.log["fairprune_unprivileged"] = [val.group_names[unprivileged]]
        self.log["fairprune_val_worst_group_auc"] = [worst_before, worst_after]
