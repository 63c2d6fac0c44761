"""Peak memory of a 3D segmentation benchmark run, against the number of volumes: bounded by one
volume plus the model (it must not grow with N).

Part 1, the run (``--part run``): one benchmark cell as ``medequity bench`` runs it
(:func:`~medequity.experiment.run_experiment`: a 3D MONAI UNet trained with ``seg_ft`` and ERM for
one epoch at batch size 1, validation Dice each epoch, every test volume predicted, scored per
volume and bootstrapped) on N synthetic ``seg-organ-3d`` volumes. Each N runs in a fresh process;
the peak resident set (psutil RSS sampled every 2 ms, so torch's allocations count) is taken above
the resident set once the dataset is built and the model created, so the generator's own N volumes
(the synthetic dataset lives in memory, a loader reads files one at a time) are not counted; what
is counted is every copy, view, batch, activation, gradient, optimiser state and prediction the run
makes. Each N runs twice, with the default allocator and with freed blocks returned to the system
(``TRACKING_MALLOC``). Verdict, on the second: the growth at the largest N stays within the growth
at the smallest N plus one volume's float32 input and int64 mask (the run may hold one more volume
at a time, not all of them).

Part 2, zero-shot evaluation (``--part zero-shot``, the former script): ``PromptedSegmenter.segment``
over N volumes, slice-wise with a 2D model (``sam_tiny``, ``slices="positive"``) and native 3D with a
point-promptable 3D model (tiny ``vista3d``), measured in this process: the peak of Python/NumPy
allocations traced by ``tracemalloc`` (torch's CPU tensors are not traced) and the RSS growth
(indicative only: the allocator keeps freed pages).

    .venv/bin/python benchmarks/seg_3d_memory.py [--part run|zero-shot|both] [--sizes 16 48] [--image-size 64]

Measured (2 shared cores under load 7, one torch thread), run part, 32x64x64 volumes (one volume
as float32 input + int64 mask: 1.5 MiB; the UNet 0.13 MiB), peak growth with the default allocator
/ with freed blocks returned (``MALLOC_MMAP_THRESHOLD_=65536``, the column the verdict reads: glibc's
default keeps freed pages, so its peak moves by tens of MiB from run to run):

    N   train/val/test   before the fix         after
    16  5/2/9            143.0 /  67.6 MiB      163.7 / 60.4 MiB
    48  18/7/23          198.9 / 119.1 MiB      171.9 / 60.6 MiB
    96  45/17/34         401.2 / 245.5 MiB      160.8 / 60.6 MiB

Before: +177.8 MiB from N=16 to 96 (GROWS). The cause: the trainer scored the validation split in
batches of ``eval_batch_size`` = 512, so every validation volume went through the UNet at once, with
its activations and (K, *spatial) logits — 17 volumes at N=96, ~10 MiB each. Validation batches of a
model that scores its own samples (segmentation) are now at most the training batch
(:func:`medequity.training.trainer.eval_batch_size`); results are bit-identical. After: +0.2 MiB
from N=16 to 96: bounded — the ~60 MiB are one training step's activations and gradients for one
volume (a full-resolution 8-channel feature map alone is 4 MiB) and one volume's scoring, whatever N.
The test prediction, the per-volume scoring and the bench gallery (which predicts its chosen cases
again) already streamed; ``tests/experiment/test_segmentation_streaming.py`` checks all of it without
the allocator, by counting volume-sized objects alive (7 at N=24 and at N=60; 15 at N=24 before).
Part 2 (the former script, 16x32x32 volumes): sam_tiny traced peak 1.10/1.32/1.34 MiB at N =
2/8/32, vista3d 1.32/1.34/1.38 MiB: flat, but that traced number leaves out torch's tensors and the
model, which is why the run part was added.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import subprocess
import sys
import tempfile
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


def run_child(n: int, image_size: int) -> dict:
    """One benchmark cell on ``n`` volumes in this (fresh) process; memory above the prepared state."""
    from medequity.experiment import ExperimentSpec, prepare, run_experiment

    torch.manual_seed(0)
    with tempfile.TemporaryDirectory() as cache:
        depth = max(8, image_size // 2)
        spec = ExperimentSpec(
            dataset="synthetic-segmentation", dataset_options={"preset": "seg-organ-3d", "n": n, "image_size": image_size,
                                                               "split_fractions": {"train": 0.4, "val": 0.2, "test": 0.4}},
            attribute="sex", task="segmentation", model="monai_unet",
            model_options={"channels": [8, 16, 32], "strides": [2, 2], "num_res_units": 1,
                           "roi_size": [depth, image_size, image_size]},
            usage="seg_ft", method="erm", train={"epochs": 1, "batch_size": 1, "lr": 1e-3}, n_boot=50, cache_dir=cache)
        prepared = prepare(spec)
        model_bytes = sum(p.numel() * p.element_size() for p in prepared.backbone.module.parameters())
        volume_voxels = depth * image_size * image_size
        gc.collect()
        with RssPeak() as rss:
            start = time.perf_counter()
            result = run_experiment(prepared)
            seconds = time.perf_counter() - start
    dice = result.metrics.query("metric == 'dice' and group == 'overall'").value
    return {"n": n, "volumes": {k: len(v) for k, v in prepared.data.items()}, "rss_before": rss.start,
            "growth": rss.growth, "model": model_bytes, "volume": volume_voxels * (4 + 8), "seconds": seconds,
            "dice": float(dice.iloc[0]) if len(dice) else float("nan")}


#: glibc keeps freed heap pages (and moves its mmap threshold up as blocks are freed), so the RSS peak
#: of the default allocator varies by tens of MiB from run to run; with a fixed threshold every block
#: over 64 KiB is its own mapping, unmapped when freed, and the RSS follows the live allocations
TRACKING_MALLOC = {"MALLOC_MMAP_THRESHOLD_": "65536"}


def child(n: int, image_size: int, env: dict[str, str]) -> dict:
    out = subprocess.run([sys.executable, __file__, "--child", str(n), "--image-size", str(image_size)],
                         capture_output=True, text=True, check=True, env={**os.environ, **env}).stdout
    return json.loads(out.strip().splitlines()[-1])


def run_part(sizes: list[int], image_size: int) -> None:
    mib = 2**20
    print(f"benchmark run (seg_ft, 3D UNet, ERM, 1 epoch, batch 1, every test volume predicted), "
          f"volumes {max(8, image_size // 2)}x{image_size}x{image_size}; peak RSS growth with the default allocator "
          f"and with freed blocks returned ({' '.join(f'{k}={v}' for k, v in TRACKING_MALLOC.items())})")
    print(f"  {'N':>4} {'train/val/test':>15} {'RSS before MiB':>15} {'growth MiB':>11} {'returned MiB':>13} "
          f"{'model MiB':>10} {'one volume MiB':>15} {'all N volumes MiB':>18} {'s':>6} {'Dice':>6}")
    results = []
    for n in sizes:
        r = child(n, image_size, {})
        r["tracking"] = child(n, image_size, TRACKING_MALLOC)["growth"]
        results.append(r)
        split = "/".join(str(r["volumes"][k]) for k in ("train", "val", "test"))
        print(f"  {n:>4} {split:>15} {r['rss_before'] / mib:>15.1f} {r['growth'] / mib:>11.1f} {r['tracking'] / mib:>13.1f} "
              f"{r['model'] / mib:>10.2f} {r['volume'] / mib:>15.2f} {n * r['volume'] / mib:>18.1f} {r['seconds']:>6.1f} "
              f"{r['dice']:>6.3f}", flush=True)
    small, large = results[0], results[-1]
    # the verdict reads the column where freed memory leaves the RSS (the default allocator's peak is shown)
    bounded = large["tracking"] <= small["tracking"] + large["volume"]
    print(f"  peak growth (freed blocks returned) at N={large['n']} - at N={small['n']}: "
          f"{(large['tracking'] - small['tracking']) / mib:+.1f} MiB for {(large['n'] - small['n']) * large['volume'] / mib:.1f} "
          f"MiB more volumes (default allocator: {(large['growth'] - small['growth']) / mib:+.1f} MiB): "
          f"{'bounded (one volume plus the model and its working memory)' if bounded else 'GROWS with N'}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--part", choices=["run", "zero-shot", "both"], default="both")
    parser.add_argument("--sizes", type=int, nargs="+", default=None, help="numbers of volumes (run: 16 48; zero-shot: 2 8 32)")
    parser.add_argument("--image-size", type=int, default=None, help="volume height and width (run: 64; zero-shot: 32)")
    parser.add_argument("--models", nargs="+", default=list(MODELS))
    parser.add_argument("--child", type=int, default=None, help=argparse.SUPPRESS)  # one run in a fresh process
    args = parser.parse_args()
    warnings.simplefilter("ignore")
    torch.manual_seed(0)
    torch.set_num_threads(1)
    if args.child is not None:
        print(json.dumps(run_child(args.child, args.image_size)))
        return
    if args.part in ("run", "both"):
        run_part(args.sizes or [16, 48], args.image_size or 64)
    if args.part == "run":
        return
    args.sizes, args.image_size = args.sizes or [2, 8, 32], args.image_size or 32
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
