"""Zero-shot segmentation of 4 prompt types on the same images: encode once + cached embeddings
(medequity) vs FairMedFM's way (the image encoder run twice per image, again for every prompt type).

    .venv/bin/python benchmarks/seg_zero_shot_encode_once.py --model sam_vit_b --n 6

Both paths decode the same prompts from the same weights; the script checks that the masks are
identical and prints the wall-time ratio. Random weights (nothing is downloaded): the encoder's cost
does not depend on them. ViT-B at 1024 px takes a few seconds per image on a CPU.
"""

from __future__ import annotations

import argparse
import tempfile
import time
import warnings

import numpy as np
import torch

from medequity.data.prompts import make_prompts
from medequity.experiment import ExperimentSpec, prepare, train_model

PROMPTS = ("center", "rand", "rands", "bbox")


def fairmedfm_way(prepared, seed: int) -> dict:
    """Per prompt type, per image: the encoder twice (as FairMedFM's code), then decode."""
    segmenter = prepared.backbone
    data = prepared.data["test"]
    masks = {}
    for kind in PROMPTS:
        options = {"rands": {"k": 5}}.get(kind, {})
        for i in range(len(data)):
            item = data.items[i]
            x, geometry = segmenter.profile.prepare(item["image"])
            segmenter.encode(x[None])  # the first, discarded run of its pipeline
            embedding = segmenter.encode(x[None])[0]
            for cls, prompt in make_prompts(item["mask"], kind, seed=seed, sample_id=item["sample_id"], **options).items():
                if prompt is None:
                    continue
                points = labels = boxes = None
                if len(prompt.points):
                    points = torch.as_tensor(geometry.points_to_input(prompt.points), dtype=torch.float32)[None]
                    labels = torch.as_tensor(prompt.labels)[None]
                if prompt.box is not None:
                    boxes = torch.as_tensor(geometry.boxes_to_input(prompt.box), dtype=torch.float32)[None]
                logits, iou = segmenter.decode(embedding, points=points, point_labels=labels, boxes=boxes, multimask=True)
                best = int(torch.argmax(iou[0]))
                pred = (segmenter.upscale(logits[:, best:best + 1], geometry)[0, 0] > 0).numpy()
                truth = item["mask"] == cls
                dice = 2 * float(np.logical_and(pred, truth).sum()) / max(float(pred.sum() + truth.sum()), 1.0)
                masks[(kind, item["sample_id"], cls)] = (int(pred.sum()), round(dice, 12))
    return masks


def ours(prepared, seed: int) -> dict:
    """One zero-shot model; the test images encoded once (cached); every prompt type decodes from them."""
    masks = {}
    trained = train_model(prepared)
    for kind in PROMPTS:
        for row in trained.model.segment(trained.data["test"], seed=seed, prompt=kind):
            if not row["skipped"]:
                masks[(kind, row["sample_id"], row["class"])] = (int(row["pred_area"]), round(float(row["dice"]), 12))
    return masks


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="sam_vit_b")
    parser.add_argument("--n", type=int, default=6, help="test images")
    parser.add_argument("--image-size", type=int, default=96)
    args = parser.parse_args()
    warnings.simplefilter("ignore")
    torch.set_num_threads(2)
    n_total = max(60, int(np.ceil(args.n / 0.15)))  # enough for a test split of args.n images
    with tempfile.TemporaryDirectory() as cache:
        spec = ExperimentSpec(dataset="synthetic-segmentation", dataset_options={"preset": "seg-derm-lesion", "n": n_total,
                                                                                 "image_size": args.image_size},
                              attribute="skin_tone", task="segmentation", model=args.model, usage="seg_zs", cache_dir=cache)
        prepared = prepare(spec)
        test = prepared.data["test"]
        prepared = prepared.with_data(test=test.subset(np.arange(min(args.n, len(test)))))
        n = len(prepared.data["test"])
        start = time.perf_counter()
        reference = fairmedfm_way(prepared, spec.seed)
        theirs_s = time.perf_counter() - start
        start = time.perf_counter()
        mine = ours(prepared, spec.seed)
        ours_s = time.perf_counter() - start
    same = reference.keys() == mine.keys() and all(reference[k] == mine[k] for k in reference)
    print(f"{args.model}, {n} test images × {len(PROMPTS)} prompt types ({len(mine)} decoded masks)")
    print(f"FairMedFM's way (encoder twice per image per prompt type): {theirs_s:8.2f} s")
    print(f"medequity (encode once, cached embeddings):                 {ours_s:8.2f} s")
    print(f"ratio: {theirs_s / ours_s:.1f}x; identical masks: {same}")
    if not same:
        raise SystemExit("the two paths gave different masks")


if __name__ == "__main__":
    main()
