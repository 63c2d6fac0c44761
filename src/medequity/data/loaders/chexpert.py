"""CheXpert (Irvin et al. 2019) and CheXpert-v1.0-small, with race from the CHEXPERT DEMO table.

Layout: ``train.csv`` and ``valid.csv`` (Path, Sex, Age, Frontal/Lateral, AP/PA and 14 findings
coded 1 / 0 / -1 uncertain / blank) in the dataset folder; Path values start with the folder name
(``CheXpert-v1.0-small/train/patient00001/study1/view1_frontal.jpg``), so the root may be that
folder or its parent. Race comes from the CHEXPERT DEMO table (``CHEXPERT DEMO.xlsx`` or .csv,
columns PATIENT, GENDER, AGE_AT_CXR, PRIMARY_RACE) joined on the patient id; pass ``demo_path``
when it lives elsewhere. Without it the dataset has sex and age only (``info`` says so).

Convention (MEDFAIR; FairDi §7.2; DATASETS.md): label = "No Finding", so **label 1 = healthy**
and the data card's prevalence is the share of healthy images; ``finding="Pleural Effusion"``
(any of the 14) makes that finding the label (label 1 = disease). Every finding is also a
``label:<finding>`` column: 1 -> 1, 0 and blank -> 0, and the uncertain -1 by ``uncertain``:
``"zero"`` (U-zeros, the default), ``"one"`` (U-ones) or ``"missing"`` (<NA>: masked in the
``label:`` columns; rows whose *label* finding is -1 are dropped, counted in ``info``).
Rows with unknown sex or missing age are dropped; unknown race stays <NA>. Patient id =
``patientNNNNN`` from the path, so all studies of a patient share a split. Age > 60 (``age_bins``
picks FairMedFM's ≥ 60, MEDFAIR's 5 bins or cut points), White vs non-White.

Options researchers expect (torchxrayvision has them): ``views`` keeps AP, PA, lateral or frontal
images (AP vs PA confounds age and sex: AP films are bedside films of sicker, older patients);
``one_per_patient`` keeps each patient's first image (lowest study number, then lowest view
number: deterministic). ``valid.csv`` holds 234 radiologist-labelled images whose labels are not
made like train.csv's; it never joins the random pool unasked: ``valid="exclude"`` (default, as
torchxrayvision) leaves it out, ``"test"`` makes it the official test split (train.csv = train,
val carved by patient), ``"pool"`` pools it with train.csv on purpose. ``sample_id`` is the path
inside the dataset folder (``train/patient00001/study1/view1_frontal.jpg``): the same whichever
folder ``root`` names and in the small and full versions. ``info["options"]`` records every
option and ``info["dropped_rows"]`` every row removed and why; the data card shows both.

Known traps avoided: MEDFAIR-style code lumps every PRIMARY_RACE that does not start with
"White" - including "Unknown", "Race and Ethnicity Unknown", "Patient Refused" and "Declines to
State" - into non-White; here those are <NA>. "Unknown" sex is never female. A renamed or
missing finding column is an error naming it and the columns present (it is never silently
dropped).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from medequity.data.attributes import add_group_columns, age_grouping, describe_age_grouping
from medequity.data.base import GROUP_PREFIX, DatasetFormatError, MedicalDataset, register_dataset
from medequity.data.loaders._common import (
    cxr_label_info,
    find_optional_file,
    first_image_per_patient,
    no_rows_left,
    parse_views,
    view_mask,
)
from medequity.data.table import finish_table, read_table, require_columns, resolve_paths
from medequity.data.zero_shot import cxr_prompts

FINDINGS = (
    "No Finding", "Enlarged Cardiomediastinum", "Cardiomegaly", "Lung Opacity", "Lung Lesion", "Edema",
    "Consolidation", "Pneumonia", "Atelectasis", "Pneumothorax", "Pleural Effusion", "Pleural Other",
    "Fracture", "Support Devices",
)
COLUMNS = ("Path", "Sex", "Age", "Frontal/Lateral", "AP/PA", *FINDINGS)  # train.csv/valid.csv as shipped
DEMO_NAMES = ("CHEXPERT DEMO.xlsx", "CHEXPERT DEMO.csv", "chexpert_demo.csv", "CHEXPERT_DEMO.xlsx")
DATASET_FOLDERS = (".", "CheXpert-v1.0-small", "CheXpert-v1.0")
UNCERTAIN = ("zero", "one", "missing")
VALID = ("exclude", "test", "pool")


def with_finding_labels(
    frame: pd.DataFrame, findings: tuple[str, ...], uncertain: str = "zero", finding: str = "No Finding"
) -> pd.DataFrame:
    """The table with each raw finding column replaced by ``label:<finding>`` (1 -> 1, 0/blank -> 0,
    -1 (uncertain) -> 0 ("zero", U-zeros), 1 ("one", U-ones) or <NA> ("missing")) and ``label`` =
    ``label:<finding>`` (DATASETS.md; the U-policies of Irvin et al. 2019, §4)."""
    if uncertain not in UNCERTAIN:
        raise ValueError(f"uncertain must be one of {UNCERTAIN}, got {uncertain!r}")
    labels = pd.DataFrame(index=frame.index)
    present = [name for name in findings if name in frame.columns]  # load_chexpert requires all 14 up front
    for name in present:
        raw = pd.to_numeric(frame[name], errors="coerce")
        coded = pd.Series((raw == 1).astype(int), index=frame.index, dtype="Int64")
        if uncertain == "one":
            coded = coded.mask(raw == -1, 1)
        elif uncertain == "missing":
            coded = coded.mask(raw == -1, pd.NA)
        labels[f"label:{name}"] = coded
    table = pd.concat([frame.drop(columns=present), labels], axis=1)
    table["label"] = table[f"label:{finding}"]
    return table


def _inside_dataset(paths: pd.Series) -> pd.Series:
    """Path values without their "CheXpert-v1.0[-small]/" prefix: the path inside the dataset folder."""
    # one regex pass: splitting 223k strings twice took seconds
    return paths.astype("string").str.strip().str.replace(r"^CheXpert-v1\.0[^/]*/(?=.)", "", regex=True)


def _number(paths: pd.Series, pattern: str) -> pd.Series:
    return pd.to_numeric(paths.str.extract(pattern, expand=False), errors="coerce")


@register_dataset("chexpert")
def load_chexpert(
    root: str | Path,
    *,
    demo_path: str | Path | None = None,
    finding: str = "No Finding",
    views: str | list[str] | None = None,
    one_per_patient: bool = False,
    valid: str = "exclude",
    uncertain: str = "zero",
    drop_missing: bool = True,
    age_threshold: float = 60,
    age_rule: str = ">",
    age_bins: str | list[float] | None = None,
    race_scheme: str = "white_vs_nonwhite",
    check_files: bool = True,
) -> MedicalDataset:
    options: dict[str, Any] = {
        "demo_path": None if demo_path is None else str(demo_path), "finding": finding, "views": views,
        "one_per_patient": one_per_patient, "valid": valid, "uncertain": uncertain, "drop_missing": drop_missing,
        "age_threshold": age_threshold, "age_rule": age_rule, "age_bins": age_bins, "race_scheme": race_scheme,
        "check_files": check_files,
    }
    if finding not in FINDINGS:
        raise ValueError(f"unknown finding {finding!r}; choose one of {list(FINDINGS)}")
    if uncertain not in UNCERTAIN:
        raise ValueError(f"uncertain must be one of {UNCERTAIN} (U-zeros, U-ones, masked as missing), got {uncertain!r}")
    if valid not in VALID:
        raise ValueError(f"valid must be one of {VALID} (what to do with the radiologist-labelled valid.csv), got {valid!r}")
    chosen_views = parse_views(views)
    age_options = age_grouping(age_bins, age_threshold, age_rule)

    root = Path(root)
    csv_dir = next((root / d for d in DATASET_FOLDERS if (root / d / "train.csv").is_file()), None)
    if csv_dir is None:
        looked = ", ".join(str(root / d / "train.csv") for d in DATASET_FOLDERS)
        raise DatasetFormatError(f"CheXpert train.csv not found; looked for: {looked}")
    relative_dir = csv_dir.relative_to(root).as_posix()
    base = "" if relative_dir == "." else relative_dir + "/"  # root may be the dataset folder's parent

    dropped: dict[str, int] = {}
    parts = []
    for name in ("train.csv",) if valid == "exclude" else ("train.csv", "valid.csv"):
        path = csv_dir / name
        if not path.is_file():
            raise DatasetFormatError(f"{path} not found (valid={valid!r} asks for it); pass valid='exclude' to load train.csv only")
        frame = read_table(path)
        require_columns(frame, COLUMNS, str(path))
        inside = _inside_dataset(frame["Path"])
        frame = frame.assign(csv=name.removesuffix(".csv"), sample_id=inside, path=base + inside)
        if valid == "test":
            frame["split"] = "test" if name == "valid.csv" else "train"
        frontal = frame["Frontal/Lateral"].astype("string").str.strip().str.lower() == "frontal"
        ap_pa = frame["AP/PA"].astype("string").str.strip().str.upper()
        frame["view"] = ap_pa.where(frontal.fillna(True), "lateral")
        if chosen_views is not None:
            keep = view_mask(frame["view"], frontal, chosen_views)
            dropped[f"{name}: view not in {list(chosen_views)}"] = int((~keep).sum())
            frame = frame[keep.to_numpy()]
        # escaping paths are refused even when existence checks are off
        resolve_paths(root, frame["path"], str(path), column="Path", check_exists=check_files)
        parts.append(frame)
    table = pd.concat(parts, ignore_index=True)

    patient = table["Path"].astype("string").str.extract(r"(patient\d+)", expand=False)
    if patient.isna().any():
        row = int(np.flatnonzero(patient.isna().to_numpy())[0])
        raise DatasetFormatError(f"CheXpert csv: row {row}: column 'Path' {table.at[row, 'Path']!r} has no patientNNNNN part")
    table = table.assign(patient_id=patient, sex=table["Sex"], age=pd.to_numeric(table["Age"], errors="coerce"))
    if drop_missing:
        known = table["sex"].astype("string").str.lower().isin(["male", "female"]) & table["age"].notna()
        dropped["unknown sex or missing age"] = int((~known).sum())
        table = table[known]

    table = with_finding_labels(table, FINDINGS, uncertain, finding)
    if uncertain == "missing":
        unlabelled = table["label"].isna()
        dropped[f"'{finding}' uncertain (-1), uncertain='missing'"] = int(unlabelled.sum())
        table = table[~unlabelled]
    if one_per_patient:
        before = len(table)
        table = table.assign(_study=_number(table["sample_id"], r"study(\d+)"), _view=_number(table["sample_id"], r"view(\d+)"))
        table = first_image_per_patient(table, ["_study", "_view", "sample_id"]).drop(columns=["_study", "_view"])
        dropped["not the patient's first image (one_per_patient)"] = before - len(table)
    if table.empty:
        raise no_rows_left(str(csv_dir / "train.csv"), dropped)

    demo_file = Path(demo_path) if demo_path is not None else (
        find_optional_file(root, DEMO_NAMES) or find_optional_file(csv_dir, DEMO_NAMES)
    )
    attributes: dict = {"sex": None, "age": age_options}
    if demo_file is not None:
        demo = read_table(demo_file)  # .xlsx through openpyxl, a declared dependency
        require_columns(demo, ("PATIENT", "PRIMARY_RACE"), str(demo_file))
        demo = demo.drop_duplicates("PATIENT").rename(columns={"PRIMARY_RACE": "race"})
        demo["PATIENT"] = demo["PATIENT"].astype("string").str.strip()
        keep = ["PATIENT", "race"] + (["ETHNICITY"] if "ETHNICITY" in demo.columns else [])
        table = table.merge(demo[keep], how="left", left_on="patient_id", right_on="PATIENT")
        attributes["race"] = {"scheme": race_scheme}

    table = add_group_columns(table, attributes)
    front = ["sample_id", "patient_id", "label", "path", *(["split"] if "split" in table.columns else []), "csv", "sex", "age"]
    front += [c for c in ("race", "ETHNICITY", "view", "Frontal/Lateral", "AP/PA") if c in table.columns]
    rest = [c for c in table.columns if c.startswith(("label:", GROUP_PREFIX))]
    valid_text = {
        "exclude": "valid.csv (radiologist-labelled) not loaded; pass valid='test' to make it the test split",
        "test": "valid.csv (radiologist-labelled) is the official test split; train.csv is train (val carved by patient)",
        "pool": "valid.csv pooled with train.csv on request (valid='pool'); column csv says which file a row is from",
    }[valid]
    return MedicalDataset(
        name="chexpert",
        table=finish_table(table[front + rest]),
        root=root,
        info={
            "label_rule": f"label = '{finding}' == 1 (0 and blank -> 0; uncertain -1 -> {_UNCERTAIN_TEXT[uncertain]})",
            **cxr_label_info(finding),
            "zero_shot": cxr_prompts(finding),
            "uncertain": uncertain,
            "convention": "MEDFAIR/FairDi; race from CHEXPERT DEMO PRIMARY_RACE",
            "race": str(demo_file) if demo_file is not None else "CHEXPERT DEMO table not found: no race attribute",
            "age_groups": describe_age_grouping(age_options),
            "patient_id": "patientNNNNN from Path",
            "sample_id": "path inside the dataset folder (train/patientNNNNN/studyN/viewN_*.jpg)",
            "valid": valid_text,
            "views": "all" if chosen_views is None else list(chosen_views),
            "one_per_patient": "first study, then first view, per patient" if one_per_patient else "all images",
            "dropped_rows": dropped,
            "options": options,
        },
    )


_UNCERTAIN_TEXT = {"zero": "0 (U-zeros)", "one": "1 (U-ones)", "missing": "<NA> (masked; rows of the label finding dropped)"}
