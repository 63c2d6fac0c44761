"""EnD — Entangling and Disentangling: Tartaglione, Barbano & Grangetto, "EnD: entangling and
disentangling deep representations for bias correction", CVPR 2021 (§3), as benchmarked by MEDFAIR.

A regulariser on the Gram matrix of the L2-normalised representation, G_ij = ẑ_i · ẑ_j (cosine
similarity, clamped to [−1, 1] as in the authors' code), of one mini-batch:

    R⊥ = Σ_b | Σ_{i>j: b_i=b_j=b} G_ij |  /  Σ_b M_b          (disentangle: same bias class → orthogonal)
    R∥ = 1 − Σ_{i>j: y_i=y_j, b_i≠b_j} (1 + G_ij)/2  /  M_∥    (entangle: same label, other bias → parallel)
    loss = BCE + α·R⊥ + β·R∥

with M_b the number of pairs i>j in bias class b and M_∥ the number of pairs in R∥ (the paper's
eqs. 4–6 as implemented by the authors: normalised sums over the lower triangle). R⊥ removes what
samples share only because of their group; R∥ pulls same-label samples of different groups
together. Any number of groups; samples with unknown group (−1) are in no pair. One difference from
the authors' code, on purpose: their R∥ mask is the lower triangle of the *non-symmetric* product
1[b_i=b]·1[b_j=b'] for b before b', which keeps a pair only when the later sample index has the
earlier bias class — about half the pairs, by index order; we count every unordered pair once.

Representation: ``model.features(x)``, normalised for the regulariser only. (In the authors'
network the normalisation is a layer, so the classifier also sees the normalised features; here
the head sees the raw features.) The representation must be trainable (fine-tuning/PEFT usages).

Defaults: α = β = 0.1 (MEDFAIR's defaults; we do not recall the paper's per-dataset values).
MEDFAIR's search: α, β ~ U(0.01, 5), lr ~ U(1e-5, 1e-3).
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch
import torch.nn.functional as F

from medequity.methods.adversarial import require_trainable_backbone
from medequity.methods.base import Method, register_method


def gram_matrix(features: torch.Tensor) -> torch.Tensor:
    """Cosine similarities of the batch's representations, clamped to [−1, 1]."""
    z = F.normalize(features.flatten(1), dim=1)
    return (z @ z.T).clamp(-1.0, 1.0)


def end_regularizers(features: torch.Tensor, labels: torch.Tensor, groups: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(R⊥, R∥) of EnD (module docstring) on one batch; each is 0 when it has no pair."""
    gram = gram_matrix(features)
    n = len(gram)
    lower = torch.ones(n, n, dtype=torch.bool, device=gram.device).tril(diagonal=-1)
    known = groups >= 0
    both_known = known[:, None] & known[None, :] & lower
    same_group = (groups[:, None] == groups[None, :]) & both_known
    zero = gram.sum() * 0.0
    orthogonal = zero
    n_orthogonal = int(same_group.sum())
    if n_orthogonal:
        per_group = [(gram * (same_group & (groups[:, None] == b))).sum() for b in groups[known].unique()]
        orthogonal = torch.stack(per_group).abs().sum() / n_orthogonal
    y = labels > 0.5
    entangle = (y[:, None] == y[None, :]) & ~same_group & both_known
    n_parallel = int(entangle.sum())
    parallel = zero
    if n_parallel:
        parallel = 1.0 - ((1.0 + gram) * 0.5 * entangle).sum() / n_parallel
    return orthogonal, parallel


@register_method
class EnD(Method):
    """Gram-matrix regulariser: orthogonal within a group, parallel across groups within a label (Tartaglione et al. 2021)."""

    name = "end"
    defaults = {"alpha": 0.1, "beta": 0.1}
    search_space: ClassVar[dict[str, Any]] = {"alpha": ("uniform", 0.01, 5.0), "beta": ("uniform", 0.01, 5.0),
                                              "lr": ("uniform", 1e-5, 1e-3)}

    def __init__(self, **params):
        super().__init__(**params)
        self.require_non_negative("alpha", "beta")

    def setup(self, model, train, config) -> None:
        require_trainable_backbone(model, "EnD")

    def loss(self, model, batch: dict) -> torch.Tensor:
        features = model.features(batch["x"])
        logits = model.head(features).squeeze(-1)
        orthogonal, parallel = end_regularizers(features, batch["y"], batch["group"])
        task = self.per_sample_loss(logits, batch["y"]).mean()
        return task + float(self.params["alpha"]) * orthogonal + float(self.params["beta"]) * parallel
