"""What the segmentation loaders share: reading image/mask files by suffix and coding masks as classes.

A :class:`SegmentationDataset` is a :class:`~medequity.data.base.MedicalDataset` with
``task="segmentation"`` whose :meth:`load_mask` returns an integer label map of class indices
``0..C`` (0 = background), named by ``info["classes"]`` (``classes[k]`` is the name of class ``k``).
How the stored mask values become classes is ``info["mask_values"]``:

- ``"binary"``: any value > 0 is class 1 (HAM10000 and TUSC masks are 0/255 PNGs, sometimes
  with anti-aliased edges);
- a mapping ``{raw value: class index}``; values not in it are an error naming the file and the
  values found, or background with ``info["mask_other"] = "background"`` (IRCADb, CANDI and
  SPIDER label many structures of which a benchmark keeps some);
- ``None``: the stored values are already class indices (KiTS23); values outside ``0..C`` are an
  error naming the file.

Files are read by suffix: PNG/JPEG/BMP/TIFF (PIL), ``.npy``, NIfTI (nibabel, RAS), ``.mha``/
``.mhd``/``.nrrd`` (SimpleITK) and a folder of DICOM slices (SimpleITK series reader). Masks are
read only when asked for; every path goes through :func:`~medequity.data.base.safe_join`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from medequity.data.base import DatasetFormatError, MedicalDataset, read_image
from medequity.data.masks import encode_mask

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")
ITK_SUFFIXES = (".mha", ".mhd", ".nrrd")
NIFTI_SUFFIXES = (".nii", ".nii.gz")


def read_array(path: str | Path, *, mask: bool = False) -> np.ndarray:
    """Read one image or mask file (or DICOM folder) by its suffix; masks come back as integers."""
    path = Path(path)
    name = path.name.lower()
    if path.is_dir():
        array = read_dicom_series(path)
    elif name.endswith(NIFTI_SUFFIXES):
        from medequity.data.volumes import read_volume

        return read_volume(path, mask=mask)
    elif name.endswith(ITK_SUFFIXES):
        array = read_itk(path)
    elif name.endswith(".npy"):
        if not path.is_file():
            raise DatasetFormatError(f"array file not found: {path}")
        try:
            array = np.load(path, allow_pickle=False)
        except (OSError, ValueError) as exc:
            raise DatasetFormatError(f"cannot read array file {path}: {exc}") from None
    elif name.endswith(IMAGE_SUFFIXES):
        array = read_image(path)
        if mask and array.ndim == 3:  # an RGB-saved mask: one channel carries the labels
            array = array.max(axis=-1)
    else:
        raise DatasetFormatError(
            f"{path}: unknown file type; expected {', '.join(IMAGE_SUFFIXES + NIFTI_SUFFIXES + ITK_SUFFIXES)}, .npy "
            "or a folder of DICOM slices"
        )
    if mask:
        array = np.rint(array).astype(np.int64) if array.dtype.kind == "f" else array.astype(np.int64)
    return array


def read_itk(path: Path) -> np.ndarray:
    """A ``.mha``/``.mhd``/``.nrrd`` image through SimpleITK, as a NumPy array (z, y, x for 3D)."""
    import SimpleITK as sitk

    if not path.is_file():
        raise DatasetFormatError(f"image file not found: {path}")
    try:
        return sitk.GetArrayFromImage(sitk.ReadImage(str(path)))
    except RuntimeError as exc:
        raise DatasetFormatError(f"cannot read {path} with SimpleITK: {str(exc).strip().splitlines()[-1]}") from None


def read_dicom_series(folder: Path) -> np.ndarray:
    """A folder of DICOM slices (one series) as a 3D array (z, y, x), slices ordered by position."""
    import SimpleITK as sitk

    names = sitk.ImageSeriesReader.GetGDCMSeriesFileNames(str(folder))
    if not names:
        raise DatasetFormatError(f"{folder}: no DICOM series in this folder")
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(names)
    try:
        return sitk.GetArrayFromImage(reader.Execute())
    except RuntimeError as exc:
        raise DatasetFormatError(f"cannot read DICOM series {folder}: {str(exc).strip().splitlines()[-1]}") from None


class SegmentationDataset(MedicalDataset):
    """Rows with ``path`` and ``mask_path``; masks are class-index maps named by ``info["classes"]``."""

    def read_file(self, path: Path, *, mask: bool = False) -> np.ndarray:
        return read_array(path, mask=mask)

    def load_mask(self, index: int) -> np.ndarray:
        raw = super().load_mask(index)
        if self.masks is not None:
            return raw
        where = f"{self.table.at[index, 'mask_path']} (row {index})"
        return encode_mask(
            raw, self.info.get("mask_values"), self.info.get("classes"), other=self.info.get("mask_other", "error"), where=where
        )

    @property
    def classes(self) -> list[str] | None:
        classes = self.info.get("classes")
        return None if classes is None else list(classes)


def segmentation_info(classes: list[str], mask_values: Any, *, mask_other: str = "error", **info: Any) -> dict[str, Any]:
    """The ``info`` entries every segmentation loader sets (classes, mask coding) plus its own."""
    if not classes or classes[0] != "background":
        raise ValueError(f"classes must start with 'background', got {classes}")
    return {"classes": list(classes), "mask_values": mask_values, "mask_other": mask_other, **info}


def all_zero_masks(dataset: MedicalDataset) -> list[str]:
    """Sample ids whose mask holds no foreground (reads every mask: use on small sets or once)."""
    return [str(dataset.table.at[i, "sample_id"]) for i in range(len(dataset)) if not np.any(dataset.load_mask(i))]


def pick_column(columns: Any, candidates: tuple[str, ...], what: str, source: str, *, required: bool = True) -> str | None:
    """The first column whose name matches a candidate (case, spaces and underscores ignored);
    the error names the table, what was wanted, the names tried and the columns that exist."""

    def key(text: Any) -> str:
        return str(text).strip().lower().replace(" ", "").replace("_", "").replace("-", "")

    by_key = {key(c): c for c in columns}
    for candidate in candidates:
        if key(candidate) in by_key:
            return by_key[key(candidate)]
    if required:
        raise DatasetFormatError(
            f"{source}: no {what} column (looked for {list(candidates)}); available columns: {[str(c) for c in columns]}"
        )
    return None
