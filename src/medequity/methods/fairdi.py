"""FairDi — Fair Distillation (Masroor et al., "Fair Distillation: teaching fairness from biased
teachers in medical imaging"; METHODS.md "FairDi"). Three stages, each run through the trainer
(early stopping, checkpoint selection, progress):

Step 0 — backbone f_θ and head h_φ on all data with the FIS loss, c = 0.5, and CutMix (eq. 1)::

    θ*, φ* = argmin (1/N) Σ_i w(x_i, y_i, a_i, c) · ℓ(h_φ(f_θ(x_i)), y_i)

  = ``create_method("fis", c=0.5, cutmix=True)``. Adam, lr 1e-4, weight decay 1e-4, ×0.1 every 10
  epochs, 30 epochs, early stop on validation worst-group AUC (patience 5) — §4.1.

Step 1 — one teacher per group g: a new head h_{φ_g} on the *frozen* f_θ*, trained on D_g only
(eq. 2) with FIS c = 0 (individual scaling only); SGD momentum 0.9; early stop on group g's
validation AUC.

Step 2 — the student: a new head h_{φ_s} on the frozen f_θ*, per sample (eq. 3)::

    λ·τ²·KL[ h_{φ_s}(f(x_i)) ‖ h_{φ_{a_i}},τ(f(x_i)) ] + (1 − λ)·w(x_i, y_i, a_i, c)·ℓ(h_{φ_s}(f(x_i)), y_i)

  λ = 0.95, τ = 1.5, c = 0.5; SGD momentum 0.9; early stop on validation worst-group AUC. Sample i
  is distilled from the teacher of *its own* group a_i. The final model is f_θ* + h_{φ_s}: the
  model's ``head`` holds the student after :meth:`FairDi.fit`, so inference (``logits``) needs no
  group.

Binary outputs. Heads give one logit z; the temperature-scaled prediction layer (§3.1,
softmax(l/τ)) of a one-logit head is the 2-class softmax over [0, z/τ], i.e. the Bernoulli
(1 − σ(z/τ), σ(z/τ)). :func:`distillation_kl` computes the KL between two such Bernoullis from
log-sigmoids (stable for any logit). ``kd_form`` says which KL:

* ``"eq3"`` (default): eq. 3 as printed — KL(student ‖ teacher softened by τ); the student's
  layer has no τ, which §3.1 says means τ = 1.
* ``"hinton"``: Hinton et al.'s KL(teacher_τ ‖ student_τ), both softened (the form the τ² factor
  was introduced for; the paper cites it for the KL). Offered for comparison.

Conventions the paper leaves open (documented, configurable):

* Unknown group (a_i = −1): no teacher is "its own". ``unknown_group="mean_teacher"`` (default)
  distils from the mixture of the teachers, q = (1/G) Σ_g Bernoulli(σ(z_g/τ)); ``"ce_only"`` gives
  such samples the (1 − λ)·w·CE term only. Step 0 and the student's FIS weights treat them as
  :mod:`medequity.methods.fis` does; teachers never see them.
* Normalisation: with ``normalize=True`` (default, as :class:`~medequity.methods.fis.FIS`) the CE
  term is the weighted *mean* Σ w_i ℓ_i / Σ w_i, so its scale matches the KL term's mean whatever
  the batch size (eq. 3 literally, (1/N) Σ w_i ℓ_i with Σ w ≈ 1, makes the CE term ~1/N of the
  KL's — ``normalize=False`` reproduces it). The same flag is passed to steps 0 and 1.
* CutMix: §4.1 also applies CutMix to teachers and student; here steps 1–2 train heads on the
  cached features of the frozen backbone (METHODS.md: "seconds, not minutes"), where pixels
  cannot be mixed, so CutMix is used in step 0 only.
* A group with no training sample gets the step-0 head as its teacher (logged in
  ``self.log["teacher_fallback"]``) instead of an untrainable head.
* The paper gives no SGD learning rate for steps 1–2 and states the ×0.1 decay for step 0 only:
  lr 1e-2, weight decay 1e-4 and a constant learning rate (``*_scheduler="none"``; early stopping
  ends the stage) are ours.
* ``standardize_features=True``: heads train on z = (f − μ)/σ (training-set mean and std of the
  frozen features) and are folded back afterwards (W' = W/σ, b' = b − W'·μ), so every stored head
  reads raw features. The function class (a linear head on f) is unchanged; only the conditioning
  of SGD is — pooled CNN features have means ~0.3 and stds ~0.03, on which SGD at lr 1e-2 barely
  moves a head in 30 epochs.

How the user's ``train`` settings meet the per-stage paper defaults
-------------------------------------------------------------------
Each stage's training config is the user's :class:`~medequity.training.trainer.TrainConfig` with
the stage's method parameters substituted (:meth:`FairDi.stage_config`):

* from the user's ``train``: ``batch_size``, ``seed``, ``device``, ``num_workers``,
  ``eval_batch_size`` — and ``epochs`` for every stage whose ``*_epochs`` parameter is None (the
  default; TrainConfig's default of 30 epochs is the paper's step-0 budget). ``train.epochs=2``
  therefore runs every stage for at most 2 epochs; ``step0_epochs=30`` etc. pin one stage.
* from the method's parameters (paper defaults, override with ``method_params``): optimiser,
  learning rate, weight decay, momentum, scheduler (``step0_scheduler="step"`` with ``step_size``,
  ``gamma``; ``"none"`` for the heads), patience and
  the selection criterion (``selection`` for steps 0 and 2; teachers always select on their own
  group's validation AUC). The user's ``train.lr``/``optimizer``/``scheduler``/``patience``/
  ``selection`` are *not* used: FairDi's stages differ (Adam vs SGD), and TrainConfig cannot tell a
  default from a choice.
* ``step0_epochs=0`` skips step 0: the model's backbone is used as given (e.g. a fine-tuned
  checkpoint) and the step-0 head stays as built.

What is recorded: ``FitResult.stages`` = {"step0", "teacher-<g>" for each group g, "student"}: each
stage's FitResult (history, best epoch, value); ``FitResult.history`` = all stages' rows (column
``stage``). ``self.log``: ``group_names``, ``teacher_val_auc`` (each teacher's best validation AUC
on its own group), ``stages`` (per stage: best epoch, value, epochs run, seconds, sizes),
``teacher_fallback``, ``n_unknown_train``. ``self.extra`` keeps the step-0 head and the teachers
(saved with the model); :meth:`FairDi.variant_heads` exposes them for the Table 3 ablation
(:mod:`medequity.fairdi.ablation`).
"""

