"""FIS — Fair Identity Scaling (Luo et al., "FairVision: equitable deep learning for eye disease
screening via fair identity scaling", 2024), in the form of FairDi eq. (1):

    θ*, φ* = argmin (1/N) Σ_{i∈D} w_i · ℓ_i,      w_i = (1 − c)·s^I_i + c·s^G(a_i)

    s^I_i    = exp(ℓ_i/T) / Σ_{j∈D} exp(ℓ_j/T)                       (individual scaling: softmax over the batch)
    s^G(a)   = exp(o(L, L_a)/T) / Σ_{g∈A_D} exp(o(L, L_g)/T)           (group scaling: softmax over groups)
    o(L, L_g) = W₁(L, L_g)  — 1-D Wasserstein distance between the batch's loss sample L = {ℓ_j}
                and group g's loss sample L_g = {ℓ_j : a_j = g}

D is the mini-batch, ℓ the per-sample BCE, c ∈ [0, 1] (default 0.5, FairDi step 0). FairDi computes
o by optimal transport; for 1-D samples W₁ is exact (:func:`wasserstein_1d`, the same algorithm as
``scipy.stats.wasserstein_distance``: the integral of |F_L − F_{L_g}|). T = ``temperature``: the
equation has none, so the default 1 reproduces it.

The weights are computed *without gradient* (from detached losses): they scale each sample's loss,
and the gradient is Σ w_i ∇ℓ_i — the weights are not themselves optimised (FairVision treats them as
constants in the same way).

Conventions this module fixes (the papers are silent):

* A_D = the known groups present in the batch; a group absent from the batch has no loss sample and
  takes no share of the softmax.
* Samples with an unknown group (-1) are part of the batch sample L and of s^I, and receive the
  neutral group weight 1/|A_D| (the mean of s^G over the present groups). With no known group in the
  batch s^G is not defined and w = (1 − c)·s^I + c/N.
* ``normalize`` (default True): the loss is Σ w_i ℓ_i / Σ w_i, a weighted *mean*, so its scale and
  the effective learning rate match ERM's whatever the batch size; ``normalize=False`` is eq. (1)
  literally, (1/N) Σ w_i ℓ_i, whose weights sum to about 1 so the loss is about 1/N of ERM's (with SGD
  that divides the learning rate by the batch size). The relative weights — the method — are the same.

``cutmix=True`` mixes each training batch with :func:`~medequity.methods.cutmix.cutmix_batch` first
(``cutmix_alpha``, ``cutmix_prob``) and weights the soft-label losses; a mixed sample keeps the group
of the image it was pasted into. FairDi step 0 = ``create_method("fis", c=0.5, cutmix=True)``.

Segmentation: ℓ is the per-sample segmentation loss (0.2·CE + 0.8·Dice,
:meth:`~medequity.methods.base.Method.per_sample_loss`) and everything else is unchanged — the
weights are per *sample*, from the batch's per-sample losses. CutMix mixes image-level labels,
not masks, so ``cutmix=True`` on a segmentation split is an error.
"""

from __future__ import annotations

import torch

from medequity.methods._segmentation import is_segmentation
from medequity.methods.base import Method, register_method
from medequity.methods.cutmix import check_image_inputs, cutmix_batch, make_generator


