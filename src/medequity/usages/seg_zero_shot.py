"""Zero-shot prompted segmentation (FairMedFM §3.2 "SEG-ZS"): a promptable segmenter, prompts made
from the ground-truth mask, nothing trained.

What FairMedFM's released code did, and what this does instead:

* its image encoder ran twice per image and again for every prompt type; here each image is
  encoded once per (weights, data, preprocessing) and the embeddings are cached on disk,
  memory-mapped (:func:`~medequity.models.feature_cache.cached_features`, the cache linear probing
  uses), so every prompt type, seed and class — and a second evaluation — decodes from them;
* prompts came from the global RNG (they depended on sample order); here each prompt draws from its
  own RNG seeded by (seed, sample id, class) (:mod:`medequity.data.prompts`);
* logits were thresholded at 0.5; SAM's threshold is 0 (logit > 0), used here;
* Dice was computed at the resized size; here the mask is brought back to the original image size
  (:meth:`~medequity.models.segmenter.Segmenter.upscale`) and scored there;
* an empty class crashed; here it is skipped and counted (``skipped`` rows in the predictions).

Prompts are made from the mask at its original size and mapped to model-input coordinates with
the family's preprocessing geometry. Multi-mask output picks the mask with the highest predicted
IoU (FairMedFM); ``multimask=False`` asks for one mask. Both are recorded.

Volumes: a 2D model segments them slice by slice (``slices="positive"``, :meth:`PromptedSegmenter._volume`);
a natively 3D point-promptable model (``segmenter.config["spatial_dims"] == 3``, e.g. ``vista3d``)
segments each volume in one go (``slices="native_3d"``): one point prompt made from the whole 3D
class mask, decoded on the whole volume, thresholded at logit > 0 and scored per volume. A volume
within the model's ``roi_size`` is encoded once (padded to the encoder's size multiple) and every
class decoded from that encoding; a larger one goes through MONAI's point-based window inferer for
VISTA3D (``monai.apps.vista3d.inferer.point_based_window_inferer``: windows of ``roi_size``
centred on each prompt point, each re-encoded, logits averaged where windows overlap, voxels no
window covers predicted background). MONAI's grid ``sliding_window_inference`` is not used for
point prompts: a window that holds none of the points has no point-decoder output (VISTA3D gives
−9999 logits there), which the window blending would average into the neighbouring windows.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from medequity.data.prompts import make_prompts
from medequity.metrics.segmentation import cup_to_disc_ratio_error, dice_per_sample, iou_per_sample
from medequity.metrics.surface import hd95_per_sample, nsd_per_sample
from medequity.models.checkpoint import state_fingerprint
from medequity.models.feature_cache import cached_features
from medequity.models.segmenter import Segmenter
from medequity.training.data import SplitData
from medequity.usages.base import Usage, UsageContext, register_usage

PROMPT_KINDS = ("center", "rand", "rands", "bbox")
POINT_KINDS = ("center", "rand", "rands")  # what a 3D point-only model (VISTA3D) takes


class _EncoderInput(torch.utils.data.Dataset):
    """A split's images preprocessed by the segmenter's profile, as ``{"x"}`` items for the cache."""

    def __init__(self, items, segmenter: Segmenter):
        self.items, self.segmenter = items, segmenter

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> dict:
        return {"x": self.segmenter.profile.prepare(self.items[i]["image"])[0]}


class _FlatEncoder(nn.Module):
    """The segmenter's image encoder with its embeddings flattened, for the feature cache."""

    def __init__(self, segmenter: Segmenter):
        super().__init__()
        self.segmenter = segmenter
        self.module = segmenter.module  # registered: the cache key hashes these weights

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.segmenter.encode(x).flatten(1)


