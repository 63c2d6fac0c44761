"""CLIP zero-shot and CLIP-Adapt (FairMedFM §3.2 "CLIP-ZS and CLIP-Adapt", App. F).

Zero-shot: each class gets a text prototype — the mean of the unit-norm text embeddings of its
prompts (templates × class names, e.g. "a photo of {}." × "no disease"), renormalised. The score is
the softmax over the classes of ``logit_scale · cos(image embedding, prototype)``; with two classes
P(positive) = sigmoid(logit_scale · (cos⁺ − cos⁻)), so the model keeps the library's one-logit
interface: ``Classifier``-like, with the prototype matrix as its head. Nothing trains — run it with
``train={"epochs": 0}`` (the trainer then skips the optimiser).

Prompts (FairMedFM's per-dataset wording): by default the dataset's own declaration
(``info["zero_shot"]`` of its loader, :mod:`medequity.data.zero_shot`, e.g. CheXpert's "a chest X-ray
of a {}" × (diseased, normal)), reached through :class:`~medequity.usages.base.UsageContext`. The
usage's ``prompts`` replace it; ``class_names`` and/or ``templates`` replace its part; a dataset that
declares nothing gets the generic :data:`GENERIC_TEMPLATES` × :data:`GENERIC_CLASS_NAMES`. The
prompts used and where each part came from are kept as ``model.usage_record`` (saved in run.json).

CLIP-Adapt: the same head, its prototypes initialised from the zero-shot ones and trained, the
image encoder frozen — so the head trains on cached image embeddings, like linear probing. FairMedFM
normalises the trainable prototypes in every forward and uses a fixed scale (100 in its wrapper);
we do the same, with the model's own learned scale by default. At initialisation CLIP-Adapt
predicts exactly what zero-shot does.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from medequity.usages.base import Usage, UsageContext, register_usage
from medequity.usages.linear_probe import feature_splits
from medequity.usages.peft_usages import trainable_summary

#: For datasets that declare no zero-shot prompts (a user's table): generic medical wording.
GENERIC_TEMPLATES = ("a photo of {}.", "a medical image showing {}.", "there is {}.")
GENERIC_CLASS_NAMES = ("no disease", "disease")  # (negative class = label 0, positive class = label 1)


class PrototypeHead(nn.Module):
    """One logit from cosine similarities to a negative and a positive class prototype.

    ``forward(features) -> (B, 1)``, like ``nn.Linear(feature_dim, 1)``: the logit
    ``scale · (cos(f, p₁) − cos(f, p₀))`` equals the log-odds of the two-class softmax.
    """

    def __init__(self, prototypes: torch.Tensor, logit_scale: float, *, trainable: bool):
        super().__init__()
        if prototypes.shape[0] != 2:
            raise ValueError(f"need 2 prototypes (negative, positive); got {tuple(prototypes.shape)}")
        self.prototypes = nn.Parameter(prototypes.detach().clone().float(), requires_grad=trainable)
        self.register_buffer("logit_scale", torch.tensor(float(logit_scale)))
        self.in_features, self.out_features = prototypes.shape[1], 1

    def class_logits(self, features: torch.Tensor) -> torch.Tensor:
        """(B, 2) scaled cosine similarities, the logits of CLIP's class softmax."""
        return self.logit_scale * F.normalize(features.float(), dim=-1) @ F.normalize(self.prototypes, dim=-1).T

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        logits = self.class_logits(features)
        return (logits[:, 1] - logits[:, 0]).unsqueeze(-1)


class PrototypeClassifier(nn.Module):
    """A frozen image encoder (or none, on cached embeddings) and a :class:`PrototypeHead`.

    Same interface as :class:`~medequity.models.classifier.Classifier`: ``features``, ``head``,
    one logit per image; the encoder stays in eval mode and never trains.
    """

    def __init__(self, encoder: nn.Module | None, head: PrototypeHead):
        super().__init__()
        self.backbone = encoder if encoder is not None else nn.Identity()
        self.backbone.requires_grad_(False)
        self.head = head
        self.feature_dim = head.in_features
        self.frozen_backbone = True

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.backbone(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x)).squeeze(-1)

    def train(self, mode: bool = True) -> PrototypeClassifier:
        super().train(mode)
        self.backbone.eval()
        return self


