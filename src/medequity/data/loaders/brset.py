"""BRSET, the Brazilian Multilabel Ophthalmological Dataset (Nakayama et al. 2023, PhysioNet).

Layout: ``labels.csv`` (image_id, patient_id, camera, patient_age, comorbidities, …,
patient_sex, exam_eye, diabetes, …, diabetic_retinopathy, macular_edema, …) and images
``fundus_photos/<image_id>.jpg``. patient_sex is 1 = male, 2 = female (dataset documentation).

Convention (FairMedFM, sex and age attributes; age threshold 60): label = ``diabetic_retinopathy``
(0/1) by default; ``label_column`` picks another diagnosis column and ``positive_values`` maps
non-binary columns (e.g. ``label_column="DR_ICDR", positive_values=[1, 2, 3, 4]``). Rows without
sex or age are dropped (``drop_missing``). Patient id = patient_id: both eyes and repeat visits of
a patient share a split.

Known traps avoided: sex codes are 1/2, not 0/1, and are mapped explicitly (an unexpected code is
unknown, never a group); several images per patient are never split apart.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

from medequity.data.attributes import BRSET_SEX_CODES, add_group_columns
from medequity.data.base import GROUP_PREFIX, MedicalDataset, register_dataset
from medequity.data.loaders._common import find_file, image_paths_from_ids, index_images
from medequity.data.table import binary_labels, finish_table, read_table, require_columns
from medequity.data.zero_shot import brset_prompts

COLUMNS = ("image_id", "patient_id", "patient_age", "patient_sex")
IMAGE_FOLDERS = ("fundus_photos", "images", ".")


@register_dataset("brset")
def load_brset(
    root: str | Path,
    *,
    label_column: str = "diabetic_retinopathy",
    positive_values: Iterable[Any] | None = None,
    drop_missing: bool = True,
    age_threshold: float = 60,
    age_rule: str = ">",
    on_missing: str = "error",
) -> MedicalDataset:
    root = Path(root)
    source_path = find_file(root, ["labels.csv", "labels_brset.csv"], "BRSET labels.csv")
    source = str(source_path)
    meta = read_table(source_path)
    require_columns(meta, (*COLUMNS, label_column), source)
    if drop_missing:
        known_sex = meta["patient_sex"].astype(str).str.strip().isin(["1", "2", "1.0", "2.0"])
        meta = meta[known_sex & meta["patient_age"].notna()]

    index = index_images(root, IMAGE_FOLDERS, (".jpg", ".jpeg", ".png"))
    paths, present = image_paths_from_ids(
        root, meta["image_id"], index, source, "image_id", f"looked in {', '.join(IMAGE_FOLDERS)}", on_missing
    )
    meta, paths = meta[present], paths[present]
    table = meta.assign(
        sample_id=meta["image_id"].astype(str),
        patient_id=meta["patient_id"].astype(str),
        label=binary_labels(meta[label_column], source, label_column, positive_values),
        path=paths,
        sex=meta["patient_sex"],
        age=meta["patient_age"],
    )
    table = add_group_columns(
        table, {"sex": {"codes": BRSET_SEX_CODES}, "age": {"threshold": age_threshold, "rule": age_rule}}
    )
    columns = ["sample_id", "patient_id", "label", "path", "sex", "age", "exam_eye", GROUP_PREFIX + "sex", GROUP_PREFIX + "age"]
    return MedicalDataset(
        name="brset",
        table=finish_table(table[[c for c in columns if c in table.columns]]),
        root=root,
        info={
            "source": source,
            "label_rule": f"{label_column}" + (f" in {list(positive_values)}" if positive_values is not None else " == 1"),
            "convention": "FairMedFM; patient_sex 1 male, 2 female",
            "zero_shot": brset_prompts(label_column),
            "patient_id": "patient_id",
        },
    )