class PromptedSegmenter(nn.Module):
    """A promptable segmenter with a prompt recipe: segments whole splits from cached embeddings."""

    def __init__(self, segmenter: Segmenter, params: dict[str, Any], cache_dir: Path | None = None, device: str = "cpu",
                 progress=None):
        super().__init__()
        if not segmenter.promptable:
            raise ValueError(f"segmenter {segmenter.name!r} is not promptable: zero-shot segmentation (seg_zs) needs "
                             "a SAM-family model")
        if params["prompt"] not in PROMPT_KINDS:
            raise ValueError(f"prompt must be one of {PROMPT_KINDS}; got {params['prompt']!r}")
        self.native_3d = segmenter.config.get("spatial_dims") == 3
        if params["slices"] != "positive" and not (self.native_3d and params["slices"] == "native_3d"):
            raise ValueError(f"slices must be 'positive' (a 2D model is prompted on the slices where the class is "
                             f"present, FairMedFM's setting); got {params['slices']!r}")
        if self.native_3d:
            self._check_native_kind(segmenter.name, params["prompt"])
        self.segmenter, self.params, self.cache_dir, self.device, self.progress = segmenter, params, cache_dir, device, progress
        self.module = segmenter.module
        self.encoded = 0  # images run through the image encoder by this object (the cache hit shows as 0)
        self._fingerprint: tuple[tuple, str] | None = None  # (weights_version, encoder_fingerprint), see embeddings()

    @staticmethod
    def _check_native_kind(name: str, kind: str) -> None:
        if kind not in POINT_KINDS:
            raise ValueError(f"segmenter {name!r} is a natively 3D point-promptable model: it supports the point prompts "
                             f"{POINT_KINDS} (no boxes); got prompt {kind!r}")

    def embeddings(self, data: SplitData) -> np.ndarray:
        """(N, C, h, w) embeddings of the split, memory-mapped from the cache (computed once). The
        weights are hashed for the cache key once per object (a run asks for val, test and the
        probe's embeddings), again only if their version stamp changed (zero-shot trains nothing)."""
        version = weights_version(self.segmenter.module)
        if self._fingerprint is None or self._fingerprint[0] != version:
            self._fingerprint = (version, encoder_fingerprint(self.segmenter))
        embeddings, from_cache = cached_embeddings(self.segmenter, data, cache_dir=self.cache_dir,
                                                   batch_size=int(self.params["batch_size"]), device=self.device,
                                                   progress=self.progress, fingerprint=self._fingerprint[1])
        if not from_cache:
            self.encoded += len(data)
        return embeddings

    def features(self, data: SplitData) -> np.ndarray:
        """(N, C) mean-pooled image-encoder embeddings of a 2D split (FairMedFM D.2.4: the
        representation probe and t-SNE of the segmenter's encoder), from the cache."""
        embeddings = self.embeddings(data)
        return np.stack([np.asarray(embeddings[i], dtype=np.float64).mean(axis=(1, 2)) for i in range(len(data))])

    def record(self) -> dict[str, Any]:
        """What defines the predictions: segmenter, preprocessing profile, threshold, prompt recipe."""
        record = {"segmenter": self.segmenter.name, "profile": self.segmenter.profile.to_dict(), "threshold": "logit > 0",
                  **{k: v for k, v in self.params.items() if k != "batch_size"}}
        return {**record, "slices": "native_3d"} if self.native_3d else record

    def _prompt_tensors(self, prompt, geometry) -> dict[str, torch.Tensor | None]:
        points = labels = boxes = None
        if prompt.points is not None and len(prompt.points):
            points = torch.as_tensor(geometry.points_to_input(prompt.points), dtype=torch.float32)[None]
            labels = torch.as_tensor(prompt.labels, dtype=torch.int64)[None]
        if prompt.box is not None:
            boxes = torch.as_tensor(geometry.boxes_to_input(np.asarray(prompt.box)), dtype=torch.float32)[None]
        return {"points": points, "point_labels": labels, "boxes": boxes}

    def _decode(self, embedding: torch.Tensor, prompt, geometry) -> tuple[np.ndarray, float]:
        """The binary mask at the original size (logit > 0) and its predicted IoU."""
        multimask = bool(self.params["multimask"])
        logits, iou = self.segmenter.decode(embedding, multimask=multimask, **self._prompt_tensors(prompt, geometry))
        best = int(torch.argmax(iou[0])) if multimask else 0
        return (self.segmenter.upscale(logits[:, best : best + 1], geometry)[0, 0] > 0).numpy(), float(iou[0, best])

    def _prompt_options(self, kind: str) -> dict[str, Any]:
        return {"center": {"mode": self.params["center_mode"]}, "rand": {},
                "rands": {"k": int(self.params["n_points"]), "replace": bool(self.params["replace"])},
                "bbox": {"jitter": int(self.params["jitter"])}}[kind]

    def _scores(self, pred: np.ndarray, truth: np.ndarray, spacing) -> dict[str, float]:
        return class_scores(pred, truth, spacing=spacing, nsd_tolerance=float(self.params["nsd_tolerance"]))

    def _volume(self, image: np.ndarray, mask: np.ndarray, cls: int, sample_id: str, seed: int,
                kind: str) -> tuple[np.ndarray, dict]:
        """A 3D class mask from a 2D model: every slice where the class is present gets its own
        prompt (FairMedFM's setting: the ground truth chooses the slices — recorded as
        ``slices="positive"``); the others are predicted empty. Slices are encoded one at a time
        (memory bounded by one volume; volumes are not cached)."""
        pred = np.zeros(mask.shape, dtype=bool)
        inside, n_slices = [], 0
        for z in np.flatnonzero((mask == cls).reshape(mask.shape[0], -1).any(axis=1)):
            prompt = make_prompts(mask[z], kind, seed=seed, sample_id=f"{sample_id}/z{z}", classes=[cls],
                                  **self._prompt_options(kind))[cls]
            x, geometry = self.segmenter.profile.prepare(image[z])
            self.encoded += 1
            pred[z], _ = self._decode(self.segmenter.encode(x[None])[0], prompt, geometry)
            inside.append(prompt.inside)
            n_slices += 1
        known = [v for v in inside if v is not None]
        return pred, {"prompted_slices": n_slices, "prompt_inside": float(np.mean(known)) if known else np.nan}

    def _volume_input(self, image: np.ndarray) -> torch.Tensor:
        """A (D, H, W) volume min–max scaled to [0, 1] (the recorded profile) as (1, 1, D, H, W)."""
        x = torch.as_tensor(np.asarray(image), dtype=torch.float32)
        if x.ndim != 3:
            raise ValueError(f"segmenter {self.segmenter.name!r} is natively 3D: it segments (D, H, W) volumes; "
                             f"got an image of shape {tuple(x.shape)}")
        low, high = float(x.min()), float(x.max())
        return ((x - low) / max(high - low, 1e-8))[None, None]

    def _native_volume(self, image: np.ndarray, mask: np.ndarray, cls: int, sample_id: str, seed: int, kind: str,
                       state: dict[str, Any]) -> tuple[np.ndarray, dict]:
        """A 3D class mask from a natively 3D point-promptable model: one prompt from the whole class
        mask, decoded on the whole volume (logit > 0). ``state`` keeps the volume's encoding for
        its other classes (memory: one volume)."""
        prompt = make_prompts(mask, kind, seed=seed, sample_id=sample_id, classes=[cls], **self._prompt_options(kind))[cls]
        if prompt is None:  # not reached: absent classes are skipped before
            raise ValueError(f"class {cls} is absent from volume {sample_id!r}")
        # make_prompts gives (x, y, z) = indices of the (W, H, D) axes; VISTA3D's decode takes the tensor's (D, H, W)
        points = torch.as_tensor(np.ascontiguousarray(np.asarray(prompt.points)[:, ::-1]), dtype=torch.float32)[None]
        labels = torch.as_tensor(prompt.labels, dtype=torch.int64)[None]
        shape = tuple(int(s) for s in mask.shape)
        roi = tuple(int(r) for r in self.segmenter.config["roi_size"])
        if all(s <= r for s, r in zip(shape, roi, strict=True)):
            if "embedding" not in state:
                multiple = int(self.segmenter.config.get("size_multiple", 1))
                pad = [(-s) % multiple for s in shape]
                x = torch.nn.functional.pad(self._volume_input(image), [v for p in reversed(pad) for v in (0, p)])
                self.encoded += 1
                state["embedding"] = self.segmenter.encode(x)[0]
            logits, _ = self.segmenter.decode(state["embedding"], points=points, point_labels=labels)
            volume = logits[0, 0, : shape[0], : shape[1], : shape[2]].float().cpu()
            window = "whole"
        else:
            from monai.apps.vista3d.inferer import point_based_window_inferer

            x = self._volume_input(image).to(next(self.segmenter.module.parameters()).device)
            self.encoded += 1
            volume = torch.as_tensor(point_based_window_inferer(x, roi, self.segmenter.module, points.to(x.device),
                                                                labels.to(x.device), transpose=True))[0, 0].float().cpu()
            window = "point_windows"
        pred = (volume > 0).numpy()  # NaN (no window covered the voxel) is background
        return pred, {"prompt_inside": np.nan if prompt.inside is None else float(prompt.inside), "predicted_iou": np.nan,
                      "window": window}

    @torch.no_grad()
    def segment(self, data: SplitData, *, seed: int, prompt: str | None = None) -> Iterator[dict[str, Any]]:
        """One row per (sample, foreground class): the prompt, the predicted mask's Dice, IoU, HD95
        and NSD at the original size (volumes: per volume, from stacked slices), areas, and whether
        the class was empty (skipped). ``prompt`` decodes another prompt type (with this recipe's
        options) from the same cached embeddings."""
        kind, volumes, embeddings = self._prepare_split(data, prompt)
        spacing = self.params.get("spacing")
        fundus = list(data.extra.get("classes", []))[:3] == ["background", "rim", "cup"]
        cdr = self.params["cdr"] if self.params["cdr"] != "auto" else fundus
        for i in range(len(data)):
            item = data.items[i]  # read once (a disk-backed split loads it on each access)
            mask = item["mask"]
            classes = list(self._sample_masks(i, item, seed, volumes, embeddings, kind))
            rows = [self._score(row, pred, extra, mask == row["class"], spacing) for row, pred, extra in classes]
            if cdr and not volumes:
                # the fundus rim (1) and cup (2), the cup drawn over the rim
                rim_cup = {row["class"]: pred for row, pred, _ in classes if pred is not None and row["class"] in (1, 2)}
                rows = with_cdr_error(rows, self.label_map(rim_cup, mask.shape), mask)
            yield from rows

    @torch.no_grad()
    def predict_masks(self, data: SplitData, positions: list[int], *, seed: int,
                      prompt: str | None = None) -> dict[int, dict[int, np.ndarray]]:
        """The binary mask (original size) of every foreground class present in each sample at
        ``positions`` of ``data``, by position then class: what :meth:`segment` scores for the
        same ``seed`` and ``prompt`` (each prompt draws from its own RNG, so a sample's masks do not
        depend on which other samples are segmented). Nothing is scored."""
        kind, volumes, embeddings = self._prepare_split(data, prompt)
        return {int(i): {row["class"]: pred for row, pred, _ in
                         self._sample_masks(int(i), data.items[int(i)], seed, volumes, embeddings, kind) if pred is not None}
                for i in positions}

    @staticmethod
    def label_map(masks: dict[int, np.ndarray], shape: tuple[int, ...]) -> np.ndarray:
        """One sample's per-class binary masks as a label map of ``shape`` (0 = background); where
        two classes' masks overlap the higher class wins (the fundus cup drawn over the rim)."""
        label = np.zeros(shape, dtype=np.int64)
        for cls, pred in sorted(masks.items()):
            label[np.asarray(pred, dtype=bool)] = int(cls)
        return label

    def _prepare_split(self, data: SplitData, prompt: str | None) -> tuple[str, bool, np.ndarray | None]:
        """(prompt type, whether the split holds volumes, its cached 2D embeddings or None)."""
        kind = self.params["prompt"] if prompt is None else prompt
        if kind not in PROMPT_KINDS:
            raise ValueError(f"prompt must be one of {PROMPT_KINDS}; got {kind!r}")
        if self.native_3d:
            self._check_native_kind(self.segmenter.name, kind)
        volumes = bool(len(data)) and np.asarray(data.items[0]["mask"]).ndim == 3
        if self.native_3d and len(data) and not volumes:
            raise ValueError(f"segmenter {self.segmenter.name!r} is natively 3D: it segments (D, H, W) volumes, "
                             "not 2D images")
        embeddings = None if volumes else self.embeddings(data)
        self.module.eval()
        return kind, volumes, embeddings

    def _score(self, row: dict[str, Any], pred: np.ndarray | None, extra: dict[str, Any], truth: np.ndarray,
               spacing) -> dict[str, Any]:
        """A predictions row: the class's scores, or a skipped row for a class absent from the sample."""
        if pred is None:  # nothing to prompt, nothing to score
            return {**row, "skipped": True, "dice": np.nan, "iou": np.nan, "hd95": np.nan, "nsd": np.nan,
                    "pred_area": 0, "prompt_inside": np.nan}
        return {**row, "skipped": False, **self._scores(pred, truth, spacing), "pred_area": int(pred.sum()), **extra}

    def _sample_masks(self, i: int, item: dict, seed: int, volumes: bool, embeddings,
                      kind: str) -> Iterator[tuple[dict[str, Any], np.ndarray | None, dict[str, Any]]]:
        """(row, predicted mask, prompt fields) per foreground class of sample ``i`` (``item``); the
        mask is None for a class absent from the sample (nothing to prompt)."""
        image, mask, sample_id = item["image"], item["mask"], item["sample_id"]
        wanted = self.params.get("classes")
        classes = [int(c) for c in (wanted or np.unique(mask)) if int(c) != 0]
        prompts = {} if volumes else make_prompts(mask, kind, seed=seed, sample_id=sample_id, classes=classes,
                                                  **self._prompt_options(kind))
        native: dict[str, Any] = {}  # a natively 3D model's encoding of this volume, shared by its classes
        for cls in classes:
            truth = mask == cls
            row: dict[str, Any] = {"index": i, "sample_id": sample_id, "class": cls, "prompt": kind,
                                   "true_area": int(truth.sum())}
            if not truth.any():
                yield row, None, {}
                continue
            if volumes and self.native_3d:
                pred, extra = self._native_volume(image, mask, cls, sample_id, seed, kind, native)
                extra = {**extra, "slices": "native_3d"}
            elif volumes:
                pred, extra = self._volume(image, mask, cls, sample_id, seed, kind)
                extra = {**extra, "slices": "positive"}
            else:
                prompt = prompts[cls]
                geometry = self.segmenter.profile.geometry(mask.shape[:2])
                # a copy: the cached embeddings are a read-only memory map, which torch will not wrap
                pred, predicted_iou = self._decode(torch.tensor(np.asarray(embeddings[i]), dtype=torch.float32),
                                                   prompt, geometry)
                extra = {"prompt_inside": np.nan if prompt.inside is None else float(prompt.inside),
                         "predicted_iou": predicted_iou}
            yield row, pred, extra


