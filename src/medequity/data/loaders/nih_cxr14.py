"""NIH ChestX-ray14 (Wang et al. 2017), the 2020 revision of its data-entry table.

Layout: ``Data_Entry_2017_v2020.csv`` (or the original ``Data_Entry_2017.csv``; columns Image
Index, Finding Labels, Follow-up #, Patient ID, Patient Age, Patient Gender, View Position, …),
images ``*.png`` in ``images/`` or the distributed ``images_001/images/`` … ``images_012/images/``,
and the official patient-level split lists ``train_val_list.txt`` / ``test_list.txt``.

Convention (chosen here, documented): label = "No Finding" (1 when Finding Labels is exactly
"No Finding"), the same healthy-vs-any-finding task as CheXpert and MIMIC-CXR in FairDi/MEDFAIR,
so **label 1 = healthy** and the data card's prevalence is the share of healthy images;
``finding="Pneumonia"`` (any of the 14) makes that finding the label (label 1 = disease). Every
finding is also a ``label:<finding>`` column; a name in Finding Labels that is none of the 14
(a renamed finding such as "Pleural Thickening") is an error naming the row, not a silent 0.
Sex M/F; age "Patient Age" (the original table's "058Y" is read as 58); ages above 120
(data-entry errors in the 2017 table) are unknown. Official split: test_list -> test, the rest
train (``split`` has no val: :mod:`medequity.data.splits` carves val from train by patient).
Patient id = Patient ID; sample id = Image Index (independent of the root folder).

Options: ``views`` keeps AP or PA images (NIH has no laterals; AP films are bedside films of
sicker, older patients, so the view confounds age and sex); ``one_per_patient`` keeps each
patient's first image (lowest Follow-up #: deterministic); ``age_bins`` picks FairMedFM's ≥ 60,
MEDFAIR's 5 bins or cut points. ``on_missing="drop"`` drops rows whose image file is absent, with
a warning and ``info["dropped_rows"]`` / ``info["absent_image_folders"]`` (the data card shows
them); ``check_files=False`` reads the table alone (no images needed, e.g. for a data card).

Known traps avoided: follow-up images of one patient share a split; "No Finding" is a label
value in "Finding Labels", not a column; ages with a "Y" suffix are not dropped as non-numeric;
a root without any image folder is reported as missing images.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import pandas as pd

from medequity.data.attributes import add_group_columns, age_grouping, describe_age_grouping
from medequity.data.base import GROUP_PREFIX, DatasetFormatError, MedicalDataset, register_dataset
from medequity.data.loaders._common import (
    cxr_label_info,
    find_file,
    first_image_per_patient,
    image_paths_from_ids,
    index_images,
    no_rows_left,
    parse_views,
    view_mask,
)
from medequity.data.table import finish_table, read_table, require_columns
from medequity.data.zero_shot import cxr_prompts

FINDINGS = (
    "Atelectasis", "Cardiomegaly", "Effusion", "Infiltration", "Mass", "Nodule", "Pneumonia", "Pneumothorax",
    "Consolidation", "Edema", "Emphysema", "Fibrosis", "Pleural_Thickening", "Hernia",
)
COLUMNS = ("Image Index", "Finding Labels", "Follow-up #", "Patient ID", "Patient Age", "Patient Gender", "View Position")
DISTRIBUTED_FOLDERS = tuple(f"images_{i:03d}" for i in range(1, 13))  # the 12 archives as shipped


def _image_folders(root: Path) -> list[str]:
    folders = []
    for child in sorted(root.iterdir()):
        if child.is_dir() and child.name.lower().startswith("images"):
            folders.append(child.name)
            if (child / "images").is_dir():
                folders.append(f"{child.name}/images")
    return folders


def _check_finding_names(findings: pd.Series, source: str) -> None:
    known = {"No Finding", *FINDINGS}
    for row, items in findings.items():
        unknown = [item for item in items if item not in known] if isinstance(items, list) else []
        if unknown:
            raise DatasetFormatError(
                f"{source}: row {row}: column 'Finding Labels' names {unknown[0]!r}, which is not one of the "
                f"14 findings or 'No Finding': {['No Finding', *FINDINGS]}"
            )


@register_dataset("nih_cxr14")
def load_nih_cxr14(
    root: str | Path,
    *,
    finding: str = "No Finding",
    views: str | list[str] | None = None,
    one_per_patient: bool = False,
    drop_missing: bool = True,
    age_threshold: float = 60,
    age_rule: str = ">",
    age_bins: str | list[float] | None = None,
    on_missing: str = "error",
    check_files: bool = True,
) -> MedicalDataset:
    options: dict[str, Any] = {
        "finding": finding, "views": views, "one_per_patient": one_per_patient, "drop_missing": drop_missing,
        "age_threshold": age_threshold, "age_rule": age_rule, "age_bins": age_bins, "on_missing": on_missing,
        "check_files": check_files,
    }
    root = Path(root)
    if finding not in (*FINDINGS, "No Finding"):
        raise ValueError(f"unknown finding {finding!r}; choose 'No Finding' or one of {list(FINDINGS)}")
    if on_missing not in ("error", "drop"):
        raise ValueError(f"on_missing must be 'error' or 'drop', got {on_missing!r}")
    chosen_views = parse_views(views)
    age_options = age_grouping(age_bins, age_threshold, age_rule)
    source_path = find_file(root, ["Data_Entry_2017_v2020.csv", "Data_Entry_2017.csv"], "NIH ChestX-ray14 data-entry table")
    source = str(source_path)
    meta = read_table(source_path)
    require_columns(meta, COLUMNS, source)
    findings = meta["Finding Labels"].astype("string").str.strip().str.split("|")
    _check_finding_names(findings, source)

    dropped: dict[str, int] = {}
    age = meta["Patient Age"].astype("string").str.strip().str.replace(r"[Yy]$", "", regex=True)
    age = pd.to_numeric(age, errors="coerce")
    meta = meta.assign(sex=meta["Patient Gender"], age=age.where(age <= 120),
                       view=meta["View Position"].astype("string").str.strip().str.upper())
    if drop_missing:
        known = meta["sex"].astype("string").str.upper().isin(["M", "F"]) & meta["age"].notna()
        dropped["unknown sex or age"] = int((~known).sum())
        meta = meta[known]
    if chosen_views is not None:
        keep = view_mask(meta["view"], pd.Series(True, index=meta.index), chosen_views)  # every NIH image is frontal
        dropped[f"view not in {list(chosen_views)}"] = int((~keep).sum())
        meta = meta[keep]

    folders = _image_folders(root)
    distributed = [f for f in folders if f.lower().startswith("images_") and "/" not in f]
    absent = [f for f in DISTRIBUTED_FOLDERS if f not in distributed] if distributed else []
    index = index_images(root, folders, (".png",))
    if check_files:
        if not folders:
            raise DatasetFormatError(
                f"NIH ChestX-ray14 images are missing: no images/ or images_001/images … images_012/images folder under "
                f"{root}; unpack the image archives there, or pass check_files=False (CLI: --option check_files=false) "
                "to read the table alone (e.g. for a data card)"
            )
        looked = f"looked in {', '.join(folders)}" + (f"; absent archive folders: {', '.join(absent)}" if absent else "")
        paths, present = image_paths_from_ids(root, meta["Image Index"], index, source, "Image Index", looked, on_missing)
        n_absent = int((~present).sum())
        if n_absent == len(meta) and len(meta):
            raise DatasetFormatError(
                f"{source}: none of the {len(meta)} images was found under {root} ({looked}); the images are missing"
            )
        if n_absent:
            dropped["image file absent (on_missing='drop')"] = n_absent
            first = meta["Image Index"][~present].head(3).tolist()
            warnings.warn(
                f"{source}: dropped {n_absent} of {len(meta)} rows whose image is not under {root} (on_missing='drop'; "
                f"{looked}; e.g. {', '.join(map(str, first))})",
                stacklevel=2,
            )
        meta, paths = meta[present], paths[present]
    else:
        # the table alone: images where they happen to be, else the flat layout images/<name>
        names = meta["Image Index"].astype(str).str.strip()
        paths = names.map(lambda n: index.get(n.rsplit(".", 1)[0], f"images/{n}")).astype("string")
    if one_per_patient:
        before = len(meta)
        meta = meta.assign(_follow_up=pd.to_numeric(meta["Follow-up #"], errors="coerce"), patient_id=meta["Patient ID"].astype(str))
        meta = first_image_per_patient(meta, ["_follow_up", "Image Index"]).drop(columns=["_follow_up", "patient_id"])
        paths = paths[meta.index]
        dropped["not the patient's first image (one_per_patient)"] = before - len(meta)
    if meta.empty:
        raise no_rows_left(source, dropped)

    findings = findings[meta.index]
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
    table = add_group_columns(table, {"sex": None, "age": age_options})
    front = ["sample_id", "patient_id", "label", "path", *(["split"] if "split" in table.columns else []),
             "sex", "age", "Finding Labels", "view", "Follow-up #"]
    rest = [c for c in table.columns if c.startswith(("label:", GROUP_PREFIX))]
    return MedicalDataset(
        name="nih_cxr14",
        table=finish_table(table[front + rest]),
        root=root,
        info={
            "label_rule": f"label = '{finding}' in Finding Labels",
            **cxr_label_info(finding),
            "zero_shot": cxr_prompts(finding),
            "convention": "healthy (No Finding) vs any finding, as CheXpert/MIMIC in FairDi/MEDFAIR",
            "patient_id": "Patient ID",
            "sample_id": "Image Index",
            "age_groups": describe_age_grouping(age_options),
            "split": "official test_list.txt (train/test; val carved by patient)" if test_list.is_file() else "none",
            "views": "all" if chosen_views is None else list(chosen_views),
            "one_per_patient": "lowest Follow-up # per patient" if one_per_patient else "all images",
            "images": "checked: every row's image exists" if check_files else "not checked (check_files=False): table only",
            "absent_image_folders": absent,
            "dropped_rows": dropped,
            "options": options,
        },
    )
