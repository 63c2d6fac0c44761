"""Features of a frozen encoder, computed once and cached on disk, memory-mapped.

FairMedFM's linear probing re-runs the frozen backbone every epoch; here the features of each
(backbone weights, data, preprocessing) are computed once, written atomically as ``.npy`` and
memory-mapped by every head-only method (LP, FairDi steps 1–2, post-processing). The key hashes
the backbone's name, config and weights, the data's fingerprint and the transform's config, so a
change to any of them computes new features instead of reusing stale ones. Hashing the weights
reads every one of them (about a second for a ViT-B): a caller that asks for several splits of one
unchanged module hashes it once (:func:`~medequity.models.checkpoint.state_fingerprint`) and
passes the result as ``fingerprint``.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from torch import nn

from medequity.models.checkpoint import state_fingerprint
from medequity.utils.io import atomic_write_text

DEFAULT_CACHE_DIR = Path(os.environ.get("MEDEQUITY_CACHE", ".medequity_cache"))


def cache_key(backbone_name: str, backbone_config: dict, weights: str, data_fingerprint: str, transform_config: dict) -> str:
    payload = json.dumps(
        {"backbone": backbone_name, "config": backbone_config, "weights": weights, "data": data_fingerprint,
         "transform": transform_config},
        sort_keys=True, default=str,
    )
    return hashlib.sha256(payload.encode()).hexdigest()[:24]


@torch.no_grad()
def compute_features(
    module: nn.Module,
    dataset: torch.utils.data.Dataset,
    *,
    batch_size: int = 128,
    device: str | torch.device = "cpu",
    progress: Callable[[int, int], None] | None = None,
    out: np.ndarray | None = None,
) -> np.ndarray:
    """Features (N, D) of every item ``dataset[i]["x"]``, in order, with the module in eval mode."""
    module = module.to(device).eval()
    loader = torch.utils.data.DataLoader(dataset, batch_size=batch_size, shuffle=False)
    chunks, done = [], 0
    for batch in loader:
        feats = module(batch["x"].to(device)).float().cpu().numpy()
        if out is not None:
            out[done : done + len(feats)] = feats
        else:
            chunks.append(feats)
        done += len(feats)
        if progress is not None:
            progress(done, len(dataset))
    return out if out is not None else np.concatenate(chunks)


def cached_features(
    module: nn.Module,
    dataset: torch.utils.data.Dataset,
    *,
    backbone_name: str,
    backbone_config: dict,
    data_fingerprint: str,
    transform_config: dict,
    feature_dim: int,
    cache_dir: str | Path | None = None,
    batch_size: int = 128,
    device: str | torch.device = "cpu",
    progress: Callable[[int, int], None] | None = None,
    fingerprint: str | None = None,
) -> tuple[np.ndarray, bool]:
    """(memory-mapped features, whether they came from the cache). ``fingerprint``: the module's
    :func:`~medequity.models.checkpoint.state_fingerprint` when the caller already has it (it must
    be of the module as it is now: a stale one would serve another model's features); None hashes
    the module here."""
    folder = Path(cache_dir) if cache_dir is not None else DEFAULT_CACHE_DIR
    folder.mkdir(parents=True, exist_ok=True)
    weights = state_fingerprint(module) if fingerprint is None else fingerprint
    key = cache_key(backbone_name, backbone_config, weights, data_fingerprint, transform_config)
    path = folder / f"{key}.npy"
    if path.is_file():
        features = np.load(path, mmap_mode="r")
        if features.shape == (len(dataset), feature_dim):
            return features, True
    tmp = folder / f".{key}.{os.getpid()}.tmp.npy"
    try:
        array = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.float32, shape=(len(dataset), feature_dim))
        compute_features(module, dataset, batch_size=batch_size, device=device, progress=progress, out=array)
        array.flush()
        del array
        os.replace(tmp, path)  # atomic: a stopped run never leaves a half-written cache entry
    finally:
        tmp.unlink(missing_ok=True)
    atomic_write_text(folder / f"{key}.json", json.dumps(
        {"backbone": backbone_name, "config": backbone_config, "data": data_fingerprint, "transform": transform_config,
         "shape": [len(dataset), feature_dim]}, indent=2, default=str))
    return np.load(path, mmap_mode="r"), False