def cached_embeddings(segmenter: Segmenter, data: SplitData, *, cache_dir: Path | None, batch_size: int, device: str,
                      progress=None, fingerprint: str | None = None) -> tuple[np.ndarray, bool]:
    """((N, C, h, w) image-encoder embeddings of a 2D split memory-mapped from the cache, whether they
    came from it). The key hashes the segmenter's whole module as it is now: call this before
    training any of its parts (``seg_decoder`` does), so zero-shot runs and decoder training share
    one entry. ``fingerprint``: :func:`encoder_fingerprint` of the segmenter as it is now, when the
    caller encodes several splits (None: hashed here, about a second for a ViT-B)."""
    shape = segmenter.embedding_shape()
    features, from_cache = cached_features(
        _FlatEncoder(segmenter), _EncoderInput(data.items, segmenter), backbone_name=segmenter.name,
        backbone_config=segmenter.config, data_fingerprint=data.fingerprint, transform_config=segmenter.profile.to_dict(),
        feature_dim=int(np.prod(shape)), cache_dir=cache_dir, batch_size=batch_size, device=device,
        progress=None if progress is None else lambda done, total: progress(done, total, "encoding images"),
        fingerprint=fingerprint)
    return features.reshape(len(data), *shape), from_cache


def encoder_fingerprint(segmenter: Segmenter) -> str:
    """The hash of the segmenter's weights in its embedding cache key (what :func:`cached_embeddings`
    computes when given none): hashed once, it serves every split while the weights do not change."""
    return state_fingerprint(_FlatEncoder(segmenter))


