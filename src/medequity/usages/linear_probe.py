"""Linear probing on cached features (FairMedFM §3.2 "LP").

The frozen encoder runs once per (weights, data, preprocessing) — the features are cached on disk
and memory-mapped — and the head trains on them. FairMedFM re-runs the frozen backbone every epoch
(with BatchNorm in train mode); ``benchmarks/lp_cache_vs_recompute.py`` measures the difference.
"""

from __future__ import annotations

import numpy as np

from medequity.models.checkpoint import state_fingerprint
from medequity.models.classifier import Classifier
from medequity.models.feature_cache import cached_features
from medequity.training.data import ArrayItems
from medequity.usages.base import Usage, UsageContext, register_usage


def feature_splits(backbone, data: dict, context: UsageContext) -> dict:
    """Each split with its items replaced by the backbone's cached features. The frozen backbone's
    weights are hashed once for all splits (the cache key's weight part; ~1 s for a ViT-B)."""
    out = {}
    weights = state_fingerprint(backbone.module)
    for split, split_data in data.items():
        progress = None
        if context.progress is not None:
            progress = lambda done, total, s=split: context.progress(done, total, f"features ({s})")  # noqa: E731
        features, _ = cached_features(
            backbone.module, split_data.items, backbone_name=backbone.name, backbone_config=backbone.config,
            data_fingerprint=split_data.fingerprint, transform_config=split_data.extra.get("transform", {}),
            feature_dim=backbone.feature_dim, cache_dir=context.cache_dir, batch_size=context.batch_size,
            device=context.device, progress=progress, fingerprint=weights,
        )
        features = np.asarray(features)
        new = split_data.with_items(ArrayItems(features, split_data.labels, split_data.groups), "+features")
        new.extra["features"] = features
        out[split] = new
    return out


@register_usage
class LinearProbe(Usage):
    """Frozen encoder, trained linear head on cached features."""

    name = "lp"
    uses_features = True

    def build(self, backbone, data: dict, context: UsageContext):
        model = Classifier(None, backbone.feature_dim)
        return model, feature_splits(backbone, data, context)
