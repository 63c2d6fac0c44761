"""InD — domain-independent training, Wang et al., "Towards fairness in visual recognition:
effective strategies for bias mitigation", CVPR 2020, §4.3 ("domain-independent training").

A shared representation ``z = f(x)`` and one classifier head per group ``d`` (the paper's N×D
outputs: a set of class scores per domain). Training: each sample is scored by its own group's head
only,

    loss = mean_i BCE(h_{a_i}(z_i), y_i)

so head ``d`` receives gradient from group-``d`` samples only, while the shared encoder learns from
all of them. Inference (``inference``):

* ``"group"`` (default): the sample's own group head, ŷ = h_{a}(z) — needs the group at inference
  (``needs_groups_at_inference = True``);
* ``"sum"``: the paper's group-free alternative, Σ_d s(y, d, x): the sum over heads of the logits
  (for one binary logit per head, the difference of the two class scores), ŷ = Σ_d h_d(z).

Unknown group (-1): in training such samples have no head and are left out of the loss (their
number is ``self.log["n_unknown_train"]``); at inference a sample with an unknown group is scored
by the mean of the heads' logits, ŷ = (1/D) Σ_d h_d(z) (``inference="group"``; under "sum" every
sample gets the sum).

The heads live in ``self.extra["heads"]`` (one ``nn.Linear(feature_dim, D)``, row ``d`` = head
``d``; rows are independent, so this is exactly D separate linear heads); the model's own ``head``
is not used and not trained.

Segmentation (a split whose targets are label masks): one *decoder* per group over the model's
shared encoder (:mod:`medequity.methods._segmentation` names each usage's decoder: SAMed's mask
decoder for ``seg_decoder``/``seg_lora``, the output block of a ``seg_ft`` network). The decoders
are copies of the model's decoder (so each starts from, e.g., SAM's pre-trained decoder) held in
``self.extra["decoders"]``; the model's own decoder is not used and not trained. Training: each
sample's logits come from its group's decoder and the loss is the mean per-sample segmentation
loss (0.2·CE + 0.8·Dice) over the known-group samples. Inference as above, per pixel: the
sample's group decoder (``"group"``), the mean of the decoders' logits for an unknown group, or
the sum of every decoder's logits (``"sum"``).
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from medequity.methods._segmentation import decoder_copies, decoder_path, encode, is_segmentation, routed_logits
from medequity.methods.base import Method, register_method


@register_method
class InD(Method):
    """One head per group, trained on that group; inference by the sample's group head (or sum)."""

    name = "ind"
    tasks = ("classification", "segmentation")
    defaults = {"inference": "group"}
    needs_groups_at_inference = True

    def __init__(self, **params):
        super().__init__(**params)
        if self.params["inference"] not in ("group", "sum"):
            raise ValueError(f"inference must be 'group' or 'sum'; got {self.params['inference']!r}")
        self.decoder: str | None = None  # segmentation: the dotted name of the model's decoder

    def setup(self, model, train, config) -> None:
        self.log["n_unknown_train"] = int((np.asarray(train.groups) < 0).sum())
        if is_segmentation(train):
            if train.n_groups < 1:
                raise ValueError("InD needs at least one group")
            self.decoder = decoder_path(model)
            self.extra["decoders"] = decoder_copies(model, self.decoder, train.n_groups)
            return
        self.decoder = None
        feature_dim = getattr(model, "feature_dim", None)
        if feature_dim is None or not hasattr(model, "features"):
            raise ValueError("InD needs a model with features(x) and feature_dim (medequity Classifier)")
        if train.n_groups < 1:
            raise ValueError("InD needs at least one group")
        self.extra["heads"] = nn.Linear(feature_dim, train.n_groups)

    def parameters(self, model: nn.Module) -> list[nn.Parameter]:
        own = model.get_submodule(self.decoder) if self.decoder is not None else getattr(model, "head", nn.Identity())
        head = {id(p) for p in own.parameters()}
        params = [p for p in model.parameters() if p.requires_grad and id(p) not in head]
        return params + [p for p in self.extra.parameters() if p.requires_grad]

    def head_logits(self, model, x: torch.Tensor) -> torch.Tensor:
        """(B, D): every group head's logit for every sample."""
        return self.extra["heads"](model.features(x))

    def logits(self, model, x: torch.Tensor, groups: torch.Tensor | None = None) -> torch.Tensor:
        if self.decoder is not None:
            return self.segmentation_logits(model, x, groups)
        all_heads = self.head_logits(model, x)
        if self.params["inference"] == "sum":
            return all_heads.sum(dim=1)
        if groups is None:
            raise ValueError("InD with inference='group' needs each sample's group at inference")
        groups = groups.long().to(all_heads.device)
        known = groups >= 0
        own = all_heads.gather(1, groups.clamp(min=0).unsqueeze(1)).squeeze(1)
        return torch.where(known, own, all_heads.mean(dim=1))

    def segmentation_logits(self, model, x: torch.Tensor, groups: torch.Tensor | None) -> torch.Tensor:
        """(B, C + 1, *spatial): the group decoders on the shared encoder's features (module doc)."""
        features = encode(model, x, self.decoder)
        decoders = self.extra["decoders"]
        if self.params["inference"] == "sum":
            return torch.stack([decoder(features) for decoder in decoders]).sum(dim=0)
        if groups is None:
            raise ValueError("InD with inference='group' needs each sample's group at inference")
        return routed_logits(decoders, features, groups)

    def loss(self, model, batch: dict) -> torch.Tensor:
        groups = batch["group"].long()
        known = groups >= 0
        if self.decoder is not None:
            if not bool(known.any()):
                return next(self.extra["decoders"].parameters()).sum() * 0.0
            logits = routed_logits(self.extra["decoders"], encode(model, batch["x"][known], self.decoder), groups[known])
            return self.per_sample_loss(logits, batch["y"][known]).mean()
        all_heads = self.head_logits(model, batch["x"])
        if not bool(known.any()):
            return all_heads.sum() * 0.0
        own = all_heads[known].gather(1, groups[known].unsqueeze(1)).squeeze(1)
        return self.per_sample_loss(own, batch["y"][known]).mean()
