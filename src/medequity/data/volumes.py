"""3D volume datasets: NIfTI files described by a metadata table (COVID-CT-MD / ADNI style, KiTS23).

Registered as ``"nifti-volumes"``::

    create_dataset("nifti-volumes", "/data/covid-ct-md", metadata="metadata.csv")
    create_dataset("nifti-volumes", "/data/adni", preset="adni", metadata="ADNI1_Screening_1.5T.csv")
    create_dataset("nifti-volumes", "/data/kits23", preset="kits23")       # dataset/kits23.json

A metadata table has one row per volume: subject id, NIfTI file (a column, or a template filled
from the row), label, sex and age. Column names and label values are options; presets give each
dataset's defaults:

- ``covid-ct-md`` (default): subject ``Folder``; file ``{Folder}.nii.gz``; label ``Diagnosis``
  (Normal → 0, CAP and COVID-19 → 1); sex ``Patient Gender``; age ``Patient Age``; age split 50.
- ``adni``: subject ``Subject``; file ``{Image Data ID}.nii.gz``; label ``Group`` (AD → 1, CN → 0,
  MCI dropped); sex ``Sex``; age ``Age``; age split 75.
- ``kits23``: ``dataset/kits23.json``; subject ``case_id``; file ``<case_id>/imaging.nii.gz``, mask
  ``<case_id>/segmentation.nii.gz``; label ``malignant``; sex ``gender``; age
  ``age_at_nephrectomy`` (split 60); BMI class from ``bmi``.

COVID-CT-MD itself is DICOM with sex and age only in the headers, so its table is the one a
NIfTI conversion writes; the defaults follow the columns MEDFAIR's COVID-CT-MD loader reads
(``Folder``, ``Diagnosis`` = Normal/CAP/COVID-19, ``Patient Gender`` = M/F) plus ``Patient Age``
(years, or the DICOM form ``045Y``). The ADNI columns are
those of an IDA image-collection download (``Image Data ID``, ``Subject``, ``Group`` CN/MCI/AD,
``Sex``, ``Age``); MCI rows are dropped (counted in ``info["dropped_rows"]``). Age thresholds follow
FairMedFM D.1.2 (COVID-CT-MD 50, ADNI 75, otherwise 60) with FairMedFM's side, age ≥ threshold
(``age_rule=">"`` gives MEDFAIR's). Groups are coded by :mod:`medequity.data.attributes`.

Volumes are read only when asked for (nibabel, reoriented to RAS so that the last axis is the axial
one — the slice axis of the 2.5D transform). Paths from the table go through :func:`safe_join`.
This module imports neither torch nor nibabel at import time, so ``import medequity.data`` stays
light.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from medequity.data.attributes import age_groups, bmi_groups, sex_groups
from medequity.data.base import (
    GROUP_PREFIX,
    DatasetFormatError,
    MedicalDataset,
    register_dataset,
    safe_join,
)

NIFTI_SUFFIXES = (".nii", ".nii.gz")
KITS23_CLASSES = ["background", "kidney", "tumor", "cyst"]  # segmentation.nii.gz values 0..3 (KiTS23 README)

PRESETS: dict[str, dict[str, Any]] = {
    "covid-ct-md": {
        "subject_column": "Folder",
        "file_template": "{Folder}.nii.gz",
        "label_column": "Diagnosis",
        "negative_values": ("Normal",),  # COVID-19 and CAP are positive (MEDFAIR: Diagnosis != Normal)
        "sex_column": "Patient Gender",
        "age_column": "Patient Age",
        "age_threshold": 50,
    },
    "adni": {
        "subject_column": "Subject",
        "file_template": "{Image Data ID}.nii.gz",
        "label_column": "Group",
        "positive_values": ("AD",),
        "negative_values": ("CN",),
        "sex_column": "Sex",
        "age_column": "Age",
        "age_threshold": 75,
    },
}


class VolumeDataset(MedicalDataset):
    """A :class:`MedicalDataset` whose ``path``/``mask_path`` are NIfTI volumes read with nibabel."""

    def read_file(self, path: Path, *, mask: bool = False) -> np.ndarray:
        return read_volume(path, mask=mask)

    def load_mask(self, index: int) -> np.ndarray:
        """The label volume; with ``info["classes"]`` (KiTS23) its values are checked to be class
        indices ``0..C`` (or coded through ``info["mask_values"]``), the error naming the file."""
        mask = super().load_mask(index)
        if self.masks is not None or self.info.get("classes") is None:
            return mask
        from medequity.data.masks import encode_mask

        where = f"{self.table.at[index, 'mask_path']} (row {index})"
        return encode_mask(
            mask, self.info.get("mask_values"), self.info["classes"], other=self.info.get("mask_other", "error"), where=where
        )


def read_volume(path: str | Path, *, mask: bool = False, canonical: bool = True) -> np.ndarray:
    """Read a NIfTI volume (.nii/.nii.gz) as a 3D array: float32, or int16 labels with ``mask=True``.

    ``canonical`` reorients to RAS (nibabel ``as_closest_canonical``) so that the last axis is the
    axial one whatever the scanner's storage order. A trailing singleton 4th axis is dropped.
    """
    import nibabel as nib

    try:
        image = nib.load(str(path))
    except FileNotFoundError:
        raise DatasetFormatError(f"volume file not found: {path}") from None
    except Exception as exc:  # nibabel raises ImageFileError, OSError, EOFError, gzip errors…
        raise DatasetFormatError(f"cannot read NIfTI volume {path}: {exc}") from None
    if canonical:
        image = nib.as_closest_canonical(image)
    if mask:
        array = np.asanyarray(image.dataobj)
        array = np.rint(array).astype(np.int16) if array.dtype.kind == "f" else array.astype(np.int16)
    else:
        array = image.get_fdata(dtype=np.float32)
    if array.ndim == 4 and array.shape[-1] == 1:
        array = array[..., 0]
    if array.ndim != 3:
        raise DatasetFormatError(f"volume {path} has shape {array.shape}; expected a 3D volume")
    return array


@register_dataset("nifti-volumes")
def load_nifti_volumes(
    root: str | Path,
    metadata: str | Path | None = "metadata.csv",
    *,
    preset: str = "covid-ct-md",
    name: str | None = None,
    **options: Any,
) -> VolumeDataset:
    """A volume dataset from ``root`` and its metadata table (CSV; path relative to ``root``).

    ``preset`` (``"covid-ct-md"``, ``"adni"``, ``"kits23"``) sets the column defaults listed in the
    module docstring; ``options`` override them: ``subject_column``, ``file_column`` (a column with
    the NIfTI path relative to ``root``) or ``file_template`` (``str.format`` over the row, e.g.
    ``"{Diagnosis} Cases/{Folder}.nii.gz"``), ``mask_column``, ``label_column``,
    ``positive_values``/``negative_values``, ``sex_column``, ``age_column``, ``age_threshold``,
    ``age_rule`` (``">="`` FairMedFM, ``">"`` MEDFAIR).
    """
    preset_key = preset.lower()
    if preset_key == "kits23":
        return load_kits23_volumes(root, None if metadata == "metadata.csv" else metadata, name=name, **options)
    if preset_key not in PRESETS:
        raise ValueError(f"unknown volume preset {preset!r}; known: {sorted(PRESETS) + ['kits23']}")
    settings = {**PRESETS[preset_key], **options}
    root = Path(root)
    metadata_path = safe_join(root, metadata or "metadata.csv", where="metadata table")
    table = _read_metadata_csv(metadata_path)
    return build_volume_dataset(table, root, source=metadata_path.name, name=name or preset_key, **settings)


def build_volume_dataset(
    metadata: pd.DataFrame,
    root: str | Path,
    *,
    source: str,
    name: str,
    subject_column: str,
    label_column: str,
    file_column: str | None = None,
    file_template: str | None = None,
    mask_column: str | None = None,
    mask_template: str | None = None,
    positive_values: Sequence[Any] | None = None,
    negative_values: Sequence[Any] | None = None,
    sex_column: str | None = None,
    age_column: str | None = None,
    age_threshold: float = 60,
    age_rule: str = ">=",
    bmi_column: str | None = None,
    task: str = "binary",
    check_files: bool = True,
) -> VolumeDataset:
    """Turn a raw metadata table (as the dataset writes it) into a :class:`VolumeDataset`.

    ``source`` names the table in error messages ("metadata.csv row 3, column 'Diagnosis'"; rows are
    counted from 0 over the data rows). Every file is checked to exist (``check_files``) so that a
    typo fails now, not an hour into feature extraction.
    """
    root = Path(root)
    # A column names files explicitly, so it wins over a template (e.g. one inherited from a preset).
    file_template = None if file_column is not None else file_template
    mask_template = None if mask_column is not None else mask_template
    if file_column is None and file_template is None:
        raise ValueError("give file_column (a column with NIfTI paths) or file_template (e.g. '{Folder}.nii.gz')")
    needed = [subject_column, label_column, file_column, mask_column, sex_column, age_column, bmi_column]
    needed += _template_fields(file_template) + _template_fields(mask_template)
    missing = [c for c in dict.fromkeys(needed) if c is not None and c not in metadata.columns]
    if missing:
        raise DatasetFormatError(
            f"{source} lacks column(s) {missing}; its columns are {list(metadata.columns)}"
        )
    metadata = metadata.reset_index(drop=True)

    labels = _binary_labels(metadata[label_column], positive_values, negative_values, source, label_column)
    keep = labels.notna().to_numpy()
    dropped = int((~keep).sum())
    metadata, labels = metadata[keep].reset_index(drop=True), labels[keep].reset_index(drop=True)
    row_numbers = np.flatnonzero(keep)  # positions in the original table, for messages

    paths = _relative_paths(metadata, file_column, file_template, source, row_numbers)
    table = pd.DataFrame(
        {
            "sample_id": [_strip_nifti_suffix(p) for p in paths],
            "patient_id": _required_text(metadata[subject_column], source, subject_column, row_numbers),
            "label": labels.astype("Int64"),
            "path": paths,
        }
    )
    if mask_column is not None or mask_template is not None:
        table["mask_path"] = _relative_paths(metadata, mask_column, mask_template, source, row_numbers)

    if sex_column is not None:
        table["sex"] = metadata[sex_column].to_numpy()
        table[GROUP_PREFIX + "sex"] = sex_groups(metadata[sex_column])
    if age_column is not None:
        ages = _ages_in_years(metadata[age_column], source, age_column, row_numbers)
        table["age"] = ages
        table[GROUP_PREFIX + "age"] = age_groups(ages, age_threshold, rule=age_rule)
    if bmi_column is not None:
        bmi = _numbers(metadata[bmi_column], source, bmi_column, row_numbers)
        table["bmi"] = bmi
        table[GROUP_PREFIX + "bmi"] = bmi_groups(bmi)

    duplicated = table["sample_id"].duplicated(keep=False)
    if duplicated.any():
        rows = row_numbers[duplicated.to_numpy()].tolist()
        raise DatasetFormatError(f"{source} rows {rows} name the same volume file; each row must be one volume")

    for column in ("path", "mask_path"):
        if column in table.columns:
            _check_paths(root, table[column], source, row_numbers, column, check_files)

    return VolumeDataset(
        name=name,
        table=table,
        root=root,
        task=task,
        info={
            "source": source,
            "label_rule": _label_rule(label_column, positive_values, negative_values),
            "age_threshold": age_threshold if age_column else None,
            "age_rule": f"old if age {age_rule} {age_threshold}" if age_column else None,
            "dropped_rows": dropped,
        },
    )


def load_kits23_volumes(
    root: str | Path,
    metadata: str | Path | None = None,
    *,
    name: str | None = None,
    age_threshold: float = 60,
    age_rule: str = ">=",
    check_files: bool = True,
) -> VolumeDataset:
    """KiTS23 as distributed: ``dataset/kits23.json`` (older releases ``kits.json``) and
    ``dataset/case_XXXXX/imaging.nii.gz`` + ``segmentation.nii.gz``.

    Attributes (FairMedFM B.2): sex from ``gender`` (male/female), BMI class from ``bmi`` (WHO:
    underweight < 18.5 ≤ normal < 25 ≤ overweight < 30 ≤ obese), age from ``age_at_nephrectomy``.
    The binary label is ``malignant``; the task is segmentation: :meth:`VolumeDataset.load_mask`
    gives class indices named by ``info["classes"]`` (background, kidney, tumor, cyst), any other
    stored value is an error naming the file. Also registered as ``"kits23"``.
    """
    root = Path(root)
    if metadata is None:
        candidates = ["dataset/kits23.json", "kits23.json", "dataset/kits.json", "kits.json"]
        found = [c for c in candidates if (root / c).is_file()]
        if not found:
            raise DatasetFormatError(f"no KiTS metadata under {root}: looked for {candidates}")
        metadata = found[0]
    metadata_path = safe_join(root, metadata, where="KiTS metadata")
    try:
        records = json.loads(metadata_path.read_text())
    except FileNotFoundError:
        raise DatasetFormatError(f"KiTS metadata file not found: {metadata_path}") from None
    except json.JSONDecodeError as exc:
        raise DatasetFormatError(f"{metadata_path} is not valid JSON: {exc}") from None
    if not isinstance(records, list) or not all(isinstance(r, dict) for r in records):
        raise DatasetFormatError(f"{metadata_path} must hold a JSON list of case objects")
    table = pd.DataFrame.from_records(records)
    if "malignant" in table.columns:  # JSON booleans; keep the table text-typed like a CSV read
        table["malignant"] = table["malignant"].map({True: "1", False: "0"})
    dataset = build_volume_dataset(
        table,
        metadata_path.parent,  # case folders sit next to the JSON file
        source=metadata_path.name,
        name=name or "kits23",
        subject_column="case_id",
        file_template="{case_id}/imaging.nii.gz",
        mask_template="{case_id}/segmentation.nii.gz",
        label_column="malignant",
        sex_column="gender",
        age_column="age_at_nephrectomy",
        age_threshold=age_threshold,
        age_rule=age_rule,
        bmi_column="bmi",
        task="segmentation",
        check_files=check_files,
    )
    # one row per volume; masks are class indices 0 background, 1 kidney, 2 tumor, 3 cyst
    dataset.info.update(classes=list(KITS23_CLASSES), mask_values=None, mask_other="error")
    return dataset


# ---------------------------------------------------------------------------------------------
# Table parsing helpers
# ---------------------------------------------------------------------------------------------


def _read_metadata_csv(path: Path) -> pd.DataFrame:
    # dtype=str keeps codes as written: ids with leading zeros, DICOM ages such as "045Y".
    try:
        return pd.read_csv(path, dtype=str, skipinitialspace=True)
    except FileNotFoundError:
        raise DatasetFormatError(f"metadata table not found: {path}") from None
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise DatasetFormatError(f"cannot parse metadata table {path}: {exc}") from None


def _template_fields(template: str | None) -> list[str]:
    return [] if template is None else re.findall(r"{([^{}:!]+)", template)


def _where(source: str, row: int, column: str) -> str:
    return f"{source} row {row}, column {column!r}"


def _relative_paths(
    metadata: pd.DataFrame, column: str | None, template: str | None, source: str, row_numbers: np.ndarray
) -> list[str]:
    paths = []
    for position, row in enumerate(metadata.to_dict("records")):
        described_by = column if column is not None else f"template {template!r}"
        if column is not None:
            value = row[column]
        else:
            blanks = [f for f in _template_fields(template) if pd.isna(row[f]) or str(row[f]).strip() == ""]
            if blanks:
                raise DatasetFormatError(f"{_where(source, row_numbers[position], blanks[0])} is empty; the file name needs it")
            value = template.format(**{k: str(v).strip() for k, v in row.items() if isinstance(k, str)})
        if pd.isna(value) or str(value).strip() == "":
            raise DatasetFormatError(f"{_where(source, row_numbers[position], described_by)} gives no file")
        paths.append(str(value).strip())
    return paths


def _check_paths(
    root: Path, paths: pd.Series, source: str, row_numbers: np.ndarray, column: str, check_files: bool
) -> None:
    for position, relative in enumerate(paths):
        where = _where(source, row_numbers[position], column)
        absolute = safe_join(root, relative, where=where)  # refuses '../' and absolute paths
        if not relative.lower().endswith(NIFTI_SUFFIXES):
            raise DatasetFormatError(f"{where}: {relative!r} is not a NIfTI file (.nii or .nii.gz)")
        if check_files and not absolute.is_file():
            raise DatasetFormatError(f"{where}: volume file {str(absolute)!r} does not exist")


def _strip_nifti_suffix(path: str) -> str:
    for suffix in (".nii.gz", ".nii"):
        if path.lower().endswith(suffix):
            return path[: -len(suffix)]
    return path


def _required_text(values: pd.Series, source: str, column: str, row_numbers: np.ndarray) -> list[str]:
    text = values.astype("string").str.strip()
    blank = text.isna() | (text == "")
    if blank.any():
        row = row_numbers[int(np.flatnonzero(blank.to_numpy())[0])]
        raise DatasetFormatError(f"{_where(source, row, column)} is empty")
    return text.tolist()


def _binary_labels(
    values: pd.Series,
    positive: Sequence[Any] | None,
    negative: Sequence[Any] | None,
    source: str,
    column: str,
) -> pd.Series:
    """0/1 labels; <NA> for rows in neither class when both classes are listed (those are dropped)."""
    text = values.astype("string").str.strip()
    positive_set = None if positive is None else {str(v) for v in positive}
    negative_set = None if negative is None else {str(v) for v in negative}
    labels = pd.Series(pd.NA, index=values.index, dtype="Int64")
    for position, value in enumerate(text):
        if pd.isna(value) or value == "":
            raise DatasetFormatError(f"{_where(source, position, column)} is empty; every volume needs a label")
        if positive_set is None and negative_set is None:
            if value not in ("0", "1", "0.0", "1.0", "True", "False", "true", "false"):
                raise DatasetFormatError(
                    f"{_where(source, position, column)} is {value!r}; expected 0/1, or name the "
                    f"classes with positive_values/negative_values (values seen: {sorted(text.dropna().unique())})"
                )
            labels.iat[position] = int(value in ("1", "1.0", "True", "true"))
        elif positive_set is not None and value in positive_set:
            labels.iat[position] = 1
        elif negative_set is not None and value in negative_set:
            labels.iat[position] = 0
        elif positive_set is None:
            labels.iat[position] = 1  # only the negative class is listed: everything else is positive
        elif negative_set is None:
            labels.iat[position] = 0
        # else: listed in neither class (e.g. ADNI MCI) → <NA>, dropped by the caller
    return labels


def _label_rule(column: str, positive: Sequence[Any] | None, negative: Sequence[Any] | None) -> str:
    if positive is None and negative is None:
        return f"{column} (0/1)"
    if positive is None:
        return f"1 if {column} not in {list(negative)}"
    if negative is None:
        return f"1 if {column} in {list(positive)}"
    return f"1 if {column} in {list(positive)}, 0 if in {list(negative)}, other rows dropped"


def _numbers(values: pd.Series, source: str, column: str, row_numbers: np.ndarray) -> pd.Series:
    numbers = pd.to_numeric(values, errors="coerce")
    bad = numbers.isna() & values.notna() & (values.astype("string").str.strip() != "")
    if bad.any():
        position = int(np.flatnonzero(bad.to_numpy())[0])
        raise DatasetFormatError(
            f"{_where(source, row_numbers[position], column)} is {values.iloc[position]!r}, not a number"
        )
    return numbers.astype("Float64").reset_index(drop=True)


def _ages_in_years(values: pd.Series, source: str, column: str, row_numbers: np.ndarray) -> pd.Series:
    """Ages as numbers; DICOM age strings ('045Y', '006M', '010W', '003D') are converted to years."""
    units = {"Y": 1.0, "M": 1 / 12, "W": 7 / 365.25, "D": 1 / 365.25}
    converted = []
    for value in values:
        text = "" if pd.isna(value) else str(value).strip()
        match = re.fullmatch(r"(\d{1,3})([YMWD])", text.upper())
        converted.append(float(match.group(1)) * units[match.group(2)] if match else (text or None))
    return _numbers(pd.Series(converted, index=values.index, dtype=object), source, column, row_numbers)
