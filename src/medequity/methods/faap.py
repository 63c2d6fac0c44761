"""FAAP — Wang et al., "Fairness-aware Adversarial Perturbation Towards Bias Mitigation for
Deployed Deep Models", CVPR 2022; the baseline of Fair Diagnosis (§1, §4.2, Table 1).

As Fair Diagnosis describes it: the deployed model stays frozen; a generator adds a bounded
perturbation to its inputs, trained against a discriminator that predicts the sensitive attribute
from the deployed model's *features* f_θ(x̃) — not conditioned on the label — while the frozen
model's predictions are kept:

    discriminator:  CE(d(f_θ(x̃)), s)
    generator:      −CE(d(f_θ(x̃)), s) − α·H(softmax d(f_θ(x̃))) + β·BCE(f_h(f_θ(x̃)), y)

(FAAP's fairness loss with the entropy term that Fair Diagnosis eq. 9 borrows, plus the
prediction-keeping term). This is :class:`~medequity.methods.fair_diagnosis.AdversarialMask` with
``conditional = False`` and the discriminator on the encoder's features: the same bound
η·tanh mask, clipping, optimisers and defaults (η = 0.2, α = β = 1, lr 1e-4) as Fair Diagnosis,
so the comparison isolates the one difference the paper argues for — FAAP pushes S out of the
representation entirely (S ⊥ f_θ(X̃)), including the part S legitimately shares with Y through
prevalence, while Fair Diagnosis only asks S ⊥ X̃ | Y.
"""

from __future__ import annotations

from medequity.methods.base import register_method
from medequity.methods.fair_diagnosis import AdversarialMask


@register_method
class FAAP(AdversarialMask):
    """Fairness-aware adversarial perturbation: unconditioned discriminator on frozen features."""

    name = "faap"
    conditional = False
    defaults = {**AdversarialMask.defaults, "discriminator": "encoder"}
