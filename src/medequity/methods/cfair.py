"""CFair — Zhao, Dan, Aragam, Jaakkola, Gordon & Ravikumar, "Conditional learning of fair
representations", ICLR 2020 (§3–4), as benchmarked by MEDFAIR.

CFair aligns the representation's group-conditional distributions *given the label*, which bounds
the equalized-odds gap, and trains the classifier on the balanced error rate (BER), which the paper
shows is needed for accuracy parity. Its objective (the paper's final optimisation problem, §4):

    min_{f,g} max_{h_0,h_1}  BER_D(g(z) ‖ Y)  + μ · Σ_{y} BER_{D^y}(h_y(z) ‖ A)

with one adversary h_y per label value, each trained only on samples with Y = y to predict A. As
in the authors' code (and MEDFAIR), both BERs are minimised through class-reweighted
cross-entropies and the max over h_y through a gradient-reversal layer, in one loss:

    L_task = Σ_i w_i ℓ(g(z_i), y_i) / Σ_i w_i,            w_i = 1 / P_train(Y = y_i)
    L_adv  = mean_y [ Σ_{i: y_i=y} v_i CE(h_y(GRL(z_i)), a_i) / Σ_{i: y_i=y} v_i ],
             v_i = 1 / P_train(A = a_i | Y = y)
    loss   = L_task + μ · L_adv

(the weighted mean is torch's ``cross_entropy(weight=...)`` convention, which the authors used).
Any number of groups: each h_y is a softmax over the K groups. Samples of unknown group (−1) are
in L_task but not in L_adv; a label value absent from the batch drops out of the mean over y.

Defaults: μ = 0.1 (MEDFAIR's ``mu``), adversaries with 128 hidden units (MEDFAIR's
``adversary_size``), GRL scale 1. MEDFAIR's search: μ ~ U(0.01, 5), lr ~ U(1e-5, 1e-3). ``source``
as in :mod:`medequity.methods.adversarial`.
"""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from medequity.methods.adversarial import grad_reverse, make_adversary, representation_and_logits, resolve_source
from medequity.methods.base import Method, register_method


def class_balanced_weights(labels: np.ndarray, n_classes: int) -> np.ndarray:
    """1 / P(class) for each class present in ``labels`` (0 for absent classes)."""
    counts = np.bincount(np.asarray(labels, dtype=np.int64), minlength=n_classes).astype(np.float64)
    with np.errstate(divide="ignore"):
        return np.where(counts > 0, len(labels) / np.maximum(counts, 1), 0.0)


def conditional_adversary_loss(group_logits: list[torch.Tensor], groups: torch.Tensor, labels: torch.Tensor,
                               weights: torch.Tensor) -> torch.Tensor:
    """CFair's L_adv: ``group_logits[y]`` = h_y's (B, K) logits, ``weights[y, a]`` = 1/P(A=a|Y=y);
    the mean over label values present (with a known group) of h_y's reweighted cross-entropy on
    the samples with Y = y."""
    y = (labels > 0.5).long()
    terms = []
    for value, logits in enumerate(group_logits):
        rows = (y == value) & (groups >= 0)
        if bool(rows.any()):
            terms.append(F.cross_entropy(logits[rows], groups[rows].long(), weight=weights[value].to(logits)))
    if not terms:
        return group_logits[0].sum() * 0.0
    return torch.stack(terms).mean()


@register_method
class CFair(Method):
    """Balanced-error-rate classifier + label-conditioned adversaries through gradient reversal (Zhao et al. 2020)."""

    name = "cfair"
    defaults = {"coefficient": 0.1, "hidden": 128, "source": "auto"}
    search_space: ClassVar[dict[str, Any]] = {"coefficient": ("uniform", 0.01, 5.0), "lr": ("uniform", 1e-5, 1e-3)}

    def __init__(self, **params):
        super().__init__(**params)
        self.require_non_negative("coefficient")  # μ
        if int(self.params["hidden"]) < 0:
            raise ValueError("cfair's hidden must be >= 0 (0 = linear adversaries)")
        if self.params["source"] not in ("auto", "features", "logit"):
            raise ValueError(f"source must be 'auto', 'features' or 'logit'; got {self.params['source']!r}")
        self.resolved_source: str | None = None
        self.label_weights: torch.Tensor | None = None
        self.group_weights: torch.Tensor | None = None

    def setup(self, model, train, config) -> None:
        if train.n_groups < 2:
            raise ValueError(f"CFair needs at least 2 groups; the attribute has {train.n_groups}")
        source, in_dim = resolve_source(model, self.params["source"])
        self.resolved_source = source
        hidden = int(self.params["hidden"])
        self.extra["adversaries"] = nn.ModuleList(make_adversary(in_dim, train.n_groups, hidden) for _ in range(2))
        labels = np.asarray(train.labels).astype(np.int64)
        groups = np.asarray(train.groups).astype(np.int64)
        self.label_weights = torch.as_tensor(class_balanced_weights(labels, 2), dtype=torch.float32)
        self.group_weights = torch.stack([
            torch.as_tensor(class_balanced_weights(groups[(labels == y) & (groups >= 0)], train.n_groups), dtype=torch.float32)
            for y in (0, 1)])
        self.log.update({"source": source, "label_weights": self.label_weights.tolist(),
                         "group_weights": self.group_weights.tolist()})

    def loss(self, model, batch: dict) -> torch.Tensor:
        if self.resolved_source is None or self.label_weights is None or self.group_weights is None:
            raise RuntimeError("CFair.setup must run before loss (the trainer calls it)")
        representation, logits = representation_and_logits(model, batch["x"], self.resolved_source)
        y = batch["y"]
        weights = self.label_weights.to(logits)[(y > 0.5).long()]
        task = (weights * self.per_sample_loss(logits, y)).sum() / weights.sum().clamp(min=1e-12)
        reversed_rep = grad_reverse(representation, 1.0)
        adv = conditional_adversary_loss([h(reversed_rep) for h in self.extra["adversaries"]], batch["group"], y,
                                         self.group_weights)
        return task + float(self.params["coefficient"]) * adv
