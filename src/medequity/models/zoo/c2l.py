"""C2L (Zhou et al. 2020, MICCAI): comparing-to-learn contrastive pre-training of a ResNet-18 on chest X-rays.

The authors' ``res18_C2L.pth`` (``funnyzhou/C2L_MICCAI2020``) is ``{"model": state_dict, ...}`` of
``InsResNet18``, whose ResNet is wrapped in ``nn.DataParallel`` under ``encoder``: keys
``encoder.module.conv1.weight`` … ``encoder.module.fc.{weight,bias}`` (the 128-d projection). Both
prefixes are stripped.

Feature: the 512-d average-pooled last stage (``layer=6`` of the authors' ResNet), the layer their
linear evaluation reads. FairMedFM used the forward default (``layer=7``): the 128-d projection
after L2 normalisation — a contrastive head, not a representation; we do not.
"""

from __future__ import annotations

from typing import Any

from medequity.models.registry import Backbone
from medequity.models.zoo.base import IMAGENET, ZooEntry, register_zoo, resnet_features, zoo_backbone

C2L = ZooEntry(
    name="c2l", paper="Zhou et al. 2020, C2L (FairMedFM App. A.2.1)",
    architecture="torchvision ResNet-18 (C2L's InsResNet18)",
    expected_file="res18_C2L.pth: {'model': ...}, keys encoder.module.{conv1,bn1,layer1-4,fc}.*",
    feature_layer="average-pooled layer4 (before the L2-normalised 128-d projection fc)", feature_dim=512,
    input_size=224, mean=IMAGENET[0], std=IMAGENET[1], licence="no licence stated in the authors' repository",
    allow_unexpected=("fc.*",),
)


@register_zoo(C2L)
def c2l(*, arch: str = "resnet18", **_: Any) -> Backbone:
    """C2L's ResNet without its projection head (``arch``: the released models are ResNet-18)."""
    from medequity.models.timm_backbones import timm_module_groups

    module = resnet_features(arch)
    backbone = zoo_backbone(C2L, module, module_groups=lambda: timm_module_groups(module), config={"arch": arch})
    backbone.feature_dim = 2048 if arch == "resnet50" else 512
    return backbone
