"""One training loop for every method and usage, with the defaults of FairMedFM D.1.3.

AdamW, cosine schedule, batch 128, weight decay 0.05, LR 2.5e-4 (FairMedFM's LP search); early
stopping and checkpoint selection on a validation criterion computed on the *whole* validation set
(worst-group AUC by default — MEDFAIR showed selection decides results, so the rule is recorded).
"""

from __future__ import annotations

import copy
import math
import random
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from medequity.metrics.weighted import SampleSet, evaluate

# "last" keeps the final epoch (e.g. to study overfitting, FairTune Fig. 1); the others keep the
# epoch with the best value on the whole validation set.
SELECTION_CRITERIA = ("worst_group_auc", "auc", "es_auc", "neg_loss", "last")


@dataclass
class TrainConfig:
    epochs: int = 30
    batch_size: int = 128
    lr: float = 2.5e-4
    weight_decay: float = 0.05
    optimizer: str = "adamw"  # adamw | adam | sgd
    momentum: float = 0.9
    scheduler: str = "cosine"  # cosine | step | none
    step_size: int = 10  # for scheduler="step" (FairDi: x0.1 every 10 epochs)
    gamma: float = 0.1
    patience: int | None = 5  # epochs without improvement before stopping (None = never)
    selection: str = "worst_group_auc"  # validation criterion for checkpoint selection
    seed: int = 0
    device: str = "auto"
    num_workers: int = 0
    eval_batch_size: int = 512

    def __post_init__(self) -> None:
        if self.selection not in SELECTION_CRITERIA:
            raise ValueError(f"selection must be one of {SELECTION_CRITERIA}; got {self.selection!r}")
        if self.optimizer not in ("adamw", "adam", "sgd"):
            raise ValueError(f"optimizer must be adamw, adam or sgd; got {self.optimizer!r}")

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


def build_optimizer(params, config: TrainConfig) -> torch.optim.Optimizer:
    params = list(params)
    if not params:
        raise ValueError("nothing to train: every parameter is frozen (evaluation-only usages such as clip_zs need train epochs=0)")
    if config.optimizer == "sgd":
        return torch.optim.SGD(params, lr=config.lr, momentum=config.momentum, weight_decay=config.weight_decay)
    if config.optimizer == "adam":
        return torch.optim.Adam(params, lr=config.lr, weight_decay=config.weight_decay)
    return torch.optim.AdamW(params, lr=config.lr, weight_decay=config.weight_decay)


def build_scheduler(optimizer, config: TrainConfig, steps_per_epoch: int):
    if config.scheduler == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=max(1, config.epochs * steps_per_epoch))
    if config.scheduler == "step":
        return torch.optim.lr_scheduler.StepLR(optimizer, step_size=config.step_size * steps_per_epoch, gamma=config.gamma)
    return None


def _to_device(batch: dict, device: torch.device) -> dict:
    return {k: v.to(device, non_blocking=True) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}


@torch.no_grad()
def predict_scores(model, method, data, *, batch_size: int = 512, device: torch.device | str = "cpu") -> np.ndarray:
    """P(y=1) for every sample of ``data`` (model in eval mode, method's own inference path)."""
    model.eval()
    method.extra.eval()
    loader = torch.utils.data.DataLoader(data.items, batch_size=batch_size, shuffle=False)
    out = []
    for batch in loader:
        batch = _to_device(batch, torch.device(device))
        out.append(torch.sigmoid(method.logits(model, batch["x"], batch["group"]).float()).cpu().numpy())
    return np.concatenate(out) if out else np.zeros(0)


def validation_summary(labels: np.ndarray, scores: np.ndarray, groups: np.ndarray, n_groups: int) -> dict[str, float]:
    """Overall AUC, per-group AUCs, worst-group AUC, ES-AUC (std form) and BCE on a whole split."""
    from medequity.metrics import aggregate

    def auc(index):
        return float(evaluate("auc", SampleSet(labels[index], scores[index], None))[0])

    everyone = np.arange(len(labels))
    overall = auc(everyone)
    group_aucs = np.array([auc(np.flatnonzero(groups == g)) for g in range(n_groups)])
    clipped = np.clip(scores, 1e-7, 1 - 1e-7)
    loss = float(-np.mean(labels * np.log(clipped) + (1 - labels) * np.log(1 - clipped)))
    summary = {"auc": overall, "bce": loss, "neg_loss": -loss}
    defined = group_aucs[np.isfinite(group_aucs)]
    summary["worst_group_auc"] = float(defined.min()) if defined.size else float("nan")
    summary["es_auc"] = float(aggregate.equity_scaled(overall, defined)) if defined.size >= 2 else float("nan")
    for g, value in enumerate(group_aucs):
        summary[f"auc_group{g}"] = float(value)
    return summary


