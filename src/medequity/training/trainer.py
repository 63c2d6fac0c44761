"""One training loop for every method and usage, with the defaults of FairMedFM D.1.3.

AdamW, cosine schedule, batch 128, weight decay 0.05, LR 2.5e-4 (FairMedFM's LP search); early
stopping and checkpoint selection on a validation criterion computed on the *whole* validation set
(worst-group AUC by default — MEDFAIR showed selection decides results, so the rule is recorded).

Every epoch of every method runs in :meth:`Trainer.fit`; a method plugs in through the hooks of
:class:`TrainableMethod` (implemented by :class:`medequity.methods.base.Method`: its optimisers by
name, their schedulers, the train/eval mode of an epoch, one step with all optimisers, per-epoch
history columns). Multi-stage methods call ``fit`` once per stage. Observers are callbacks
(:mod:`medequity.training.callbacks`), not subclasses. This module imports no method and nothing
above the training layer.
"""

from __future__ import annotations

import copy
import math
import random
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np
import pandas as pd
import torch
from torch import nn
from torch.optim.lr_scheduler import LRScheduler

from medequity.metrics.summary import group_auc_summary
from medequity.training.callbacks import Callback, EpochInfo, ProgressCallback
from medequity.utils.io import atomic_save_safetensors

if TYPE_CHECKING:
    from medequity.training.data import SplitData

# "last" keeps the final epoch (e.g. to study overfitting, FairTune Fig. 1); the others keep the
# epoch with the best value on the whole validation set. The Dice criteria are measured by
# segmentation models (their ``validation_summary``, :mod:`medequity.training.segmentation`).
SELECTION_CRITERIA = ("worst_group_auc", "auc", "es_auc", "neg_loss", "last", "worst_group_dice", "dice", "es_dice")
SCHEDULERS = ("cosine", "step", "poly", "none")


@dataclass
class TrainConfig:
    epochs: int = 30
    batch_size: int = 128
    lr: float = 2.5e-4
    weight_decay: float = 0.05
    optimizer: str = "adamw"  # adamw | adam | sgd
    momentum: float = 0.9
    scheduler: str = "cosine"  # cosine | step | poly | none
    step_size: int = 10  # for scheduler="step" (FairDi: x0.1 every 10 epochs)
    gamma: float = 0.1
    warmup_steps: int = 0  # for scheduler="poly": linear warm-up over this many mini-batches (SAMed)
    power: float = 0.9  # for scheduler="poly": (1 − t)^power decay after the warm-up (SAMed)
    patience: int | None = 5  # epochs without improvement before stopping (None = never)
    selection: str = "worst_group_auc"  # validation criterion for checkpoint selection
    seed: int = 0
    device: str = "auto"
    num_workers: int = 0
    eval_batch_size: int = 512  # segmentation models: at most batch_size (see eval_batch_size())

    def __post_init__(self) -> None:
        if self.selection not in SELECTION_CRITERIA:
            raise ValueError(f"selection must be one of {SELECTION_CRITERIA}; got {self.selection!r}")
        if self.optimizer not in ("adamw", "adam", "sgd"):
            raise ValueError(f"optimizer must be adamw, adam or sgd; got {self.optimizer!r}")
        if self.scheduler not in SCHEDULERS:
            raise ValueError(f"scheduler must be one of {SCHEDULERS}; got {self.scheduler!r}")

    def resolved_device(self) -> torch.device:
        if self.device == "auto":
            return torch.device("cuda" if torch.cuda.is_available() else "cpu")
        return torch.device(self.device)

    def replace(self, **changes) -> TrainConfig:
        return TrainConfig(**{**asdict(self), **changes})


@dataclass
class FitResult:
    history: pd.DataFrame
    best_epoch: int
    best_value: float
    selection: str
    seconds: float
    stages: dict = field(default_factory=dict)  # multi-stage methods record each stage's result


def seed_everything(seed: int) -> torch.Generator:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    generator = torch.Generator()
    generator.manual_seed(seed)
    return generator


def build_optimizer(params: Iterable[nn.Parameter], config: TrainConfig) -> torch.optim.Optimizer:
    params = list(params)
    if not params:
        raise ValueError("nothing to train: every parameter is frozen (evaluation-only usages such as clip_zs need train epochs=0)")
    if config.optimizer == "sgd":
        return torch.optim.SGD(params, lr=config.lr, momentum=config.momentum, weight_decay=config.weight_decay)
    if config.optimizer == "adam":
        return torch.optim.Adam(params, lr=config.lr, weight_decay=config.weight_decay)
    return torch.optim.AdamW(params, lr=config.lr, weight_decay=config.weight_decay)


