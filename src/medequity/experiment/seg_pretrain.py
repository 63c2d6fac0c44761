"""Our own promptable "foundation" segmenter for CPU demos: a SAM-family model pre-trained on
unbiased synthetic segmentation data.

The companion of :mod:`medequity.experiment.pretrain` (classification) for segmenters: no weights
can be downloaded here, and prompting a randomly initialised SAM measures nothing. A segmenter
spec with ``checkpoint: "synthetic:<preset>"`` (e.g. ``synthetic:seg-derm-unbiased``) trains the
whole model once — image encoder, prompt encoder and mask decoder, SAM's promptable objective — on
that unbiased preset of :mod:`medequity.data.synthetic_segmentation` (its own seed, so its patients
are not the benchmark's), stores the weights as safetensors in the cache (official key names), and
reuses them afterwards. Zero-shot prompting (``seg_zs``) and decoder training on the frozen
encoder (``seg_decoder``) then start from a model that has learnt to segment, as they would from
SAM's or MedSAM's released weights.

The recipe (ours, sized for a 2-core CPU): every image gets one prompt per step, its type drawn
uniformly from the four of FairMedFM's SEG-ZS (box, centre point, one random point, five random
points; :func:`medequity.data.prompts.make_prompts`); all four mask outputs (the single-mask token
and the three multi-mask tokens) are trained on the mask, loss ``BCE + Dice`` each on the
decoder-resolution mask (SAM trains the best of its three outputs with focal + Dice; BCE and
training all four are ours: one lesion per image has no ambiguity), plus SAM's IoU-head loss (MSE
against each output's actual IoU), AdamW, fixed learning rate. Training every token matters
downstream: zero-shot multi-mask output picks a token by predicted IoU, and ``seg_decoder``'s
``C + 1`` head starts from tokens 0 and 1 (with token 1 untrained, its lesion channel collapsed to
background: Dice 0 after 10 epochs). Default size (n=160, 10 epochs, 48 px) on ``sam_tiny`` with
``patch_size: 4``: ~18 CPU-seconds on one thread; box-prompted Dice 0.86 on held-out light-skin
lesions of ``seg-derm-irregular``'s shapes, against 0.77 for the filled box.
Random state: the caller's is preserved
(:func:`~medequity.experiment.pretrain.preserved_random_state`) and the weights depend only on the
recipe, so a cold-cache run and a warm-cache run are identical.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from medequity.data.prompts import PROMPT_KINDS, make_prompts
from medequity.experiment.pretrain import PREFIX, PRETRAIN_SEED, preserved_random_state
from medequity.models.feature_cache import DEFAULT_CACHE_DIR
from medequity.models.segmenter import create_segmenter
from medequity.usages._segmentation import sam_training_target
from medequity.utils.io import atomic_save_safetensors

RECIPE = 2  # bumped whenever the pre-training changes (cached weights of an older recipe are not reused)
PROMPT_OPTIONS = {"bbox": {}, "center": {}, "rand": {}, "rands": {"k": 5}}


def synthetic_segmenter_checkpoint(name: str, spec: str, *, cache_dir: str | Path | None = None, n: int = 160,
                                   epochs: int = 10, image_size: int = 48, lr: float = 2e-3, batch_size: int = 16,
                                   options: dict | None = None, progress: Callable[[str], None] | None = None) -> Path:
    """Path of the pre-trained weights of segmenter ``name`` for ``spec`` = ``"synthetic:<preset>"``
    (trained on first use). ``<preset>`` must be an unbiased segmentation preset (``seg-…-unbiased``
    or one without knobs): the pre-training data must not plant the bias a benchmark measures."""
    from medequity.data.synthetic_segmentation import SEG_KNOB_TYPES, SEG_PRESETS

    preset = spec[len(PREFIX):]
    if preset not in SEG_PRESETS.names():
        raise ValueError(f"checkpoint {spec!r}: {preset!r} is not a synthetic segmentation preset; "
                         f"known: {', '.join(SEG_PRESETS.names())} (e.g. 'synthetic:seg-derm-unbiased')")
    if any(key in SEG_KNOB_TYPES for key in SEG_PRESETS.create(preset)):  # shape settings are not a bias
        raise ValueError(f"checkpoint {spec!r}: pre-training needs an unbiased preset (no knob); {preset!r} plants a "
                         f"bias — use e.g. 'synthetic:seg-derm-unbiased'")
    options = dict(options or {})
    key = hashlib.sha256(json.dumps({"segmenter": name, "options": options, "preset": preset, "n": n, "epochs": epochs,
                                     "image_size": image_size, "lr": lr, "batch_size": batch_size, "seed": PRETRAIN_SEED,
                                     "recipe": RECIPE}, sort_keys=True).encode()).hexdigest()[:16]
    folder = Path(cache_dir) if cache_dir is not None else DEFAULT_CACHE_DIR
    path = folder / "pretrained" / f"{name}-{preset}-{key}.safetensors"
    if path.is_file():
        return path
    with preserved_random_state():
        return _pretrain(name, preset, path, n=n, epochs=epochs, image_size=image_size, lr=lr, batch_size=batch_size,
                         options=options, progress=progress or (lambda _: None))


def _prompt_tensors(prompt, geometry) -> dict[str, Any]:
    points = labels = boxes = None
    if prompt.points is not None and len(prompt.points):
        points = torch.as_tensor(geometry.points_to_input(prompt.points), dtype=torch.float32)[None]
        labels = torch.as_tensor(prompt.labels, dtype=torch.int64)[None]
    if prompt.box is not None:
        boxes = torch.as_tensor(geometry.boxes_to_input(np.asarray(prompt.box)), dtype=torch.float32)[None]
    return {"points": (points, labels) if points is not None else None, "boxes": boxes}


def _decode_batch(sam: Any, embeddings: torch.Tensor, prompts: list[dict[str, Any]]) -> tuple[torch.Tensor, torch.Tensor]:
    """Logits of every mask token ``(B, 4, h', w')`` and predicted IoUs ``(B, 4)`` of ``B`` images
    with one prompt each (all of one type).

    SAM's mask decoder takes one image and many prompts (it repeats the image embedding per
    prompt); ``torch.func.vmap`` maps it over (image, prompt) pairs instead: one batched call in
    place of ``B`` (4× faster on a CPU), the same logits as calling it per image."""
    points = [p["points"] for p in prompts]
    sparse, dense = sam.prompt_encoder(
        points=None if points[0] is None else (torch.cat([p[0] for p in points]), torch.cat([p[1] for p in points])),
        boxes=None if prompts[0]["boxes"] is None else torch.cat([p["boxes"] for p in prompts]), masks=None)
    image_pe = sam.prompt_encoder.get_dense_pe()

    def decode(embedding: torch.Tensor, sparse_one: torch.Tensor, dense_one: torch.Tensor):
        return sam.mask_decoder.predict_masks(image_embeddings=embedding, image_pe=image_pe,
                                              sparse_prompt_embeddings=sparse_one, dense_prompt_embeddings=dense_one)

    masks, iou = torch.func.vmap(decode)(embeddings[:, None], sparse[:, None], dense[:, None])
    return masks[:, 0], iou[:, 0]


def promptable_loss(logits: torch.Tensor, iou_predictions: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """One image's loss over all of SAM's mask outputs ``(K, h, w)``: BCE + Dice of each (mean over
    the K) plus the IoU head's squared error against each mask's actual IoU (SAM's IoU loss), so that
    the single-mask output, the multi-mask outputs and the multi-mask choice by predicted IoU all
    segment the prompted object (SAM trains the best of its three outputs; one lesion per image has
    no ambiguity, so all are trained here)."""
    masks = sum(dice_bce_loss(logits[k], target) for k in range(len(logits))) / len(logits)
    with torch.no_grad():
        predicted = logits > 0
        union = (predicted | (target > 0)).sum(dim=(-2, -1)).clamp(min=1)
        actual = (predicted & (target > 0)).sum(dim=(-2, -1)) / union
    return masks + F.mse_loss(iou_predictions, actual.float())


def dice_bce_loss(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """BCE + soft Dice of one mask's logits against its binary target (same shape)."""
    probability = torch.sigmoid(logits)
    dice = 1 - (2 * (probability * target).sum() + 1) / (probability.sum() + target.sum() + 1)
    return F.binary_cross_entropy_with_logits(logits, target) + dice


def _pretrain(name: str, preset: str, path: Path, *, n: int, epochs: int, image_size: int, lr: float, batch_size: int,
              options: dict, progress: Callable[[str], None]) -> Path:
    from medequity.data.synthetic_segmentation import make_synthetic_segmentation

    torch.manual_seed(PRETRAIN_SEED)
    segmenter = create_segmenter(name, **options)
    sam: Any = segmenter.module  # a segment_anything Sam (checked below)
    if not all(hasattr(sam, part) for part in ("image_encoder", "prompt_encoder", "mask_decoder")):
        raise ValueError(f"synthetic pre-training trains SAM-family segmenters; {name!r} is not one")
    data = make_synthetic_segmentation(preset, n=n, seed=PRETRAIN_SEED, image_size=image_size)
    assert data.images is not None and data.masks is not None  # the generator keeps both in memory
    present = [i for i in range(len(data.table)) if np.asarray(data.masks[i]).any()]
    low_res = int(segmenter.config.get("low_res_size", 4 * segmenter.embedding_shape()[-1]))
    inputs, targets, prompts = [], [], []
    for i in present:
        x, geometry = segmenter.profile.prepare(data.images[i])
        inputs.append(x)
        targets.append((sam_training_target(segmenter, np.asarray(data.masks[i]) > 0, low_res) > 0).float())
        prompts.append([_prompt_tensors(make_prompts(data.masks[i], kind, seed=PRETRAIN_SEED, sample_id=i, classes=[1],
                                                     **PROMPT_OPTIONS[kind])[1], geometry) for kind in PROMPT_KINDS])
    images = torch.stack(inputs)
    masks = torch.stack(targets)
    rng = np.random.default_rng(PRETRAIN_SEED)
    sam.train()
    optimizer = torch.optim.AdamW([p for p in sam.parameters() if p.requires_grad], lr=lr, weight_decay=1e-4)
    progress(f"pre-training {name} on {preset} (first use; cached after)")
    for epoch in range(epochs):
        progress(f"pre-training {name} on {preset}: epoch {epoch + 1}/{epochs}")
        order = rng.permutation(len(present))
        for start in range(0, len(order), batch_size):
            batch = order[start:start + batch_size]
            kinds = rng.integers(len(PROMPT_KINDS), size=len(batch))
            embeddings = sam.image_encoder(images[batch])
            loss = torch.zeros(())
            for kind in np.unique(kinds):  # one decoder call per prompt type: same number of prompt tokens
                rows = np.flatnonzero(kinds == kind)
                logits, iou = _decode_batch(sam, embeddings[rows], [prompts[batch[j]][kind] for j in rows])
                loss = loss + sum(promptable_loss(logits[r], iou[r], masks[batch[j]]) for r, j in enumerate(rows))
            optimizer.zero_grad()
            (loss / len(batch)).backward()
            optimizer.step()
    sam.eval()
    weights = {k: v.detach().cpu().contiguous() for k, v in sam.state_dict().items()}
    metadata = {"pretrained_on": f"synthetic {preset} n={n} image_size={image_size} seed={PRETRAIN_SEED}",
                "epochs": str(epochs), "recipe": f"promptable, 4 prompt types, BCE + Dice, AdamW lr={lr}"}
    return atomic_save_safetensors(path, weights, metadata)
