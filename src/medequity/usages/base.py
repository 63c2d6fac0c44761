"""Usages: how a backbone is adapted (FairMedFM §3.2): linear probing, fine-tuning, PEFT, CLIP.

A usage turns a backbone and the image splits into the model to train and the splits it trains
on (for linear probing: cached features instead of images). Methods then train that model.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from torch import nn

from medequity.registry import Registry

USAGES: Registry[Usage] = Registry("usage")


def register_usage(cls: type[Usage]) -> type[Usage]:
    USAGES.register(cls.name)(cls)
    return cls


def create_usage(name: str, **params: Any) -> Usage:
    return USAGES.create(name, **params)


@dataclass
class UsageContext:
    """What a usage may need besides the backbone and data."""

    cache_dir: Path | None = None
    device: str = "cpu"
    batch_size: int = 128
    progress: Any = None  # callable(done, total, description) for slow steps (feature extraction)
    # The dataset's zero-shot class names and templates (its loader's ``info["zero_shot"]``, see
    # medequity.data.zero_shot) and its name: CLIP zero-shot/CLIP-Adapt's default prompts.
    zero_shot: dict[str, Any] | None = None
    dataset: str | None = None


class Usage:
    name: ClassVar[str] = "base"
    defaults: ClassVar[dict[str, Any]] = {}
    #: True when the trained model works on cached features (head-only methods are then cheap).
    uses_features: ClassVar[bool] = False
    #: False for evaluation-only usages (CLIP zero-shot): the pipeline then trains for 0 epochs.
    trains: ClassVar[bool] = True
    #: Training settings (TrainConfig fields) of the usage's recipe unless the spec says otherwise
    #: (``seg_lora``: SAMed's AdamW with warm-up and poly decay).
    train_defaults: ClassVar[dict[str, Any]] = {}

    def __init__(self, **params: Any):
        unknown = sorted(set(params) - set(self.defaults))
        if unknown:
            raise ValueError(f"usage {self.name!r} has no parameter(s) {unknown}; valid: {sorted(self.defaults)}")
        self.params = {**self.defaults, **params}

    def build(self, backbone, data: dict, context: UsageContext) -> tuple[nn.Module, dict]:
        """(model to train, splits to train/evaluate it on)."""
        raise NotImplementedError