def build_scheduler(optimizer: torch.optim.Optimizer, config: TrainConfig, steps_per_epoch: int) -> LRScheduler | None:
    """``config.scheduler`` stepped after every mini-batch: cosine over all steps, ×``gamma`` every
    ``step_size`` epochs, ``poly`` (SAMed's: linear warm-up over ``warmup_steps`` mini-batches, then
    ``(1 − t)^power`` with ``t`` the fraction of the remaining steps done), or None."""
    if config.scheduler == "poly":
        total, warmup, power = max(1, config.epochs * steps_per_epoch), int(config.warmup_steps), float(config.power)

        def factor(step: int) -> float:
            if step < warmup:
                return (step + 1) / warmup
            return max(0.0, 1.0 - (step - warmup) / max(1, total - warmup)) ** power

        return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
    if config.scheduler == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=max(1, config.epochs * steps_per_epoch))
    if config.scheduler == "step":
        return torch.optim.lr_scheduler.StepLR(optimizer, step_size=config.step_size * steps_per_epoch, gamma=config.gamma)
    return None


def _to_device(batch: dict, device: torch.device) -> dict:
    return {k: v.to(device, non_blocking=True) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}


class TrainableMethod(Protocol):
    """What the trainer needs of a method: the hooks of :class:`medequity.methods.base.Method`
    (documented there). Structural, so the training layer never imports ``medequity.methods``."""

    extra: nn.ModuleDict
    log: dict[str, list]

    @property
    def name(self) -> str: ...

    @property
    def needs_groups_at_inference(self) -> bool: ...

    @property
    def keep_last_epoch(self) -> bool: ...

    def setup(self, model: nn.Module, train: SplitData, config: TrainConfig) -> None: ...

    def sampler(self, train: SplitData, generator: torch.Generator) -> torch.utils.data.Sampler | None: ...

    def make_optimizers(self, model: nn.Module, config: TrainConfig) -> dict[str, torch.optim.Optimizer]: ...

    def make_schedulers(self, optimizers: Mapping[str, torch.optim.Optimizer], config: TrainConfig,
                        steps_per_epoch: int) -> dict[str, LRScheduler]: ...

    def train_mode(self, model: nn.Module) -> None: ...

    def training_step(self, model: nn.Module, batch: dict[str, Any],
                      optimizers: Mapping[str, torch.optim.Optimizer]) -> dict[str, float]: ...

    def epoch_metrics(self, steps: Sequence[Mapping[str, float]]) -> dict[str, float]: ...

    def on_epoch_end(self, model: nn.Module, epoch: int, val_scores: np.ndarray, summary: Mapping[str, float]) -> None: ...

    def logits(self, model: nn.Module, x: torch.Tensor, groups: torch.Tensor | None = None) -> torch.Tensor: ...

    def finalize(self, model: nn.Module, train: SplitData, val: SplitData,
                 predict: Callable[[nn.Module, SplitData], np.ndarray]) -> None: ...


@torch.no_grad()
def predict_scores(model: nn.Module, method: TrainableMethod, data: SplitData, *, batch_size: int = 512,
                   device: torch.device | str = "cpu") -> np.ndarray:
    """P(y=1) for every sample of ``data`` (model in eval mode, method's own inference path).

    The samples' groups reach ``method.logits`` only for methods that declare
    ``needs_groups_at_inference`` (e.g. InD's per-group heads); every other method gets ``None``,
    so its scores cannot depend on the group by accident. A model with ``validation_scores(logits,
    batch)`` (segmentation: per-sample Dice, :mod:`medequity.training.segmentation`) scores its
    samples itself instead of the sigmoid."""
    model.eval()
    method.extra.eval()
    loader = torch.utils.data.DataLoader(data.items, batch_size=batch_size, shuffle=False)
    with_groups = bool(getattr(method, "needs_groups_at_inference", False))
    own_scores = getattr(model, "validation_scores", None)
    out = []
    for batch in loader:
        batch = _to_device(batch, torch.device(device))
        groups = batch["group"] if with_groups else None
        logits = method.logits(model, batch["x"], groups)
        scores = own_scores(logits, batch) if own_scores is not None else torch.sigmoid(logits.float())
        out.append(scores.float().cpu().numpy())
    return np.concatenate(out) if out else np.zeros(0)