def weights_version(module: nn.Module) -> tuple[tuple[int, int], ...]:
    """A cheap stamp of a module's weights: each tensor's storage address and version counter. An
    optimiser step, ``load_state_dict`` or any in-place change through the tensor bumps its version;
    a change through ``.data`` does not (PyTorch does not count it), so this guards a memoised hash
    of weights nothing is meant to change, it does not replace hashing."""
    return tuple((t.data_ptr(), t._version) for t in module.state_dict(keep_vars=True).values())


def class_scores(pred: np.ndarray, truth: np.ndarray, *, spacing=None, nsd_tolerance: float = 2.0) -> dict[str, float]:
    """Dice, IoU, HD95 (an empty prediction: the image diagonal) and NSD of one class's binary masks
    at the original size (spacing: pixel/voxel size per axis, None = 1)."""
    pair = (pred[None].astype(np.int64), truth[None].astype(np.int64))
    surface = {"spacing": None if spacing is None else [list(spacing)], "classes": [1]}
    return {"dice": float(dice_per_sample(*pair, classes=[1]).values[0]),
            "iou": float(iou_per_sample(*pair, classes=[1]).values[0]),
            "hd95": float(hd95_per_sample(*pair, one_empty="diagonal", **surface).values[0]),
            "nsd": float(nsd_per_sample(*pair, tolerance=nsd_tolerance, **surface).values[0])}


