"""CheXpert (Irvin et al. 2019) and CheXpert-v1.0-small, with race from the CHEXPERT DEMO table.

Layout: ``train.csv`` and ``valid.csv`` (Path, Sex, Age, Frontal/Lateral, AP/PA and 14 findings
coded 1 / 0 / -1 uncertain / blank) in the dataset folder; Path values start with the folder name
(``CheXpert-v1.0-small/train/patient00001/study1/view1_frontal.jpg``), so the root may be that
folder or its parent. Race comes from the CHEXPERT DEMO table (``CHEXPERT DEMO.xlsx`` or .csv,
columns PATIENT, GENDER, AGE_AT_CXR, PRIMARY_RACE) joined on the patient id; pass ``demo_path``
when it lives elsewhere. Without it the dataset has sex and age only (``info`` says so).

Convention (MEDFAIR; FairDi §7.2; DATASETS.md): label = "No Finding" (1 -> 1; blank, 0, -1 -> 0);
the other findings are kept as ``label:<finding>`` with the same U-zeros rule. Frontal and lateral
views are all kept (``frontal_only=True`` keeps frontal). Rows with unknown sex or missing age
are dropped; unknown race stays <NA> (not dropped, not mapped). Patient id = ``patientNNNNN``
from the path, so all studies of a patient share a split. Age > 60, White vs non-White.

Known traps avoided: MEDFAIR-style code lumps every PRIMARY_RACE that does not start with
"White" - including "Unknown" and "Patient Refused" - into non-White; here those are <NA>.
"Unknown" sex is never female. The small and full versions differ only in the path prefix,
which is matched to the folder actually present. CheXpert has no public labelled test set in
this layout, so there is no official split: ``csv`` records train/valid provenance and
:mod:`medequity.data.splits` makes a patient-level 80/10/10 split.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from medequity.data.attributes import add_group_columns
from medequity.data.base import GROUP_PREFIX, DatasetFormatError, MedicalDataset, register_dataset
from medequity.data.loaders._common import find_optional_file
from medequity.data.table import finish_table, read_table, require_columns, resolve_paths

FINDINGS = (
    "No Finding", "Enlarged Cardiomediastinum", "Cardiomegaly", "Lung Opacity", "Lung Lesion", "Edema",
    "Consolidation", "Pneumonia", "Atelectasis", "Pneumothorax", "Pleural Effusion", "Pleural Other",
    "Fracture", "Support Devices",
)
COLUMNS = ("Path", "Sex", "Age", "Frontal/Lateral", "No Finding")
DEMO_NAMES = ("CHEXPERT DEMO.xlsx", "CHEXPERT DEMO.csv", "chexpert_demo.csv", "CHEXPERT_DEMO.xlsx")
DATASET_FOLDERS = (".", "CheXpert-v1.0-small", "CheXpert-v1.0")


def with_finding_labels(frame: pd.DataFrame, findings: tuple[str, ...], uncertain: str = "zero") -> pd.DataFrame:
    """The table with each raw finding column replaced by ``label:<finding>`` (1 -> 1, 0/blank -> 0,
    -1 (uncertain) -> 0 ("zero") or 1 ("one")) and ``label`` = ``label:No Finding`` (DATASETS.md)."""
    if uncertain not in ("zero", "one"):
        raise ValueError(f"uncertain must be 'zero' or 'one', got {uncertain!r}")
    positive = [1.0, -1.0] if uncertain == "one" else [1.0]
    labels = pd.DataFrame(index=frame.index)
    for finding in findings:
        if finding in frame.columns:
            labels[f"label:{finding}"] = pd.to_numeric(frame[finding], errors="coerce").isin(positive).astype("Int64")
    table = pd.concat([frame.drop(columns=[c for c in findings if c in frame.columns]), labels], axis=1)
    table["label"] = table["label:No Finding"]
    return table


def _strip_prefix(paths: pd.Series, csv_dir: Path, root: Path) -> pd.Series:
    """Paths relative to ``root``: the csv's "CheXpert-v1.0[-small]/" prefix names ``csv_dir``."""
    text = paths.astype("string").str.strip()
    first = text.str.split("/", n=1).str[0]
    rest = text.str.split("/", n=1).str[1]
    prefixed = first.str.startswith("CheXpert-v1.0").fillna(False) & rest.notna()
    relative_dir = csv_dir.relative_to(root).as_posix()
    base = "" if relative_dir == "." else relative_dir + "/"  # root may be the parent folder
    return (base + rest.where(prefixed, text)).astype("string")


