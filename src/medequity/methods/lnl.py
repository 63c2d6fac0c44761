"""LNL — Learning Not to Learn: Kim, Kim, Kim, Kim & Kim, "Learning not to learn: training deep
neural networks with biased data", CVPR 2019 (§3), as benchmarked by MEDFAIR.

The mutual information I(z; b) between the representation z = f(x) and the bias b (here the
sensitive group) is minimised with an auxiliary bias predictor h: I(z; b) = H(b) − H(b | z), H(b)
is constant, and H(b | z) is approximated by the entropy of h's prediction q(b | z) = softmax(h(z)).
The paper alternates two problems (its eqs. 6–8, as we recall them):

    (1) min_{f,g}   L_c(g(f(x)), y) + λ · E_x[ Σ_b q(b|f(x)) log q(b|f(x)) ]      (h fixed)
    (2) min_{f,h}   L_b(h(GRL_μ(f(x))), b)                                          (cross-entropy)

(1) trains the classifier and pushes the representation towards maximum entropy of h's
prediction (the second term is the *negative* entropy); (2) trains h to predict b while the
gradient-reversal layer (scale μ) makes f remove what h uses. Each mini-batch does (1) then (2),
with separate optimisers for f and g ("model") and for h ("predictor"). Unlike MEDFAIR's code —
whose predictor optimiser held the classifier's parameters, so h was never trained — h is trained
here, and its q is a softmax over the K groups (MEDFAIR used a sigmoid). Samples of unknown group
(−1) count in the entropy term (it needs no label) but not in L_b.

Defaults: λ = 0.1 (MEDFAIR's ``_lambda``), μ = 1 (the GRL scale: we do not recall the paper's value
for certain), predictor an MLP with 64 hidden units on z (the paper's h is a small conv net on a
feature map; we use the pooled representation). MEDFAIR's search: λ ~ U(0.001, 3),
lr ~ U(1e-5, 1e-3). ``source`` as in :mod:`medequity.methods.adversarial`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from medequity.methods.adversarial import grad_reverse, make_adversary, representation_and_logits, resolve_source
from medequity.methods.base import Method, register_method


def negative_entropy(group_logits: torch.Tensor) -> torch.Tensor:
    """mean_i Σ_b q_ib log q_ib with q_i = softmax(group_logits_i): −H, minimal (−log K) at uniform."""
    log_q = torch.log_softmax(group_logits, dim=1)
    return (log_q.exp() * log_q).sum(dim=1).mean()


@register_method
class LNL(Method):
    """Mutual-information regulariser: entropy of a bias predictor + its gradient-reversed training (Kim et al. 2019)."""

    name = "lnl"
    defaults = {"coefficient": 0.1, "reversal": 1.0, "hidden": 64, "source": "auto"}
    search_space: ClassVar[dict[str, Any]] = {"coefficient": ("uniform", 0.001, 3.0), "lr": ("uniform", 1e-5, 1e-3)}

    def __init__(self, **params):
        super().__init__(**params)
        self.require_non_negative("coefficient", "reversal")
        if int(self.params["hidden"]) < 0:
            raise ValueError("lnl's hidden must be >= 0 (0 = a linear predictor)")
        if self.params["source"] not in ("auto", "features", "logit"):
            raise ValueError(f"source must be 'auto', 'features' or 'logit'; got {self.params['source']!r}")
        self.resolved_source: str | None = None

    def setup(self, model, train, config) -> None:
        if train.n_groups < 2:
            raise ValueError(f"LNL needs at least 2 groups; the attribute has {train.n_groups}")
        source, in_dim = resolve_source(model, self.params["source"])
        self.resolved_source = source
        self.extra["predictor"] = make_adversary(in_dim, train.n_groups, int(self.params["hidden"]))
        self.log["source"] = source

    def parameters(self, model: nn.Module) -> list[nn.Parameter]:
        return [p for p in model.parameters() if p.requires_grad]

    def make_optimizers(self, model, config) -> dict[str, torch.optim.Optimizer]:
        from medequity.training.trainer import build_optimizer

        return {"model": build_optimizer(self.parameters(model), config),
                "predictor": build_optimizer(self.extra["predictor"].parameters(), config)}

    def _representation(self, model, x):
        if self.resolved_source is None:
            raise RuntimeError("LNL.setup must run before training (the trainer calls it)")
        return representation_and_logits(model, x, self.resolved_source)

    def classifier_loss(self, model, batch: dict) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Problem (1): (L_c + λ·(−H), L_c, −H)."""
        representation, logits = self._representation(model, batch["x"])
        task = self.per_sample_loss(logits, batch["y"]).mean()
        neg_entropy = negative_entropy(self.extra["predictor"](representation))
        return task + float(self.params["coefficient"]) * neg_entropy, task, neg_entropy

    def bias_loss(self, model, batch: dict) -> torch.Tensor:
        """Problem (2): h's cross-entropy on the known-group samples, through GRL_μ."""
        representation, _ = self._representation(model, batch["x"])
        groups = batch["group"]
        known = groups >= 0
        if not bool(known.any()):
            return representation.sum() * 0.0
        out = self.extra["predictor"](grad_reverse(representation[known], float(self.params["reversal"])))
        return F.cross_entropy(out, groups[known].long())

    def loss(self, model, batch: dict) -> torch.Tensor:
        return self.classifier_loss(model, batch)[0]

    def training_step(self, model, batch: dict, optimizers: Mapping[str, torch.optim.Optimizer]) -> dict[str, float]:
        model_opt, predictor_opt = optimizers["model"], optimizers["predictor"]
        model_opt.zero_grad(set_to_none=True)
        loss, task, neg_entropy = self.classifier_loss(model, batch)
        loss.backward()
        model_opt.step()  # (1): f and g only; h's gradient from this pass is discarded
        model_opt.zero_grad(set_to_none=True)
        predictor_opt.zero_grad(set_to_none=True)
        bias = self.bias_loss(model, batch)
        bias.backward()
        model_opt.step()  # (2): f climbs L_b through the reversal ...
        predictor_opt.step()  # ... while h descends it
        return {"loss": float(loss.detach()), "task_loss": float(task.detach()),
                "neg_entropy": float(neg_entropy.detach()), "bias_loss": float(bias.detach())}

    def epoch_metrics(self, steps) -> dict[str, float]:
        out = super().epoch_metrics(steps)
        for key in ("neg_entropy", "bias_loss"):
            out[key] = float(np.mean([s[key] for s in steps])) if steps else float("nan")
        return out