def eval_batch_size(model: nn.Module, config: TrainConfig) -> int:
    """Samples per evaluation batch: ``config.eval_batch_size``, but for a model that scores its own
    samples (segmentation: a Dice per mask, ``validation_scores``) at most ``config.batch_size``. Such
    a model's output per sample is as large as its input (a ``(K, *spatial)`` logit map), so one
    batch of 512 would hold a whole 3D validation split, its activations and its logits at once;
    a training batch already fits, with its gradients, so evaluation stays within it."""
    if hasattr(model, "validation_scores"):
        return max(1, min(config.eval_batch_size, config.batch_size))
    return config.eval_batch_size


def validation_summary(labels: np.ndarray, scores: np.ndarray, groups: np.ndarray, group_names: Sequence[str] | int) -> dict[str, float]:
    """Overall AUC, per-group AUCs (``auc_group{g}``), worst-group AUC, ES-AUC (std form), BCE and
    its negative on a whole split: the trainer's view of
    :func:`medequity.metrics.summary.group_auc_summary` (groups without an AUC are skipped)."""
    names = tuple(str(g) for g in range(group_names)) if isinstance(group_names, int) else tuple(group_names)
    summary = group_auc_summary(labels, scores, groups, names, undefined="skip", warn=False)
    out = {"auc": summary["auc"], "bce": summary["bce"], "neg_loss": -summary["bce"],
           "worst_group_auc": summary["worst_group_auc"], "es_auc": summary["es_auc_std"]}
    out.update({f"auc_group{g}": summary[f"auc:{name}"] for g, name in enumerate(names)})
    return out


