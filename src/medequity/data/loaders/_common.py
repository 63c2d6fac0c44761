"""Small helpers the real-dataset loaders share (finding files in a dataset's own layout)."""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import pandas as pd

from medequity.data.base import DatasetFormatError


def find_file(root: Path, candidates: Iterable[str], what: str) -> Path:
    """The first existing ``root/<candidate>``; the error lists every place looked at."""
    tried = []
    for candidate in candidates:
        path = root / candidate
        if path.is_file():
            return path
        tried.append(str(path))
    raise DatasetFormatError(f"{what} not found; looked for: {', '.join(tried)}")


def find_optional_file(root: Path, candidates: Iterable[str]) -> Path | None:
    for candidate in candidates:
        if (root / candidate).is_file():
            return root / candidate
    return None


def index_images(root: Path, folders: Iterable[str], suffixes: tuple[str, ...]) -> dict[str, str]:
    """Map file stem → path relative to ``root`` for image files directly inside ``folders``.

    Listing a few folders once is far faster than one existence check per row on 100k images,
    and it lets a dataset keep its images split over several folders (HAM10000 part_1/part_2,
    NIH images_001…images_012).
    """
    index: dict[str, str] = {}
    for folder in folders:
        directory = root / folder if folder not in ("", ".") else root
        if not directory.is_dir():
            continue
        with os.scandir(directory) as entries:
            for entry in entries:
                if entry.name.lower().endswith(suffixes) and entry.is_file():
                    stem = entry.name.rsplit(".", 1)[0]
                    relative = entry.name if directory == root else f"{Path(directory).relative_to(root).as_posix()}/{entry.name}"
                    index.setdefault(stem, relative)
    return index


def missing_images_error(source: str, rows: list[tuple[object, str]], total: int, root: Path, looked_in: str) -> DatasetFormatError:
    shown = "; ".join(f"row {row}: {name}" for row, name in rows[:5])
    more = f"; ... and {total - 5} more" if total > 5 else ""
    return DatasetFormatError(f"{source}: {total} images not found under {root} ({looked_in}): {shown}{more}")


def image_paths_from_ids(
    root: Path,
    ids: pd.Series,
    index: dict[str, str],
    source: str,
    column: str,
    looked_in: str,
    on_missing: str = "error",
) -> tuple[pd.Series, np.ndarray]:
    """Relative image paths for image ids; ids that are paths (``../x``) are refused outright.

    Returns the paths and a mask of rows whose image exists (``on_missing="drop"``), or raises
    naming the first missing rows (``"error"``).
    """
    paths = []
    present = np.ones(len(ids), dtype=bool)
    missing: list[tuple[object, str]] = []
    for position, (row, image_id) in enumerate(ids.items()):
        text = str(image_id).strip()
        if "/" in text or "\\" in text or text.startswith(".") or text == "":
            raise DatasetFormatError(
                f"{source}: row {row}: column {column!r} value {text!r} is not a plain image name "
                "(ids must not contain paths; files outside the dataset root are refused)"
            )
        stem = text.rsplit(".", 1)[0] if text.lower().endswith((".jpg", ".jpeg", ".png")) else text
        relative = index.get(stem)
        if relative is None:
            present[position] = False
            missing.append((row, text))
        paths.append(relative)
    if missing and on_missing == "error":
        raise missing_images_error(source, missing, len(missing), root, looked_in)
    return pd.Series(paths, index=ids.index, dtype="string"), present


def check_plain_ids(ids: pd.Series, source: str, column: str) -> None:
    """Refuse ids that would become paths (``../x``, ``a/b``) before they are joined into one."""
    text = ids.astype("string").str.strip()
    bad = text.str.contains(r"[/\\]", regex=True).fillna(False) | text.str.startswith(".").fillna(False)
    if bad.any():
        row = bad.index[bad][0]
        raise DatasetFormatError(
            f"{source}: row {row}: column {column!r} value {text[row]!r} is not a plain id "
            "(ids must not contain paths; files outside the dataset root are refused)"
        )


# --- options the chest X-ray loaders share (torchxrayvision's ``views`` and ``unique_patients``) ---

VIEW_CHOICES = ("AP", "PA", "lateral", "frontal")


def parse_views(views: str | Iterable[str] | None) -> tuple[str, ...] | None:
    """Canonical view names from ``"PA"``, ``"AP,PA"``, ``["PA", "lateral"]`` (any case); None = all.

    ``frontal`` means every frontal image (AP, PA and any other frontal code), ``lateral`` every
    lateral one. AP and PA differ in patient population (AP is portable, bedside: older and sicker
    patients), so a view filter changes the age and sex mix that a fairness audit sees.
    """
    if views is None:
        return None
    items = [part for part in (views.split(",") if isinstance(views, str) else views)]
    lookup = {choice.lower(): choice for choice in VIEW_CHOICES}
    chosen = []
    for item in items:
        name = lookup.get(str(item).strip().lower())
        if name is None:
            raise ValueError(f"unknown view {item!r} in views={views!r}; choose from {list(VIEW_CHOICES)}")
        chosen.append(name)
    if not chosen:
        raise ValueError(f"views={views!r} names no view; choose from {list(VIEW_CHOICES)} or leave it unset for all")
    return tuple(dict.fromkeys(chosen))


def view_mask(view: pd.Series, frontal: pd.Series, views: tuple[str, ...]) -> pd.Series:
    """Rows whose ``view`` (AP/PA/lateral/…) is chosen; ``frontal`` (bool) answers ``"frontal"``."""
    keep = view.astype("string").isin([v for v in views if v in ("AP", "PA", "lateral")]).fillna(False)
    if "frontal" in views:
        keep = keep | frontal.fillna(False).astype(bool)
    if "lateral" in views:
        keep = keep | ~frontal.fillna(True).astype(bool)
    return keep.astype(bool)


def no_rows_left(source: str, dropped: dict[str, int]) -> DatasetFormatError:
    reasons = ", ".join(f"{n} {why}" for why, n in dropped.items() if n) or "no rows in the table"
    return DatasetFormatError(f"{source}: no rows left after the loader's filters ({reasons})")


def first_image_per_patient(table: pd.DataFrame, order: list[str]) -> pd.DataFrame:
    """One row per ``patient_id``: the first by ``order`` (e.g. study number, then view number).

    The choice is a sort, not a random draw, so the same table always gives the same images
    (torchxrayvision's ``unique_patients`` keeps the first row in file order instead).
    """
    first = table.sort_values(["patient_id", *order], kind="mergesort").drop_duplicates("patient_id").index
    return table[table.index.isin(first)]  # file order kept


def cxr_label_info(finding: str) -> dict[str, str]:
    """What label 1 and the data card's prevalence mean for a chest X-ray ``finding`` label.

    With ``"No Finding"`` (the MEDFAIR/FairDi task) label 1 is *healthy*, so the share of label 1
    is the share of healthy images, the opposite of a disease prevalence; saying so stops a card
    reader from reading 10 % "prevalence" as 10 % disease.
    """
    if finding == "No Finding":
        return {
            "label_1": "healthy: 'No Finding' (no abnormality reported); label 0 = at least one finding",
            "prevalence": "share of healthy images (label 1 = No Finding), not disease prevalence; "
            "the share with a finding is 1 - prevalence",
        }
    return {"label_1": f"{finding} present (disease)", "prevalence": f"disease prevalence: share of images with {finding}"}
