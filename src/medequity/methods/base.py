"""The method interface: a bias-mitigation method is a set of hooks into one training loop.

Most methods change one thing — the loss (FIS, GroupDRO), the sampler (resampling), extra heads
(adversarial, InD), the optimiser (SAM), the end of training (SWAD, FairPrune, post-processing) —
so each overrides only that hook. Every epoch of every method runs in
:meth:`medequity.training.trainer.Trainer.fit`; methods with several stages (FairDi, FSCL, Fair
Diagnosis) override :meth:`Method.fit` only to *sequence* stages, each one a ``trainer.fit`` call.
Methods with several optimisers (Fair Diagnosis's generator and discriminator) return them from
:meth:`Method.make_optimizers` and use them all in :meth:`Method.training_step`. A method never
reads files: it gets :class:`~medequity.training.data.SplitData`.

Hook order in one ``trainer.fit`` (one stage)::

    setup → make_optimizers → sampler → make_schedulers
    per epoch: train_mode → (training_step, schedulers step) per batch → epoch_metrics
               → validation scores → on_epoch_end → checkpoint selection (keep_last_epoch)
    restore the kept checkpoint → finalize
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from medequity.registry import Registry
from medequity.training.segmentation import is_mask_target, segmentation_per_sample_loss

if TYPE_CHECKING:
    from torch.optim.lr_scheduler import LRScheduler

    from medequity.training.data import SplitData
    from medequity.training.trainer import FitResult, TrainConfig, Trainer

#: A training batch: "x" (inputs), "y" (float labels), "group" (int codes, -1 = unknown), ...
Batch = dict[str, Any]
#: ``predict(model, data)``: the method's scores P(y=1) on a split (the trainer's predict).
Predict = Callable[[nn.Module, "SplitData"], np.ndarray]

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
    #: True: :meth:`logits` reads each sample's group at inference (InD's per-group heads), so the
    #: trainer's predict passes it; False: predict passes ``groups=None``. Post-processing methods
    #: also set it: :meth:`postprocess` decides from the groups.
    needs_groups_at_inference: ClassVar[bool] = False
    #: True: the trainer keeps the last epoch's weights whatever the selection criterion (which it
    #: still computes and reports) — e.g. Fair Diagnosis's generator; False: the best epoch.
    keep_last_epoch: bool = False
    #: The tasks the method trains (a benchmark spec lists a method only for these): methods that
    #: also handle mask targets (segmentation usages) say so.
    tasks: ClassVar[tuple[str, ...]] = ("classification",)

    def __init__(self, **params: Any):
        unknown = sorted(set(params) - set(self.defaults))
        if unknown:
            raise ValueError(f"method {self.name!r} has no parameter(s) {unknown}; valid: {sorted(self.defaults)}")
        self.params: dict[str, Any] = {**self.defaults, **params}
        self.extra = nn.ModuleDict()  # extra trainable modules (adversary, group heads); saved with the model
        self.log: dict[str, list] = {}  # what the method wants reported (e.g. GroupDRO weights per epoch)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({', '.join(f'{k}={v!r}' for k, v in self.params.items())})"

    def require_non_negative(self, *keys: str) -> None:
        """Loss weights and similar parameters: a clear error unless each is a number >= 0."""
        for key in keys:
            if not float(self.params[key]) >= 0:
                raise ValueError(f"{self.name}'s {key} must be >= 0; got {self.params[key]!r}")

    def planned_epochs(self, config: TrainConfig) -> int:
        """Epochs :meth:`fit` runs at most, over all its stages (a progress bar's total)."""
        return int(config.epochs)

    # --- set-up ------------------------------------------------------------------------------------
    def setup(self, model: nn.Module, train: SplitData, config: TrainConfig) -> None:
        """Called once per stage before training (after the trainer seeded the RNGs): create extra
        modules/state from the training data."""

    def sampler(self, train: SplitData, generator: torch.Generator) -> torch.utils.data.Sampler | None:
        """A custom sampler (resampling); None = shuffled mini-batches."""
        return None

    def parameters(self, model: nn.Module) -> list[nn.Parameter]:
        """The parameters the optimiser updates: trainable model parameters and extra modules."""
        params = [p for p in model.parameters() if p.requires_grad]
        return params + [p for p in self.extra.parameters() if p.requires_grad]

    def make_optimizers(self, model: nn.Module, config: TrainConfig) -> dict[str, torch.optim.Optimizer]:
        """The optimisers :meth:`training_step` receives, by name. Default: ``{"model": ...}``, the
        configured optimiser (``config.optimizer``, lr, weight decay) on :meth:`parameters`. The
        history's ``lr`` column reports the first one's learning rate."""
        from medequity.training.trainer import build_optimizer

        return {"model": build_optimizer(self.parameters(model), config)}

    def make_schedulers(self, optimizers: Mapping[str, torch.optim.Optimizer], config: TrainConfig,
                        steps_per_epoch: int) -> dict[str, LRScheduler]:
        """Learning-rate schedulers by optimiser name, stepped by the trainer after every
        mini-batch. Default: ``config.scheduler`` for every optimiser; return ``{}`` for none."""
        from medequity.training.trainer import build_scheduler

        schedulers = {name: build_scheduler(optimizer, config, steps_per_epoch) for name, optimizer in optimizers.items()}
        return {name: scheduler for name, scheduler in schedulers.items() if scheduler is not None}

    # --- training ----------------------------------------------------------------------------------
    def logits(self, model: nn.Module, x: torch.Tensor, groups: torch.Tensor | None = None) -> torch.Tensor:
        return model(x)

    def per_sample_loss(self, logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """(B,) loss per sample: BCE on a label; on an integer mask target (segmentation usages)
        FairSeg's 0.2·CE + 0.8·Dice per sample (:mod:`medequity.training.segmentation`)."""
        if is_mask_target(y):
            return segmentation_per_sample_loss(logits, y)
        return F.binary_cross_entropy_with_logits(logits, y, reduction="none")

    def loss(self, model: nn.Module, batch: Batch) -> torch.Tensor:
        logits = self.logits(model, batch["x"], batch["group"])
        return self.per_sample_loss(logits, batch["y"]).mean()

    def train_mode(self, model: nn.Module) -> None:
        """Train/eval mode of the model and the extra modules during a training epoch (validation
        puts both in eval mode). Default: both train; a frozen model can stay in eval mode."""
        model.train()
        self.extra.train()

    def training_step(self, model: nn.Module, batch: Batch, optimizers: Mapping[str, torch.optim.Optimizer]) -> dict[str, float]:
        """One update on one mini-batch with the optimisers of :meth:`make_optimizers`; returns the
        step's statistics (``"loss"`` at least, for the default :meth:`epoch_metrics`)."""
        optimizer = optimizers["model"]
        optimizer.zero_grad(set_to_none=True)
        loss = self.loss(model, batch)
        loss.backward()
        optimizer.step()
        return {"loss": float(loss.detach())}

    def epoch_metrics(self, steps: Sequence[Mapping[str, float]]) -> dict[str, float]:
        """The epoch's history columns from its steps' statistics: ``"train_loss"`` (default: the
        mean step loss; NaN without steps) and any extra columns, which follow ``lr`` and
        ``seconds`` in the row. A method may also append per-epoch aggregates to :attr:`log` here."""
        return {"train_loss": float(np.mean([s["loss"] for s in steps])) if steps else float("nan")}

    def on_epoch_end(self, model: nn.Module, epoch: int, val_scores: np.ndarray, summary: Mapping[str, float]) -> None:
        """After each epoch's validation: ``val_scores`` on the whole validation split and their
        ``summary`` (:func:`~medequity.training.trainer.validation_summary`). SWAD collects weights here."""

    # --- after training ----------------------------------------------------------------------------
    def finalize(self, model: nn.Module, train: SplitData, val: SplitData, predict: Predict) -> None:
        """After the best checkpoint is restored: e.g. pruning, fitting a post-processor on val.
        ``predict(model, data)`` gives the method's scores on a split."""

    def postprocess(self, scores: np.ndarray, groups: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        """(scores, hard predictions or None): post-processing methods return predictions."""
        return scores, None

    def fit(self, model: nn.Module, train: SplitData, val: SplitData, config: TrainConfig, trainer: Trainer) -> FitResult:
        """Train ``model``; multi-stage methods override this and call ``trainer.fit`` per stage."""
        return trainer.fit(model, self, train, val, config)

    def state(self) -> dict[str, Any]:
        """Anything beyond ``extra`` that a saved model needs (e.g. fitted thresholds)."""
        return {}

    def explain(self, model: nn.Module, data: SplitData, *, seed: int = 0) -> Any | None:
        """Extra artifacts of a trained method on a split (e.g. Fair Diagnosis's masks), or None.

        Returns plain explanation results (data, not rendered figures); the report layer renders
        them and the experiment's ``save`` stores them. ``seed`` drives any random choice (e.g.
        which images to explain). Default: None (nothing beyond the standard outputs)."""
        return None
