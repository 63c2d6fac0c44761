"""Backbones (timm, open_clip, our small CNN), safe checkpoint loading, the feature cache."""

from medequity.models.backbones import BACKBONES, Backbone, create_backbone
from medequity.models.checkpoint import CheckpointError, load_weights, read_state_dict
from medequity.models.classifier import Classifier

__all__ = ["BACKBONES", "Backbone", "CheckpointError", "Classifier", "create_backbone", "load_weights", "read_state_dict"]
