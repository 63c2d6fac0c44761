"""SPIDER (van der Graaf et al. 2024): lumbar spine MRI, vertebra/disc/canal segmentation, sex.

Layout of the Zenodo release::

    images/<patient>_<sequence>.mha      e.g. 1_t1.mha, 1_t2.mha, 1_t2_SPACE.mha
    masks/<patient>_<sequence>.mha       same names
    overview.csv                          one row per image (or per patient) with the patient's sex

Read with SimpleITK (``.mha``), only when asked for; arrays are (z, y, x). One row per image
(several sequences per patient; ``patient_id`` keeps them in one split). ``overview.csv``: its
file column (``new_file_name``, e.g. ``1_t1``; or a patient column ``patient_id``/``patient``) and
its sex column (``sex``/``PatientSex``/``gender``, M/F) are matched ignoring case - the exact
column names are an assumption; a missing one is an error listing the columns present, an image
whose patient has no row is an error naming the file.

Masks: SPIDER stores vertebrae as 1-25 (one value per level), the spinal canal as 100 and the
intervertebral discs as 201-225. FairMedFM uses "all fifteen classes" without listing them, so the
default groups them into structures: 0 background, 1 vertebra, 2 intervertebral disc, 3 spinal
canal (``info["classes"]``); ``mask_values=``/``classes=`` give another coding. Group: sex.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import pandas as pd

from medequity.data.attributes import add_group_columns
from medequity.data.base import GROUP_PREFIX, DatasetFormatError, register_dataset
from medequity.data.loaders._common import find_file, index_images
from medequity.data.loaders._seg import SegmentationDataset, pick_column, segmentation_info
from medequity.data.table import finish_table, read_table

OVERVIEW = "overview.csv"
CLASSES = ["background", "vertebra", "intervertebral disc", "spinal canal"]
MASK_VALUES = {0: 0, **{v: 1 for v in range(1, 100)}, 100: 3, **{v: 2 for v in range(200, 300)}}


def _patient(stem: str) -> str:
    return stem.split("_", 1)[0]


@register_dataset("spider")
def load_spider(
    root: str | Path,
    *,
    overview: str = OVERVIEW,
    mask_values: Mapping[int, int] | None = None,
    classes: list[str] | None = None,
) -> SegmentationDataset:
    root = Path(root)
    if (mask_values is None) != (classes is None):
        raise ValueError("give mask_values and classes together")
    images = index_images(root, ["images"], (".mha",))
    if not images:
        raise DatasetFormatError(f"no SPIDER images (images/*.mha) under {root}")
    masks = index_images(root, ["masks"], (".mha",))
    meta_path = find_file(root, [overview], "SPIDER overview table")
    source = str(meta_path)
    meta = read_table(meta_path, dtype=str)
    file_col = pick_column(meta.columns, ("new_file_name", "file_name", "filename", "image"), "file", source, required=False)
    patient_col = pick_column(meta.columns, ("patient_id", "patient", "subject"), "patient", source, required=False)
    if file_col is None and patient_col is None:
        pick_column(meta.columns, ("new_file_name", "patient_id"), "file name or patient", source)
    sex_col = pick_column(meta.columns, ("sex", "PatientSex", "patient_sex", "gender"), "sex", source)
    keys = meta[patient_col] if patient_col is not None else meta[file_col].map(lambda v: _patient(Path(str(v)).stem))
    sex_of = dict(zip(keys.astype(str).str.strip(), meta[sex_col], strict=True))

    rows = []
    for stem in sorted(images, key=lambda s: (_patient(s).zfill(6), s)):
        if stem not in masks:
            raise DatasetFormatError(f"SPIDER: mask masks/{stem}.mha for image {images[stem]} not found")
        patient = _patient(stem)
        if patient not in sex_of:
            raise DatasetFormatError(f"SPIDER: image {images[stem]} (patient {patient}) has no row in {meta_path.name}")
        rows.append({
            "sample_id": stem, "patient_id": patient, "label": pd.NA, "path": images[stem], "mask_path": masks[stem],
            "sequence": stem.split("_", 1)[1] if "_" in stem else pd.NA, "sex": sex_of[patient],
        })
    table = add_group_columns(pd.DataFrame(rows), {"sex": None})
    columns = ["sample_id", "patient_id", "label", "path", "mask_path", "sequence", "sex", GROUP_PREFIX + "sex"]
    return SegmentationDataset(
        name="spider",
        table=finish_table(table[columns]),
        root=root,
        task="segmentation",
        info=segmentation_info(
            list(classes or CLASSES), dict(mask_values or MASK_VALUES),
            source=source, label_rule="no classification label (segmentation)",
            patient_id="number before the first '_' of the file name",
        ),
    )
