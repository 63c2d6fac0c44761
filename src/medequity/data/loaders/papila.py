"""PAPILA (Kovalyk et al. 2022): fundus images and clinical data of both eyes of each patient.

Layout: ``ClinicalData/patient_data_od.xlsx`` and ``patient_data_os.xlsx`` (or the same as .csv)
with columns ID (``#002``), Age, Gender (0 male, 1 female), Diagnosis (0 healthy, 1 glaucoma,
2 suspect), and images ``FundusImages/RET<ID>OD.jpg`` / ``RET<ID>OS.jpg`` (3-digit ID). The
distributed sheets carry extra header rows (units, sub-columns); the header row is found by its
"ID" cell and rows whose ID is not a number are skipped.

Convention (MEDFAIR; FairDi §7.2; FairTune A.4): suspect (2) excluded, label 1 = glaucoma;
both eyes kept (420 images), patient id = ID, so both eyes of a patient share a split; split
70/10/20 by patient (``info["split_ratios"]``, used by :mod:`medequity.data.splits`). Age > 60.

Known traps avoided: Gender 0 is *male* here (Harvard datasets use 0 = female); suspect is not
folded into either class; the OD and OS rows of one patient are never split apart.
"""

from __future__ import annotations

import re
from pathlib import Path

import pandas as pd

from medequity.data.attributes import PAPILA_SEX_CODES, add_group_columns
from medequity.data.base import GROUP_PREFIX, DatasetFormatError, MedicalDataset, register_dataset
from medequity.data.table import finish_table, read_table, require_columns, resolve_paths
from medequity.data.zero_shot import fundus_prompts

COLUMNS = ("ID", "Age", "Gender", "Diagnosis")
EYES = ("OD", "OS")  # right eye, left eye
SPLIT_RATIOS = (0.7, 0.1, 0.2)


def _read_clinical(root: Path, eye: str) -> tuple[pd.DataFrame, str]:
    stem = root / "ClinicalData" / f"patient_data_{eye.lower()}"
    for suffix in (".xlsx", ".csv"):
        path = stem.with_suffix(suffix)
        if path.is_file():
            raw = read_table(path, header=None, dtype=object)
            return _with_header(raw, str(path)), str(path)
    raise DatasetFormatError(f"PAPILA clinical data not found: {stem}.xlsx or {stem}.csv")


def _with_header(raw: pd.DataFrame, source: str) -> pd.DataFrame:
    """Use the first row that has an "ID" cell as the header (the sheets have title rows)."""
    for row in range(min(len(raw), 10)):
        cells = [str(c).strip() for c in raw.iloc[row].tolist()]
        if "ID" in cells:
            table = raw.iloc[row + 1:].copy()
            table.columns = [c if c not in ("nan", "None") else f"unnamed_{i}" for i, c in enumerate(cells)]
            return table
    raise DatasetFormatError(f"{source}: no header row with an 'ID' column in the first 10 rows")


def _patient_number(value: object) -> int | None:
    match = re.fullmatch(r"#?\s*(\d+)(\.0)?", str(value).strip())
    return int(match.group(1)) if match else None


@register_dataset("papila")
def load_papila(root: str | Path, *, exclude_suspect: bool = True, age_threshold: float = 60, age_rule: str = ">") -> MedicalDataset:
    root = Path(root)
    parts = []
    for eye in EYES:
        clinical, source = _read_clinical(root, eye)
        require_columns(clinical, COLUMNS, source)
        # sub-header rows of the sheet have an empty ID; any other ID must be a patient number
        clinical = clinical[clinical["ID"].notna() & (clinical["ID"].astype(str).str.strip() != "")]
        numbers = clinical["ID"].map(_patient_number)
        if numbers.isna().any():
            row = numbers.index[numbers.isna()][0]
            raise DatasetFormatError(
                f"{source}: row {row}: column 'ID' value {clinical.at[row, 'ID']!r} is not a patient number like '#002'"
            )
        clinical = clinical.assign(patient_number=numbers.astype(int))
        clinical = clinical.assign(eye=eye, source_file=source, sheet_row=clinical.index)
        parts.append(clinical)
    table = pd.concat(parts, ignore_index=True)

    diagnosis = pd.to_numeric(table["Diagnosis"], errors="coerce")
    unknown = ~diagnosis.isin([0, 1, 2])
    if unknown.any():
        row = table[unknown].iloc[0]
        raise DatasetFormatError(
            f"{row['source_file']}: row {row['sheet_row']}: patient {row['ID']}: "
            f"column 'Diagnosis' value {row['Diagnosis']!r} is not 0, 1 or 2"
        )
    if exclude_suspect:
        keep = diagnosis != 2
        table, diagnosis = table[keep], diagnosis[keep]

    number = table["patient_number"].map(lambda n: f"{n:03d}")
    table = table.assign(
        sample_id="RET" + number + table["eye"],
        patient_id=number,
        label=(diagnosis == 1).astype(int),
        path="FundusImages/RET" + number + table["eye"] + ".jpg",
        sex=table["Gender"],
        age=pd.to_numeric(table["Age"], errors="coerce"),
        diagnosis=diagnosis.astype(int),
    )
    for source, rows in table.groupby("source_file"):
        resolve_paths(root, rows["path"].set_axis(rows["sheet_row"]), source, column="ID")
    table = add_group_columns(
        table, {"sex": {"codes": PAPILA_SEX_CODES}, "age": {"threshold": age_threshold, "rule": age_rule}}
    )
    columns = ["sample_id", "patient_id", "label", "path", "eye", "sex", "age", "diagnosis", GROUP_PREFIX + "sex", GROUP_PREFIX + "age"]
    return MedicalDataset(
        name="papila",
        table=finish_table(table[columns]),
        root=root,
        info={
            "label_rule": "Diagnosis == 1 (glaucoma); suspect (2) excluded" if exclude_suspect else "Diagnosis == 1",
            "convention": "MEDFAIR/FairDi/FairTune; Gender 0 male, 1 female",
            "zero_shot": fundus_prompts(),
            "patient_id": "ID (both eyes)",
            "split_ratios": SPLIT_RATIOS,
        },
    )
