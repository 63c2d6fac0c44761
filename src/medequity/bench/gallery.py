"""The few test cases a segmentation benchmark report draws: best, median and worst sample per group.

A report cannot keep every predicted mask of every run (a 3D benchmark would store volumes per
run), and the predictions table holds scores, not masks. So each run, while its model is still in
memory, picks per group of its training attribute the test samples with the highest, the median
and the lowest Dice (each sample's mean Dice over its foreground classes, as the metrics), predicts
them again, and stores image, ground truth and prediction as small 8-bit arrays
(``runs/<id>/gallery.parquet``). A volume is stored as the slice where the ground truth is largest.
The report draws them as overlays (:func:`medequity.report.segmentation_bench_plots.gallery_figure`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import pandas as pd

from medequity.data.base import GROUP_PREFIX

CASES = ("best", "median", "worst")
MAX_SIDE = 128  # stored arrays are subsampled to at most this many pixels per side
GALLERY_COLUMNS = ["sample_id", "group", "case", "dice", "height", "width", "channels", "slice", "image", "truth", "pred"]


def pick_cases(predictions: pd.DataFrame, attribute: str) -> pd.DataFrame:
    """Per group of ``attribute``: the test samples with the best, median and worst Dice.

    Ties go to the smaller sample id; a group with fewer than three samples shows each once.
    Columns ``sample_id``, ``group``, ``case``, ``dice``.
    """
    column = GROUP_PREFIX + attribute
    test = predictions[(predictions.split == "test") & ~predictions["skipped"].astype(bool)]
    if test.empty or column not in test.columns:
        return pd.DataFrame(columns=["sample_id", "group", "case", "dice"])
    per_sample = (test.groupby("sample_id", sort=True).agg(dice=("dice", "mean"), group=(column, "first"))
                  .dropna().reset_index())
    rows = []
    for group, part in per_sample.groupby(per_sample.group.astype(str), sort=True):
        ranked = part.sort_values(["dice", "sample_id"], ascending=[False, True], kind="stable").reset_index(drop=True)
        chosen: dict[str, int] = {}
        for case, position in zip(CASES, (0, len(ranked) // 2, len(ranked) - 1)):
            if position not in chosen.values():
                chosen[case] = position
        for case, position in chosen.items():
            rows.append({"sample_id": str(ranked.sample_id[position]), "group": group, "case": case,
                         "dice": float(ranked.dice[position])})
    return pd.DataFrame(rows, columns=["sample_id", "group", "case", "dice"])


def predicted_label_maps(model: Any, data: Any, positions: list[int], *, seed: int,
                         inference: Callable | None = None) -> dict[int, np.ndarray]:
    """Label maps (original size) of the samples at ``positions`` of a test split as the run
    predicted them: a trained segmenter's argmax through the method's inference path (InD's
    decoders, per-group thresholds), a prompted segmenter's masks for the run's prompts (the run's
    seed, so the same random points), decoded again from its cached embeddings."""
    import torch

    wanted = set(positions)
    if hasattr(model, "original_logits"):  # a trained segmenter (medequity.usages._segmentation.TrainedSegmenter)
        source = data.extra["source"]
        device = next(model.parameters()).device
        model.eval()
        out = {}
        with torch.no_grad():
            for i in sorted(wanted):
                x = data.items[i]["x"].to(device)
                group = torch.tensor([int(source.groups[i])], device=device)
                logits = None if inference is None else inference(model, x[None], group)
                out[i] = model.original_logits(i, source.items[i], x, logits).argmax(dim=0).cpu().numpy()
        return out
    # a prompted segmenter (medequity.usages.seg_zero_shot.PromptedSegmenter): its per-class masks
    masks = model.predict_masks(data, sorted(wanted), seed=seed)
    return {i: model.label_map(by_class, np.asarray(data.items[i]["mask"]).shape) for i, by_class in masks.items()}


def gallery_table(model: Any, data: Any, predictions: pd.DataFrame, attribute: str, *, seed: int,
                  inference: Callable | None = None) -> pd.DataFrame:
    """The stored cases of one run (module doc): :func:`pick_cases` with their arrays."""
    cases = pick_cases(predictions, attribute)
    if cases.empty:
        return pd.DataFrame(columns=GALLERY_COLUMNS)
    position = {str(s): i for i, s in enumerate(data.table["sample_id"].astype(str))}
    positions = [position[s] for s in cases.sample_id]
    maps = predicted_label_maps(model, data, positions, seed=seed, inference=inference)
    items = data.extra.get("source", data).items
    rows = []
    for case, i in zip(cases.to_dict("records"), positions):
        item = items[i]
        image, truth, pred = np.asarray(item["image"]), np.asarray(item["mask"]), maps[i]
        index = -1
        if truth.ndim == 3:  # a volume: its slice with the most ground truth
            index = int((truth > 0).reshape(truth.shape[0], -1).sum(axis=1).argmax())
            image, truth, pred = image[index], truth[index], pred[index]
        image, truth, pred = _small(to_uint8(image)), _small(truth.astype(np.uint8)), _small(pred.astype(np.uint8))
        rows.append({**case, "height": truth.shape[0], "width": truth.shape[1],
                     "channels": image.shape[2] if image.ndim == 3 else 1, "slice": index,
                     "image": image.tobytes(), "truth": truth.tobytes(), "pred": pred.tobytes()})
    return pd.DataFrame(rows, columns=GALLERY_COLUMNS)


def to_uint8(image: np.ndarray) -> np.ndarray:
    """An image as 8-bit for display: uint8 as it is, anything else min–max scaled."""
    if image.dtype == np.uint8:
        return image
    image = image.astype(np.float64)
    low, high = np.nanmin(image), np.nanmax(image)
    scaled = (image - low) / (high - low) if high > low else np.zeros_like(image)
    return np.round(np.nan_to_num(scaled) * 255).astype(np.uint8)


def _small(array: np.ndarray) -> np.ndarray:
    step = max(1, int(np.ceil(max(array.shape[:2]) / MAX_SIDE)))
    return np.ascontiguousarray(array[::step, ::step])


def gallery_arrays(row: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(image, truth, prediction) of one stored case (a row of ``gallery.parquet``)."""
    shape = (int(row["height"]), int(row["width"]))
    channels = int(row["channels"])
    image = np.frombuffer(row["image"], dtype=np.uint8).reshape(shape if channels == 1 else (*shape, channels))
    truth = np.frombuffer(row["truth"], dtype=np.uint8).reshape(shape)
    pred = np.frombuffer(row["pred"], dtype=np.uint8).reshape(shape)
    return image, truth, pred
