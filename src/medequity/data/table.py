"""The generic table loader (DATASETS.md, "Any user dataset") and the checks every loader shares.

Most users describe their data with a CSV or Parquet table: one row per image, a path column
(relative to a root folder), a label column, attribute columns, and optionally patient-id and
mask-path columns. With a mask column the dataset is a segmentation dataset (2D PNG/JPEG/NumPy or
3D NIfTI/``.mha`` images and masks, read by suffix; masks coded as class indices by ``classes=``
and ``mask_values=``). Errors here are written for that user: a column typo lists the columns that
exist (with a difflib suggestion), a missing image names its row and path, a non-binary label
names the values found, and a path that leaves the root is refused.
"""

from __future__ import annotations

import difflib
import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from medequity.data.attributes import add_group_columns
from medequity.data.base import DatasetFormatError, MedicalDataset, register_dataset, safe_join

MAX_REPORTED = 5  # how many bad rows an error message lists before "... and N more"


# --- shared checks (used by every real loader too) -------------------------------------------------


def read_table(path: str | Path, **kwargs: Any) -> pd.DataFrame:
    """Read a CSV (also .csv.gz), Parquet or Excel table, with an error that names the file."""
    path = Path(path)
    if not path.is_file():
        raise DatasetFormatError(f"table file not found: {path}")
    suffixes = "".join(path.suffixes[-2:]).lower()
    try:
        if path.suffix.lower() == ".parquet" or suffixes.endswith(".parquet"):
            return pd.read_parquet(path, **kwargs)
        if path.suffix.lower() in (".xlsx", ".xls"):
            return pd.read_excel(path, **kwargs)
        return pd.read_csv(path, **kwargs)
    except (ValueError, OSError, pd.errors.ParserError) as exc:
        raise DatasetFormatError(f"cannot read table {path}: {exc}") from None


def require_columns(table: pd.DataFrame, columns: Iterable[str], source: str) -> None:
    """Raise naming each missing column, the closest existing name and all available columns."""
    available = [str(c) for c in table.columns]
    problems = []
    for column in columns:
        if column in table.columns:
            continue
        close = difflib.get_close_matches(str(column), available, n=1, cutoff=0.6)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        problems.append(f"{column!r}{hint}")
    if problems:
        raise DatasetFormatError(
            f"{source}: missing column {', '.join(problems)}; available columns: {available}"
        )


def _list_rows(rows: Sequence[str], total: int) -> str:
    more = f"; ... and {total - len(rows)} more" if total > len(rows) else ""
    return "; ".join(rows) + more


def resolve_paths(
    root: Path,
    relative: pd.Series,
    source: str,
    *,
    column: str = "path",
    check_exists: bool = True,
    on_missing: str = "error",
) -> np.ndarray:
    """Check every path up front: inside ``root`` and (optionally) present on disk.

    Returns a boolean mask of rows whose file exists. ``on_missing="error"`` raises listing the
    first few missing rows and paths; ``"drop"`` lets the caller drop them (the mask says which).
    Row numbers are the table's own 0-based data rows.
    """
    if on_missing not in ("error", "drop"):
        raise ValueError(f"on_missing must be 'error' or 'drop', got {on_missing!r}")
    present = np.ones(len(relative), dtype=bool)
    missing: list[str] = []
    # A lexical check per row (fast: ~1 s for CheXpert's 223k rows, where resolving every path
    # takes ~10 s); a row that fails it goes through safe_join for the standard error, and
    # MedicalDataset.image_path applies safe_join again (symlinks included) when an image is read.
    root_text = os.path.abspath(root)
    for position, (row, rel) in enumerate(relative.items()):
        if rel is None or (not isinstance(rel, str) and pd.isna(rel)) or str(rel).strip() == "":
            raise DatasetFormatError(f"{source}: row {row}: column {column!r} is empty")
        full = os.path.normpath(os.path.join(root_text, str(rel)))
        if not full.startswith(root_text + os.sep):
            safe_join(root, str(rel), where=f"{source}, row {row}, column {column!r}")
        if check_exists and not os.path.isfile(full):
            present[position] = False
            if len(missing) < MAX_REPORTED:
                missing.append(f"row {row}: {rel}")
    n_missing = int((~present).sum())
    if n_missing and on_missing == "error":
        raise DatasetFormatError(
            f"{source}: {n_missing} of {len(relative)} files in column {column!r} not found under "
            f"{root}: {_list_rows(missing, n_missing)}"
        )
    return present