from __future__ import annotations

import copy
import math
import time
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch import nn

from medequity.methods.base import Method, create_method, register_method
from medequity.methods.fis import fis_weights

if TYPE_CHECKING:
    from medequity.training.data import SplitData
    from medequity.training.trainer import FitResult, TrainConfig, Trainer

KD_FORMS = ("eq3", "hinton")
UNKNOWN_GROUP = ("mean_teacher", "ce_only")
STAGES = ("step0", "teacher", "student")


# --- the distillation loss (eq. 3) -----------------------------------------------------------------


def _bernoulli_log_probs(logits: torch.Tensor, tau: float = 1.0) -> tuple[torch.Tensor, torch.Tensor]:
    """(log P(1), log P(0)) of softmax([0, z/τ]) = (log σ(z/τ), log σ(−z/τ))."""
    scaled = logits / tau
    return F.logsigmoid(scaled), F.logsigmoid(-scaled)


def _teacher_log_probs(teacher_logits: torch.Tensor, groups: torch.Tensor, tau: float,
                       unknown_group: str) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Each sample's own-group teacher, softened by τ: (log q1, log q0, has_target).

    ``teacher_logits`` is (B, G): every teacher's logit for every sample. Samples of unknown group
    get the teachers' mixture (``mean_teacher``) or no target (``ce_only``).
    """
    if teacher_logits.ndim != 2:
        raise ValueError(f"teacher_logits must be (batch, groups); got shape {tuple(teacher_logits.shape)}")
    groups = groups.long().to(teacher_logits.device)
    if bool((groups >= teacher_logits.shape[1]).any()):
        raise ValueError(f"a group code is >= the number of teachers ({teacher_logits.shape[1]})")
    known = groups >= 0
    own = teacher_logits.gather(1, groups.clamp(min=0).unsqueeze(1)).squeeze(1)
    log_q1, log_q0 = _bernoulli_log_probs(own, tau)
    if unknown_group == "mean_teacher":
        all_q1, all_q0 = _bernoulli_log_probs(teacher_logits, tau)
        log_g = math.log(teacher_logits.shape[1])
        mix_q1 = torch.logsumexp(all_q1, dim=1) - log_g  # log of (1/G) Σ_g σ(z_g/τ)
        mix_q0 = torch.logsumexp(all_q0, dim=1) - log_g
        log_q1, log_q0 = torch.where(known, log_q1, mix_q1), torch.where(known, log_q0, mix_q0)
        return log_q1, log_q0, torch.ones_like(known)
    if unknown_group == "ce_only":
        return log_q1, log_q0, known
    raise ValueError(f"unknown_group must be one of {UNKNOWN_GROUP}; got {unknown_group!r}")


def distillation_kl(student_logits: torch.Tensor, teacher_logits: torch.Tensor, groups: torch.Tensor, *,
                    tau: float = 1.5, form: str = "eq3", unknown_group: str = "mean_teacher") -> torch.Tensor:
    """Per-sample KL between the student and its own group's teacher (FairDi eq. 3, without λ·τ²).

    ``student_logits`` (B,), ``teacher_logits`` (B, G) — column g is teacher g — and ``groups``
    (B,) codes (−1 = unknown). Binary outputs are Bernoullis, softmax over [0, z/τ]:

    * ``form="eq3"``: KL(p_s ‖ q_{a_i}^τ), p_s = σ(z_s) (τ = 1), q^τ = σ(z_t/τ) — eq. 3 as printed;
    * ``form="hinton"``: KL(q_{a_i}^τ ‖ p_s^τ), both softened (Hinton et al. 2015).

    KL(P‖Q) = P(1)·log(P(1)/Q(1)) + P(0)·log(P(0)/Q(0)); 0 when student and target agree.
    Samples without a target (``unknown_group="ce_only"``) get 0.
    """
    if form not in KD_FORMS:
        raise ValueError(f"form must be one of {KD_FORMS}; got {form!r}")
    if not tau > 0:
        raise ValueError(f"tau must be > 0; got {tau}")
    log_q1, log_q0, has_target = _teacher_log_probs(teacher_logits, groups, tau, unknown_group)
    if form == "eq3":
        log_p1, log_p0 = _bernoulli_log_probs(student_logits, 1.0)
        kl = log_p1.exp() * (log_p1 - log_q1) + log_p0.exp() * (log_p0 - log_q0)
    else:
        log_p1, log_p0 = _bernoulli_log_probs(student_logits, tau)
        kl = log_q1.exp() * (log_q1 - log_p1) + log_q0.exp() * (log_q0 - log_p0)
    return torch.where(has_target, kl, torch.zeros_like(kl))


def student_loss_terms(student_logits: torch.Tensor, teacher_logits: torch.Tensor, y: torch.Tensor,
                       groups: torch.Tensor, *, lam: float = 0.95, tau: float = 1.5, c: float = 0.5,
                       form: str = "eq3", unknown_group: str = "mean_teacher", normalize: bool = True,
                       temperature: float = 1.0) -> dict[str, torch.Tensor]:
    """FairDi eq. 3 per sample: {"per_sample", "kd", "ce", "weights"}; the batch loss is
    ``per_sample.mean()``.

    per_sample_i = λ·τ²·KL_i + (1 − λ)·w̃_i·CE_i, with w = FIS weights of the CE losses (c, eq. 1,
    no gradient) and w̃ = w·N/Σw when ``normalize`` (so the CE term is FIS's weighted mean), w̃ = w
    otherwise (eq. 3 literally).
    """
    if not 0.0 <= lam <= 1.0:
        raise ValueError(f"lam must be in [0, 1]; got {lam}")
    kd = distillation_kl(student_logits, teacher_logits, groups, tau=tau, form=form, unknown_group=unknown_group)
    ce = F.binary_cross_entropy_with_logits(student_logits, y.to(student_logits.dtype), reduction="none")
    weights = fis_weights(ce, groups, c, temperature).to(ce)
    if normalize:
        weights = weights * (weights.numel() / weights.sum().clamp(min=torch.finfo(weights.dtype).tiny))
    per_sample = lam * tau**2 * kd + (1.0 - lam) * weights * ce
    return {"per_sample": per_sample, "kd": kd, "ce": ce, "weights": weights}


# --- helper methods for the head-only stages --------------------------------------------------------


class _Student(Method):
    """Step 2 on cached features: the head model's logit against the frozen teachers (eq. 3)."""

    name = "fairdi_student"

    def __init__(self, teachers: nn.Module, **loss_params):
        super().__init__()
        self.teachers = teachers  # frozen; deliberately not in ``extra`` so the optimiser never sees it
        self.loss_params = loss_params

    def loss(self, model, batch: dict) -> torch.Tensor:
        with torch.no_grad():
            teacher_logits = self.teachers(batch["x"])
        terms = student_loss_terms(model(batch["x"]), teacher_logits, batch["y"], batch["group"], **self.loss_params)
        return terms["per_sample"].mean()


class TeacherBank(nn.Module):
    """The G teacher heads side by side: features (B, D) → logits (B, G), column g = teacher g."""

    def __init__(self, heads: list[nn.Module]):
        super().__init__()
        self.heads = nn.ModuleList(heads)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return torch.cat([head(features).reshape(len(features), -1)[:, :1] for head in self.heads], dim=1)


class HeadView(Method):
    """Scores of ``model``'s backbone through another head (the step-0 head or a teacher) — for
    evaluating FairDi's intermediate models with the trainer's ``predict``."""

    name = "fairdi_head_view"

    def __init__(self, head: nn.Module):
        super().__init__()
        self.head = head

    def logits(self, model, x, groups=None):
        return self.head(model.features(x)).squeeze(-1)


class _FeatureView(nn.Module):
    """``model.features`` as a module, for :func:`~medequity.models.feature_cache.compute_features`."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, x):
        return self.model.features(x)


def feature_standardization(train_features: np.ndarray, enabled: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """(μ, σ) per feature of the training features; constant features get σ = 1; (0, 1) if disabled."""
    dim = train_features.shape[1]
    if not enabled or len(train_features) == 0:
        return np.zeros(dim, dtype=np.float32), np.ones(dim, dtype=np.float32)
    mean = train_features.mean(axis=0, dtype=np.float64)
    std = train_features.std(axis=0, dtype=np.float64)
    std = np.where(std > 1e-8, std, 1.0)
    return mean.astype(np.float32), std.astype(np.float32)


@torch.no_grad()
def fold_standardization(head: nn.Linear, mean: np.ndarray, std: np.ndarray) -> None:
    """Rewrite a linear head on z = (f − μ)/σ as the same function of f: W' = W/σ, b' = b − W'·μ."""
    mean_t = torch.as_tensor(mean, dtype=head.weight.dtype, device=head.weight.device)
    weight = head.weight / torch.as_tensor(std, dtype=head.weight.dtype, device=head.weight.device)
    head.bias -= weight @ mean_t
    head.weight.copy_(weight)


def _freeze(module: nn.Module) -> None:
    for p in module.parameters():
        p.requires_grad_(False)


# --- the method ---------------------------------------------------------------------------------------


def stage_log(stage: str, result, n_train: int, n_val: int) -> dict:
    """What the log keeps of one stage's fit (step 0, teachers, student)."""
    return {"stage": stage, "best_epoch": int(result.best_epoch), "best_value": float(result.best_value),
            "selection": result.selection, "epochs_run": int(len(result.history)), "seconds": float(result.seconds),
            "n_train": n_train, "n_val": n_val}


def check_distillation_params(p: dict) -> None:
    """The FairDi parameters shared by classification and segmentation: the FIS mixing weights and λ
    in [0, 1], τ > 0, a known KD form and unknown-group rule, stage epochs (and lrs, where given)."""
    for key in ("step0_c", "teacher_c", "student_c", "lam"):
        if not 0.0 <= float(p[key]) <= 1.0:
            raise ValueError(f"{key} must be in [0, 1]; got {p[key]!r}")
    if not float(p["tau"]) > 0:
        raise ValueError(f"tau must be > 0; got {p['tau']!r}")
    if p["kd_form"] not in KD_FORMS:
        raise ValueError(f"kd_form must be one of {KD_FORMS}; got {p['kd_form']!r}")
    if p["unknown_group"] not in UNKNOWN_GROUP:
        raise ValueError(f"unknown_group must be one of {UNKNOWN_GROUP}; got {p['unknown_group']!r}")
    for stage in STAGES:
        epochs, lr = p.get(f"{stage}_epochs"), p.get(f"{stage}_lr")
        if epochs is not None and (not isinstance(epochs, int) or epochs < 0):
            raise ValueError(f"{stage}_epochs must be None or an integer >= 0; got {epochs!r}")
        if lr is not None and not float(lr) > 0:
            raise ValueError(f"{stage}_lr must be None or > 0; got {lr!r}")


@register_method
class FairDi(Method):
    """Fair Distillation: FIS+CutMix backbone, per-group teachers, one distilled student (eqs. 1–3)."""

    name = "fairdi"
    defaults = {
        # step 0 (eq. 1): FIS c = 0.5 + CutMix; Adam 1e-4, wd 1e-4; 30 epochs (= TrainConfig's default)
        "step0_c": 0.5, "cutmix": True, "cutmix_alpha": 1.0, "cutmix_prob": 1.0,
        "step0_epochs": None, "step0_optimizer": "adam", "step0_lr": 1e-4, "step0_weight_decay": 1e-4,
        "step0_momentum": 0.9, "step0_patience": 5, "step0_scheduler": "step",
        # step 1 (eq. 2): FIS c = 0 on the group's samples; SGD momentum 0.9
        "teacher_c": 0.0, "teacher_epochs": None, "teacher_optimizer": "sgd", "teacher_lr": 1e-2,
        "teacher_weight_decay": 1e-4, "teacher_momentum": 0.9, "teacher_patience": 5, "teacher_scheduler": "none",
        # step 2 (eq. 3): λ = 0.95, τ = 1.5, c = 0.5; SGD momentum 0.9
        "lam": 0.95, "tau": 1.5, "student_c": 0.5, "kd_form": "eq3", "unknown_group": "mean_teacher",
        "student_epochs": None, "student_optimizer": "sgd", "student_lr": 1e-2, "student_weight_decay": 1e-4,
        "student_momentum": 0.9, "student_patience": 5, "student_scheduler": "none",
        # shared: the step schedule (×0.1 every 10 epochs, §4.1), validation criterion of steps 0 and 2,
        # FIS form, head preconditioning
        "step_size": 10, "gamma": 0.1, "selection": "worst_group_auc",
        "normalize": True, "fis_temperature": 1.0, "standardize_features": True,
    }

    def __init__(self, **params):
        super().__init__(**params)
        check_distillation_params(self.params)
        self.group_names: tuple[str, ...] = ()

    # --- configuration --------------------------------------------------------------------------------
    def stage_config(self, config, stage: str):
        """The TrainConfig of one stage ("step0", "teacher", "student"): the user's ``config`` with the
        stage's paper settings substituted (see "How the user's train settings…" in the module doc)."""
        if stage not in STAGES:
            raise ValueError(f"stage must be one of {STAGES}; got {stage!r}")
        p = self.params
        epochs = p[f"{stage}_epochs"]
        return config.replace(
            epochs=config.epochs if epochs is None else int(epochs), optimizer=p[f"{stage}_optimizer"],
            lr=float(p[f"{stage}_lr"]), weight_decay=float(p[f"{stage}_weight_decay"]),
            momentum=float(p[f"{stage}_momentum"]), patience=p[f"{stage}_patience"], scheduler=p[f"{stage}_scheduler"],
            step_size=int(p["step_size"]), gamma=float(p["gamma"]),
            selection="auc" if stage == "teacher" else p["selection"],  # teacher: its group's AUC (subset val)
        )

    def step0_method(self) -> Method:
        """Step 0's method: FIS with c = ``step0_c`` and CutMix (eq. 1)."""
        p = self.params
        return create_method("fis", c=float(p["step0_c"]), temperature=float(p["fis_temperature"]),
                             normalize=p["normalize"], cutmix=p["cutmix"], cutmix_alpha=float(p["cutmix_alpha"]),
                             cutmix_prob=float(p["cutmix_prob"]))

    # --- set-up: the modules a saved FairDi model holds -----------------------------------------------
    def setup(self, model, train, config) -> None:
        for attribute in ("features", "head", "feature_dim"):
            if not hasattr(model, attribute):
                raise ValueError(f"FairDi needs a model with features(x), head and feature_dim (medequity Classifier); "
                                 f"{type(model).__name__} has no {attribute!r} (segmentation usages: method fairdi_seg)")
        if train.n_groups < 1:
            raise ValueError("FairDi needs at least one group (one teacher per group)")
        self.group_names = tuple(train.group_names)
        self.extra["step0_head"] = copy.deepcopy(model.head)
        self.extra["teachers"] = TeacherBank([nn.Linear(model.feature_dim, 1) for _ in self.group_names])
        _freeze(self.extra)
        self.log["group_names"] = list(self.group_names)
        self.log["n_unknown_train"] = [int((np.asarray(train.groups) < 0).sum())]

    def variant_heads(self, model) -> dict[str, nn.Module]:
        """Every FairDi model on the shared backbone: "step0", "teacher:<group>", "student"."""
        heads = {"step0": self.extra["step0_head"]}
        for name, head in zip(self.group_names, self.extra["teachers"].heads):
            heads[f"teacher:{name}"] = head
        heads["student"] = model.head
        return heads

    # --- the three stages -------------------------------------------------------------------------------
    def fit(self, model: nn.Module, train: SplitData, val: SplitData, config: TrainConfig, trainer: Trainer) -> FitResult:
        from medequity.models.classifier import Classifier
        from medequity.models.feature_cache import compute_features
        from medequity.training.data import ArrayItems
        from medequity.training.trainer import FitResult

        start = time.perf_counter()
        device = config.resolved_device()
        self.setup(model, train, config)
        stages: dict = {}
        self.log["stages"] = []

        def record(stage: str, result, n_train: int, n_val: int) -> None:
            stages[stage] = result
            self.log["stages"].append(stage_log(stage, result, n_train, n_val))

        # Step 0 (eq. 1): backbone + head, FIS c = 0.5 + CutMix, on all data.
        step0 = self.stage_config(config, "step0")
        if step0.epochs > 0:
            record("step0", trainer.fit(model, self.step0_method(), train, val, step0, stage="step0"), len(train), len(val))
        model.to(device)
        self.extra["step0_head"].load_state_dict(model.head.state_dict())

        # Freeze f_θ* for steps 1–2: every model parameter but the head's (which will receive the
        # student), and eval mode for the backbone so BatchNorm statistics stay fixed.
        head_ids = {id(p) for p in model.head.parameters()}
        for p in model.parameters():
            if id(p) not in head_ids:
                p.requires_grad_(False)
        if hasattr(model, "frozen_backbone"):
            model.frozen_backbone = True

        # Features of the frozen backbone, computed once; steps 1–2 train heads on them.
        view = _FeatureView(model)
        raw = {name: compute_features(view, split.items, batch_size=config.eval_batch_size, device=device)
               for name, split in (("train", train), ("val", val))}
        mean, std = feature_standardization(raw["train"], enabled=bool(self.params["standardize_features"]))
        feature_data = {name: split.with_items(ArrayItems((raw[name] - mean) / std, split.labels, split.groups), "+fairdi-step0")
                        for name, split in (("train", train), ("val", val))}
        f_train, f_val = feature_data["train"], feature_data["val"]

        # Step 1 (eq. 2): one teacher per group, only that group's samples, FIS c = 0.
        teacher_config = self.stage_config(config, "teacher")
        self.log["teacher_val_auc"], self.log["teacher_fallback"] = [], []
        for g, group_name in enumerate(self.group_names):
            train_rows = np.flatnonzero(f_train.groups == g)
            val_rows = np.flatnonzero(f_val.groups == g)
            teacher_head = self.extra["teachers"].heads[g]
            if train_rows.size == 0:
                # the step-0 head reads raw f; in z-space that is W·σ, b + W·μ (folded back at the end)
                with torch.no_grad():
                    step0_head = self.extra["step0_head"]
                    teacher_head.weight.copy_(step0_head.weight * torch.as_tensor(std).to(step0_head.weight))
                    teacher_head.bias.copy_(step0_head.bias + step0_head.weight @ torch.as_tensor(mean).to(step0_head.weight))
                self.log["teacher_fallback"].append(group_name)
                self.log["teacher_val_auc"].append({"group": group_name, "val_auc": math.nan})
                continue
            head_model = Classifier(None, model.feature_dim).to(device)
            teacher_method = create_method("fis", c=float(self.params["teacher_c"]), normalize=self.params["normalize"],
                                           temperature=float(self.params["fis_temperature"]))
            stage = f"teacher-{g}"
            # val restricted to group g with selection "auc" = early stopping on the group's validation AUC
            result = trainer.fit(head_model, teacher_method, f_train.subset(train_rows), f_val.subset(val_rows),
                                 teacher_config, stage=stage)
            record(stage, result, int(train_rows.size), int(val_rows.size))
            teacher_head.load_state_dict(head_model.head.state_dict())
            self.log["teacher_val_auc"].append({"group": group_name, "val_auc": float(result.best_value)})
        self.extra.to(device)
        _freeze(self.extra)

        # Step 2 (eq. 3): the student head, each sample distilled from its own group's teacher.
        p = self.params
        student_model = Classifier(None, model.feature_dim).to(device)
        student = _Student(self.extra["teachers"], lam=float(p["lam"]), tau=float(p["tau"]), c=float(p["student_c"]),
                           form=p["kd_form"], unknown_group=p["unknown_group"], normalize=p["normalize"],
                           temperature=float(p["fis_temperature"]))
        student_config = self.stage_config(config, "student")
        result = trainer.fit(student_model, student, f_train, f_val, student_config, stage="student")
        record("student", result, len(f_train), len(f_val))
        # Heads were trained on standardised features z = (f − μ)/σ: fold μ, σ into their weights so
        # every head reads the backbone's raw features. Final model = f_θ* + h_φs.
        model.head.load_state_dict(student_model.head.state_dict())
        for head in [model.head, *self.extra["teachers"].heads]:
            fold_standardization(head, mean, std)
        model.to(device)

        history = pd.concat([r.history for r in stages.values() if len(r.history)], ignore_index=True) \
            if any(len(r.history) for r in stages.values()) else pd.DataFrame()
        return FitResult(history, result.best_epoch, result.best_value, result.selection,
                         time.perf_counter() - start, stages=stages)

    def training_step(self, model, batch, optimizers):  # pragma: no cover - fit() drives training
        raise RuntimeError("fairdi trains in stages: call method.fit(model, train, val, config, trainer)")
