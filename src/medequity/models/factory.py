"""``create_backbone``: build a backbone by name and load local weights; nothing else.

The factory neither downloads nor trains. ``checkpoint`` is a local file or folder, read without
executing code (safetensors, or ``torch.load(weights_only=True)``). Our own synthetic pre-training
(``"synthetic:<modality>"``) is resolved to such a path by the experiment layer
(:func:`medequity.experiment.pretrain.synthetic_checkpoint`) before it calls this factory.
Foundation models of the zoo (:mod:`medequity.models.zoo`, e.g. ``dinov2-vitb14``) load their
official files through their own :attr:`~medequity.models.registry.Backbone.load_checkpoint`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from medequity.models.checkpoint import load_weights
from medequity.models.registry import BACKBONES, Backbone, resolve_backbone_name

SYNTHETIC_PREFIX = "synthetic:"


def create_backbone(name: str, *, checkpoint: str | Path | None = None, key_map: Mapping[str, str] | None = None,
                    allow_unexpected: Sequence[str] | None = None, allow_missing: Sequence[str] = (),
                    **kwargs: Any) -> Backbone:
    """Create a backbone by name; ``checkpoint`` loads local weights (safely), else random init.

    Names: a registered name (``small_cnn``, a zoo model such as ``biomedclip``), ``timm:<model>``
    or any timm model name, or ``open_clip:<model>`` (see
    :func:`medequity.models.registry.resolve_backbone_name`). ``key_map`` renames checkpoint keys
    (``{"old.": "new."}`` or ``{"re:<regex>": "<repl>"}``); ``allow_unexpected``/``allow_missing``
    are ``fnmatch`` patterns of keys that may be unused/absent (a zoo model adds its own, e.g. the
    classifier head its features skip). Other keyword arguments go to the family's factory.
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
        rules = {"key_map": dict(key_map or {}), "allow_missing": tuple(allow_missing),
                 "allow_unexpected": None if allow_unexpected is None else tuple(allow_unexpected)}
        if backbone.load_checkpoint is not None:
            report = backbone.load_checkpoint(checkpoint, **rules)
        else:
            report = load_weights(backbone.module, checkpoint, **rules)
        backbone.config["checkpoint"] = str(checkpoint)
        backbone.config["unexpected_keys"] = list(report.unexpected)[:20]
        if key_map:
            backbone.config["key_map"] = dict(key_map)
    return backbone
