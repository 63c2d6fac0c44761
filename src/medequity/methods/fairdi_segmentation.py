"""FairDi for segmentation (Masroor et al., "Fair Distillation", §3 and the segmentation
experiments of §4.3; METHODS.md "FairDi": "the same three steps with a segmentation network,
pixel-wise KL"). Registered as ``fairdi_seg``; ``fairdi`` is the classification form
(:mod:`medequity.methods.fairdi`), whose per-sample binary KL and heads on pooled features do not
apply to label maps.

The network is split into an encoder and a *decoder* (:mod:`medequity.methods._segmentation`:
SAMed's mask decoder for ``seg_decoder``/``seg_lora``, the output block of a ``seg_ft`` network).

Step 0 — the whole trainable model on all data with the FIS loss (eq. 1) on the per-sample
segmentation loss ℓ_i = 0.2·CE + 0.8·Dice, c = ``step0_c`` (0.5). CutMix is not used (it mixes
image-level labels; FairDi does not say how masks were mixed).

Step 1 — one teacher decoder per group g on the *frozen* step-0 encoder, trained on D_g only
(eq. 2) with FIS c = ``teacher_c`` (0: individual scaling); early stopping and selection on group
g's validation Dice.

Step 2 — the student decoder on the frozen encoder, per sample (eq. 3 with a pixel-wise KL)::

    λ·τ²·(1/|Ω|) Σ_{p∈Ω} KL[ s_i(p) ‖ t_{a_i,τ}(p) ] + (1 − λ)·w̃_i·ℓ_i

  s_i(p) = softmax over the C + 1 classes of the student's logits at pixel p, t_{a,τ}(p) =
  softmax(z_t/τ) of the teacher of the sample's own group; λ = 0.95, τ = 1.5, c = 0.5 for the FIS
  weights w (no gradient; w̃ = w·N/Σw with ``normalize``, as :mod:`~medequity.methods.fairdi`).
  ``kd_form="hinton"`` uses KL(t_τ ‖ s_τ) instead. The model's decoder holds the student after
  :meth:`FairDiSegmentation.fit`, so inference needs no group.

Steps 1–2 train decoders alone on the encoder's features, computed once per split and held in
memory (:func:`~medequity.methods._segmentation.feature_split`; for ``seg_decoder`` these are the
cached image embeddings themselves).

Ours (the paper trains TransUNet with AdamW lr 0.01 for 300 epochs, a recipe for that network,
not for a SAM decoder or a small UNet): every stage trains with the user's ``train`` settings
(optimiser, learning rate, schedule, epochs, patience; ``*_epochs`` / ``*_lr`` override one
stage), so FairDi gets the same tuning budget per stage as ERM; teachers and student start from
the step-0 decoder (a new random SAM decoder would start far from any useful solution; the
classification form's new linear heads are cheap to train from scratch); a sample of unknown
group is distilled from the mixture of the teachers (mean of their softened probabilities,
``unknown_group="mean_teacher"``) or gets the segmentation-loss term only (``"ce_only"``); a group
without training samples gets the step-0 decoder as its teacher (``self.log["teacher_fallback"]``).

Recorded: ``FitResult.stages`` ("step0", "teacher-<g>", "student"), ``self.log`` (``stages``,
``teacher_val_dice``, ``teacher_fallback``, ``group_names``); the teachers stay in
``self.extra["teachers"]`` (saved with the model).
"""

from __future__ import annotations

import copy
import math
import time
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
import torch
from torch import nn

from medequity.methods._segmentation import DecoderOnFeatures, decoder_path, feature_split, is_segmentation
from medequity.methods.base import Method, create_method, register_method
from medequity.methods.fairdi import KD_FORMS, UNKNOWN_GROUP, check_distillation_params, stage_log
from medequity.methods.fis import fis_weights

if TYPE_CHECKING:
    from medequity.training.data import SplitData
    from medequity.training.trainer import FitResult, TrainConfig, Trainer

STAGES = ("step0", "teacher", "student")


