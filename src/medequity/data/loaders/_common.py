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
