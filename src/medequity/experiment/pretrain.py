"""Our own "foundation" weights for CPU demos: a small CNN pre-trained on unbiased synthetic data.

No weights can be downloaded here, and linear probing a randomly initialised encoder measures
little. ``checkpoint="synthetic:<modality>"`` trains ``small_cnn`` once on the unbiased preset of
that modality (its own seed, so its patients are not the benchmark's), stores the backbone weights
as safetensors in the cache, and reuses them afterwards — the role a public checkpoint plays in
FairMedFM: an encoder trained elsewhere, frozen for LP or adapted for FT.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np

from medequity.models.feature_cache import DEFAULT_CACHE_DIR

PRETRAIN_SEED = 1_000_003
PREFIX = "synthetic:"


def synthetic_checkpoint(backbone_name: str, spec: str, *, cache_dir: str | Path | None = None, n: int = 2000,
                         epochs: int = 6, backbone_options: dict | None = None) -> Path:
    """Path of the pre-trained weights for ``spec`` = ``"synthetic:<modality>"`` (trained if absent)."""
    from medequity.data import create_dataset
    from medequity.data.transforms import build_transform
    from medequity.methods import create_method
    from medequity.models.backbones import create_backbone
    from medequity.models.classifier import Classifier
    from medequity.training.data import make_split_data
    from medequity.training.trainer import TrainConfig, Trainer

    modality = spec[len(PREFIX):]
    options = dict(backbone_options or {})
    key = hashlib.sha256(json.dumps({"backbone": backbone_name, "options": options, "modality": modality, "n": n,
                                     "epochs": epochs, "seed": PRETRAIN_SEED}, sort_keys=True).encode()).hexdigest()[:16]
    folder = Path(cache_dir) if cache_dir is not None else DEFAULT_CACHE_DIR
    path = folder / "pretrained" / f"{backbone_name}-{modality}-{key}.safetensors"
    if path.is_file():
        return path
    dataset = create_dataset("synthetic", preset=f"{modality}-unbiased", n=n, seed=PRETRAIN_SEED)
    backbone = create_backbone(backbone_name, **options)
    transform = build_transform(backbone.transform_config())
    attribute = dataset.attributes[0]
    names = tuple(sorted(dataset.groups(attribute).dropna().astype(str).unique()))
    split = dataset.table["split"].astype(str).to_numpy()
    train = make_split_data(dataset.subset(np.flatnonzero(split != "val")), attribute, transform, names)
    val = make_split_data(dataset.subset(np.flatnonzero(split == "val")), attribute, transform, names)
    model = Classifier(backbone.module, backbone.feature_dim)
    config = TrainConfig(epochs=epochs, lr=2e-3, batch_size=64, patience=None, selection="auc", seed=PRETRAIN_SEED)
    Trainer().fit(model, create_method("erm"), train, val, config)

    from safetensors.torch import save_file

    from medequity.utils.io import atomic_write_bytes

    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    save_file({k: v.contiguous() for k, v in backbone.module.state_dict().items()}, str(tmp),
              metadata={"pretrained_on": f"synthetic {modality}-unbiased n={n} seed={PRETRAIN_SEED}", "epochs": str(epochs)})
    atomic_write_bytes(path, tmp.read_bytes())
    tmp.unlink()
    return path
