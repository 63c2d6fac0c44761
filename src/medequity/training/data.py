"""Training views of a dataset split: items ``{"x", "y", "group", "index"}`` plus arrays.

``x`` is whatever the model eats: transformed images (fine-tuning, PEFT) or cached encoder
features (linear probing, head-only methods). Labels and group codes are kept as arrays beside
the torch dataset so samplers, metrics and methods never read an image to learn them.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import torch
from torch.utils.data import Dataset

from medequity.data.base import MedicalDataset
from medequity.data.torch_dataset import TorchImageDataset
from medequity.metrics.groups import Groups

IN_MEMORY_LIMIT_BYTES = 2 << 30  # larger feature arrays stay memory-mapped and are read per item


class ArrayItems(Dataset):
    """Array inputs: images already transformed, or (memory-mapped) features."""

    def __init__(self, x, labels: np.ndarray, groups: np.ndarray):
        if isinstance(x, torch.Tensor):
            self.x = x
        elif x.nbytes <= IN_MEMORY_LIMIT_BYTES:
            self.x = torch.from_numpy(np.array(x, dtype=np.float32))  # a private, writable copy
        else:
            self.x = x  # np.memmap: read per item
        self.labels = torch.as_tensor(labels, dtype=torch.float32)
        self.groups = torch.as_tensor(groups, dtype=torch.int64)

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> dict:
        x = self.x[i] if isinstance(self.x, torch.Tensor) else torch.from_numpy(np.array(self.x[i], dtype=np.float32))
        return {"x": x, "y": self.labels[i], "group": self.groups[i], "index": i}


class LazyItems(Dataset):
    """Images read from disk one at a time (real datasets), through :class:`TorchImageDataset`."""

    def __init__(self, images: TorchImageDataset, labels: np.ndarray, groups: np.ndarray):
        self.images, self.labels, self.groups = images, labels, groups

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> dict:
        item = self.images[i]
        return {"x": item["image"], "y": torch.tensor(float(self.labels[i])), "group": torch.tensor(int(self.groups[i])), "index": i}


@dataclass
class SplitData:
    """One split as the trainer sees it."""

    items: Dataset
    labels: np.ndarray  # (N,) 0/1
    groups: np.ndarray  # (N,) int codes of the training attribute, -1 = unknown
    group_names: tuple[str, ...]
    table: pd.DataFrame  # the split's rows (sample ids, raw and grouped attributes) for prediction tables
    fingerprint: str = ""
    extra: dict = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.labels)

    @property
    def n_groups(self) -> int:
        return len(self.group_names)

    def with_items(self, items: Dataset, fingerprint_suffix: str = "") -> SplitData:
        return SplitData(items, self.labels, self.groups, self.group_names, self.table,
                         self.fingerprint + fingerprint_suffix, dict(self.extra))

    def subset(self, rows: np.ndarray) -> SplitData:
        rows = np.asarray(rows)
        return SplitData(torch.utils.data.Subset(self.items, rows.tolist()), self.labels[rows], self.groups[rows],
                         self.group_names, self.table.iloc[rows].reset_index(drop=True), self.fingerprint + f"[{len(rows)}]")


def dataset_fingerprint(dataset: MedicalDataset) -> str:
    """Identifies the data a feature cache was computed from (content for in-memory images)."""
    digest = hashlib.sha256()
    digest.update(dataset.name.encode())
    digest.update("\n".join(dataset.table["sample_id"].astype(str)).encode())
    if dataset.images is not None:
        # the array's own buffer (the same bytes as tobytes()), not a copy of every image or volume
        digest.update(np.ascontiguousarray(dataset.images).reshape(-1).view(np.uint8))
    elif "path" in dataset.table.columns:
        digest.update(str(dataset.root).encode())
        digest.update("\n".join(dataset.table["path"].astype(str)).encode())
    return digest.hexdigest()[:16]


def make_split_data(dataset: MedicalDataset, attribute: str, transform, group_names: tuple[str, ...]) -> SplitData:
    """Build the training view of ``dataset`` for ``attribute``; in-memory images are transformed once."""
    labels = dataset.table["label"].to_numpy(dtype=np.int64)
    codes = Groups.from_names(dataset.groups(attribute), group_names, attribute=attribute).codes
    if dataset.images is not None:
        x = torch.stack([transform(image) for image in dataset.images]) if len(dataset) else torch.empty(0)
        items: Dataset = ArrayItems(x, labels, codes)
    else:
        items = LazyItems(TorchImageDataset(dataset, transform, attributes=[attribute],
                                            group_categories={attribute: list(group_names)}), labels, codes)
    transform_config = transform.config() if hasattr(transform, "config") else repr(transform)
    return SplitData(items, labels, codes, group_names, dataset.table, dataset_fingerprint(dataset),
                     extra={"transform": transform_config})


class SegmentationItems(Dataset):
    """A segmentation split read lazily, one sample at a time: ``{"image", "mask", "group",
    "index", "sample_id"}`` with the image and its integer label mask as NumPy arrays at their
    original size (each model family preprocesses with its own profile)."""

    def __init__(self, dataset: MedicalDataset, groups: np.ndarray):
        self.dataset, self.groups = dataset, groups

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, i: int) -> dict:
        image = np.asarray(self.dataset.load_image(i))
        mask = np.asarray(self.dataset.load_mask(i))
        spatial = image.shape[:2] if image.ndim == 3 and image.shape[-1] in (1, 3) and mask.ndim == 2 else image.shape
        if tuple(mask.shape) != tuple(spatial):
            raise ValueError(f"sample {self.dataset.table.at[i, 'sample_id']!r}: mask shape {mask.shape} does not match "
                             f"image shape {image.shape}")
        return {"image": image, "mask": mask.astype(np.int64, copy=False), "group": int(self.groups[i]), "index": i,
                "sample_id": str(self.dataset.table.at[i, "sample_id"])}


def make_segmentation_split(dataset: MedicalDataset, attribute: str, group_names: tuple[str, ...]) -> SplitData:
    """The view of a segmentation split: lazy (image, mask) items, group codes, the rows' table.
    ``labels`` say whether the sample's mask has any foreground."""
    codes = Groups.from_names(dataset.groups(attribute), group_names, attribute=attribute).codes
    labels = dataset.table["label"].to_numpy(dtype=np.int64) if "label" in dataset.table else np.ones(len(dataset), np.int64)
    return SplitData(SegmentationItems(dataset, codes), labels, codes, group_names, dataset.table, dataset_fingerprint(dataset),
                     extra={"classes": list(dataset.info.get("classes", [])), "task": "segmentation"})