def resolve_prompts(params: dict, context: UsageContext) -> tuple[list[list[str]], dict]:
    """([[negative prompts], [positive prompts]], record): the usage's ``prompts``, else its
    ``class_names``/``templates`` over the dataset's declared ones (``context.zero_shot``), else the
    generic ones. The record says which prompts were used and where each part came from."""
    if params.get("prompts") is not None:
        prompts = class_prompts(params)
        return prompts, {"negative": prompts[0], "positive": prompts[1], "source": "usage parameter 'prompts'"}
    declared = context.zero_shot
    dataset = f"dataset {context.dataset!r}" if context.dataset else "the dataset"
    chosen, sources = {}, {}
    for part, generic in (("class_names", GENERIC_CLASS_NAMES), ("templates", GENERIC_TEMPLATES)):
        if params.get(part) is not None:
            chosen[part], sources[part] = params[part], f"usage parameter {part!r}"
        elif declared is not None:
            chosen[part] = declared[part]
            sources[part] = f"{dataset} ({declared.get('source', 'its loader')})"
        else:
            chosen[part], sources[part] = list(generic), "generic default (the dataset declares no zero-shot prompts)"
    prompts = class_prompts({**params, **chosen})
    record = {"negative": prompts[0], "positive": prompts[1], "class_names": list(chosen["class_names"]),
              "templates": [chosen["templates"]] if isinstance(chosen["templates"], str) else list(chosen["templates"]),
              "source": sources}
    return prompts, record


def class_prompts(params: dict) -> list[list[str]]:
    """[[negative prompts], [positive prompts]]: explicit ``prompts`` or templates × class names."""
    if params.get("prompts") is not None:
        prompts = params["prompts"]
        negative, positive = (prompts["negative"], prompts["positive"]) if isinstance(prompts, dict) else prompts
        out = [[negative] if isinstance(negative, str) else list(negative), [positive] if isinstance(positive, str) else list(positive)]
    else:
        names = params["class_names"]
        if len(names) != 2:
            raise ValueError(f"class_names must be (negative, positive); got {names!r}")
        templates = [params["templates"]] if isinstance(params["templates"], str) else list(params["templates"])
        out = []
        for name in names:
            synonyms = [name] if isinstance(name, str) else list(name)
            out.append([template.format(s) for template in templates for s in synonyms])
    if not all(out):
        raise ValueError("each class needs at least one prompt")
    return out


def text_prototypes(backbone, prompts: list[list[str]], device: str = "cpu") -> torch.Tensor:
    """(2, D) class prototypes: mean of each class's unit-norm prompt embeddings, renormalised."""
    from medequity.models.clip import clip_bundle  # open_clip is optional and slow to import

    bundle = clip_bundle(backbone)
    return torch.stack([F.normalize(bundle.encode_text(p, device=device).mean(0), dim=-1) for p in prompts])


class _CLIPUsage(Usage):
    # None: the dataset's declared class names / templates (see resolve_prompts).
    defaults = {"class_names": None, "templates": None, "prompts": None, "logit_scale": None}

    def head(self, backbone, context: UsageContext, *, trainable: bool) -> PrototypeHead:
        self.prompts, self.record = resolve_prompts(self.params, context)
        prototypes = text_prototypes(backbone, self.prompts, device=context.device)
        scale = self.params["logit_scale"]
        if scale is None:
            from medequity.models.clip import clip_bundle

            scale = clip_bundle(backbone).logit_scale
        return PrototypeHead(prototypes, scale, trainable=trainable)


@register_usage
class CLIPZeroShot(_CLIPUsage):
    """CLIP-ZS: fixed text prototypes, nothing trains (the pipeline runs it with 0 epochs)."""

    name = "clip_zs"
    trains = False

    def build(self, backbone, data: dict, context: UsageContext):
        model = PrototypeClassifier(backbone.module, self.head(backbone, context, trainable=False))
        model.trainable_summary = trainable_summary(model)
        model.usage_record = {"usage": self.name, "prompts": self.record}
        return model, data


@register_usage
class CLIPAdapt(_CLIPUsage):
    """CLIP-Adapt: prototypes initialised from zero-shot and trained on cached image embeddings."""

    name = "clip_adapt"
    uses_features = True

    def build(self, backbone, data: dict, context: UsageContext):
        model = PrototypeClassifier(None, self.head(backbone, context, trainable=True))
        model.trainable_summary = trainable_summary(model)
        model.usage_record = {"usage": self.name, "prompts": self.record}
        return model, feature_splits(backbone, data, context)