def binary_labels(
    values: pd.Series,
    source: str,
    column: str,
    positive_values: Iterable[Any] | None = None,
) -> pd.Series:
    """Labels as Int64 0/1.

    Without ``positive_values`` the column must already be binary (0/1, true/false, "0"/"1");
    otherwise the error names the values found and how to map them. With ``positive_values``
    those values are 1 and every other non-missing value is 0. Missing labels are an error.
    """
    missing = values.isna()
    if missing.any():
        rows = [str(r) for r in values.index[missing][:MAX_REPORTED]]
        raise DatasetFormatError(
            f"{source}: column {column!r} has {int(missing.sum())} empty labels (rows {', '.join(rows)})"
        )
    if positive_values is not None:
        positives = {_label_key(v) for v in positive_values}
        return pd.Series([int(_label_key(v) in positives) for v in values], index=values.index, dtype="Int64")
    keys = values.map(_label_key)
    mapping = {"0": 0, "1": 1, "false": 0, "true": 1}
    if not set(keys.unique()) <= set(mapping):
        found = sorted(values.astype(str).unique().tolist())
        shown = found[:12] + (["..."] if len(found) > 12 else [])
        raise DatasetFormatError(
            f"{source}: label column {column!r} is not binary; values found: {shown}. "
            "Pass positive_values=[...] to say which values mean 1 (e.g. positive_values=['mel'])."
        )
    return keys.map(mapping).astype("Int64")


def _label_key(value: Any) -> str:
    if isinstance(value, (bool, np.bool_)):
        return "1" if value else "0"
    if isinstance(value, (int, np.integer, float, np.floating)) and float(value).is_integer():
        return str(int(value))
    text = str(value).strip().lower()
    try:
        number = float(text)
        return str(int(number)) if number.is_integer() else text
    except ValueError:
        return text


def finish_table(table: pd.DataFrame) -> pd.DataFrame:
    """Common dtypes: string ids and paths, Int64 label; index reset."""
    table = table.reset_index(drop=True)
    for column in ("sample_id", "patient_id", "path", "mask_path", "split"):
        if column in table.columns:
            table[column] = table[column].astype("string")
    table["label"] = table["label"].astype("Int64")
    duplicated = table["sample_id"].duplicated()
    if duplicated.any():
        dupes = table.loc[duplicated, "sample_id"].head(MAX_REPORTED).tolist()
        raise DatasetFormatError(f"sample ids are not unique: {dupes}")
    return table


# --- the table loader -------------------------------------------------------------------------------


