"""The method interface: a bias-mitigation method is a set of hooks into one training loop.

Most methods change one thing — the loss (FIS, GroupDRO), the sampler (resampling), extra heads
(adversarial, InD), the optimiser (SAM), the end of training (SWAD, FairPrune, post-processing) —
so each overrides only that hook. Methods with several stages (FairDi) or a frozen model plus an
input transform (Fair Diagnosis) override :meth:`Method.fit` and call the trainer themselves. A
method never reads files: it gets :class:`~medequity.training.data.SplitData`.
"""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from medequity.registry import Registry

METHODS: Registry[Method] = Registry("method")


def register_method(cls: type[Method]) -> type[Method]:
    METHODS.register(cls.name)(cls)
    return cls


def create_method(name: str, **params: Any) -> Method:
    """A method by registered name with hyper-parameters (unknown ones are an error)."""
    return METHODS.create(name, **params)


class Method:
    name: ClassVar[str] = "base"
    #: Hyper-parameters and their defaults (from the method's paper); the user may override any.
    defaults: ClassVar[dict[str, Any]] = {}
    #: Post-processing methods and InD need the group at inference time.
    needs_groups_at_inference: ClassVar[bool] = False

    def __init__(self, **params: Any):
        unknown = sorted(set(params) - set(self.defaults))
        if unknown:
            raise ValueError(f"method {self.name!r} has no parameter(s) {unknown}; valid: {sorted(self.defaults)}")
        self.params: dict[str, Any] = {**self.defaults, **params}
        self.extra = nn.ModuleDict()  # extra trainable modules (adversary, group heads); saved with the model
        self.log: dict[str, list] = {}  # what the method wants reported (e.g. GroupDRO weights per epoch)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({', '.join(f'{k}={v!r}' for k, v in self.params.items())})"

    # --- set-up ------------------------------------------------------------------------------------
    def setup(self, model: nn.Module, train, config) -> None:
        """Called once before training: create extra modules/state from the training data."""

    def sampler(self, train, generator: torch.Generator) -> torch.utils.data.Sampler | None:
        """A custom sampler (resampling); None = shuffled mini-batches."""
        return None

    def parameters(self, model: nn.Module) -> list[nn.Parameter]:
        """The parameters the optimiser updates: trainable model parameters and extra modules."""
        params = [p for p in model.parameters() if p.requires_grad]
        return params + [p for p in self.extra.parameters() if p.requires_grad]

    def make_optimizer(self, model: nn.Module, config) -> torch.optim.Optimizer:
        from medequity.training.trainer import build_optimizer

        return build_optimizer(self.parameters(model), config)

    # --- training ----------------------------------------------------------------------------------
    def logits(self, model: nn.Module, x: torch.Tensor, groups: torch.Tensor | None = None) -> torch.Tensor:
        return model(x)

    def per_sample_loss(self, logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return F.binary_cross_entropy_with_logits(logits, y, reduction="none")

    def loss(self, model: nn.Module, batch: dict) -> torch.Tensor:
        logits = self.logits(model, batch["x"], batch["group"])
        return self.per_sample_loss(logits, batch["y"]).mean()

    def training_step(self, model: nn.Module, batch: dict, optimizer: torch.optim.Optimizer) -> dict[str, float]:
        optimizer.zero_grad(set_to_none=True)
        loss = self.loss(model, batch)
        loss.backward()
        optimizer.step()
        return {"loss": float(loss.detach())}

    def on_epoch_end(self, model: nn.Module, epoch: int, val_scores: np.ndarray | None) -> None:
        """After each epoch (SWAD collects weights here)."""

    # --- after training ----------------------------------------------------------------------------
    def finalize(self, model: nn.Module, train, val, predict) -> None:
        """After the best checkpoint is restored: e.g. pruning, fitting a post-processor on val.
        ``predict(model, data)`` gives the method's scores on a split."""

    def postprocess(self, scores: np.ndarray, groups: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        """(scores, hard predictions or None): post-processing methods return predictions."""
        return scores, None

    def fit(self, model: nn.Module, train, val, config, trainer):
        """Train ``model``; multi-stage methods override this and call ``trainer.fit`` per stage."""
        return trainer.fit(model, self, train, val, config)

    def state(self) -> dict[str, Any]:
        """Anything beyond ``extra`` that a saved model needs (e.g. fitted thresholds)."""
        return {}
