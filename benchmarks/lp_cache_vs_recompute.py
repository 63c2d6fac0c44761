"""Linear probing: features cached once vs the frozen backbone re-run every epoch (FairMedFM's way).

Both paths train the same linear head with the same data, seed and schedule; the script prints
the wall time of each, the ratio, and both heads' validation AUC (they must agree: caching changes
speed, not results).

    .venv/bin/python benchmarks/lp_cache_vs_recompute.py                      # ViT-S, 2000 images, 20 epochs
    .venv/bin/python benchmarks/lp_cache_vs_recompute.py --images 500 --epochs 5 --size 112
"""

from __future__ import annotations

import argparse
import tempfile
import time

import numpy as np
import torch

from medequity.data import create_dataset
from medequity.data.transforms import build_transform
from medequity.metrics.weighted import SampleSet, evaluate
from medequity.models import create_backbone
from medequity.models.feature_cache import cached_features
from medequity.training.data import dataset_fingerprint, make_split_data


def auc(y, s) -> float:
    return float(evaluate("auc", SampleSet(np.asarray(y), np.asarray(s), None))[0])


def train_head(feature_fn, loader, n_features: int, epochs: int, seed: int) -> torch.nn.Linear:
    torch.manual_seed(seed)
    head = torch.nn.Linear(n_features, 1)
    optimizer = torch.optim.AdamW(head.parameters(), lr=1e-3, weight_decay=0.05)
    for _ in range(epochs):
        for batch in loader:
            with torch.no_grad():
                features = feature_fn(batch)
            loss = torch.nn.functional.binary_cross_entropy_with_logits(head(features).squeeze(-1), batch["y"])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    return head


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="vit_small_patch16_224")
    parser.add_argument("--images", type=int, default=2000)
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--batch-size", type=int, default=128)
    args = parser.parse_args()
    torch.set_num_threads(max(1, torch.get_num_threads()))

    dataset = create_dataset("synthetic", preset="derm-unbiased", n=args.images, seed=0)
    backbone = create_backbone(args.model, input_size=args.size)
    transform = build_transform({"name": "2d", "resize": args.size, "crop": None})
    names = tuple(sorted(dataset.groups("sex").dropna().unique()))
    data = make_split_data(dataset, "sex", transform, names)
    val_rows = np.flatnonzero(dataset.table["split"].astype(str).to_numpy() == "val")

    def loader():  # the same shuffling order for both paths
        return torch.utils.data.DataLoader(data.items, batch_size=args.batch_size, shuffle=True,
                                           generator=torch.Generator().manual_seed(0))

    module = backbone.module.eval()
    print(f"{args.model} at {args.size}px, {args.images} images, {args.epochs} epochs, "
          f"{torch.get_num_threads()} threads")

    start = time.perf_counter()
    head_recompute = train_head(lambda b: module(b["x"]), loader(), backbone.feature_dim, args.epochs, seed=1)
    t_recompute = time.perf_counter() - start
    print(f"recompute every epoch (FairMedFM): {t_recompute:8.1f} s")

    with tempfile.TemporaryDirectory() as cache:
        start = time.perf_counter()
        features, hit = cached_features(module, data.items, backbone_name=args.model, backbone_config=backbone.config,
                                        data_fingerprint=dataset_fingerprint(dataset), transform_config=transform.config(),
                                        feature_dim=backbone.feature_dim, cache_dir=cache, batch_size=args.batch_size)
        features = torch.from_numpy(np.array(features))
        t_extract = time.perf_counter() - start
        head_cached = train_head(lambda b: features[b["index"]], loader(), backbone.feature_dim, args.epochs, seed=1)
        t_cached = time.perf_counter() - start
        start = time.perf_counter()
        cached_features(module, data.items, backbone_name=args.model, backbone_config=backbone.config,
                        data_fingerprint=dataset_fingerprint(dataset), transform_config=transform.config(),
                        feature_dim=backbone.feature_dim, cache_dir=cache)
        t_reuse = time.perf_counter() - start
    print(f"cached features (extract once {t_extract:.1f} s + head): {t_cached:8.1f} s")
    print(f"speed-up: {t_recompute / t_cached:.1f}x; a later run reusing the cache needs {t_reuse:.2f} s for features")

    with torch.no_grad():
        val_features = features[val_rows]
        s_cached = torch.sigmoid(head_cached(val_features)).squeeze(-1).numpy()
        s_recompute = torch.sigmoid(head_recompute(val_features)).squeeze(-1).numpy()
    y_val = data.labels[val_rows]
    print(f"validation AUC: cached {auc(y_val, s_cached):.4f}, recompute {auc(y_val, s_recompute):.4f} "
          f"(max |score diff| {np.abs(s_cached - s_recompute).max():.2e})")


if __name__ == "__main__":
    main()