def wasserstein_1d(u: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """W₁ between the empirical distributions of 1-D samples ``u`` and ``v`` (equal weights).

    Exact: ∫ |F_u(t) − F_v(t)| dt over the merged support, as ``scipy.stats.wasserstein_distance``.
    """
    u = u.detach().reshape(-1).double()
    v = v.detach().reshape(-1).double()
    if u.numel() == 0 or v.numel() == 0:
        raise ValueError("wasserstein_1d needs two non-empty samples")
    u_sorted, _ = torch.sort(u)
    v_sorted, _ = torch.sort(v)
    merged, _ = torch.sort(torch.cat([u_sorted, v_sorted]))
    deltas = merged[1:] - merged[:-1]
    points = merged[:-1].contiguous()
    u_cdf = torch.searchsorted(u_sorted, points, right=True).double() / u.numel()
    v_cdf = torch.searchsorted(v_sorted, points, right=True).double() / v.numel()
    return torch.sum(torch.abs(u_cdf - v_cdf) * deltas)


@torch.no_grad()
def group_scaling(losses: torch.Tensor, groups: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """s^G(a_i) per sample: softmax over the present known groups of W₁(batch losses, group losses).

    Samples with group -1 get 1/|A_D|; with no known group every sample gets 1/N.
    """
    losses = losses.detach().reshape(-1).double()
    groups = groups.detach().reshape(-1).long().to(losses.device)
    present = torch.unique(groups[groups >= 0])
    if present.numel() == 0:
        return torch.full_like(losses, 1.0 / max(losses.numel(), 1))
    distances = torch.stack([wasserstein_1d(losses, losses[groups == g]) for g in present])
    group_weight = torch.softmax(distances / temperature, dim=0)
    out = torch.full_like(losses, 1.0 / present.numel())
    for g, weight in zip(present, group_weight):
        out[groups == g] = weight
    return out


@torch.no_grad()
def fis_weights(losses: torch.Tensor, groups: torch.Tensor, c: float = 0.5, temperature: float = 1.0) -> torch.Tensor:
    """FIS per-sample weights w = (1 − c)·softmax_batch(ℓ/T) + c·s^G(a) (FairDi eq. 1), no gradient.

    ``losses``: per-sample losses of the batch (any shape, flattened); ``groups``: their group codes
    (-1 = unknown). Returns float64 weights on ``losses``' device; c = 0 is individual scaling only,
    c = 1 group scaling only. FairDi reuses this for its steps 0–2.
    """
    if not 0.0 <= float(c) <= 1.0:
        raise ValueError(f"c must be in [0, 1]; got {c}")
    if not temperature > 0:
        raise ValueError(f"temperature must be > 0; got {temperature}")
    flat = losses.detach().reshape(-1).double()
    if flat.numel() == 0:
        return flat
    individual = torch.softmax(flat / temperature, dim=0)
    if c == 0:
        return individual
    return (1.0 - c) * individual + c * group_scaling(flat, groups, temperature)


def fis_loss(per_sample: torch.Tensor, groups: torch.Tensor, c: float = 0.5, temperature: float = 1.0,
             normalize: bool = True) -> torch.Tensor:
    """The FIS objective on one batch from per-sample losses (gradient flows through the losses only)."""
    weights = fis_weights(per_sample, groups, c, temperature).to(per_sample)
    if normalize:
        return (weights * per_sample).sum() / weights.sum().clamp(min=torch.finfo(weights.dtype).tiny)
    return (weights * per_sample).mean()


@register_method
class FIS(Method):
    """Fair Identity Scaling: per-sample loss weights mixing individual and group scaling."""

    name = "fis"
    tasks = ("classification", "segmentation")
    defaults = {"c": 0.5, "temperature": 1.0, "normalize": True,
                "cutmix": False, "cutmix_alpha": 1.0, "cutmix_prob": 1.0}

    def __init__(self, **params):
        super().__init__(**params)
        if not 0.0 <= float(self.params["c"]) <= 1.0:
            raise ValueError(f"c must be in [0, 1]; got {self.params['c']!r}")
        if not float(self.params["temperature"]) > 0:
            raise ValueError(f"temperature must be > 0; got {self.params['temperature']!r}")
        for flag in ("normalize", "cutmix"):
            if not isinstance(self.params[flag], bool):
                raise ValueError(f"{flag} must be true or false; got {self.params[flag]!r}")
        self.generator: torch.Generator | None = None

    def setup(self, model, train, config) -> None:
        if self.params["cutmix"]:
            if is_segmentation(train):
                raise ValueError("fis with cutmix=true mixes image-level labels; it cannot mix segmentation masks: "
                                 "set cutmix to false for a segmentation usage")
            check_image_inputs(train)
            self.generator = make_generator(config.seed)

    def loss(self, model, batch: dict) -> torch.Tensor:
        x, y = batch["x"], batch["y"]
        if self.params["cutmix"] and model.training:
            if self.generator is None:
                self.generator = make_generator(0)
            x, y, _ = cutmix_batch(x, y, self.generator, alpha=float(self.params["cutmix_alpha"]),
                                   prob=float(self.params["cutmix_prob"]))
        per_sample = self.per_sample_loss(self.logits(model, x, batch["group"]), y)
        return fis_loss(per_sample, batch["group"], float(self.params["c"]), float(self.params["temperature"]),
                        self.params["normalize"])
