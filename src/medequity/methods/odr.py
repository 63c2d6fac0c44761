"""ODR — Orthogonal Disentangled Representations: Sarhan, Navab, Eslami & Albarqouni, "Fairness
by learning orthogonal disentangled representations", ECCV 2020 (§3), as benchmarked by MEDFAIR.

Two Gaussian encoders on the shared representation h = f(x) give a target code z_T ~ q(z_T|h) =
N(μ_T, diag σ_T²) and a sensitive code z_S ~ q(z_S|h) (reparameterised samples in training, the
means at inference). A target classifier reads z_T; a sensitive classifier d reads z_S. The loss
(the paper's objective as we recall it; MEDFAIR implements the same terms):

    L = L_T(y | z_T) + L_S(s | z_S) + λ_E·L_E + λ_OD·(KL(q(z_T|h) ‖ N(m_T, I)) + KL(q(z_S|h) ‖ N(m_S, I)))

* L_T: BCE of the target classifier on z_T; L_S: cross-entropy of d on z_S (d learns S).
* L_E = −H(d(z_T)): the entropy of the sensitive classifier's prediction *from the target code* is
  maximised, so z_T carries no S that d can read; d's own weights are held fixed in this term (it
  should not learn to be uncertain), only the target branch and the backbone move.
* Orthogonality through the priors: m_T ⟂ m_S. We do not recall the paper's exact prior means; we
  use MEDFAIR's choice, m_T = e_1 (a one-hot) and m_S = 1 − e_1 (its complement), which are
  orthogonal. The KL terms are the closed-form Gaussian KLs (MEDFAIR's KL between softmaxes of
  samples carries no gradient).
* λ_E and λ_OD decay per epoch t: λ·γ^(t / step_size), as in the paper/MEDFAIR.
* The sensitive branch reads the *detached* backbone features (as MEDFAIR, which froze the backbone
  for L_S): learning S must not shape the shared encoder.

Any number of groups (d is a softmax over K); samples of unknown group (−1) are not in L_S but are
in every other term. The model's own head is not used: predictions are the target classifier's on
μ_T (``self.extra``, saved with the model). The backbone must be trainable.

Defaults are MEDFAIR's (λ_E = λ_OD = γ_E = γ_OD = 0.1, step 20 epochs, z dimension 128, decoders
with 128 hidden units); we do not recall the paper's own values reliably. MEDFAIR's search: λ_E,
λ_OD, γ_E, γ_OD ~ U(0.01, 5), step ∈ {10, 20, 50}, lr ~ U(1e-5, 1e-3).
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from medequity.methods.adversarial import make_adversary, require_trainable_backbone
from medequity.methods.base import Method, register_method
from medequity.methods.lnl import negative_entropy


def gaussian_kl_to_unit(mean: torch.Tensor, log_var: torch.Tensor, prior_mean: torch.Tensor) -> torch.Tensor:
    """mean_i KL(N(μ_i, diag e^{log σ²_i}) ‖ N(m, I)) = ½ Σ_k (σ² + (μ − m)² − 1 − log σ²)."""
    return 0.5 * (log_var.exp() + (mean - prior_mean) ** 2 - 1.0 - log_var).sum(dim=1).mean()


def orthogonal_prior_means(dim: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(m_T, m_S) = (e_1, 1 − e_1): orthogonal prior means (MEDFAIR's choice)."""
    m_t = torch.zeros(dim)
    m_t[0] = 1.0
    return m_t, 1.0 - m_t


