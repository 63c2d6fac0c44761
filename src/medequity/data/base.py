"""The common model of a medical imaging dataset (DATASETS.md, "Common model of a sample").

A :class:`MedicalDataset` is a table with one row per image (or volume) plus a way to read each
image lazily, so that nothing loads a whole dataset into memory. Table columns:

=================  ========================================================================
``sample_id``      unique string id of the sample
``patient_id``     patient/subject id; splits never put one patient in two splits
``label``          binary label (0/1, Int64); multi-label datasets add ``label:<finding>``
``path``           image path relative to ``root`` (absent for in-memory data)
``mask_path``      optional segmentation-mask path relative to ``root``
``split``          optional official split ("train"/"val"/"test")
``<attribute>``    raw sensitive-attribute value as the dataset codes it (e.g. ``sex``, ``age``)
``group:<attr>``   binarised/grouped attribute (string; <NA> = unknown, excluded from that
                   attribute's analysis and counted in the data card)
=================  ========================================================================
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from medequity.metrics.groups import GROUP_PREFIX, is_intersection, same_attribute
from medequity.registry import Registry

# GROUP_PREFIX lives with the group coding in metrics.groups (the layer below) and is re-exported here.
REQUIRED_COLUMNS = ("sample_id", "patient_id", "label")


class DatasetFormatError(ValueError):
    """A dataset on disk does not have the expected layout; the message names file, row or column."""


DATASETS: Registry[MedicalDataset] = Registry("dataset")
register_dataset = DATASETS.register


def create_dataset(name: str, root: str | Path | None = None, **kwargs: Any) -> MedicalDataset:
    """Create a registered dataset by name, e.g. ``create_dataset("ham10000", "/data/HAM10000")``."""
    return DATASETS.create(name, root, **kwargs) if root is not None else DATASETS.create(name, **kwargs)


def safe_join(root: str | Path, relative: str | Path, *, where: str = "") -> Path:
    """Join ``relative`` to ``root`` and refuse any result outside ``root``.

    Paths in metadata tables are data, not trusted: ``../../etc/passwd`` or an absolute path must
    not let a dataset read files outside its folder.
    """
    root_resolved = Path(root).resolve()
    candidate = (root_resolved / Path(relative)).resolve()
    if candidate != root_resolved and root_resolved not in candidate.parents:
        loc = f" ({where})" if where else ""
        raise DatasetFormatError(
            f"path {str(relative)!r}{loc} points outside the dataset root {str(root_resolved)!r}"
        )
    return candidate


def read_image(path: str | Path) -> np.ndarray:
    """Read a 2D image file (PNG/JPEG/TIFF…) as a uint8 array, HxW (grayscale) or HxWx3."""
    from PIL import Image

    try:
        with Image.open(path) as img:
            if img.mode not in ("L", "RGB"):
                img = img.convert("RGB") if img.mode in ("RGBA", "P", "CMYK") else img.convert("L")
            return np.asarray(img)
    except FileNotFoundError:
        raise DatasetFormatError(f"image file not found: {path}") from None
    except OSError as exc:
        raise DatasetFormatError(f"cannot read image {path}: {exc}") from None


@dataclass
class MedicalDataset:
    name: str
    table: pd.DataFrame
    root: Path | None = None
    task: str = "binary"  # "binary" | "multilabel" | "segmentation"
    images: np.ndarray | None = None  # in-memory images (synthetic data), indexed by row position
    masks: np.ndarray | None = None
    info: dict[str, Any] = field(default_factory=dict)  # provenance, label rule, attribute codings

    def __post_init__(self) -> None:
        missing = [c for c in REQUIRED_COLUMNS if c not in self.table.columns]
        if missing:
            raise DatasetFormatError(
                f"dataset {self.name!r} table lacks columns {missing}; has {list(self.table.columns)}"
            )
        if self.images is None and "path" not in self.table.columns:
            raise DatasetFormatError(f"dataset {self.name!r} has neither in-memory images nor a 'path' column")
        self.table = self.table.reset_index(drop=True)

    def __len__(self) -> int:
        return len(self.table)

    @property
    def attributes(self) -> list[str]:
        """Names of the grouped sensitive attributes (``group:<name>`` columns)."""
        return [c[len(GROUP_PREFIX):] for c in self.table.columns if c.startswith(GROUP_PREFIX)]

    def attribute_column(self, attribute: str) -> str | None:
        """The ``group:`` column of ``attribute`` (an intersection in either spelling, ``"sex&age"``
        or ``"sex & age"``), or ``None`` if the dataset lacks it."""
        column = GROUP_PREFIX + attribute
        if column in self.table.columns:
            return column
        if is_intersection(attribute):
            for name in self.attributes:
                if is_intersection(name) and same_attribute(name, attribute):
                    return GROUP_PREFIX + name
        return None

    def has_attribute(self, attribute: str) -> bool:
        return self.attribute_column(attribute) is not None

    def groups(self, attribute: str) -> pd.Series:
        column = self.attribute_column(attribute)
        if column is None:
            raise KeyError(f"dataset {self.name!r} has no attribute {attribute!r}; has {self.attributes}")
        return self.table[column]

    @property
    def labels(self) -> np.ndarray:
        return self.table["label"].to_numpy(dtype=np.int64)

    def image_path(self, index: int) -> Path:
        if self.root is None:
            raise DatasetFormatError(f"dataset {self.name!r} has no root folder")
        return safe_join(self.root, self.table.at[index, "path"], where=f"row {index}, column 'path'")

    def read_file(self, path: Path, *, mask: bool = False) -> np.ndarray:
        """How this dataset reads one image or mask file: 2D image files here; volume datasets
        override only this."""
        return read_image(path)

    def load_image(self, index: int) -> np.ndarray:
        """The image (or volume) of row ``index`` as a NumPy array, read only now."""
        if self.images is not None:
            return self.images[index]
        return self.read_file(self.image_path(index))

    def load_mask(self, index: int) -> np.ndarray:
        if self.masks is not None:
            return self.masks[index]
        if "mask_path" not in self.table.columns:
            raise DatasetFormatError(f"dataset {self.name!r} has no masks")
        path = safe_join(self.root, self.table.at[index, "mask_path"], where=f"row {index}, column 'mask_path'")
        return self.read_file(path, mask=True)

    def subset(self, rows: np.ndarray | list[int]) -> MedicalDataset:
        """A dataset view over the given row positions (images stay lazy)."""
        rows = np.asarray(rows, dtype=np.int64)
        # dataclasses.replace keeps the subclass, so datasets that read images their own way
        # (e.g. one .npz per subject) still do after subsetting.
        return replace(
            self,
            table=self.table.iloc[rows].reset_index(drop=True),
            images=None if self.images is None else self.images[rows],
            masks=None if self.masks is None else self.masks[rows],
            info=dict(self.info),
        )
