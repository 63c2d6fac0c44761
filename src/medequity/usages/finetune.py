"""Full fine-tuning (FairMedFM §3.2 "FT"): every backbone parameter and the head train."""

from __future__ import annotations

from medequity.models.classifier import Classifier
from medequity.usages.base import Usage, UsageContext, register_usage


@register_usage
class FineTune(Usage):
    name = "ft"

    def build(self, backbone, data: dict, context: UsageContext):
        model = Classifier(backbone.module, backbone.feature_dim)
        return model, data
