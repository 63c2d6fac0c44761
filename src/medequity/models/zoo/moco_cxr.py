"""MoCo-CXR (Sowrirajan et al. 2021, MIDL): MoCo v2 pre-training of a ResNet-18 on CheXpert.

The authors' checkpoints (``stanfordmlgroup/MoCo-CXR``, e.g. ``r8w-00001.pth.tar``) are MoCo's
training state: ``{"state_dict": ...}`` with ``module.encoder_q.*`` (the query ResNet; ``fc`` is the
128-d contrastive projection), ``module.encoder_k.*`` (the momentum copy) and ``module.queue``.
``module.`` and ``encoder_q.`` are stripped; the key encoder, the queue and ``fc`` are unused.

Feature: the query encoder's 512-d average-pooled last stage, *before* ``fc`` — MoCo's linear
protocol (``main_lincls.py`` keeps ``encoder_q`` up to the fc). FairMedFM skipped every ``fc`` key on
load and read features *after* a randomly initialised fc; we do not.
"""

from __future__ import annotations

from typing import Any

from medequity.models.registry import Backbone
from medequity.models.zoo.base import IMAGENET, ZooEntry, register_zoo, resnet_features, zoo_backbone

MOCO_CXR = ZooEntry(
    name="moco-cxr", paper="Sowrirajan et al. 2021, MoCo-CXR (FairMedFM App. A.2.1)",
    architecture="torchvision ResNet-18 (MoCo v2 query encoder)",
    expected_file="MoCo-CXR .pth.tar: {'state_dict': ...}, keys module.encoder_q.*, module.encoder_k.*, module.queue, "
                  "module.queue_ptr",
    feature_layer="query encoder's average-pooled layer4 (before the contrastive fc)", feature_dim=512,
    input_size=224, mean=IMAGENET[0], std=IMAGENET[1], licence="MIT (repository)",
    allow_unexpected=("fc.*", "encoder_k.*", "queue", "queue_ptr"),
)


@register_zoo(MOCO_CXR)
def moco_cxr(*, arch: str = "resnet18", **_: Any) -> Backbone:
    """MoCo-CXR's query ResNet without its projection (``arch``: resnet18 as in FairMedFM, or resnet50)."""
    from medequity.models.timm_backbones import timm_module_groups

    module = resnet_features(arch)
    backbone = zoo_backbone(MOCO_CXR, module, module_groups=lambda: timm_module_groups(module), config={"arch": arch})
    backbone.feature_dim = 2048 if arch == "resnet50" else 512
    return backbone