def with_cdr_error(rows: list[dict[str, Any]], predicted: np.ndarray, mask: np.ndarray) -> list[dict[str, Any]]:
    """Fundus rim (1) and cup (2): |vertical CDR predicted − true| of the sample (FairSeg), from the
    predicted label map, on every row of the sample."""
    error = float(cup_to_disc_ratio_error(np.asarray(predicted, dtype=np.int64)[None],
                                          np.asarray(mask, dtype=np.int64)[None]).values[0])
    return [{**row, "cdr_error": error} for row in rows]


@register_usage
class SegmentZeroShot(Usage):
    """``seg_zs``: prompt a frozen promptable segmenter with prompts made from the ground truth."""

    name = "seg_zs"
    trains = False
    defaults = {
        "prompt": "center",  # center | rand | rands | bbox
        "center_mode": "bbox_center",  # FairMedFM's; "interior" = argmax of the distance transform
        "n_points": 5,  # rands
        "replace": True,  # rands: with replacement (FairMedFM)
        "jitter": 0,  # bbox: per-side jitter of up to this many pixels
        "multimask": True,  # 3 masks, the best by predicted IoU (FairMedFM); False: one mask
        "classes": None,  # foreground classes to segment; None = every class present in the mask
        "nsd_tolerance": 2.0,  # NSD tolerance in the units of ``spacing`` (pixels by default)
        "spacing": None,  # pixel/voxel spacing for HD95 and NSD; None = 1 per axis
        "cdr": "auto",  # fundus cup-to-disc ratio error; auto: when the classes are background, rim, cup
        "slices": "positive",  # volumes with a 2D model: prompt the slices where the class is present (FairMedFM);
        # a natively 3D model (config spatial_dims == 3, e.g. vista3d) prompts whole volumes ("native_3d", recorded)
        "batch_size": 4,  # images per encoder batch
    }

    def build(self, backbone, data: dict, context: UsageContext):
        return PromptedSegmenter(backbone, dict(self.params), context.cache_dir, context.device, context.progress), data
