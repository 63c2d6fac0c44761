"""CutMix — Yun et al., "CutMix: regularization strategy to train strong classifiers with
localizable features", ICCV 2019 (FairDi step 0 trains with it).

For a batch (x, y) and a random permutation π of it, with λ ~ Beta(α, α):

    box B: width W·√(1−λ), height H·√(1−λ), centre uniform in the image, clipped to the image
    x̃_i = M ⊙ x_i + (1 − M) ⊙ x_π(i)     (M = 0 inside B, 1 outside)
    λ'  = 1 − |B| / (W·H)                  (λ recomputed from the clipped box, as in the paper's code)
    ỹ_i = λ'·y_i + (1 − λ')·y_π(i)

and the loss is BCE against the soft label ỹ (for BCE, identical to λ'·BCE(y_i) + (1−λ')·BCE(y_π(i))).
One box and one λ per batch, as in the reference implementation. Defaults: α = 1 (Yun et al.,
uniform λ), ``prob`` = 1.0 — the chance a batch is mixed at all (Yun et al. use 1.0 on ImageNet,
0.5 on CIFAR).

CutMix edits pixels, so it needs image batches (B, C, H, W): usages ``ft`` or ``peft``. On cached
features (``lp``) it raises an error.

Reuse and composition
---------------------
:func:`cutmix_batch` is the whole augmentation on its own (FairDi calls it). To combine CutMix with a
per-sample loss weighting, a method mixes its batch first and then weights the per-sample soft-label
losses; :class:`~medequity.methods.fis.FIS` does exactly that with ``cutmix=True`` (FairDi step 0 =
``create_method("fis", c=0.5, cutmix=True)``). A mixed sample keeps the group of the image it was
pasted *into* (index i), whose pixels are the unboxed part.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from medequity.methods.base import Method, register_method


@dataclass
class CutMixInfo:
    """What :func:`cutmix_batch` did: the box (rows y0:y1, cols x0:x1), kept fraction λ', partner π."""

    applied: bool
    lam: float  # fraction of each image kept from itself (1 − box area / image area)
    box: tuple[int, int, int, int]  # (y0, y1, x0, x1); empty when not applied
    permutation: torch.Tensor | None
    lam_drawn: float = 1.0  # λ ~ Beta(α, α) before the box was clipped to the image


def _check_images(x: torch.Tensor) -> None:
    if x.ndim != 4:
        raise ValueError(
            f"CutMix needs image batches of shape (B, C, H, W); got x with shape {tuple(x.shape)}. "
            "With usage 'lp' the inputs are cached feature vectors — use CutMix with usage 'ft' or 'peft'."
        )


def cutmix_batch(x: torch.Tensor, y: torch.Tensor, generator: torch.Generator | None = None, *,
                 alpha: float = 1.0, prob: float = 1.0) -> tuple[torch.Tensor, torch.Tensor, CutMixInfo]:
    """CutMix one batch: (mixed images, soft labels λ'·y + (1−λ')·y[π], :class:`CutMixInfo`).

    ``generator`` (a CPU ``torch.Generator``) drives every random choice (whether to mix, λ, the box
    centre, π), so results are reproducible. The inputs are not modified.
    """
    _check_images(x)
    if alpha <= 0:
        raise ValueError(f"alpha must be > 0; got {alpha}")
    if not 0.0 <= prob <= 1.0:
        raise ValueError(f"prob must be in [0, 1]; got {prob}")
    y = y.to(torch.float32) if not torch.is_floating_point(y) else y
    batch, _, height, width = x.shape
    if batch < 2 or float(torch.rand((), generator=generator)) >= prob:
        return x, y, CutMixInfo(False, 1.0, (0, 0, 0, 0), None)
    # torch's Beta sampler takes no generator: seed numpy's from ours so λ follows ``generator`` too
    lam = float(np.random.default_rng(int(torch.randint(0, 2**62, (), generator=generator))).beta(alpha, alpha))
    cut = (1.0 - lam) ** 0.5
    cut_h, cut_w = int(height * cut), int(width * cut)
    cy = int(torch.randint(0, height, (), generator=generator))
    cx = int(torch.randint(0, width, (), generator=generator))
    y0, y1 = max(cy - cut_h // 2, 0), min(cy + cut_h // 2, height)
    x0, x1 = max(cx - cut_w // 2, 0), min(cx + cut_w // 2, width)
    permutation = torch.randperm(batch, generator=generator).to(x.device)
    mixed = x.clone()
    mixed[:, :, y0:y1, x0:x1] = x[permutation, :, y0:y1, x0:x1]
    kept = 1.0 - (y1 - y0) * (x1 - x0) / (height * width)
    soft = kept * y + (1.0 - kept) * y[permutation]
    return mixed, soft, CutMixInfo(True, kept, (y0, y1, x0, x1), permutation, lam)


def check_image_inputs(train) -> None:
    """Raise the CutMix error early (at set-up) when the training items are not images."""
    if len(train) == 0:
        return
    x = train.items[0]["x"]
    if torch.as_tensor(x).ndim != 3:
        _check_images(torch.as_tensor(x).unsqueeze(0))


def make_generator(seed: int) -> torch.Generator:
    generator = torch.Generator()
    generator.manual_seed(int(seed) + 7919)  # its own stream, not the sampler's
    return generator


@register_method
class CutMix(Method):
    """ERM on CutMix-augmented image batches with area-mixed soft labels (Yun et al. 2019)."""

    name = "cutmix"
    defaults = {"alpha": 1.0, "prob": 1.0}

    def __init__(self, **params):
        super().__init__(**params)
        if not float(self.params["alpha"]) > 0:
            raise ValueError(f"alpha must be > 0; got {self.params['alpha']!r}")
        if not 0.0 <= float(self.params["prob"]) <= 1.0:
            raise ValueError(f"prob must be in [0, 1]; got {self.params['prob']!r}")
        self.generator: torch.Generator | None = None

    def setup(self, model, train, config) -> None:
        check_image_inputs(train)
        self.generator = make_generator(config.seed)

    def mix(self, batch: dict) -> dict:
        """The batch with ``x`` mixed and ``y`` soft (training batches only)."""
        if self.generator is None:
            self.generator = make_generator(0)
        x, y, _ = cutmix_batch(batch["x"], batch["y"], self.generator,
                               alpha=float(self.params["alpha"]), prob=float(self.params["prob"]))
        return {**batch, "x": x, "y": y}

    def loss(self, model, batch: dict) -> torch.Tensor:
        if model.training:
            batch = self.mix(batch)
        logits = self.logits(model, batch["x"], batch["group"])
        return self.per_sample_loss(logits, batch["y"]).mean()