class Trainer:
    """Runs a method on a model: every epoch of every method runs in :meth:`fit`.

    ``callbacks`` observe the run (see :mod:`medequity.training.callbacks`); ``progress(row)`` is
    shorthand for a :class:`~medequity.training.callbacks.ProgressCallback`, called after the
    other callbacks. ``checkpoint_dir``: each stage's selected weights are saved there as
    ``<stage or "model">.safetensors``.
    """

    def __init__(self, progress: Callable[[dict], None] | None = None, checkpoint_dir: str | Path | None = None,
                 callbacks: Sequence[Callback] = ()):
        self.progress = progress
        self.checkpoint_dir = Path(checkpoint_dir) if checkpoint_dir is not None else None
        self.callbacks: list[Callback] = list(callbacks)
        if progress is not None:
            self.callbacks.append(ProgressCallback(progress))

    def predict(self, model: nn.Module, method: TrainableMethod, data: SplitData, config: TrainConfig) -> np.ndarray:
        scores = predict_scores(model, method, data, batch_size=eval_batch_size(model, config), device=config.resolved_device())
        for callback in self.callbacks:
            callback.on_predict(data, scores)
        return scores

    def fit(self, model: nn.Module, method: TrainableMethod, train: SplitData, val: SplitData, config: TrainConfig, *,
            stage: str = "") -> FitResult:
        """Train ``model`` with ``method`` for ``config.epochs`` epochs (one stage).

        Per epoch: ``method.train_mode(model)``; for each mini-batch ``method.training_step(model,
        batch, optimizers)`` then every scheduler steps; ``method.epoch_metrics`` turns the steps'
        stats into history columns; the whole validation split is scored; ``method.on_epoch_end``;
        the selection rule keeps the best epoch's weights (the last with ``selection="last"`` or a
        method whose ``keep_last_epoch`` is set); callbacks; early stopping after ``patience``
        epochs without improvement. Then the kept weights are restored and ``method.finalize`` runs.
        """
        start = time.perf_counter()
        device = config.resolved_device()
        generator = seed_everything(config.seed)
        model.to(device)
        method.setup(model, train, config)
        method.extra.to(device)
        for callback in self.callbacks:
            callback.on_fit_start(self, model, method, train, val, config, stage)
        if config.epochs == 0:
            # Evaluation-only usages (CLIP zero-shot, FairMedFM §3.2) train nothing: no optimiser, the
            # model stays as built, post-training hooks (e.g. threshold fitting) still run.
            method.finalize(model, train, val, lambda m, d: self.predict(m, method, d, config))
            return self._end(FitResult(pd.DataFrame(), -1, math.nan, config.selection, time.perf_counter() - start))
        optimizers = dict(method.make_optimizers(model, config))
        if not optimizers:
            raise ValueError(f"method {method.name!r} made no optimiser")
        sampler = method.sampler(train, generator)
        loader = torch.utils.data.DataLoader(
            train.items, batch_size=config.batch_size, shuffle=sampler is None, sampler=sampler,
            generator=generator if sampler is None else None, num_workers=config.num_workers, drop_last=False,
        )
        schedulers = list(method.make_schedulers(optimizers, config, max(1, len(loader))).values())
        reported = next(iter(optimizers.values()))  # the "lr" column: the first optimiser's first group
        keep_last = config.selection == "last" or bool(getattr(method, "keep_last_epoch", False))
        best_value, best_epoch, best_state, stale = -math.inf, -1, None, 0
        rows = []
        for epoch in range(config.epochs):
            epoch_start = time.perf_counter()
            method.train_mode(model)
            steps = []
            for batch in loader:
                steps.append(method.training_step(model, _to_device(batch, device), optimizers))
                for scheduler in schedulers:
                    scheduler.step()
            columns = dict(method.epoch_metrics(steps))
            val_scores = self.predict(model, method, val, config)
            own_summary = getattr(model, "validation_summary", None)  # segmentation models: Dice, not AUC
            summary = (own_summary(val, val_scores) if own_summary is not None
                       else validation_summary(val.labels, val_scores, val.groups, val.group_names))
            method.on_epoch_end(model, epoch, val_scores, summary)
            value = _selection_value(summary, config.selection)
            improved = keep_last or (np.isfinite(value) and value > best_value)
            if improved or best_state is None:
                best_value, best_epoch, stale = (value if np.isfinite(value) else -math.inf), epoch, 0
                best_state = (copy.deepcopy(model.state_dict()), copy.deepcopy(method.extra.state_dict()))
            else:
                stale += 1
            row = {"stage": stage, "epoch": epoch, "train_loss": columns.pop("train_loss", math.nan),
                   "lr": reported.param_groups[0]["lr"], "seconds": time.perf_counter() - epoch_start,
                   **columns, **{f"val_{k}": v for k, v in summary.items()}}
            rows.append(row)
            info = EpochInfo(row, epoch, config.epochs, stage, val_scores, best_epoch, config.selection)
            for callback in self.callbacks:
                callback.on_epoch_end(info)
            if config.patience is not None and stale > config.patience:
                break
        assert best_state is not None  # epochs >= 1: the first epoch always sets it
        model.load_state_dict(best_state[0])
        method.extra.load_state_dict(best_state[1])
        method.finalize(model, train, val, lambda m, d: self.predict(m, method, d, config))
        if self.checkpoint_dir is not None:
            save_checkpoint(self.checkpoint_dir / f"{stage or 'model'}.safetensors", model, method)
        return self._end(FitResult(pd.DataFrame(rows), best_epoch, float(best_value), config.selection,
                                   time.perf_counter() - start))

    def _end(self, result: FitResult) -> FitResult:
        for callback in self.callbacks:
            callback.on_fit_end(result)
        return result


def _selection_value(summary: Mapping[str, float], selection: str) -> float:
    """The validation value ``selection`` keeps the best epoch by (``last``: the first one measured,
    for the history only); an error naming what this model's validation measures otherwise."""
    if selection == "last":
        return float(summary.get("auc", next(iter(summary.values()), math.nan)))
    if selection not in summary:
        measured = [c for c in SELECTION_CRITERIA if c in summary or c == "last"]
        raise ValueError(f"selection {selection!r} is not measured on this model's validation split; it measures "
                         f"{measured}: set train.selection to one of them")
    return float(summary[selection])


def save_checkpoint(path: Path, model: nn.Module, method: TrainableMethod) -> Path:
    """Model and method weights as safetensors (loadable without executing code), written atomically."""
    tensors = {f"model.{k}": v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    tensors.update({f"method.{k}": v.detach().cpu().contiguous() for k, v in method.extra.state_dict().items()})
    return atomic_save_safetensors(path, tensors, metadata={"method": method.name})
