"""CANDI (Child and Adolescent NeuroDevelopment Initiative, CANDI Share SchizBull 2008): brain MRI.

103 T1 volumes of children and adolescents (healthy controls, bipolar with and without psychosis,
schizophrenia spectrum) with manual/FreeSurfer-style labels. Assumed layout (the NITRC download
unpacked; the exact file names are not documented in the papers we have)::

    SchizBull_2008/<diagnosis group>/<subject>/<subject>_procimg.nii.gz   T1 volume
    SchizBull_2008/<diagnosis group>/<subject>/<subject>_seg.nii.gz       label volume
    *Demographics*.csv / .xlsx / .xls                                      one row per subject

Every ``*_seg.nii.gz`` under ``root`` is a sample; its image is ``<subject>_procimg.nii.gz``
beside it (else ``<subject>.nii.gz``; a missing image is an error naming the mask and the names
tried). The demographics table is found by the name pattern (or given as ``demographics=``); its
subject column (``Subject``/``ID``/``Subject ID``), ``Gender``/``Sex``, ``Age`` and
``Handedness``/``Hand`` are matched ignoring case; a missing column is an error listing those
present. A subject without a demographics row is an error (``on_missing="drop"`` drops it).

Masks (FairMedFM B.2): six classes from the FreeSurfer (CMA) labels: 2 left cerebral white
matter, 3 left cerebral cortex, 4 left lateral ventricle, 41/42/43 the right ones; every other
structure is background. Groups: sex, age > 10 (old; FairMedFM: the oldest subject is ~16),
handedness right vs non-right (left/ambidextrous). Patient id = subject (one volume each).
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from medequity.data.attributes import add_group_columns
from medequity.data.base import GROUP_PREFIX, DatasetFormatError, register_dataset
from medequity.data.loaders._seg import SegmentationDataset, pick_column, segmentation_info
from medequity.data.table import finish_table, read_table

MASK_SUFFIX = "_seg.nii.gz"
IMAGE_SUFFIXES = ("_procimg.nii.gz", ".nii.gz")
CLASSES = [
    "background", "left cerebral white matter", "left cerebral cortex", "left lateral ventricle",
    "right cerebral white matter", "right cerebral cortex", "right lateral ventricle",
]
MASK_VALUES = {0: 0, 2: 1, 3: 2, 4: 3, 41: 4, 42: 5, 43: 6}


def _find_demographics(root: Path) -> Path:
    found = sorted(
        p for p in root.rglob("*") if p.is_file() and "demographic" in p.name.lower()
        and p.suffix.lower() in (".csv", ".xlsx", ".xls")
    )
    if not found:
        raise DatasetFormatError(f"no CANDI demographics table under {root} (a *Demographics*.csv/.xlsx/.xls file)")
    return found[0]


@register_dataset("candi")
def load_candi(
    root: str | Path,
    *,
    demographics: str | Path | None = None,
    age_threshold: float = 10,
    age_rule: str = ">",
    on_missing: str = "error",
) -> SegmentationDataset:
    if on_missing not in ("error", "drop"):
        raise ValueError(f"on_missing must be 'error' or 'drop', got {on_missing!r}")
    root = Path(root)
    masks = sorted(p for p in root.rglob(f"*{MASK_SUFFIX}") if p.is_file())
    if not masks:
        raise DatasetFormatError(f"no CANDI label volumes (*{MASK_SUFFIX}) under {root}")
    demo_path = _find_demographics(root) if demographics is None else (root / demographics)
    demo = read_table(demo_path, dtype=str)
    source = str(demo_path)
    subject_col = pick_column(demo.columns, ("Subject", "ID", "Subject ID", "SubjectID", "Subj"), "subject id", source)
    sex_col = pick_column(demo.columns, ("Gender", "Sex"), "sex", source)
    age_col = pick_column(demo.columns, ("Age", "Age (years)", "AgeYears"), "age", source)
    hand_col = pick_column(demo.columns, ("Handedness", "Hand", "Handed"), "handedness", source)
    demo[subject_col] = demo[subject_col].astype(str).str.strip()
    by_subject = demo.drop_duplicates(subject_col).set_index(subject_col)

    rows, problems = [], []
    for mask in masks:
        subject = mask.name[: -len(MASK_SUFFIX)]
        images = [mask.with_name(subject + suffix) for suffix in IMAGE_SUFFIXES]
        image = next((p for p in images if p.is_file()), None)
        mask_rel = mask.relative_to(root).as_posix()
        if image is None:
            raise DatasetFormatError(f"CANDI: {mask_rel} has no image volume; looked for {[p.name for p in images]}")
        if subject not in by_subject.index:
            problems.append(f"{mask_rel}: subject {subject!r} has no row in {demo_path.name}")
            continue
        record = by_subject.loc[subject]
        rows.append({
            "sample_id": subject, "patient_id": subject, "label": pd.NA,
            "path": image.relative_to(root).as_posix(), "mask_path": mask_rel,
            "diagnosis_group": mask.parent.parent.name if mask.parent.parent != root else pd.NA,
            "sex": record[sex_col], "age": record[age_col], "handedness": record[hand_col],
        })
    if problems and on_missing == "error":
        raise DatasetFormatError(f"CANDI under {root}: {len(problems)} subjects unusable: {'; '.join(problems[:5])}")
    if not rows:
        raise DatasetFormatError(f"CANDI under {root}: no subject has a demographics row")
    table = pd.DataFrame(rows)
    table["age"] = pd.to_numeric(table["age"], errors="coerce").astype("Float64")
    table = add_group_columns(
        table, {"sex": None, "age": {"threshold": age_threshold, "rule": age_rule}, "handedness": None}
    )
    columns = ["sample_id", "patient_id", "label", "path", "mask_path", "diagnosis_group", "sex", "age", "handedness",
               GROUP_PREFIX + "sex", GROUP_PREFIX + "age", GROUP_PREFIX + "handedness"]
    return SegmentationDataset(
        name="candi",
        table=finish_table(table[columns]),
        root=root,
        task="segmentation",
        info=segmentation_info(
            CLASSES, dict(MASK_VALUES), mask_other="background",
            source=source, label_rule="no classification label (segmentation)",
            patient_id="subject (one volume each)", dropped_subjects=len(problems),
        ),
    )
