"""Backbones (timm, open_clip, our small CNN), segmenters (SAM family, MONAI), safe checkpoint
loading, the feature cache.

Layout: :mod:`~medequity.models.registry` (``Backbone``, ``BACKBONES``, name resolution), one
module per backbone family that registers itself there, :mod:`~medequity.models.factory`
(``create_backbone``: build by name, load local weights). Adding a family = its module plus one
line below (an import, or ``BACKBONES.register_lazy`` for a family with a slow dependency).
Segmenters: :mod:`~medequity.models.segmenter` (``Segmenter``, ``PreprocessProfile``,
``SEGMENTERS``, ``create_segmenter``) and one module per family in ``models/segmenters/``.
"""

# Backbone families: each module registers its factories in BACKBONES.
from medequity.models import (  # noqa: E402,F401
           segmenters,  # noqa: E402,F401  (segmenter families register on import)
           small_cnn,
           timm_backbones,
           zoo,  # the foundation-model zoo (FairMedFM's classification FMs by name)
)
from medequity.models.checkpoint import CheckpointError, load_weights, read_state_dict
from medequity.models.classifier import Classifier
from medequity.models.factory import create_backbone
from medequity.models.registry import BACKBONES, Backbone, register_backbone, resolve_backbone_name
from medequity.models.segmenter import SEGMENTERS, PreprocessProfile, Segmenter, create_segmenter, register_segmenter

BACKBONES.register_lazy("open_clip", "medequity.models.clip", family=True)  # open_clip is slow to import

__all__ = ["BACKBONES", "SEGMENTERS", "Backbone", "CheckpointError", "Classifier", "PreprocessProfile", "Segmenter",
           "create_backbone", "create_segmenter", "load_weights", "read_state_dict", "register_backbone",
           "register_segmenter", "resolve_backbone_name"]
