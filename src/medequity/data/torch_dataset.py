"""PyTorch view of a :class:`MedicalDataset`: lazy samples with label and group codes, and batches.

``TorchImageDataset`` reads one image per ``__getitem__`` (through ``MedicalDataset.load_image``),
so a DataLoader streams a dataset of any size; nothing is read at construction. Group codes are
integers per attribute with ``-1`` for unknown (<NA>), in a coding that a train/val/test split
shares (see ``group_categories``). ``iterate_batches`` walks a whole dataset reporting to a progress callback
bar and an ETA, for feature extraction.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from medequity.data.base import MedicalDataset
from medequity.data.transforms import image_to_tensor
from medequity.data.volumes import VolumeDataset
from medequity.metrics.groups import UNKNOWN_CODE, Groups, group_names

UNKNOWN_GROUP = UNKNOWN_CODE  # kept for importers


class TorchImageDataset(Dataset):
    """Samples ``{"image", "label", "groups", "index", "sample_id"}`` of a :class:`MedicalDataset`.

    - ``image``: ``transform(dataset.load_image(i))``; without a transform a float tensor (C, H, W)
      in [0, 1] for 2D images, or the volume as a float tensor (X, Y, Z).
    - ``label``: int64 scalar tensor (``-1`` where the label is missing).
    - ``groups``: int64 tensor, one code per name in ``attributes`` (in that order); the code of a
      group is its position in ``group_categories[attribute]``, ``-1`` for unknown.
    - ``index``: the row position in ``dataset``; ``sample_id``: its string id.

    ``attributes`` defaults to all of the dataset's attributes. ``group_categories`` fixes the
    coding, e.g. ``TorchImageDataset(test, t, group_categories=train_view.group_categories)``;
    by default it is the column's categories when the column is categorical (subsets keep them),
    otherwise the sorted known values — so build the views of all splits from one table, or pass
    the coding explicitly, to keep codes aligned.
    """

    def __init__(
        self,
        dataset: MedicalDataset,
        transform: Callable[[Any], torch.Tensor] | None = None,
        attributes: Sequence[str] | None = None,
        group_categories: Mapping[str, Sequence[str]] | None = None,
    ) -> None:
        self.dataset = dataset
        self.transform = transform
        self.attributes = list(dataset.attributes if attributes is None else attributes)
        given = dict(group_categories or {})
        self.group_categories: dict[str, list[str]] = {
            name: list(given[name]) if name in given else list(group_names(dataset.groups(name)))
            for name in self.attributes
        }
        # Codes and labels are small; computing them once keeps __getitem__ to one image read.
        self.group_codes = np.stack(
            [Groups.from_names(dataset.groups(name), self.group_categories[name], attribute=name, unknown="raise").codes
             for name in self.attributes], axis=1
        ) if self.attributes else np.zeros((len(dataset), 0), dtype=np.int64)
        self.labels = dataset.table["label"].astype("Int64").fillna(-1).to_numpy(dtype=np.int64)

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> dict[str, Any]:
        image = self.dataset.load_image(index)
        if self.transform is not None:
            image = self.transform(image)
        elif self._is_volume(image):
            image = torch.from_numpy(np.asarray(image, dtype=np.float32))
        else:
            image = image_to_tensor(image)
        return {
            "image": image,
            "label": torch.tensor(self.labels[index], dtype=torch.int64),
            "groups": torch.from_numpy(self.group_codes[index].copy()),
            "index": index,
            "sample_id": str(self.dataset.table.at[index, "sample_id"]),
        }

    def _is_volume(self, image: Any) -> bool:
        """Volumes come from a VolumeDataset; in-memory 3D arrays are volumes unless HxWx(1|3|4)."""
        if isinstance(self.dataset, VolumeDataset):
            return True
        return np.ndim(image) == 3 and np.shape(image)[-1] not in (1, 3, 4)

    def group_name(self, attribute: str, code: int) -> str | None:
        """The group label of ``code`` for ``attribute`` (``None`` for -1, unknown)."""
        return None if code == UNKNOWN_GROUP else self.group_categories[attribute][code]


def make_data_loader(
    dataset: Dataset,
    batch_size: int = 64,
    *,
    shuffle: bool = False,
    num_workers: int = 0,
    seed: int | None = None,
    drop_last: bool = False,
) -> DataLoader:
    """A DataLoader with the project's defaults: pinned memory on GPU, seeded shuffling."""
    generator = None if seed is None else torch.Generator().manual_seed(seed)
    return DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=shuffle,
        num_workers=num_workers,
        pin_memory=torch.cuda.is_available(),
        persistent_workers=num_workers > 0,
        generator=generator,
        drop_last=drop_last,
    )


def iterate_batches(
    dataset: Dataset,
    batch_size: int = 64,
    *,
    num_workers: int = 0,
    description: str = "Reading images",
    progress: Callable[[int, int, str], None] | None = None,
) -> Iterator[dict[str, Any]]:
    """Yield collated batches over the whole ``dataset`` in order.

    Batches are dicts like the samples, with ``image`` (B, ...), ``label`` (B,), ``groups``
    (B, n_attributes), ``index`` (B,) and ``sample_id`` (a list). ``progress(done, total,
    description)`` hears after every batch (the command line draws a bar with ETA from it).
    """
    loader = make_data_loader(dataset, batch_size, num_workers=num_workers)
    done, total = 0, len(dataset)
    for batch in loader:
        yield batch
        if progress is not None:
            done += len(batch["index"]) if isinstance(batch, Mapping) else batch_size
            progress(min(done, total), total, description)