@register_dataset("chexpert")
def load_chexpert(
    root: str | Path,
    *,
    demo_path: str | Path | None = None,
    frontal_only: bool = False,
    include_valid: bool = True,
    uncertain: str = "zero",
    drop_missing: bool = True,
    age_threshold: float = 60,
    age_rule: str = ">",
    race_scheme: str = "white_vs_nonwhite",
    check_files: bool = True,
) -> MedicalDataset:
    root = Path(root)
    csv_dir = next((root / d for d in DATASET_FOLDERS if (root / d / "train.csv").is_file()), None)
    if csv_dir is None:
        looked = ", ".join(str(root / d / "train.csv") for d in DATASET_FOLDERS)
        raise DatasetFormatError(f"CheXpert train.csv not found; looked for: {looked}")

    parts = []
    for name in ("train.csv", "valid.csv") if include_valid else ("train.csv",):
        path = csv_dir / name
        if not path.is_file():
            continue
        frame = read_table(path)
        require_columns(frame, COLUMNS, str(path))
        frame = frame.assign(csv=name.removesuffix(".csv"), path=_strip_prefix(frame["Path"], csv_dir, root))
        if frontal_only:
            frame = frame[frame["Frontal/Lateral"].astype("string").str.lower() == "frontal"]
        # escaping paths are refused even when existence checks are off
        resolve_paths(root, frame["path"], str(path), column="Path", check_exists=check_files)
        parts.append(frame)
    table = pd.concat(parts, ignore_index=True)

    patient = table["Path"].astype("string").str.extract(r"(patient\d+)", expand=False)
    if patient.isna().any():
        row = int(np.flatnonzero(patient.isna().to_numpy())[0])
        raise DatasetFormatError(f"CheXpert csv: row {row}: column 'Path' {table.at[row, 'Path']!r} has no patientNNNNN part")
    table = table.assign(patient_id=patient, sample_id=table["path"], sex=table["Sex"], age=pd.to_numeric(table["Age"], errors="coerce"))
    if drop_missing:
        known = table["sex"].astype("string").str.lower().isin(["male", "female"]) & table["age"].notna()
        table = table[known]

    demo_file = Path(demo_path) if demo_path is not None else (
        find_optional_file(root, DEMO_NAMES) or find_optional_file(csv_dir, DEMO_NAMES)
    )
    attributes: dict = {"sex": None, "age": {"threshold": age_threshold, "rule": age_rule}}
    if demo_file is not None:
        demo = read_table(demo_file)
        require_columns(demo, ("PATIENT", "PRIMARY_RACE"), str(demo_file))
        demo = demo.drop_duplicates("PATIENT").rename(columns={"PRIMARY_RACE": "race"})
        demo["PATIENT"] = demo["PATIENT"].astype("string").str.strip()
        keep = ["PATIENT", "race"] + (["ETHNICITY"] if "ETHNICITY" in demo.columns else [])
        table = table.merge(demo[keep], how="left", left_on="patient_id", right_on="PATIENT")
        attributes["race"] = {"scheme": race_scheme}

    table = with_finding_labels(table, FINDINGS, uncertain)
    table = add_group_columns(table, attributes)
    front = ["sample_id", "patient_id", "label", "path", "csv", "sex", "age"]
    front += [c for c in ("race", "ETHNICITY", "Frontal/Lateral", "AP/PA") if c in table.columns]
    rest = [c for c in table.columns if c.startswith(("label:", GROUP_PREFIX))]
    return MedicalDataset(
        name="chexpert",
        table=finish_table(table[front + rest]),
        root=root,
        info={
            "label_rule": "No Finding == 1 (blank/0/-1 -> 0)",
            "uncertain": uncertain,
            "convention": "MEDFAIR/FairDi; race from CHEXPERT DEMO PRIMARY_RACE",
            "race": str(demo_file) if demo_file is not None else "CHEXPERT DEMO table not found: no race attribute",
            "patient_id": "patientNNNNN from Path",
        },
    )
