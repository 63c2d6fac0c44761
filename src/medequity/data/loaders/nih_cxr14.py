"""NIH ChestX-ray14 (Wang et al. 2017), the 2020 revision of its data-entry table.

Layout: ``Data_Entry_2017_v2020.csv`` (or the original ``Data_Entry_2017.csv``; columns Image
Index, Finding Labels, Follow-up #, Patient ID, Patient Age, Patient Gender, View Position, …),
images ``*.png`` in ``images/`` or the distributed ``images_001/images/`` … ``images_012/images/``,
and the official patient-level split lists ``train_val_list.txt`` / ``test_list.txt``.

Convention (chosen here, documented): label = "No Finding" (1 when Finding Labels is exactly
"No Finding"), the same healthy-vs-any-finding task as CheXpert and MIMIC-CXR in FairDi/MEDFAIR;
``finding="Pneumonia"`` (any of the 14) makes that finding the label. Every finding is also a
``label:<finding>`` column. Sex M/F; age "Patient Age" (the original table's "058Y" is read as
58); ages above 120 (data-entry errors in the 2017 table) are unknown. Official split: test_list
-> test, the rest train (``split`` has no val: :mod:`medequity.data.splits` carves val from train
by patient). Patient id = Patient ID.

Known traps avoided: follow-up images of one patient share a split; "No Finding" is a label
value in "Finding Labels", not a column; ages with a "Y" suffix are not dropped as non-numeric.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from medequity.data.attributes import add_group_columns
from medequity.data.base import GROUP_PREFIX, DatasetFormatError, MedicalDataset, register_dataset
from medequity.data.loaders._common import find_file, image_paths_from_ids, index_images
from medequity.data.table import finish_table, read_table, require_columns

FINDINGS = (
    "Atelectasis", "Cardiomegaly", "Effusion", "Infiltration", "Mass", "Nodule", "Pneumonia", "Pneumothorax",
    "Consolidation", "Edema", "Emphysema", "Fibrosis", "Pleural_Thickening", "Hernia",
)
COLUMNS = ("Image Index", "Finding Labels", "Patient ID", "Patient Age", "Patient Gender")


def _image_folders(root: Path) -> list[str]:
    folders = []
    for child in sorted(root.iterdir()):
        if child.is_dir() and child.name.lower().startswith("images"):
            folders.append(child.name)
            if (child / "images").is_dir():
                folders.append(f"{child.name}/images")
    return folders


@register_dataset("nih_cxr14")
def load_nih_cxr14(
    root: str | Path,
    *,
    finding: str = "No Finding",
    drop_missing: bool = True,
    age_threshold: float = 60,
    age_rule: str = ">",
    on_missing: str = "error",
) -> MedicalDataset:
    root = Path(root)
    if finding not in (*FINDINGS, "No Finding"):
        raise ValueError(f"unknown finding {finding!r}; choose 'No Finding' or one of {FINDINGS}")
    source_path = find_file(root, ["Data_Entry_2017_v2020.csv", "Data_Entry_2017.csv"], "NIH ChestX-ray14 data-entry table")
    source = str(source_path)
    meta = read_table(source_path)
    require_columns(meta, COLUMNS, source)

    age = meta["Patient Age"].astype("string").str.strip().str.replace(r"[Yy]$", "", regex=True)
    age = pd.to_numeric(age, errors="coerce")
    meta = meta.assign(sex=meta["Patient Gender"], age=age.where(age <= 120))
    if drop_missing:
        meta = meta[meta["sex"].astype("string").str.upper().isin(["M", "F"]) & meta["age"].notna()]

    folders = _image_folders(root)
    index = index_images(root, folders, (".png",))
    paths, present = image_paths_from_ids(
        root, meta["Image Index"], index, source, "Image Index",
        f"looked in {', '.join(folders) or 'no images*/ folder'}", on_missing,
    )
    meta, paths = meta[present], paths[present]

    findings = meta["Finding Labels"].astype("string").str.split("|")
    labels = pd.DataFrame(
        {f"label:{name}": findings.map(lambda items, n=name: int(n in items)).astype("Int64") for name in ("No Finding", *FINDINGS)},
        index=meta.index,
    )
    table = pd.concat([meta, labels], axis=1).assign(
        sample_id=meta["Image Index"].astype(str),
        patient_id=meta["Patient ID"].astype(str),
        path=paths,
    )
    table["label"] = table[f"label:{finding}"]

    test_list = root / "test_list.txt"
    if test_list.is_file():
        test_names = set(test_list.read_text().split())
        table["split"] = table["sample_id"].map(lambda name: "test" if name in test_names else "train")
    table = add_group_columns(table, {"sex": None, "age": {"threshold": age_threshold, "rule": age_rule}})
    front = ["sample_id", "patient_id", "label", "path", *(["split"] if "split" in table.columns else []),
             "sex", "age", "Finding Labels", "View Position"]
    front = [c for c in front if c in table.columns]
    rest = [c for c in table.columns if c.startswith(("label:", GROUP_PREFIX))]
    if table.empty:
        raise DatasetFormatError(f"{source}: no rows left after dropping rows without sex or age")
    return MedicalDataset(
        name="nih_cxr14",
        table=finish_table(table[front + rest]),
        root=root,
        info={
            "label_rule": f"'{finding}' in Finding Labels",
            "convention": "healthy (No Finding) vs any finding, as CheXpert/MIMIC in FairDi/MEDFAIR",
            "patient_id": "Patient ID",
            "split": "official test_list.txt (train/test; val carved by patient)" if test_list.is_file() else "none",
        },
    )
