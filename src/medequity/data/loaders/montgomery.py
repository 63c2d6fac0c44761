"""Montgomery County chest X-ray set (Jaeger et al. 2014): lung segmentation, sex and age.

Layout as the NLM archive unpacks (``root`` is ``MontgomerySet/`` or the folder holding it)::

    CXR_png/MCUCXR_0001_0.png                    the radiograph (suffix _0 normal, _1 tuberculosis)
    ManualMask/leftMask/MCUCXR_0001_0.png        the patient's left lung, 0/255
    ManualMask/rightMask/MCUCXR_0001_0.png       the patient's right lung, 0/255
    ClinicalReadings/MCUCXR_0001_0.txt           "Patient's Sex: M", "Patient's Age: 044Y", findings

Masks: the two files become one class map, 0 background, 1 left lung, 2 right lung
(``info["classes"]``; FairMedFM codes them 128/255 in one file, SEGMENTATION.md). Overlapping
pixels (none in the release) are an error naming both files. Label: tuberculosis (the file-name
suffix), kept for completeness. Sex from the reading (M/F; anything else <NA>); age from
``044Y`` (also ``44``, ``044M`` months), grouped old if age > 60 (FairMedFM B.2). One radiograph
per patient, so the patient id is the image id. A missing mask or reading is an error naming the
file; ``on_missing="drop"`` drops images lacking either instead.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pandas as pd

from medequity.data.attributes import add_group_columns
from medequity.data.base import GROUP_PREFIX, DatasetFormatError, register_dataset, safe_join
from medequity.data.loaders._common import index_images
from medequity.data.loaders._seg import SegmentationDataset, encode_mask, segmentation_info
from medequity.data.table import finish_table

IMAGE_FOLDER = "CXR_png"
LEFT_FOLDER = "ManualMask/leftMask"
RIGHT_FOLDER = "ManualMask/rightMask"
READINGS_FOLDER = "ClinicalReadings"
CLASSES = ["background", "left lung", "right lung"]


class MontgomeryDataset(SegmentationDataset):
    """Masks from two files per image (``mask_path`` left lung, ``mask_path_right`` right lung)."""

    def load_mask(self, index: int) -> np.ndarray:
        if self.masks is not None:
            return self.masks[index]
        where = {}
        parts = []
        for column in ("mask_path", "mask_path_right"):
            relative = self.table.at[index, column]
            path = safe_join(self.root, relative, where=f"row {index}, column {column!r}")
            where[column] = relative
            parts.append(encode_mask(self.read_file(path, mask=True), "binary", ["background", "lung"], where=relative))
        left, right = parts
        if left.shape != right.shape:
            raise DatasetFormatError(f"{where['mask_path']} is {left.shape} but {where['mask_path_right']} is {right.shape}")
        if np.any(left & right):
            raise DatasetFormatError(f"{where['mask_path']} and {where['mask_path_right']} overlap; each pixel is one lung")
        return (left + 2 * right).astype(np.uint8)


def parse_clinical_reading(text: str) -> dict[str, object]:
    """``{"sex": "M"/"F"/<NA>, "age": years or <NA>}`` from a ClinicalReadings file's text."""
    sex = re.search(r"Patient'?s\s+Sex\s*:\s*([A-Za-z]+)", text, flags=re.IGNORECASE)
    age = re.search(r"Patient'?s\s+Age\s*:\s*(\d{1,3})\s*([YMD]?)", text, flags=re.IGNORECASE)
    years: object = pd.NA
    if age:
        scale = {"": 1.0, "Y": 1.0, "M": 1 / 12, "D": 1 / 365.25}[age.group(2).upper()]
        years = float(age.group(1)) * scale
    return {"sex": sex.group(1).upper() if sex else pd.NA, "age": years}


@register_dataset("montgomery")
def load_montgomery(
    root: str | Path,
    *,
    age_threshold: float = 60,
    age_rule: str = ">",
    on_missing: str = "error",
) -> MontgomeryDataset:
    if on_missing not in ("error", "drop"):
        raise ValueError(f"on_missing must be 'error' or 'drop', got {on_missing!r}")
    root = Path(root)
    if not (root / IMAGE_FOLDER).is_dir() and (root / "MontgomerySet" / IMAGE_FOLDER).is_dir():
        root = root / "MontgomerySet"
    images = index_images(root, [IMAGE_FOLDER], (".png",))
    if not images:
        raise DatasetFormatError(f"no radiographs under {root / IMAGE_FOLDER} (expected CXR_png/MCUCXR_XXXX_Y.png)")
    lefts = index_images(root, [LEFT_FOLDER], (".png",))
    rights = index_images(root, [RIGHT_FOLDER], (".png",))
    rows, missing = [], []
    for stem in sorted(images):
        reading = root / READINGS_FOLDER / f"{stem}.txt"
        needed = {LEFT_FOLDER: lefts.get(stem), RIGHT_FOLDER: rights.get(stem)}
        lost = [f"{folder}/{stem}.png" for folder, found in needed.items() if found is None]
        if not reading.is_file():
            lost.append(f"{READINGS_FOLDER}/{stem}.txt")
        if lost:
            missing.extend(f"{images[stem]}: {name}" for name in lost)
            continue
        attributes = parse_clinical_reading(reading.read_text(errors="replace"))
        suffix = stem.rsplit("_", 1)[-1]
        rows.append({
            "sample_id": stem, "patient_id": stem, "label": int(suffix) if suffix in ("0", "1") else pd.NA,
            "path": images[stem], "mask_path": needed[LEFT_FOLDER], "mask_path_right": needed[RIGHT_FOLDER],
            **attributes,
        })
    if missing and on_missing == "error":
        shown = "; ".join(missing[:5]) + (f"; ... and {len(missing) - 5} more" if len(missing) > 5 else "")
        raise DatasetFormatError(f"Montgomery under {root}: {len(missing)} files not found (image: missing file): {shown}")
    if not rows:
        raise DatasetFormatError(f"Montgomery under {root}: no radiograph has both lung masks and a clinical reading")
    table = pd.DataFrame(rows)
    table["age"] = pd.to_numeric(table["age"], errors="coerce").astype("Float64")
    table = add_group_columns(table, {"sex": None, "age": {"threshold": age_threshold, "rule": age_rule}})
    columns = ["sample_id", "patient_id", "label", "path", "mask_path", "mask_path_right", "sex", "age",
               GROUP_PREFIX + "sex", GROUP_PREFIX + "age"]
    return MontgomeryDataset(
        name="montgomery",
        table=finish_table(table[columns]),
        root=root,
        task="segmentation",
        info=segmentation_info(
            CLASSES, {0: 0, 1: 1, 2: 2},
            source=str(root),
            label_rule="tuberculosis (file-name suffix _1) = 1",
            patient_id="image id (one radiograph per patient)",
            mask_files="ManualMask/leftMask (class 1) + ManualMask/rightMask (class 2)",
            dropped_missing=len(missing),
        ),
    )
