"""TUSC: Stanford thyroid ultrasound cine-clip (AIMI), thyroid-nodule segmentation, sex and age.

The AIMI release is ``metadata.csv`` (one row per annotated nodule: ``annot_id``, ``sex``,
``age``, TI-RADS features, ``histopath_diagnosis``) and ``dataset.hdf5`` holding every cine
frame with its nodule mask. FairMedFM uses 860 frames exported as 2D images; this loader reads that
export, laid out as the assumed public convention (the hdf5 itself needs h5py, which the project
does not depend on; the error says so)::

    metadata.csv
    images/<annot_id>_<frame>.png    (or images/<annot_id>/<frame>.png)
    masks/<annot_id>_<frame>.png     (same names; 0 background, > 0 nodule)

Assumptions (the export is not an official layout): frame files are matched to the metadata by
``annot_id`` (the file stem minus a trailing ``_<frame number>``, or the parent folder); masks
share the image's relative name under ``masks/``; ``patient_id`` is the metadata's ``patient_id``
(or ``mrn``) column when present, else ``annot_id`` (one nodule per patient - say otherwise in
the table, splits depend on it). Sex ``M``/``F`` (other <NA>), age in years, old if age > 60
(FairMedFM B.2). ``label`` is malignant when a ``histopath_diagnosis`` column says so, else <NA>.
``every=k`` keeps every k-th frame of each nodule. A missing mask or an image without metadata
row is an error naming the file; ``on_missing="drop"`` drops the frame instead.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import pandas as pd

from medequity.data.attributes import add_group_columns
from medequity.data.base import GROUP_PREFIX, DatasetFormatError, register_dataset
from medequity.data.loaders._common import find_file
from medequity.data.loaders._seg import IMAGE_SUFFIXES, SegmentationDataset, segmentation_info
from medequity.data.table import finish_table, read_table, require_columns

METADATA = "metadata.csv"
IMAGE_FOLDER = "images"
MASK_FOLDER = "masks"
CLASSES = ["background", "nodule"]


def _frames(root: Path) -> list[str]:
    """Relative paths of image files under ``images/`` (flat or one folder per nodule)."""
    base = root / IMAGE_FOLDER
    found = []
    for folder, _, files in os.walk(base):
        for name in files:
            if name.lower().endswith(IMAGE_SUFFIXES):
                found.append((Path(folder) / name).relative_to(root).as_posix())
    return sorted(found)


def _annotation_and_frame(relative: str) -> tuple[str, int]:
    parts = relative.split("/")
    stem = parts[-1].rsplit(".", 1)[0]
    if len(parts) > 2:  # images/<annot_id>/<frame>.png
        digits = re.findall(r"\d+", stem)
        return parts[-2], int(digits[-1]) if digits else 0
    match = re.fullmatch(r"(.+?)_(\d+)", stem)
    return (match.group(1), int(match.group(2))) if match else (stem, 0)


@register_dataset("tusc")
def load_tusc(
    root: str | Path,
    *,
    metadata: str = METADATA,
    every: int = 1,
    age_threshold: float = 60,
    age_rule: str = ">",
    on_missing: str = "error",
) -> SegmentationDataset:
    if on_missing not in ("error", "drop"):
        raise ValueError(f"on_missing must be 'error' or 'drop', got {on_missing!r}")
    root = Path(root)
    meta_path = find_file(root, [metadata], "TUSC metadata")
    meta = read_table(meta_path, dtype={"annot_id": str})
    require_columns(meta, ("annot_id", "sex", "age"), str(meta_path))
    meta["annot_id"] = meta["annot_id"].astype(str).str.strip()
    if meta["annot_id"].duplicated().any():
        dupes = meta.loc[meta["annot_id"].duplicated(), "annot_id"].head(5).tolist()
        raise DatasetFormatError(f"{meta_path}: annot_id values repeat: {dupes}; one row per nodule")
    by_id = meta.set_index("annot_id")

    frames = _frames(root)
    if not frames:
        hint = (" (found dataset.hdf5: reading it needs h5py; or export the frames to images/ and masks/)"
                if (root / "dataset.hdf5").is_file() else "")
        raise DatasetFormatError(f"no frame images under {root / IMAGE_FOLDER}{hint}")
    rows, problems = [], []
    for relative in frames:
        annot_id, frame = _annotation_and_frame(relative)
        mask_relative = MASK_FOLDER + relative[len(IMAGE_FOLDER):]
        if annot_id not in by_id.index:
            problems.append(f"{relative}: annot_id {annot_id!r} has no row in {meta_path.name}")
            continue
        if not (root / mask_relative).is_file():
            problems.append(f"{relative}: mask {mask_relative} not found")
            continue
        rows.append({"annot_id": annot_id, "frame": frame, "path": relative, "mask_path": mask_relative})
    if problems and on_missing == "error":
        shown = "; ".join(problems[:5]) + (f"; ... and {len(problems) - 5} more" if len(problems) > 5 else "")
        raise DatasetFormatError(f"TUSC under {root}: {len(problems)} frames unusable: {shown}")
    if not rows:
        raise DatasetFormatError(f"TUSC under {root}: no frame has a mask and a metadata row")

    table = pd.DataFrame(rows).sort_values(["annot_id", "frame"], kind="stable")
    if every > 1:
        table = table.groupby("annot_id", sort=False).nth(slice(None, None, every))
    table = table.join(by_id, on="annot_id")
    patient = next((c for c in ("patient_id", "mrn") if c in meta.columns), None)
    table["sample_id"] = table["path"].str.rsplit(".", n=1).str[0].str.removeprefix(IMAGE_FOLDER + "/")
    table["patient_id"] = table[patient].astype(str) if patient else table["annot_id"]
    if "histopath_diagnosis" in table.columns:
        diagnosis = table["histopath_diagnosis"].astype("string").str.lower()
        table["label"] = diagnosis.str.contains("malignan|carcinoma|cancer", regex=True).astype("Int64")
    else:
        table["label"] = pd.NA
    table["age"] = pd.to_numeric(table["age"], errors="coerce").astype("Float64")
    table = add_group_columns(table, {"sex": None, "age": {"threshold": age_threshold, "rule": age_rule}})
    columns = ["sample_id", "patient_id", "label", "path", "mask_path", "annot_id", "frame", "sex", "age",
               GROUP_PREFIX + "sex", GROUP_PREFIX + "age"]
    return SegmentationDataset(
        name="tusc",
        table=finish_table(table[columns]),
        root=root,
        task="segmentation",
        info=segmentation_info(
            CLASSES, "binary",
            source=str(meta_path),
            label_rule="histopath_diagnosis malignant = 1" if "histopath_diagnosis" in meta.columns else "no label",
            patient_id=patient or "annot_id (one nodule per patient assumed)",
            frames_every=every,
            dropped_frames=len(problems),
        ),
    )
