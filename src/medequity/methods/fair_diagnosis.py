"""Fair Diagnosis — causal adversarial masks (Fair Diagnosis §2–3; METHODS.md "Fair Diagnosis").

The deployed classifier (encoder f_θ + head f_h) is trained first (ERM, through the trainer) and
then *frozen*. A generator g learns an additive, bounded perturbation ("mask")

    x̃ = clip(x + η·tanh(g(x)))                                   (§3.1, "X ⊕ g(X)"; η = 0.2)

that is applied before the frozen classifier at inference (``logits``). It is trained against a
discriminator d_Y that predicts the sensitive attribute S from the masked input *conditioned on
the true label Y* (eq. 7, Ŝ = d_Y(x̃, Y)): a softmax over any number of groups, samples of
unknown group (-1) left out. Updates alternate (eq. 12; α = β = 0 in the discriminator step):

    discriminator:  L_dY = −I(Ŝ;S)                 surrogate: CE(d_Y(x̃, y), s)            (eq. 11)
    generator:      L_g  = I(Ŝ;S) − α·H(Ŝ) − β·I(Ŷ;Y)                                 (eqs. 9–10)
                    surrogates: −CE(d_Y(x̃, y), s) − α·mean H(softmax d_Y(x̃, y))
                                + β·BCE(f_h(f_θ(x̃)), y)

(I(Ŝ;S) ≥ H(S) − CE, so "minimise I(Ŝ;S)" becomes "maximise d_Y's cross-entropy"; the entropy
term makes d_Y guess at random rather than flip groups; the frozen classifier's BCE on x̃ stands
for −I(Ŷ;Y).) Paper defaults (App. A): η = 0.2, α = 1, β = 1, learning rate 1e-4 for generator
and discriminator (Adam). The paper gives no epoch count for stage 2; ``adversarial_epochs=None``
uses the trainer's ``epochs``. The last generator is kept: the paper states no selection rule, and
choosing the epoch by validation AUC would favour the generator that removed the least.

Why conditioning on Y matters (Theorem 1): I(S;X̃|Y) = 0 removes the *direct* path S→X→Ŷ but
leaves the indirect path S→Y (e.g. a prevalence difference) alone, so ADF = I(S;Ŷ|Y) falls while
DP may stay. FAAP (:mod:`medequity.methods.faap`) is the same machine with an unconditioned
discriminator on the frozen model's features — it removes S altogether.

Design choices the paper leaves open (documented here, configurable):

* ``discriminator="encoder"`` (default): d_Y reads the masked image through the frozen encoder
  f_θ and a trainable MLP on [f_θ(x̃), embedding(y)]. The deployed model only "sees" S through
  f_θ, so this is the representation in which S must be removed for Ŷ to stop depending on it;
  it also matches Fig. 4 (Grad-CAM on f_θ's last conv layer for both Ŷ and Ŝ).
  ``discriminator="image"`` gives d_Y its own small CNN on x̃ (an MLP for feature inputs): a pure
  image-space reading of eq. 7. A bright marker (e.g. the synthetic corner tag, ~3 normalised
  units above its background) is far larger than η = 0.2, so it can hardly be erased from the
  pixels themselves; kept for ablations (not benchmarked).
* Clipping: inputs are normalised images (or cached features). x̃ is clipped, per channel (per
  feature), to the [min, max] the *training* inputs occupy in that normalised space — the image of
  the valid pixel range [0, 1] under the data's normalisation, without needing to know mean/std.
* Generator: a small conv encoder–decoder for images (B, C, H, W), an MLP for features (B, D);
  its last layer starts at zero, so training starts from the identity mask (the vanilla model).
* Optional utility pre-training (§3.1, eqs. 5–6): ``jsd_pretrain_epochs`` epochs maximising the
  Jensen–Shannon MI lower bound between x̃ and its embedding E = f_θ(x̃),
      I_JSD(X̃;E) = E_{x̃,E}[−sp(−T_ω(x̃,E))] − E_{x̃,E'}[sp(T_ω(x̃,E'))],
  with sp the softplus, E' a shuffled batch of embeddings and T_ω a small critic. The paper
  maximises over θ and ω; here f_θ is the deployed, frozen model, so g and ω are trained.

Stages, each one ``trainer.fit`` (so progress, callbacks and checkpoints work as for any method):
"classifier" (ERM; skipped with ``pretrained_classifier=True``), "jsd" (only when
``jsd_pretrain_epochs > 0``; its history rows have ``train_loss`` = −bound and a ``jsd`` column)
and "adversarial" (``train_loss`` = mean g_loss, plus a ``d_acc`` column; no early stopping, the
last generator kept). ``FitResult.stages`` holds the stages before "adversarial", whose selection
is the FitResult itself (best epoch = the last, value = the last epoch's validation criterion).

``self.log``: per adversarial epoch ``d_loss``, ``d_acc`` (discriminator on training batches,
before each generator step; correct / known over the epoch), ``g_loss``, ``g_fool`` (d_Y's CE,
maximised), ``g_entropy``, ``g_utility`` (frozen classifier's BCE on x̃), ``mask_abs`` (mean
|x̃ − x|), ``val_auc``; and ``jsd`` per pre-training epoch.
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch import nn

from medequity.explain.adversarial_mask import MaskExplanation, explain_adversarial_mask
from medequity.methods.base import Method, create_method, register_method

if TYPE_CHECKING:
    from medequity.training.data import SplitData
    from medequity.training.trainer import FitResult, TrainConfig, Trainer

DISCRIMINATORS = ("encoder", "image")


# --- modules -------------------------------------------------------------------------------------


class InputRange(nn.Module):
    """Per-channel (image) or per-feature bounds of the training inputs, in their normalised space."""

    def __init__(self, low: torch.Tensor, high: torch.Tensor):
        super().__init__()
        self.register_buffer("low", low)
        self.register_buffer("high", high)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.maximum(torch.minimum(x, self.high), self.low)


class ConvMaskGenerator(nn.Module):
    """Small conv encoder–decoder g(x) for images; unbounded output (bounded by η·tanh outside)."""

    def __init__(self, channels: int, width: int = 16):
        super().__init__()
        self.encoder = nn.Sequential(
            nn.Conv2d(channels, width, 3, padding=1), nn.ReLU(),
            nn.Conv2d(width, 2 * width, 4, stride=2, padding=1), nn.ReLU(),
            nn.Conv2d(2 * width, 2 * width, 3, padding=1), nn.ReLU(),
        )
        self.decoder = nn.Sequential(
            nn.ConvTranspose2d(2 * width, width, 4, stride=2, padding=1), nn.ReLU(),
            nn.Conv2d(width, channels, 3, padding=1),
        )
        # Start from the identity mask: x̃ = x, i.e. the vanilla classifier.
        nn.init.zeros_(self.decoder[-1].weight)
        nn.init.zeros_(self.decoder[-1].bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.decoder(self.encoder(x))
        if out.shape[-2:] != x.shape[-2:]:  # odd sizes lose a pixel in the stride-2 round trip
            out = F.interpolate(out, size=x.shape[-2:], mode="bilinear", align_corners=False)
        return out


class MLPMaskGenerator(nn.Module):
    """g(x) for feature inputs (linear probing on cached features)."""

    def __init__(self, dim: int, hidden: int = 128):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(dim, hidden), nn.ReLU(), nn.Linear(hidden, dim))
        nn.init.zeros_(self.net[-1].weight)
        nn.init.zeros_(self.net[-1].bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


def small_trunk(example: torch.Tensor, out_dim: int = 64) -> nn.Module:
    """A trainable reader of raw inputs: a 3-layer strided CNN for images, an MLP for features."""
    if example.dim() == 4:
        c = example.shape[1]
        return nn.Sequential(
            nn.Conv2d(c, 16, 3, stride=2, padding=1), nn.ReLU(),
            nn.Conv2d(16, 32, 3, stride=2, padding=1), nn.ReLU(),
            nn.Conv2d(32, out_dim, 3, stride=2, padding=1), nn.ReLU(),
            nn.AdaptiveAvgPool2d(1), nn.Flatten(),
        )
    return nn.Sequential(nn.Linear(example.shape[1], out_dim), nn.ReLU())


class SensitiveDiscriminator(nn.Module):
    """d_Y(z, y) → logits over the S groups (eq. 7). ``z`` is f_θ(x̃) or x̃ itself when a ``trunk``
    reads the input. Conditioning: a learned embedding of Y is concatenated with the trunk's
    features, so d_Y can model P(S | X̃, Y) rather than P(S | X̃). ``conditional=False`` (FAAP)
    drops the embedding."""

    def __init__(self, in_dim: int, n_groups: int, *, conditional: bool = True, hidden: int = 64,
                 label_dim: int = 8, trunk: nn.Module | None = None):
        super().__init__()
        self.conditional = conditional
        self.trunk = trunk if trunk is not None else nn.Identity()
        self.label_embedding = nn.Embedding(2, label_dim) if conditional else None
        width = in_dim + (label_dim if conditional else 0)
        self.head = nn.Sequential(nn.Linear(width, hidden), nn.ReLU(), nn.Linear(hidden, n_groups))

    def forward(self, z: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        h = self.trunk(z)
        if self.conditional:
            if y is None:
                raise ValueError("a label-conditioned discriminator needs y")
            h = torch.cat([h, self.label_embedding(y.long().view(-1))], dim=1)
        return self.head(h)


class JSDCritic(nn.Module):
    """T_ω(x̃, E) for the Jensen–Shannon MI bound (eq. 5): reads x̃ with its own trunk, then an MLP
    on [trunk(x̃), E]."""

    def __init__(self, example: torch.Tensor, embed_dim: int, hidden: int = 64):
        super().__init__()
        self.trunk = small_trunk(example, hidden)
        self.head = nn.Sequential(nn.Linear(hidden + embed_dim, hidden), nn.ReLU(), nn.Linear(hidden, 1))

    def forward(self, x: torch.Tensor, e: torch.Tensor) -> torch.Tensor:
        return self.head(torch.cat([self.trunk(x), e], dim=1)).squeeze(-1)


def jsd_mi_lower_bound(critic: JSDCritic, x: torch.Tensor, e: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """I_JSD(X̃;E) of eq. 5: E_pos[−softplus(−T)] − E_neg[softplus(T)], negatives = shuffled E."""
    perm = torch.randperm(len(e), generator=generator).to(e.device)
    positive = -F.softplus(-critic(x, e)).mean()
    negative = F.softplus(critic(x, e[perm])).mean()
    return positive - negative


def mean_entropy(logits: torch.Tensor) -> torch.Tensor:
    """Mean Shannon entropy (nats) of the softmax of ``logits`` — H(Ŝ) in eq. 9."""
    logp = F.log_softmax(logits, dim=1)
    return -(logp.exp() * logp).sum(dim=1).mean()


# --- the method ----------------------------------------------------------------------------------


class AdversarialMask(Method):
    """Shared machinery of Fair Diagnosis and FAAP: frozen classifier, bounded input mask, an
    adversary on S, alternating updates. Subclasses set ``conditional`` (d_Y sees Y or not)."""

    name = "adversarial_mask_base"
    conditional: bool = True
    keep_last_epoch = True  # the trainer keeps the last generator (the paper states no selection rule)
    defaults = {
        "eta": 0.2,  # noise strength η (§4.6.2, Table 3; App. A)
        "alpha": 1.0,  # entropy weight α (App. A)
        "beta": 1.0,  # utility weight β (App. A)
        "lr_generator": 1e-4,  # App. A
        "lr_discriminator": 1e-4,  # App. A
        "adversarial_epochs": None,  # stage-2 epochs; None = the trainer config's epochs
        "d_steps": 1,  # discriminator updates per generator update ("updated alternatively")
        "pretrained_classifier": False,  # True: the model given is the deployed classifier; skip stage 1
        "discriminator": "encoder",  # "encoder" (frozen f_θ + MLP) or "image" (own trunk), see module doc
        "hidden": 64,  # discriminator MLP width
        "label_dim": 8,  # size of the label embedding that conditions d_Y
        "generator_width": 16,  # conv channels of g (MLP hidden = 8× this for features)
        "jsd_pretrain_epochs": 0,  # utility pre-training epochs (eqs. 5–6); 0 = off
    }

    def __init__(self, **params):
        super().__init__(**params)
        if self.params["discriminator"] not in DISCRIMINATORS:
            raise ValueError(f"discriminator must be one of {DISCRIMINATORS}; got {self.params['discriminator']!r}")
        if not float(self.params["eta"]) > 0:
            raise ValueError("eta must be > 0")
        for key in ("alpha", "beta"):
            if not float(self.params[key]) >= 0:
                raise ValueError(f"{key} must be >= 0")
        self.stage_results: dict = {}
        self._built = False  # set between the "jsd" and "adversarial" stages of fit()

    # --- building ----------------------------------------------------------------------------------
    def build(self, model: nn.Module, train, device: torch.device | str = "cpu") -> None:
        """Create g, d_Y (and the critic) for ``model`` and the training inputs' range."""
        if train.n_groups < 2:
            raise ValueError(f"{self.name} needs at least 2 groups; the attribute has {train.n_groups}")
        loader = torch.utils.data.DataLoader(train.items, batch_size=512, shuffle=False)
        low = high = None
        for batch in loader:
            x = batch["x"].float()
            dims = [0] + list(range(2, x.dim()))  # reduce all but the channel / feature axis
            b_low, b_high = x.amin(dim=dims, keepdim=True), x.amax(dim=dims, keepdim=True)
            low = b_low if low is None else torch.minimum(low, b_low)
            high = b_high if high is None else torch.maximum(high, b_high)
        example = x[:2]
        if example.dim() not in (2, 4):
            raise ValueError(f"{self.name} handles images (B, C, H, W) or features (B, D); got shape {tuple(x.shape)}")
        width = int(self.params["generator_width"])
        generator = ConvMaskGenerator(example.shape[1], width) if example.dim() == 4 else MLPMaskGenerator(example.shape[1], 8 * width)
        if self.params["discriminator"] == "encoder":
            with torch.no_grad():
                model.eval()
                feature_dim = model.features(example.to(device)).shape[1]
            trunk, in_dim = None, feature_dim
        else:
            trunk, in_dim = small_trunk(example, int(self.params["hidden"])), int(self.params["hidden"])
        discriminator = SensitiveDiscriminator(in_dim, train.n_groups, conditional=self.conditional,
                                               hidden=int(self.params["hidden"]), label_dim=int(self.params["label_dim"]), trunk=trunk)
        self.extra["input_range"] = InputRange(low, high)
        self.extra["generator"] = generator
        self.extra["discriminator"] = discriminator
        if int(self.params["jsd_pretrain_epochs"]) > 0:
            with torch.no_grad():
                embed_dim = model.features(example.to(device)).shape[1]
            self.extra["critic"] = JSDCritic(example, embed_dim)
        self.extra.to(device)

    # --- the pieces of eqs. 7–12 -------------------------------------------------------------------
    def explain(self, model: nn.Module, data: SplitData, *, seed: int = 0) -> MaskExplanation | None:
        """Grad-CAM of Ŷ on x and x̃ and of Ŝ on x̃ with their overlap, on a few test images
        balanced over group × label (Fair Diagnosis §4.5, Fig. 4); None for feature inputs."""
        return explain_adversarial_mask(model, self, data, seed=seed)

    def perturb(self, x: torch.Tensor) -> torch.Tensor:
        """x̃ = clip(x + η·tanh(g(x))) to the training inputs' range (identity before ``build``)."""
        if "generator" not in self.extra:
            return x
        eta = float(self.params["eta"])
        return self.extra["input_range"](x + eta * torch.tanh(self.extra["generator"](x)))

    def sensitive_logits(self, model: nn.Module, x_tilde: torch.Tensor, y: torch.Tensor | None) -> torch.Tensor:
        """Ŝ logits = d_Y(x̃, y) (eq. 7); through the frozen encoder when discriminator='encoder'."""
        z = model.features(x_tilde) if self.params["discriminator"] == "encoder" else x_tilde
        return self.extra["discriminator"](z, y)

    def logits(self, model: nn.Module, x: torch.Tensor, groups: torch.Tensor | None = None) -> torch.Tensor:
        # Inference path: the mask is applied before the frozen deployed model.
        return model(self.perturb(x))

    def discriminator_loss(self, model, x_tilde, y, groups) -> tuple[torch.Tensor, int, int]:
        """(CE of d_Y on known-group samples, #correct, #known) — eq. 11 with α = β = 0."""
        known = groups >= 0
        n_known = int(known.sum())
        if n_known == 0:
            return x_tilde.sum() * 0.0, 0, 0
        out = self.sensitive_logits(model, x_tilde[known], y[known])
        target = groups[known].long()
        return F.cross_entropy(out, target), int((out.argmax(1) == target).sum()), n_known

    def generator_terms(self, model, x: torch.Tensor, y: torch.Tensor, groups: torch.Tensor) -> dict[str, torch.Tensor]:
        """The three surrogate terms of eq. 10 on a batch (x̃ recomputed from x)."""
        x_tilde = self.perturb(x)
        known = groups >= 0
        utility = F.binary_cross_entropy_with_logits(model(x_tilde), y.float())
        if int(known.sum()) == 0:
            zero = utility * 0.0
            return {"fool": zero, "entropy": zero, "utility": utility, "x_tilde": x_tilde}
        out = self.sensitive_logits(model, x_tilde[known], y[known])
        return {"fool": F.cross_entropy(out, groups[known].long()), "entropy": mean_entropy(out),
                "utility": utility, "x_tilde": x_tilde}

    def generator_loss(self, terms: dict[str, torch.Tensor]) -> torch.Tensor:
        """L_g = I(Ŝ;S) − α·H(Ŝ) − β·I(Ŷ;Y) ≈ −CE_dY − α·H + β·BCE (eqs. 9–10)."""
        return -terms["fool"] - float(self.params["alpha"]) * terms["entropy"] + float(self.params["beta"]) * terms["utility"]

    # --- training ----------------------------------------------------------------------------------
    @staticmethod
    def freeze(model: nn.Module) -> None:
        """The deployed classifier is frozen: no gradients to its weights, BatchNorm in eval mode."""
        for p in model.parameters():
            p.requires_grad_(False)
        model.eval()

    def stage_config(self, config: TrainConfig, stage: str) -> TrainConfig:
        """The TrainConfig of the "jsd" or "adversarial" stage: the user's config with the stage's
        epochs and no early stopping (the last generator is kept, see the module docstring)."""
        if stage == "jsd":
            epochs = int(self.params["jsd_pretrain_epochs"])
        elif stage == "adversarial":
            epochs = config.epochs if self.params["adversarial_epochs"] is None else int(self.params["adversarial_epochs"])
        else:
            raise ValueError(f"stage must be 'jsd' or 'adversarial'; got {stage!r}")
        return config.replace(epochs=epochs, patience=None)

    def planned_epochs(self, config: TrainConfig) -> int:
        classifier = 0 if self.params["pretrained_classifier"] else int(config.epochs)
        jsd = self.stage_config(config, "jsd").epochs if int(self.params["jsd_pretrain_epochs"]) > 0 else 0
        return classifier + int(jsd) + int(self.stage_config(config, "adversarial").epochs)

    def fit(self, model: nn.Module, train: SplitData, val: SplitData, config: TrainConfig, trainer: Trainer) -> FitResult:
        """Stage 1 ("classifier", ERM; skipped with ``pretrained_classifier``), then the optional
        "jsd" utility pre-training of the mask, then the "adversarial" stage — each a ``trainer.fit``."""
        from medequity.training.trainer import FitResult

        start = time.perf_counter()
        stages: dict[str, FitResult] = {}
        if not self.params["pretrained_classifier"]:
            # Stage 1: the deployed classifier, plain ERM through the shared trainer.
            stages["classifier"] = trainer.fit(model, create_method("erm"), train, val, config, stage="classifier")
        self._built = False
        if int(self.params["jsd_pretrain_epochs"]) > 0:
            # Utility pre-training (eqs. 5–6): builds g (and the critic) and trains it against T_ω.
            stages["jsd"] = trainer.fit(model, _JSDPretraining(self), train, val, self.stage_config(config, "jsd"), stage="jsd")
            self._built = True  # the adversarial stage continues with the pre-trained generator
        adversarial_config = self.stage_config(config, "adversarial")
        adversarial = trainer.fit(model, self, train, val, adversarial_config, stage="adversarial")
        self.extra.eval()
        self.stage_results = stages
        history = [r.history for r in (*stages.values(), adversarial) if len(r.history)]
        # The value of the kept (last) generator on the user's selection criterion.
        last = adversarial.history.iloc[-1] if len(adversarial.history) else None
        value = float(last.get(f"val_{config.selection}", math.nan)) if last is not None else math.nan
        return FitResult(pd.concat(history, ignore_index=True) if history else pd.DataFrame(),
                         adversarial_config.epochs - 1, value, config.selection, time.perf_counter() - start,
                         stages=dict(self.stage_results))

    # --- the "adversarial" stage's hooks (trainer.fit(model, self, ...)) ---------------------------
    def setup(self, model: nn.Module, train: SplitData, config: TrainConfig) -> None:
        self.freeze(model)
        if not self._built:  # built by the "jsd" stage: keep the pre-trained generator
            self.build(model, train, config.resolved_device())
        self._built = False
        for key in ("d_loss", "d_acc", "g_loss", "g_fool", "g_entropy", "g_utility", "mask_abs", "val_auc"):
            self.log[key] = []

    def make_optimizers(self, model: nn.Module, config: TrainConfig) -> dict[str, torch.optim.Optimizer]:
        """Adam for g and for d_Y at the paper's learning rates (App. A); the history's ``lr`` is g's."""
        return {"generator": torch.optim.Adam(self.extra["generator"].parameters(), lr=float(self.params["lr_generator"])),
                "discriminator": torch.optim.Adam(self.extra["discriminator"].parameters(),
                                                  lr=float(self.params["lr_discriminator"]))}

    def make_schedulers(self, optimizers, config, steps_per_epoch) -> dict:
        return {}  # constant learning rates (App. A)

    def train_mode(self, model: nn.Module) -> None:
        self.extra.train()
        model.eval()  # frozen: keep BatchNorm statistics fixed

    def training_step(self, model: nn.Module, batch: dict, optimizers: Mapping[str, torch.optim.Optimizer]) -> dict[str, float]:
        stats = self.adversarial_step(model, batch, optimizers["generator"], optimizers["discriminator"])
        return {**stats, "loss": stats["g_loss"]}

    def epoch_metrics(self, steps: Sequence[Mapping[str, float]]) -> dict[str, float]:
        """Per-epoch means of the step statistics into ``log``; ``d_acc`` = correct / known over the
        epoch; history columns ``train_loss`` (= mean g_loss) and ``d_acc``."""
        for key in ("d_loss", "g_loss", "g_fool", "g_entropy", "g_utility", "mask_abs"):
            total = 0.0
            for step in steps:
                total += step[key]
            self.log[key].append(total / max(len(steps), 1))
        correct = sum(step["d_correct"] for step in steps)
        known = sum(step["d_known"] for step in steps)
        self.log["d_acc"].append(correct / max(known, 1))
        return {"train_loss": self.log["g_loss"][-1], "d_acc": self.log["d_acc"][-1]}

    def on_epoch_end(self, model: nn.Module, epoch: int, val_scores: np.ndarray, summary: Mapping[str, float]) -> None:
        self.log["val_auc"].append(summary["auc"])

    def adversarial_step(self, model, batch: dict, opt_g, opt_d) -> dict[str, float]:
        """One alternating update (eq. 12): ``d_steps`` discriminator steps, then one generator step."""
        x, y, groups = batch["x"], batch["y"], batch["group"]
        d_loss = torch.zeros(())
        correct = n_known = 0
        for _ in range(int(self.params["d_steps"])):
            with torch.no_grad():
                x_tilde = self.perturb(x)
            d_loss, correct, n_known = self.discriminator_loss(model, x_tilde, y, groups)
            opt_d.zero_grad(set_to_none=True)
            if n_known:
                d_loss.backward()
                opt_d.step()
        terms = self.generator_terms(model, x, y, groups)
        g_loss = self.generator_loss(terms)
        opt_g.zero_grad(set_to_none=True)
        g_loss.backward()
        opt_g.step()
        opt_d.zero_grad(set_to_none=True)  # the generator's backward also reached d_Y; discard it
        return {"d_loss": float(d_loss.detach()), "d_correct": correct, "d_known": n_known,
                "g_loss": float(g_loss.detach()), "g_fool": float(terms["fool"].detach()),
                "g_entropy": float(terms["entropy"].detach()), "g_utility": float(terms["utility"].detach()),
                "mask_abs": float((terms["x_tilde"] - x).abs().mean().detach())}


