"""MIMIC-CXR-JPG 2.0.0 (Johnson et al. 2019) with demographics from MIMIC-IV.

Layout: ``mimic-cxr-2.0.0-metadata.csv``, ``mimic-cxr-2.0.0-chexpert.csv`` and
``mimic-cxr-2.0.0-split.csv`` (each also as the distributed ``.csv.gz``) in the root, images
``files/pXX/p<subject_id>/s<study_id>/<dicom_id>.jpg`` (XX = first two digits of subject_id).
Demographics from MIMIC-IV ``patients.csv`` (subject_id, gender M/F, anchor_age) and
``admissions.csv`` (subject_id, race - ``ethnicity`` in MIMIC-IV 1.0), found under
``mimic_iv_root`` (default: the root) in ``.``, ``hosp/``, ``core/`` or ``mimic-iv/hosp/``,
joined on subject_id (FairDi §7.2).

Convention: label = "No Finding" of the study (1 -> 1; blank/0/-1 -> 0) as for CheXpert, other
findings as ``label:<finding>``; images of studies without CheXpert labels are dropped. Official
split from the split file (train / validate -> val / test). Age = anchor_age (age in the anchor
year; MIMIC shifts dates, so this is the only age there is). A subject's race is their most
frequent known race over admissions (ties -> the most recent admission). Rows without sex or age
are dropped; unknown race stays <NA>.

Known traps avoided: "UNKNOWN", "UNABLE TO OBTAIN" and "PATIENT DECLINED TO ANSWER" are not
non-White; one subject never gets two races; the official split is by subject, and is checked.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from medequity.data.attributes import add_group_columns, canonical_race
from medequity.data.base import GROUP_PREFIX, DatasetFormatError, MedicalDataset, register_dataset
from medequity.data.loaders._common import check_plain_ids, find_file
from medequity.data.loaders.chexpert import FINDINGS, with_finding_labels
from medequity.data.table import finish_table, normalise_split_names, read_table, require_columns, resolve_paths
from medequity.data.zero_shot import cxr_prompts

PREFIX = "mimic-cxr-2.0.0-"
MIMIC_IV_FOLDERS = (".", "hosp", "core", "mimic-iv/hosp", "mimiciv/hosp")


def _cxr_file(root: Path, kind: str) -> Path:
    return find_file(root, [f"{PREFIX}{kind}.csv", f"{PREFIX}{kind}.csv.gz"], f"MIMIC-CXR {kind} file")


def _mimic_iv_file(base: Path, name: str) -> Path:
    candidates = [f"{folder}/{name}{suffix}" for folder in MIMIC_IV_FOLDERS for suffix in (".csv", ".csv.gz")]
    return find_file(base, candidates, f"MIMIC-IV {name}.csv (pass mimic_iv_root=)")


def subject_race(admissions: pd.DataFrame, race_column: str) -> pd.DataFrame:
    """One race per subject: most frequent known value, ties broken by the latest admission."""
    known = admissions.assign(category=admissions[race_column].map(canonical_race))
    known = known[known["category"].notna()]
    when = (pd.to_datetime(known["admittime"], errors="coerce") if "admittime" in known.columns
            else pd.Series(range(len(known)), index=known.index))
    known = known.assign(when=when)
    stats = known.groupby(["subject_id", race_column], as_index=False).agg(count=("when", "size"), last=("when", "max"))
    stats = stats.sort_values(["subject_id", "count", "last"], ascending=[True, False, False])
    return stats.drop_duplicates("subject_id")[["subject_id", race_column]].rename(columns={race_column: "race"})


@register_dataset("mimic_cxr")
def load_mimic_cxr(
    root: str | Path,
    *,
    mimic_iv_root: str | Path | None = None,
    uncertain: str = "zero",
    drop_missing: bool = True,
    age_threshold: float = 60,
    age_rule: str = ">",
    race_scheme: str = "white_vs_nonwhite",
    check_files: bool = True,
) -> MedicalDataset:
    root = Path(root)
    meta_path, labels_path, split_path = (_cxr_file(root, k) for k in ("metadata", "chexpert", "split"))
    meta = read_table(meta_path)
    require_columns(meta, ("dicom_id", "subject_id", "study_id"), str(meta_path))
    labels = read_table(labels_path)
    require_columns(labels, ("subject_id", "study_id", "No Finding"), str(labels_path))
    split = read_table(split_path)
    require_columns(split, ("dicom_id", "split"), str(split_path))
    check_plain_ids(meta["dicom_id"], str(meta_path), "dicom_id")

    demo_root = Path(mimic_iv_root) if mimic_iv_root is not None else root
    patients_path = _mimic_iv_file(demo_root, "patients")
    patients = read_table(patients_path)
    require_columns(patients, ("subject_id", "gender", "anchor_age"), str(patients_path))
    admissions_path = _mimic_iv_file(demo_root, "admissions")
    admissions = read_table(admissions_path)
    race_column = "race" if "race" in admissions.columns else "ethnicity"
    require_columns(admissions, ("subject_id", race_column), str(admissions_path))

    table = meta.merge(labels, on=["subject_id", "study_id"], how="inner")
    table = table.merge(split[["dicom_id", "split"]], on="dicom_id", how="left")
    if table["split"].isna().any():
        missing = table.loc[table["split"].isna(), "dicom_id"].head(5).tolist()
        raise DatasetFormatError(f"{split_path}: no split for dicom_id {missing}")
    table["split"] = normalise_split_names(table["split"], str(split_path))
    table = table.merge(patients[["subject_id", "gender", "anchor_age"]].drop_duplicates("subject_id"), on="subject_id", how="left")
    table = table.merge(subject_race(admissions, race_column), on="subject_id", how="left")

    subject = table["subject_id"].astype("Int64").astype(str)
    table = table.assign(
        sample_id=table["dicom_id"].astype(str),
        patient_id=subject,
        path=("files/p" + subject.str[:2] + "/p" + subject + "/s" + table["study_id"].astype("Int64").astype(str)
              + "/" + table["dicom_id"].astype(str) + ".jpg"),
        sex=table["gender"],
        age=pd.to_numeric(table["anchor_age"], errors="coerce"),
    )
    if drop_missing:
        known = table["sex"].astype("string").str.upper().isin(["M", "F"]) & table["age"].notna()
        table = table[known]
    resolve_paths(root, table["path"], str(meta_path), column="dicom_id", check_exists=check_files)

    table = with_finding_labels(table, FINDINGS, uncertain)
    table = add_group_columns(
        table, {"sex": None, "age": {"threshold": age_threshold, "rule": age_rule}, "race": {"scheme": race_scheme}}
    )
    front = ["sample_id", "patient_id", "label", "path", "split", "study_id", "sex", "age", "race"]
    front += [c for c in ("ViewPosition",) if c in table.columns]
    rest = [c for c in table.columns if c.startswith(("label:", GROUP_PREFIX))]
    return MedicalDataset(
        name="mimic_cxr",
        table=finish_table(table[front + rest]),
        root=root,
        info={
            "label_rule": "No Finding == 1 (blank/0/-1 -> 0)",
            "zero_shot": cxr_prompts(),
            "uncertain": uncertain,
            "convention": "FairDi/MEDFAIR; sex/anchor_age from MIMIC-IV patients, race from admissions",
            "patient_id": "subject_id",
            "split": "official mimic-cxr-2.0.0-split",
        },
    )