class Trainer:
    """Runs a method on a model. ``progress(info)`` is called after every epoch (for bars/logs)."""

    def __init__(self, progress: Callable[[dict], None] | None = None, checkpoint_dir: str | Path | None = None):
        self.progress = progress
        self.checkpoint_dir = Path(checkpoint_dir) if checkpoint_dir is not None else None

    def predict(self, model, method, data, config: TrainConfig) -> np.ndarray:
        return predict_scores(model, method, data, batch_size=config.eval_batch_size, device=config.resolved_device())

    def fit(self, model, method, train, val, config: TrainConfig, *, stage: str = "") -> FitResult:
        start = time.perf_counter()
        device = config.resolved_device()
        generator = seed_everything(config.seed)
        model.to(device)
        method.setup(model, train, config)
        method.extra.to(device)
        if config.epochs == 0:
            # Evaluation-only usages (CLIP zero-shot, FairMedFM §3.2) train nothing: no optimiser, the
            # model stays as built, post-training hooks (e.g. threshold fitting) still run.
            method.finalize(model, train, val, lambda m, d: self.predict(m, method, d, config))
            return FitResult(pd.DataFrame(), -1, math.nan, config.selection, time.perf_counter() - start)
        optimizer = method.make_optimizer(model, config)
        sampler = method.sampler(train, generator)
        loader = torch.utils.data.DataLoader(
            train.items, batch_size=config.batch_size, shuffle=sampler is None, sampler=sampler,
            generator=generator if sampler is None else None, num_workers=config.num_workers, drop_last=False,
        )
        scheduler = build_scheduler(optimizer, config, max(1, len(loader)))
        best_value, best_epoch, best_state, stale = -math.inf, -1, None, 0
        rows = []
        for epoch in range(config.epochs):
            epoch_start = time.perf_counter()
            model.train()
            method.extra.train()
            losses = []
            for batch in loader:
                stats = method.training_step(model, _to_device(batch, device), optimizer)
                losses.append(stats["loss"])
                if scheduler is not None:
                    scheduler.step()
            val_scores = self.predict(model, method, val, config)
            summary = validation_summary(val.labels, val_scores, val.groups, val.n_groups)
            method.on_epoch_end(model, epoch, val_scores)
            keep_last = config.selection == "last"
            value = summary["auc" if keep_last else config.selection]
            improved = keep_last or (np.isfinite(value) and value > best_value)
            if improved or best_state is None:
                best_value, best_epoch, stale = (value if np.isfinite(value) else -math.inf), epoch, 0
                best_state = (copy.deepcopy(model.state_dict()), copy.deepcopy(method.extra.state_dict()))
            else:
                stale += 1
            row = {"stage": stage, "epoch": epoch, "train_loss": float(np.mean(losses)) if losses else float("nan"),
                   "lr": optimizer.param_groups[0]["lr"], "seconds": time.perf_counter() - epoch_start,
                   **{f"val_{k}": v for k, v in summary.items()}}
            rows.append(row)
            if self.progress is not None:
                self.progress({**row, "epochs": config.epochs, "selection": config.selection, "best_epoch": best_epoch})
            if config.patience is not None and stale > config.patience:
                break
        model.load_state_dict(best_state[0])
        method.extra.load_state_dict(best_state[1])
        method.finalize(model, train, val, lambda m, d: self.predict(m, method, d, config))
        if self.checkpoint_dir is not None:
            save_checkpoint(self.checkpoint_dir / f"{stage or 'model'}.safetensors", model, method)
        return FitResult(pd.DataFrame(rows), best_epoch, float(best_value), config.selection, time.perf_counter() - start)


def save_checkpoint(path: Path, model, method) -> Path:
    """Model and method weights as safetensors (loadable without executing code), written atomically."""
    from safetensors.torch import save_file

    from medequity.utils.io import atomic_write_bytes

    tensors = {f"model.{k}": v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    tensors.update({f"method.{k}": v.detach().cpu().contiguous() for k, v in method.extra.state_dict().items()})
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    save_file(tensors, str(tmp), metadata={"method": method.name})
    atomic_write_bytes(path, tmp.read_bytes())
    tmp.unlink()
    return path