@register_dataset("table")
def load_table(
    root: str | Path,
    table: str | Path | pd.DataFrame = "metadata.csv",
    *,
    path_column: str = "path",
    label_column: str | None = "label",
    attributes: Iterable[str] | Mapping[str, Any] = (),
    patient_column: str | None = None,
    mask_column: str | None = None,
    sample_id_column: str | None = None,
    split_column: str | None = None,
    positive_values: Iterable[Any] | None = None,
    intersections: Iterable[Sequence[str]] = (),
    check_files: bool = True,
    name: str = "table",
    classes: Sequence[str] | None = None,
    mask_values: Any = None,
    mask_other: str = "error",
) -> MedicalDataset:
    """Load any dataset described by a CSV/Parquet table.

    ``table`` is a file (relative paths are taken under ``root``) or a DataFrame. ``attributes``
    are raw columns to group (see :func:`medequity.data.attributes.add_group_columns`, e.g.
    ``{"sex": None, "age": {"threshold": 65}}``). Without ``patient_column`` every sample is its
    own patient (say so in a patient column when that is not true: splits depend on it).
    ``split_column`` values are normalised to train/val/test.

    Segmentation (``mask_column`` given; ``label_column=None`` when there is no image label):
    images and masks may be PNG/JPEG/TIFF, ``.npy``, NIfTI or ``.mha``/``.nrrd`` (read by suffix,
    lazily). ``classes`` names the classes from 0 (background); ``mask_values`` says how stored
    values become class indices: ``"binary"`` (> 0 is class 1; 0/255 PNG masks), a mapping
    ``{stored: class}`` (e.g. ``{0: 0, 128: 1, 255: 2}``; other values an error naming the file,
    or background with ``mask_other="background"``) or ``None`` (stored values are the class
    indices, checked against ``classes``). Without ``classes`` masks come back as stored integers.
    """
    if mask_values == "binary" and classes is None:
        classes = ["background", "foreground"]
    if classes is not None and mask_column is None:
        raise ValueError("classes/mask_values describe masks: give mask_column too")
    root = Path(root)
    positive_values = list(positive_values) if positive_values is not None else None  # may be a generator
    if isinstance(table, pd.DataFrame):
        frame, source = table.copy(), "table"
    else:
        table_path = Path(table) if Path(table).is_absolute() else root / table
        frame, source = read_table(table_path), str(table_path)
    if frame.empty:
        raise DatasetFormatError(f"{source}: the table has no rows")

    attribute_columns = _attribute_columns(attributes)
    wanted = [path_column, *([label_column] if label_column is not None else []), *attribute_columns]
    wanted += [c for c in (patient_column, mask_column, sample_id_column, split_column) if c is not None]
    require_columns(frame, dict.fromkeys(wanted), source)

    resolve_paths(root, frame[path_column], source, column=path_column, check_exists=check_files)
    if mask_column is not None:
        resolve_paths(root, frame[mask_column], source, column=mask_column, check_exists=check_files)

    out = pd.DataFrame(index=frame.index)
    out["sample_id"] = frame[sample_id_column].astype(str) if sample_id_column else frame[path_column].astype(str)
    out["patient_id"] = frame[patient_column].astype(str) if patient_column else out["sample_id"]
    if label_column is None:
        if mask_column is None:
            raise ValueError("label_column=None is for segmentation tables: give mask_column")
        out["label"] = pd.Series(pd.NA, index=frame.index, dtype="Int64")
    else:
        out["label"] = binary_labels(frame[label_column], source, label_column, positive_values)
    out["path"] = frame[path_column].astype(str)
    if mask_column is not None:
        out["mask_path"] = frame[mask_column].astype(str)
    if split_column is not None:
        out["split"] = normalise_split_names(frame[split_column], source, split_column)
    for column in attribute_columns:
        out[column] = frame[column]
    out = add_group_columns(out, attributes, intersections=intersections)
    info = {
        "source": source,
        "label_rule": f"{label_column} in {sorted(map(str, positive_values))}" if positive_values is not None else label_column,
        "patient_id": patient_column or "none given: each sample is its own patient",
    }
    if mask_column is not None:
        from medequity.data.loaders._seg import SegmentationDataset

        if classes is not None and (not classes or classes[0] != "background"):
            raise ValueError(f"classes must start with 'background', got {list(classes)}")
        info.update(classes=None if classes is None else list(classes), mask_values=mask_values, mask_other=mask_other)
        return SegmentationDataset(name=name, table=finish_table(out), root=root, task="segmentation", info=info)
    return MedicalDataset(
        name=name,
        table=finish_table(out),
        root=root,
        task="segmentation" if mask_column is not None else "binary",
        info=info,
    )


def _attribute_columns(attributes: Iterable[str] | Mapping[str, Any]) -> list[str]:
    if isinstance(attributes, Mapping):
        columns = []
        for name, options in attributes.items():
            column = options.get("column", name) if isinstance(options, Mapping) else name
            columns.append(column)
        return columns
    return list(attributes)


SPLIT_ALIASES = {
    "train": "train",
    "training": "train",
    "val": "val",
    "valid": "val",
    "validate": "val",
    "validation": "val",
    "dev": "val",
    "test": "test",
    "testing": "test",
}


def normalise_split_names(values: pd.Series, source: str, column: str = "split") -> pd.Series:
    """train/val/test from the spellings datasets use (MIMIC "validate", FairVLMed "Training")."""
    lowered = values.astype("string").str.strip().str.lower()
    mapped = lowered.map(lambda v: SPLIT_ALIASES.get(v, "?") if isinstance(v, str) else pd.NA)
    bad = mapped == "?"
    if bad.any():
        found = sorted(values[bad].astype(str).unique().tolist())
        raise DatasetFormatError(
            f"{source}: column {column!r} has split names {found}; expected train/val/test "
            f"(or {sorted(SPLIT_ALIASES)})"
        )
    return mapped.astype("string")
