"""Peak memory of zero-shot segmentation of volumes stays bounded by one volume (it does not grow
with the number of volumes): slice-wise with a 2D model (``sam_tiny``, ``slices="positive"``) and
native 3D with a point-promptable 3D model (tiny ``vista3d``, ``slices="native_3d"``).

    .venv/bin/python benchmarks/seg_3d_memory.py [--sizes 2 8 32] [--image-size 32]

For N volumes of ``seg-organ-3d`` the script runs ``PromptedSegmenter.segment`` over the split and
measures, for that evaluation only: the peak of Python/NumPy allocations traced by ``tracemalloc``
above the level before it (torch's CPU tensors are not traced), and the peak resident-set growth
(psutil RSS, sampled every 2 ms; the allocator keeps freed pages, so later runs may show 0, and
torch's allocations make it noisy: for vista3d a repeated N=32 run grew 0 MiB and N=64 then 40 MiB,
so RSS is indicative only; the verdict uses the traced peak). One
warm-up volume runs first so that one-off allocations (lazy imports, kernels) are not counted.
Random weights: memory does not depend on them. The rows (a few hundred bytes per volume and
class) are the only thing kept per volume.
"""

from __future__ import annotations

import argparse
import gc
import threading
import time
import tracemalloc
import warnings

import numpy as np
import psutil
import torch

from medequity.data.base import create_dataset
from medequity.models import create_segmenter
from medequity.training.data import make_segmentation_split
from medequity.usages.seg_zero_shot import PromptedSegmenter, SegmentZeroShot

MODELS = {"sam_tiny": {}, "vista3d": {"encoder_embed_dim": 8, "blocks_down": (1, 1, 1, 1, 1), "roi_size": 32}}


def split(n: int, image_size: int):
    dataset = create_dataset("synthetic-segmentation", preset="seg-organ-3d", n=n, image_size=image_size)
    groups = tuple(sorted({str(g) for g in dataset.groups("sex")}))
    return make_segmentation_split(dataset, "sex", groups)


class RssPeak:
    """Peak RSS growth over a block, sampled by a thread."""

    def __init__(self, every: float = 0.002):
        self.process, self.every, self.peak, self._stop = psutil.Process(), every, 0, threading.Event()

    def _watch(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self.process.memory_info().rss)
            time.sleep(self.every)

    def __enter__(self):
        self.start = self.peak = self.process.memory_info().rss
        self._thread = threading.Thread(target=self._watch, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self.process.memory_info().rss)
        self.growth = self.peak - self.start


def measure(model: PromptedSegmenter, n: int, image_size: int, seed: int = 0) -> dict:
    data = split(n, image_size)
    first = data.items[0]
    volume_bytes = np.asarray(first["image"]).nbytes + np.asarray(first["mask"]).nbytes
    gc.collect()
    tracemalloc.start()
    base = tracemalloc.get_traced_memory()[0]
    tracemalloc.reset_peak()
    start = time.perf_counter()
    with RssPeak() as rss:
        rows = list(model.segment(data, seed=seed))
    seconds = time.perf_counter() - start
    peak = tracemalloc.get_traced_memory()[1] - base
    tracemalloc.stop()
    dice = np.array([r["dice"] for r in rows if not r["skipped"]])
    return {"n": n, "rows": len(rows), "traced_peak": peak, "rss_growth": rss.growth, "volume": volume_bytes,
            "seconds": seconds, "dice": float(np.nanmean(dice)) if len(dice) else float("nan")}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[2, 8, 32])
    parser.add_argument("--image-size", type=int, default=32)
    parser.add_argument("--models", nargs="+", default=list(MODELS))
    args = parser.parse_args()
    warnings.simplefilter("ignore")
    torch.manual_seed(0)
    torch.set_num_threads(1)
    mib = 2**20
    for name in args.models:
        model = PromptedSegmenter(create_segmenter(name, **MODELS[name]), {**SegmentZeroShot.defaults, "prompt": "center"})
        mode = "native_3d" if model.native_3d else "positive (slice-wise)"
        list(model.segment(split(2, args.image_size).subset(np.arange(1)), seed=0))  # warm-up
        print(f"{name}: slices={mode}, image_size={args.image_size}")
        print(f"  {'N':>3} {'rows':>5} {'traced peak MiB':>16} {'RSS growth MiB':>15} {'one volume MiB':>15} "
              f"{'all N volumes MiB':>18} {'s':>6} {'mean Dice':>9}")
        results = [measure(model, n, args.image_size) for n in args.sizes]
        for r in results:
            print(f"  {r['n']:>3} {r['rows']:>5} {r['traced_peak'] / mib:>16.2f} {r['rss_growth'] / mib:>15.2f} "
                  f"{r['volume'] / mib:>15.3f} {r['n'] * r['volume'] / mib:>18.3f} {r['seconds']:>6.1f} {r['dice']:>9.3f}")
        small, large = results[0], results[-1]
        ratio = large["traced_peak"] / max(small["traced_peak"], 1)
        bounded = large["traced_peak"] <= 2 * small["traced_peak"] + 4 * large["volume"] + 2**20
        print(f"  traced peak at N={large['n']} / N={small['n']}: {ratio:.2f}x for {large['n'] / small['n']:.0f}x the volumes; "
              f"traced peak {'bounded by one volume (does not grow with N)' if bounded else 'GROWS with N'}; "
              f"RSS growth at N={large['n']}: {large['rss_growth'] / mib:.1f} MiB (torch/allocator, not traced: indicative only)")


if __name__ == "__main__":
    main()
