"""``create_backbone``: build a backbone by name and load local weights; nothing else.

The factory neither downloads nor trains. ``checkpoint`` is a local file or folder, read without
executing code (safetensors, or ``torch.load(weights_only=True)``). Our own synthetic pre-training
(``"synthetic:<modality>"``) is resolved to such a path by the experiment layer
(:func:`medequity.experiment.pretrain.synthetic_checkpoint`) before it calls this factory.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from medequity.models.checkpoint import load_weights
from medequity.models.registry import BACKBONES, Backbone, resolve_backbone_name

SYNTHETIC_PREFIX = "synthetic:"


def create_backbone(name: str, *, checkpoint: str | Path | None = None, **kwargs: Any) -> Backbone:
    """Create a backbone by name; ``checkpoint`` loads local weights (safely), else random init.

    Names: a registered name (``small_cnn``), ``timm:<model>`` or any timm model name, or
    ``open_clip:<model>`` (see :func:`medequity.models.registry.resolve_backbone_name`). Other
    keyword arguments go to the family's factory.
    """
    if isinstance(checkpoint, str) and checkpoint.startswith(SYNTHETIC_PREFIX):
        raise ValueError(
            f"checkpoint={checkpoint!r} is not a file: 'synthetic:<modality>' weights are trained by the "
            "experiment layer and must be resolved by medequity.experiment (e.g. "
            "medequity.experiment.pretrain.synthetic_checkpoint) before create_backbone, which only loads local weights")
    if "cache_dir" in kwargs:
        raise TypeError("create_backbone() takes no cache_dir: it only served 'synthetic:' checkpoints, which "
                        "medequity.experiment now resolves (with its cache_dir) before calling create_backbone")
    entry, extra = resolve_backbone_name(name)
    backbone = BACKBONES.create(entry, **extra, **kwargs)
    if checkpoint is not None:
        report = load_weights(backbone.module, checkpoint)
        backbone.config["checkpoint"] = str(checkpoint)
        backbone.config["unexpected_keys"] = list(report.unexpected)[:20]
    return backbone
