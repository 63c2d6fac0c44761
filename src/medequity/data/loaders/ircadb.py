"""3D-IRCADb-01 (IRCAD): 20 abdominal CT volumes with organ labels, sex per patient.

Layout of the IRCAD download, one folder per patient, each archive inside unzipped in place::

    3Dircadb1.1/PATIENT_DICOM/image_0 ... image_N     CT slices (DICOM, no extension)
    3Dircadb1.1/LABELLED_DICOM/image_0 ... image_N    one label image per slice
    ...
    3Dircadb1.20/

The archive ships ``PATIENT_DICOM.zip`` and ``LABELLED_DICOM.zip`` inside each patient folder: a
folder still zipped is an error that says to unzip it. Volumes are read with SimpleITK's DICOM
series reader (slices ordered by position), only when asked for.

Sex is not in the archive (the IRCAD web page lists sex and birth year per patient), so it is read
from a small table the user writes, ``ircadb_patients.csv`` (assumed name, ``metadata=`` changes
it) with columns ``patient`` (``1``..``20`` or the folder name) and ``sex`` (M/F); a patient
missing from it is an error naming the folder. Masks (FairMedFM B.2): the six LABELLED_DICOM
values 1, 17, 33, 65, 129, 193 become classes 1..6 (named ``label_<value>``; the paper does not
name the organs), every other value background. Group: sex. Patient id = folder (one volume each).
"""

from __future__ import annotations

import re
from pathlib import Path

import pandas as pd

from medequity.data.attributes import add_group_columns
from medequity.data.base import GROUP_PREFIX, DatasetFormatError, register_dataset
from medequity.data.loaders._common import find_file
from medequity.data.loaders._seg import SegmentationDataset, pick_column, segmentation_info
from medequity.data.table import finish_table, read_table

METADATA = "ircadb_patients.csv"
IMAGE_FOLDER = "PATIENT_DICOM"
MASK_FOLDER = "LABELLED_DICOM"
LABEL_VALUES = (1, 17, 33, 65, 129, 193)
CLASSES = ["background", *(f"label_{v}" for v in LABEL_VALUES)]


def _patient_number(folder: str) -> str:
    match = re.search(r"\.(\d+)$", folder)
    return match.group(1) if match else folder


@register_dataset("ircadb")
def load_ircadb(root: str | Path, *, metadata: str = METADATA) -> SegmentationDataset:
    root = Path(root)
    if not any(root.glob("3Dircadb1.*")) and (root / "3Dircadb1").is_dir():
        root = root / "3Dircadb1"
    folders = sorted((p for p in root.glob("3Dircadb1.*") if p.is_dir()), key=lambda p: _patient_number(p.name).zfill(6))
    if not folders:
        raise DatasetFormatError(f"no patient folders 3Dircadb1.<n> under {root}")
    meta_path = find_file(root, [metadata], f"IRCADb patient table (columns patient, sex; see {__name__})")
    meta = read_table(meta_path, dtype=str)
    patient_col = pick_column(meta.columns, ("patient", "patient_id", "id", "folder"), "patient", str(meta_path))
    sex_col = pick_column(meta.columns, ("sex", "gender"), "sex", str(meta_path))
    sex_of = {}
    for value, sex in zip(meta[patient_col].astype(str).str.strip(), meta[sex_col], strict=True):
        sex_of[_patient_number(value)] = sex

    rows = []
    for folder in folders:
        for sub in (IMAGE_FOLDER, MASK_FOLDER):
            if not (folder / sub).is_dir():
                zipped = " (found the .zip: unzip it in place)" if (folder / f"{sub}.zip").is_file() else ""
                raise DatasetFormatError(f"IRCADb: folder {folder.name}/{sub} not found{zipped}")
        number = _patient_number(folder.name)
        if number not in sex_of:
            raise DatasetFormatError(f"IRCADb: patient folder {folder.name} has no row in {meta_path.name}")
        rows.append({
            "sample_id": folder.name, "patient_id": folder.name, "label": pd.NA,
            "path": f"{folder.name}/{IMAGE_FOLDER}", "mask_path": f"{folder.name}/{MASK_FOLDER}", "sex": sex_of[number],
        })
    table = add_group_columns(pd.DataFrame(rows), {"sex": None})
    columns = ["sample_id", "patient_id", "label", "path", "mask_path", "sex", GROUP_PREFIX + "sex"]
    return SegmentationDataset(
        name="ircadb",
        table=finish_table(table[columns]),
        root=root,
        task="segmentation",
        info=segmentation_info(
            CLASSES, {0: 0, **{v: i + 1 for i, v in enumerate(LABEL_VALUES)}}, mask_other="background",
            source=str(meta_path), label_rule="no classification label (segmentation)",
            patient_id="patient folder (one volume each)",
        ),
    )