class _GaussianEncoder(nn.Module):
    def __init__(self, in_dim: int, z_dim: int):
        super().__init__()
        self.mean = nn.Linear(in_dim, z_dim)
        self.log_var = nn.Linear(in_dim, z_dim)

    def forward(self, h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = F.relu(h)
        return self.mean(h), self.log_var(h).clamp(-10.0, 10.0)  # clamp: exp() stays finite early in training


@register_method
class ODR(Method):
    """Orthogonal disentangled target/sensitive codes with an entropy term and orthogonal priors (Sarhan et al. 2020)."""

    name = "odr"
    defaults = {"lambda_e": 0.1, "lambda_od": 0.1, "gamma_e": 0.1, "gamma_od": 0.1, "step_size": 20, "z_dim": 128,
                "hidden": 128}
    search_space: ClassVar[dict[str, Any]] = {
        "lambda_e": ("uniform", 0.01, 5.0), "lambda_od": ("uniform", 0.01, 5.0), "gamma_e": ("uniform", 0.01, 5.0),
        "gamma_od": ("uniform", 0.01, 5.0), "step_size": ("choice", 10, 20, 50), "lr": ("uniform", 1e-5, 1e-3)}

    def __init__(self, **params):
        super().__init__(**params)
        self.require_non_negative("lambda_e", "lambda_od", "gamma_e", "gamma_od")
        for key in ("step_size", "z_dim"):
            if int(self.params[key]) < 1:
                raise ValueError(f"odr's {key} must be >= 1; got {self.params[key]!r}")
        self.epoch = 0

    def setup(self, model, train, config) -> None:
        require_trainable_backbone(model, "ODR")
        if train.n_groups < 2:
            raise ValueError(f"ODR needs at least 2 groups; the attribute has {train.n_groups}")
        d, z, hidden = int(model.feature_dim), int(self.params["z_dim"]), int(self.params["hidden"])
        self.extra["encoder_t"] = _GaussianEncoder(d, z)
        self.extra["encoder_s"] = _GaussianEncoder(d, z)
        self.extra["target"] = make_adversary(z, 1, hidden)
        self.extra["sensitive"] = make_adversary(z, train.n_groups, hidden)
        m_t, m_s = orthogonal_prior_means(z)
        self.prior_t, self.prior_s = m_t, m_s
        self.epoch = 0

    def parameters(self, model: nn.Module) -> list[nn.Parameter]:
        head = {id(p) for p in getattr(model, "head", nn.Identity()).parameters()}
        params = [p for p in model.parameters() if p.requires_grad and id(p) not in head]
        return params + [p for p in self.extra.parameters() if p.requires_grad]

    def logits(self, model, x: torch.Tensor, groups: torch.Tensor | None = None) -> torch.Tensor:
        mean_t, _ = self.extra["encoder_t"](model.features(x))
        return self.extra["target"](mean_t).squeeze(-1)

    def weights(self) -> tuple[float, float]:
        """(λ_E, λ_OD) at the current epoch: λ·γ^(epoch / step_size)."""
        t = self.epoch / int(self.params["step_size"])
        return (float(self.params["lambda_e"]) * float(self.params["gamma_e"]) ** t,
                float(self.params["lambda_od"]) * float(self.params["gamma_od"]) ** t)

    def terms(self, model, batch: dict) -> dict[str, torch.Tensor]:
        """Every term of the loss on one batch (reparameterised samples in train mode, means in eval)."""
        h = model.features(batch["x"])
        mean_t, log_var_t = self.extra["encoder_t"](h)
        mean_s, log_var_s = self.extra["encoder_s"](h.detach())
        z_t, z_s = mean_t, mean_s
        if model.training:
            z_t = mean_t + (0.5 * log_var_t).exp() * torch.randn_like(mean_t)
            z_s = mean_s + (0.5 * log_var_s).exp() * torch.randn_like(mean_s)
        sensitive = self.extra["sensitive"]
        frozen = {name: p.detach() for name, p in sensitive.named_parameters()}
        entropy_logits = torch.func.functional_call(sensitive, frozen, (z_t,))
        groups = batch["group"]
        known = groups >= 0
        sensitive_loss = (F.cross_entropy(sensitive(z_s[known]), groups[known].long()) if bool(known.any())
                          else z_s.sum() * 0.0)
        prior_t, prior_s = self.prior_t.to(mean_t), self.prior_s.to(mean_s)
        return {"target": self.per_sample_loss(self.extra["target"](z_t).squeeze(-1), batch["y"]).mean(),
                "sensitive": sensitive_loss,
                "entropy": negative_entropy(entropy_logits),
                "kl": gaussian_kl_to_unit(mean_t, log_var_t, prior_t) + gaussian_kl_to_unit(mean_s, log_var_s, prior_s)}

    def loss(self, model, batch: dict) -> torch.Tensor:
        terms = self.terms(model, batch)
        lambda_e, lambda_od = self.weights()
        return terms["target"] + terms["sensitive"] + lambda_e * terms["entropy"] + lambda_od * terms["kl"]

    def on_epoch_end(self, model, epoch: int, val_scores, summary) -> None:
        self.epoch = epoch + 1
