"""Bias-balanced softmax — Hong & Yang, "Unbiased classification through bias-contrastive and
bias-balanced learning", NeurIPS 2021 (BiasBal, §3.2); used for chest X-rays by Luo, Xu, Chen, Wong
& Heng, "Pseudo bias-balanced learning for debiased chest X-ray classification", MICCAI 2022 (the
review's reference [76]).

When the label depends on the group in training (P(y | b) differs between groups), a model that
fits P(y | x) learns that dependence. The bias-balanced softmax trains the logits f(x) through

    P̂(y | x, b) = P(y | b) · exp f_y(x) / Σ_{y'} P(y' | b) · exp f_{y'}(x)

so f itself models the label as if it were independent of the group; at inference the plain f(x)
is used (no group needed). For one binary logit this is a per-sample shift by the group's log-odds:

    L = BCE( logit + log P(y=1 | b) − log P(y=0 | b),  y )

with P(y | b) the training frequencies, Laplace-smoothed ((n_{b,y} + s) / (n_b + 2s), ``smoothing``
s = 1, our addition so a group without positives gives a finite shift). Samples of unknown group
(−1) are shifted by the overall log-odds P(y) (the group marginalised out). Any number of groups.
Luo et al. estimate b with pseudo-labels when it is not annotated; here b is the annotated
training attribute (use an intersection attribute for intersections). BiasBal has no weight to
tune; the search is over the learning rate only (MEDFAIR's practice: lr ~ U(1e-5, 1e-3)).
"""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np
import torch

from medequity.methods.base import Method, register_method


def group_log_odds(labels: np.ndarray, groups: np.ndarray, n_groups: int, smoothing: float = 1.0) -> np.ndarray:
    """(n_groups + 1,) smoothed log P(y=1|b) − log P(y=0|b) per group; the last entry is the overall
    log-odds (for unknown groups)."""
    labels = np.asarray(labels).astype(np.int64)
    groups = np.asarray(groups).astype(np.int64)
    out = np.zeros(n_groups + 1)
    for g in range(n_groups + 1):
        rows = groups == g if g < n_groups else np.ones(len(labels), dtype=bool)
        positives, n = float(labels[rows].sum()), float(rows.sum())
        out[g] = np.log((positives + smoothing) / (n - positives + smoothing))
    return out


@register_method
class BiasBalancedSoftmax(Method):
    """Logits trained through the group's label prior (bias-balanced softmax, Hong & Yang 2021); plain logits at inference."""

    name = "bias_balanced_softmax"
    defaults = {"smoothing": 1.0}
    search_space: ClassVar[dict[str, Any]] = {"lr": ("uniform", 1e-5, 1e-3)}

    def __init__(self, **params):
        super().__init__(**params)
        if not float(self.params["smoothing"]) > 0:
            raise ValueError(f"bias_balanced_softmax's smoothing must be > 0; got {self.params['smoothing']!r}")
        self.shift: torch.Tensor | None = None

    def setup(self, model, train, config) -> None:
        shift = group_log_odds(train.labels, train.groups, train.n_groups, float(self.params["smoothing"]))
        self.shift = torch.as_tensor(shift, dtype=torch.float32)
        self.log["log_odds"] = {name: float(v) for name, v in zip([*train.group_names, "unknown"], shift)}

    def loss(self, model, batch: dict) -> torch.Tensor:
        if self.shift is None:
            raise RuntimeError("BiasBalancedSoftmax.setup must run before loss (the trainer calls it)")
        logits = self.logits(model, batch["x"], batch["group"])
        groups = batch["group"].long()
        index = torch.where(groups >= 0, groups, torch.full_like(groups, len(self.shift) - 1))
        return self.per_sample_loss(logits + self.shift.to(logits)[index], batch["y"]).mean()

    def state(self) -> dict:
        return {"log_odds": None if self.shift is None else self.shift.tolist()}
