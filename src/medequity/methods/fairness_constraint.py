"""A differentiable fairness constraint: the task loss plus a soft gap penalty (the review's
"fairness-related constraints" family, §2.2.2: "differentiable proxy functions of fairness
metrics", e.g. Cherepanova et al. 2021; Marcinkevics, Ozkan & Vogt, MLHC 2022).

Hard rates (TPR, FPR, selection rate) are step functions of the score, so their gaps have no
gradient. Replacing the indicator 1[score > t] by the predicted probability σ(logit) gives soft
rates per group g of the batch,

    TPR_g = mean_{i∈g, y_i=1} σ(logit_i)     FPR_g = mean_{i∈g, y_i=0} σ(logit_i)     SR_g = mean_{i∈g} σ(logit_i)

and the loss  L = BCE + λ · gap, with the gap over the groups present in the batch:

    eqodds  gap = ½ [ (max_g TPR_g − min_g TPR_g) + (max_g FPR_g − min_g FPR_g) ]
    eqopp   gap = max_g TPR_g − min_g TPR_g
    dp      gap = max_g SR_g − min_g SR_g

(max − min generalises the two-group absolute difference to any number of groups; ``eqodds`` is the
half-sum of the review's / FairMedFM's eq. 1.) Groups without a sample in a rate's cell are left out
of that rate; samples of unknown group (−1) are in the BCE only. The review warns (after
Cherepanova et al.) that such constraints can overfit and be fair per attribute yet unfair on
intersections — train on an intersection attribute (e.g. sex × age) to constrain it directly.

Default λ = 1 (we do not recall a published default for this family). No MEDFAIR grid exists (MEDFAIR
did not benchmark it); our search follows MEDFAIR's practice for a single coefficient:
λ ~ U(0.01, 5), lr ~ U(1e-5, 1e-3).
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch

from medequity.methods.base import Method, register_method

CONSTRAINTS = ("eqodds", "eqopp", "dp")


def _spread(probabilities: torch.Tensor, groups: torch.Tensor, rows: torch.Tensor) -> torch.Tensor | None:
    """max_g − min_g of the mean probability per known group over ``rows``; None with < 1 group."""
    rates = [probabilities[rows & (groups == g)].mean() for g in groups[rows & (groups >= 0)].unique().tolist()]
    if not rates:
        return None
    stacked = torch.stack(rates)
    return stacked.max() - stacked.min()


def soft_fairness_gap(logits: torch.Tensor, labels: torch.Tensor, groups: torch.Tensor, constraint: str) -> torch.Tensor:
    """The soft gap of ``constraint`` (module docstring) on one batch; 0 when undefined."""
    if constraint not in CONSTRAINTS:
        raise ValueError(f"constraint must be one of {CONSTRAINTS}; got {constraint!r}")
    p = torch.sigmoid(logits)
    y = labels > 0.5
    cells = {"eqodds": [y, ~y], "eqopp": [y], "dp": [torch.ones_like(y)]}[constraint]
    spreads = [s for s in (_spread(p, groups, rows) for rows in cells) if s is not None]
    if not spreads:
        return logits.sum() * 0.0
    # eqodds: the half-sum of the TPR and FPR gaps (a missing cell counts 0)
    return torch.stack(spreads).sum() / len(cells)


@register_method
class FairnessConstraint(Method):
    """BCE + λ · a soft (differentiable) TPR/FPR/selection-rate gap between groups."""

    name = "fairness_constraint"
    defaults = {"constraint": "eqodds", "coefficient": 1.0}
    search_space: ClassVar[dict[str, Any]] = {"coefficient": ("uniform", 0.01, 5.0), "lr": ("uniform", 1e-5, 1e-3)}

    def __init__(self, **params):
        super().__init__(**params)
        if self.params["constraint"] not in CONSTRAINTS:
            raise ValueError(f"fairness_constraint's constraint must be one of {CONSTRAINTS} (equalized odds, equal "
                             f"opportunity, demographic parity); got {self.params['constraint']!r}")
        self.require_non_negative("coefficient")

    def loss(self, model, batch: dict) -> torch.Tensor:
        logits = self.logits(model, batch["x"], batch["group"])
        task = self.per_sample_loss(logits, batch["y"]).mean()
        gap = soft_fairness_gap(logits, batch["y"], batch["group"], self.params["constraint"])
        return task + float(self.params["coefficient"]) * gap