class _JSDPretraining(Method):
    """The "jsd" stage of :class:`AdversarialMask`: g and the critic T_ω maximise the Jensen–Shannon
    MI bound between x̃ and f_θ(x̃) (eqs. 5–6) — Adam at ``lr_generator``, constant learning rate,
    the last epoch kept. Shares the mask's ``extra`` (so the trainer's checkpointing and the
    validation scores — of the masked classifier — are the mask's) and logs ``jsd`` per epoch
    into the mask's ``log``. The negatives' shuffles come from their own generator seeded by
    ``config.seed``."""

    name = "adversarial_mask_jsd"
    keep_last_epoch = True

    def __init__(self, mask: AdversarialMask):
        super().__init__()
        self.mask = mask
        self.extra = mask.extra
        self.log = mask.log
        self.generator: torch.Generator | None = None

    def setup(self, model: nn.Module, train: SplitData, config: TrainConfig) -> None:
        self.mask.freeze(model)
        self.mask.build(model, train, config.resolved_device())
        self.generator = torch.Generator().manual_seed(int(config.seed) + 15485863)  # its own stream
        self.log["jsd"] = []

    def make_optimizers(self, model: nn.Module, config: TrainConfig) -> dict[str, torch.optim.Optimizer]:
        params = list(self.extra["generator"].parameters()) + list(self.extra["critic"].parameters())
        return {"generator": torch.optim.Adam(params, lr=float(self.mask.params["lr_generator"]))}

    def make_schedulers(self, optimizers, config, steps_per_epoch) -> dict:
        return {}

    def train_mode(self, model: nn.Module) -> None:
        self.extra.train()
        model.eval()

    def logits(self, model: nn.Module, x: torch.Tensor, groups: torch.Tensor | None = None) -> torch.Tensor:
        return self.mask.logits(model, x, groups)

    def training_step(self, model: nn.Module, batch: dict, optimizers: Mapping[str, torch.optim.Optimizer]) -> dict[str, float]:
        optimizer = optimizers["generator"]
        x_tilde = self.mask.perturb(batch["x"])
        bound = jsd_mi_lower_bound(self.extra["critic"], x_tilde, model.features(x_tilde), self.generator)
        optimizer.zero_grad(set_to_none=True)
        (-bound).backward()  # maximise the bound (eq. 6)
        optimizer.step()
        return {"loss": -float(bound.detach()), "jsd": float(bound.detach())}

    def epoch_metrics(self, steps: Sequence[Mapping[str, float]]) -> dict[str, float]:
        self.log["jsd"].append(float(np.mean([step["jsd"] for step in steps])) if steps else float("nan"))
        return {"train_loss": -self.log["jsd"][-1], "jsd": self.log["jsd"][-1]}


@register_method
class FairDiagnosis(AdversarialMask):
    """Fair Diagnosis: label-conditioned discriminator d_Y(x̃, y) (eq. 7), see the module docstring."""

    name = "fair_diagnosis"
    conditional = True
