"""Backbones (timm, open_clip, our small CNN), safe checkpoint loading, the feature cache.

Layout: :mod:`~medequity.models.registry` (``Backbone``, ``BACKBONES``, name resolution), one
module per backbone family that registers itself there, :mod:`~medequity.models.factory`
(``create_backbone``: build by name, load local weights). Adding a family = its module plus one
line below (an import, or ``BACKBONES.register_lazy`` for a family with a slow dependency).
"""

# Backbone families: each module registers its factories in BACKBONES.
from medequity.models import small_cnn, timm_backbones  # noqa: E402,F401
from medequity.models.checkpoint import CheckpointError, load_weights, read_state_dict
from medequity.models.classifier import Classifier
from medequity.models.factory import create_backbone
from medequity.models.registry import BACKBONES, Backbone, register_backbone, resolve_backbone_name

BACKBONES.register_lazy("open_clip", "medequity.models.clip", family=True)  # open_clip is slow to import

__all__ = ["BACKBONES", "Backbone", "CheckpointError", "Classifier", "create_backbone", "load_weights", "read_state_dict",
           "register_backbone", "resolve_backbone_name"]
