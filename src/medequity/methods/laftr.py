"""LAFTR — Madras, Creager, Pitassi & Zemel, "Learning adversarially fair and transferable
representations", ICML 2018 (§2–3), as benchmarked by MEDFAIR (Zong et al., ICLR 2023).

Encoder ``f`` (the model's backbone), classifier ``g`` (the model's head) and an adversary ``h``
on the representation ``z = f(x)`` play the min–max game of LAFTR eq. (2) without the
reconstruction term (``β = 0``, as in the paper's classification experiments and MEDFAIR):

    min_{f,g} max_h   α · L_C(g(z), y) + γ · L_Adv(h)

L_C is the binary cross-entropy. L_Adv is LAFTR's group-normalised L1 objective (§3, the DP, EO
and EOpp adversary objectives), written here with p_i = h's softmax probability of sample i's
true group, since for two groups and a sigmoid adversary |h(z_i) − a_i| = 1 − p_i:

    dp       L_Adv = 1 − Σ_a  mean_{i∈D_a} |h(z_i) − a_i|                     (LAFTR, DP objective)
    eqodds   L_Adv = 2 − Σ_{a,y} mean_{i∈D_a^y} |h(z_i, y_i) − a_i|            (EO objective)
    eqopp    L_Adv = 1 − Σ_a  mean_{i∈D_a^{y=1}} |h(z_i, y_i) − a_i|            (EOpp objective)

With K groups each label cell's term becomes K/(K−1) · (mean_a mean_{i∈D_a^y} p_i − 1/K), which
equals LAFTR's term for K = 2, is 0 for an adversary at chance and 1 for a perfect one. Cells absent
from a batch are left out (the mean runs over the groups present). For ``eqodds``/``eqopp`` the
adversary also sees the label (h(z, y): z concatenated with y), as in LAFTR. Which outcome EOpp
conditions on: we use y = 1 (parity of the true-positive rate — under-diagnosis); we do not recall
for certain which label the paper's "advantaged outcome" was. Samples whose group is unknown (−1)
take no part in L_Adv.

The game is played by alternating steps on each mini-batch (a real min–max, unlike gradient
reversal on one loss): (1) f and g descend α·L_C + γ·L_Adv with h fixed; (2) h ascends L_Adv on
the detached representation of step (1)'s forward pass (computed before f's update, saving a
second forward), ``adversary_steps`` times (MEDFAIR's ``aud_steps``). Each side has its
own optimiser (the configured one; ``adversary`` in the history is h's).

Defaults are MEDFAIR's (``class_coeff`` α = 1, ``fair_coeff`` γ = 1, ``aud_steps`` 1, adversary
MLP with 128 hidden units, ``laftr-eqodd``). MEDFAIR's search (W&B Bayes): α ~ U(0.01, 5),
lr ~ U(1e-5, 1e-3), γ fixed at 1 (:attr:`LAFTR.search_space`). FairMedFM used γ = 0.1.

``source`` as in :mod:`medequity.methods.adversarial` (``auto``: features when the backbone is
trainable, else the logit). ``self.log`` records the adversary objective and accuracy per epoch.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

import numpy as np
import torch
from torch import nn

from medequity.methods.adversarial import make_adversary, representation_and_logits, resolve_source
from medequity.methods.base import Method, register_method

OBJECTIVES = ("dp", "eqodds", "eqopp")


def laftr_adversary_objective(group_logits: torch.Tensor, groups: torch.Tensor, labels: torch.Tensor,
                              objective: str) -> torch.Tensor:
    """LAFTR's L_Adv (module docstring) from the adversary's (B, K) logits; higher = S more
    recoverable. Samples with group −1 are ignored; 0 when no cell is present."""
    if objective not in OBJECTIVES:
        raise ValueError(f"objective must be one of {OBJECTIVES}; got {objective!r}")
    n_groups = group_logits.shape[1]
    if n_groups < 2:
        raise ValueError("LAFTR needs at least 2 groups")
    known = groups >= 0
    p_true = torch.softmax(group_logits, dim=1).gather(1, groups.clamp(min=0).long().unsqueeze(1)).squeeze(1)
    y = labels > 0.5
    label_cells = {"dp": [torch.ones_like(y)], "eqodds": [~y, y], "eqopp": [y]}[objective]
    total = group_logits.sum() * 0.0
    for in_cell in label_cells:
        means = [p_true[known & in_cell & (groups == a)].mean() for a in range(n_groups)
                 if bool((known & in_cell & (groups == a)).any())]
        if means:
            total = total + n_groups / (n_groups - 1) * (torch.stack(means).mean() - 1.0 / n_groups)
    return total


@register_method
class LAFTR(Method):
    """Adversarially fair representations (Madras et al. 2018): alternating min–max, DP/EO/EOpp adversaries."""

    name = "laftr"
    defaults = {"objective": "eqodds", "class_coefficient": 1.0, "fair_coefficient": 1.0, "adversary_steps": 1,
                "hidden": 128, "source": "auto"}
    #: MEDFAIR's hyper-parameter search (W&B Bayes over these ranges, 20 epochs, weight decay 1e-5).
    search_space: ClassVar[dict[str, Any]] = {"class_coefficient": ("uniform", 0.01, 5.0), "lr": ("uniform", 1e-5, 1e-3)}

    def __init__(self, **params):
        super().__init__(**params)
        if self.params["objective"] not in OBJECTIVES:
            raise ValueError(f"laftr's objective must be one of {OBJECTIVES} (demographic parity, equalized odds, "
                             f"equal opportunity); got {self.params['objective']!r}")
        self.require_non_negative("class_coefficient", "fair_coefficient")
        if int(self.params["adversary_steps"]) < 1:
            raise ValueError("laftr's adversary_steps must be >= 1")
        if int(self.params["hidden"]) < 0:
            raise ValueError("laftr's hidden must be >= 0 (0 = a linear adversary)")
        if self.params["source"] not in ("auto", "features", "logit"):
            raise ValueError(f"source must be 'auto', 'features' or 'logit'; got {self.params['source']!r}")
        self.resolved_source: str | None = None
        self._epoch: list[tuple[float, int, int]] = []

    @property
    def conditions_on_label(self) -> bool:
        return self.params["objective"] != "dp"

    def setup(self, model, train, config) -> None:
        if train.n_groups < 2:
            raise ValueError(f"LAFTR needs at least 2 groups; the attribute has {train.n_groups}")
        source, in_dim = resolve_source(model, self.params["source"])
        self.resolved_source = source
        self.extra["adversary"] = make_adversary(in_dim + int(self.conditions_on_label), train.n_groups,
                                                 int(self.params["hidden"]))
        self.log.update({"source": source, "adv_objective": [], "adv_acc": []})

    def parameters(self, model: nn.Module) -> list[nn.Parameter]:
        return [p for p in model.parameters() if p.requires_grad]

    def make_optimizers(self, model, config) -> dict[str, torch.optim.Optimizer]:
        from medequity.training.trainer import build_optimizer

        return {"model": build_optimizer(self.parameters(model), config),
                "adversary": build_optimizer(self.extra["adversary"].parameters(), config)}

    def adversary_logits(self, representation: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        if self.conditions_on_label:
            representation = torch.cat([representation, labels.to(representation).unsqueeze(1)], dim=1)
        return self.extra["adversary"](representation)

    def _forward(self, model, batch) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        if self.resolved_source is None:
            raise RuntimeError("LAFTR.setup must run before training (the trainer calls it)")
        representation, logits = representation_and_logits(model, batch["x"], self.resolved_source)
        task = self.per_sample_loss(logits, batch["y"]).mean()
        adv = laftr_adversary_objective(self.adversary_logits(representation, batch["y"]), batch["group"], batch["y"],
                                        self.params["objective"])
        return representation, task, adv

    def loss(self, model, batch: dict) -> torch.Tensor:
        """The encoder/classifier side of the game: α·L_C + γ·L_Adv."""
        _, task, adv = self._forward(model, batch)
        return float(self.params["class_coefficient"]) * task + float(self.params["fair_coefficient"]) * adv

    def training_step(self, model, batch: dict, optimizers: Mapping[str, torch.optim.Optimizer]) -> dict[str, float]:
        model_opt, adv_opt = optimizers["model"], optimizers["adversary"]
        # (1) f, g descend α·L_C + γ·L_Adv; h's gradient from this pass is discarded below.
        model_opt.zero_grad(set_to_none=True)
        representation, task, adv = self._forward(model, batch)
        loss = float(self.params["class_coefficient"]) * task + float(self.params["fair_coefficient"]) * adv
        loss.backward()
        model_opt.step()
        # (2) h ascends L_Adv on the representation the encoder produced, f and g fixed.
        groups, labels = batch["group"], batch["y"]
        detached = representation.detach()
        for _ in range(int(self.params["adversary_steps"])):
            adv_opt.zero_grad(set_to_none=True)
            out = self.adversary_logits(detached, labels)
            objective = laftr_adversary_objective(out, groups, labels, self.params["objective"])
            (-objective).backward()
            adv_opt.step()
        known = groups >= 0
        correct = int((out.argmax(dim=1)[known] == groups[known]).sum())
        self._epoch.append((float(objective.detach()), correct, int(known.sum())))
        return {"loss": float(loss.detach()), "task_loss": float(task.detach()), "adv_objective": float(adv.detach())}

    def epoch_metrics(self, steps) -> dict[str, float]:
        out = super().epoch_metrics(steps)
        out["adv_objective"] = float(np.mean([s["adv_objective"] for s in steps])) if steps else float("nan")
        return out

    def on_epoch_end(self, model, epoch: int, val_scores, summary) -> None:
        if self._epoch:
            n = sum(k for _, _, k in self._epoch)
            self.log["adv_objective"].append(float(np.mean([o for o, _, _ in self._epoch])))
            self.log["adv_acc"].append(sum(c for _, c, _ in self._epoch) / max(n, 1))
        self._epoch = []