def teacher_log_probs(teacher_logits: list[torch.Tensor] | torch.Tensor, groups: torch.Tensor, tau: float,
                      unknown_group: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Each sample's target log-probabilities log t_{a_i,τ} (B, K, *spatial) and whether it has one.

    ``teacher_logits``: every teacher's logits for the batch, (G, B, K, *spatial). A sample of
    unknown group gets the mixture (1/G) Σ_g softmax(z_g/τ) (``mean_teacher``) or no target
    (``ce_only``)."""
    stacked = torch.stack(list(teacher_logits)) if isinstance(teacher_logits, list) else teacher_logits
    log_q = torch.log_softmax(stacked.float() / tau, dim=2)  # (G, B, K, ...)
    groups = groups.long().to(stacked.device)
    if bool((groups >= stacked.shape[0]).any()):
        raise ValueError(f"a group code is >= the number of teachers ({stacked.shape[0]})")
    known = groups >= 0
    index = groups.clamp(min=0).view(1, -1, *([1] * (stacked.ndim - 2))).expand(1, *stacked.shape[1:])
    own = log_q.gather(0, index)[0]
    if unknown_group == "mean_teacher":
        mixture = torch.logsumexp(log_q, dim=0) - math.log(stacked.shape[0])
        mask = known.view(-1, *([1] * (own.ndim - 1)))
        return torch.where(mask, own, mixture), torch.ones_like(known)
    if unknown_group == "ce_only":
        return own, known
    raise ValueError(f"unknown_group must be one of {UNKNOWN_GROUP}; got {unknown_group!r}")


def pixel_distillation_kl(student_logits: torch.Tensor, target_log_probs: torch.Tensor, *, tau: float = 1.5,
                          form: str = "eq3") -> torch.Tensor:
    """(B,) per-sample mean over pixels of the KL between the student's class distribution and the
    target's (``target_log_probs`` already softened by τ): ``eq3`` KL(s ‖ t_τ) with the student at
    τ = 1 (eq. 3 as printed); ``hinton`` KL(t_τ ‖ s_τ)."""
    if form not in KD_FORMS:
        raise ValueError(f"form must be one of {KD_FORMS}; got {form!r}")
    if form == "eq3":
        log_p = torch.log_softmax(student_logits.float(), dim=1)
        kl = (log_p.exp() * (log_p - target_log_probs)).sum(dim=1)
    else:
        log_p = torch.log_softmax(student_logits.float() / tau, dim=1)
        kl = (target_log_probs.exp() * (target_log_probs - log_p)).sum(dim=1)
    return kl.flatten(1).mean(dim=1)


class _Student(Method):
    """Step 2 on cached features: the student decoder against the frozen teachers (eq. 3, pixel-wise)."""

    name = "fairdi_seg_student"

    def __init__(self, teachers: nn.ModuleList, *, lam: float, tau: float, c: float, form: str, unknown_group: str,
                 normalize: bool, temperature: float):
        super().__init__()
        self.teachers = teachers  # frozen; not in ``extra``, so no optimiser sees them
        self.lam, self.tau, self.c, self.form = lam, tau, c, form
        self.unknown_group, self.normalize, self.temperature = unknown_group, normalize, temperature

    def loss(self, model, batch: dict) -> torch.Tensor:
        x, groups = batch["x"], batch["group"]
        with torch.no_grad():
            target, has_target = teacher_log_probs([teacher(x) for teacher in self.teachers], groups, self.tau,
                                                   self.unknown_group)
        logits = model(x)
        kd = pixel_distillation_kl(logits, target, tau=self.tau, form=self.form) * has_target.to(logits.dtype)
        seg = self.per_sample_loss(logits, batch["y"])
        weights = fis_weights(seg, groups, self.c, self.temperature).to(seg)
        if self.normalize:
            weights = weights * (weights.numel() / weights.sum().clamp(min=torch.finfo(weights.dtype).tiny))
        return (self.lam * self.tau**2 * kd + (1.0 - self.lam) * weights * seg).mean()


def _freeze(module: nn.Module) -> None:
    for p in module.parameters():
        p.requires_grad_(False)


@register_method
class FairDiSegmentation(Method):
    """FairDi for segmentation: FIS step 0, per-group teacher decoders, one distilled student decoder."""

    name = "fairdi_seg"
    tasks = ("segmentation",)
    defaults = {
        "step0_c": 0.5, "step0_epochs": None, "step0_lr": None,
        "teacher_c": 0.0, "teacher_epochs": None, "teacher_lr": None,
        "lam": 0.95, "tau": 1.5, "student_c": 0.5, "kd_form": "eq3", "unknown_group": "mean_teacher",
        "student_epochs": None, "student_lr": None,
        "normalize": True, "fis_temperature": 1.0,
    }

    def __init__(self, **params):
        super().__init__(**params)
        check_distillation_params(self.params)
        self.group_names: tuple[str, ...] = ()

    def stage_config(self, config: TrainConfig, stage: str) -> TrainConfig:
        """The user's config with the stage's ``*_epochs`` / ``*_lr`` where set; teachers select on
        their own group's validation Dice."""
        p = self.params
        changes: dict = {}
        if p[f"{stage}_epochs"] is not None:
            changes["epochs"] = int(p[f"{stage}_epochs"])
        if p[f"{stage}_lr"] is not None:
            changes["lr"] = float(p[f"{stage}_lr"])
        if stage == "teacher":
            changes["selection"] = "dice"  # on the validation split restricted to the teacher's group
        return config.replace(**changes)

    def fis(self, c: float) -> Method:
        return create_method("fis", c=float(c), temperature=float(self.params["fis_temperature"]),
                             normalize=self.params["normalize"])

    def fit(self, model: nn.Module, train: SplitData, val: SplitData, config: TrainConfig, trainer: Trainer) -> FitResult:
        from medequity.training.trainer import FitResult

        if not is_segmentation(train):
            raise ValueError("fairdi_seg is FairDi for segmentation usages (seg_decoder, seg_lora, seg_ft); for "
                             "classification use fairdi")
        if train.n_groups < 1:
            raise ValueError("fairdi_seg needs at least one group (one teacher per group)")
        start = time.perf_counter()
        device = config.resolved_device()
        path = decoder_path(model)
        self.group_names = tuple(train.group_names)
        stages: dict = {}
        self.log.update(group_names=list(self.group_names), stages=[], teacher_val_dice=[], teacher_fallback=[])

        def record(stage: str, result, n_train: int, n_val: int) -> None:
            stages[stage] = result
            self.log["stages"].append(stage_log(stage, result, n_train, n_val))

        # Step 0 (eq. 1): the whole trainable model, FIS on the per-sample segmentation loss.
        step0 = self.stage_config(config, "step0")
        if step0.epochs > 0:
            record("step0", trainer.fit(model, self.fis(self.params["step0_c"]), train, val, step0, stage="step0"),
                   len(train), len(val))
        model.to(device)
        _freeze(model)
        step0_decoder = copy.deepcopy(model.get_submodule(path))

        # The frozen encoder's features, once per split; steps 1–2 train decoders on them.
        batch_size = min(config.eval_batch_size, max(1, config.batch_size))
        f_train = feature_split(model, path, train, batch_size=batch_size, device=device)
        f_val = feature_split(model, path, val, batch_size=batch_size, device=device)

        # Step 1 (eq. 2): one teacher decoder per group, that group's samples only.
        teachers = nn.ModuleList()
        teacher_config = self.stage_config(config, "teacher")
        for g, group_name in enumerate(self.group_names):
            train_rows, val_rows = np.flatnonzero(f_train.groups == g), np.flatnonzero(f_val.groups == g)
            teacher = DecoderOnFeatures(copy.deepcopy(step0_decoder))
            if train_rows.size == 0 or teacher_config.epochs == 0:
                self.log["teacher_fallback"].append(group_name)
                self.log["teacher_val_dice"].append({"group": group_name, "val_dice": math.nan})
            else:
                for parameter in teacher.parameters():
                    parameter.requires_grad_(True)
                stage = f"teacher-{g}"
                result = trainer.fit(teacher, self.fis(self.params["teacher_c"]), f_train.subset(train_rows),
                                     f_val.subset(val_rows), teacher_config, stage=stage)
                record(stage, result, int(train_rows.size), int(val_rows.size))
                self.log["teacher_val_dice"].append({"group": group_name, "val_dice": float(result.best_value)})
            teachers.append(teacher.decoder)
        teachers.to(device)
        teachers.eval()
        _freeze(teachers)
        self.extra["teachers"] = teachers

        # Step 2 (eq. 3): the student decoder, each sample distilled from its own group's teacher.
        p = self.params
        student = DecoderOnFeatures(copy.deepcopy(step0_decoder)).to(device)
        for parameter in student.parameters():
            parameter.requires_grad_(True)
        student_method = _Student(teachers, lam=float(p["lam"]), tau=float(p["tau"]), c=float(p["student_c"]),
                                  form=p["kd_form"], unknown_group=p["unknown_group"], normalize=p["normalize"],
                                  temperature=float(p["fis_temperature"]))
        student_config = self.stage_config(config, "student")
        if student_config.epochs > 0:
            result = trainer.fit(student, student_method, f_train, f_val, student_config, stage="student")
            record("student", result, len(f_train), len(f_val))
        model.get_submodule(path).load_state_dict(student.decoder.state_dict())
        model.to(device)

        last = stages[list(stages)[-1]] if stages else None
        frames = [r.history for r in stages.values() if len(r.history)]
        history = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()
        return FitResult(history, last.best_epoch if last else -1, last.best_value if last else math.nan,
                         config.selection, time.perf_counter() - start, stages=stages)

    def training_step(self, model, batch, optimizers):  # pragma: no cover - fit() drives training
        raise RuntimeError("fairdi_seg trains in stages: call method.fit(model, train, val, config, trainer)")
