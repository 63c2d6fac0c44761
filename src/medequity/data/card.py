"""The data card: a dataset summary per sensitive attribute (FairDi Tables 6-10).

For every attribute: each group's size and share, its label counts and prevalence (FairDi's
"Label 0 / Label 1 / Total" per group), the unknown (<NA>) count, the attribute skew
majority:minority (FairMedFM's "SA skewness", e.g. Male : Female) and, when the table has a
``split`` column, each group's size per split. The card also says what label 1 means and so what
its prevalence counts (CheXpert/NIH label 1 = "No Finding" = healthy, so their prevalence is the
share of healthy images, not of disease), how ages were grouped, and, from the loader's ``info``,
every loader option and every row the loader dropped and why. ``build_data_card(dataset)`` makes it;
:class:`DataCard` shows it as a DataFrame, Markdown or a dict, and saves card.json + card.csv
atomically (write to a temporary file in the same folder, then ``os.replace``), so a reader never
sees half a card.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from medequity.data.base import GROUP_PREFIX, MedicalDataset
from medequity.data.splits import SPLITS, atomic_write_text

UNKNOWN_GROUP = "(unknown)"
COLUMNS = ["attribute", "group", "n", "share", "n_negative", "n_positive", "prevalence"]


@dataclass
class DataCard:
    dataset: str
    n_samples: int
    n_patients: int
    n_positive: int
    split: str | None
    groups: pd.DataFrame  # one row per attribute × group (and an "(unknown)" row when any)
    attributes: dict[str, dict[str, Any]] = field(default_factory=dict)  # skew, unknown counts
    split_sizes: dict[str, int] = field(default_factory=dict)
    label: dict[str, Any] = field(default_factory=dict)  # rule, what label 1 means, what prevalence counts
    loader: dict[str, Any] = field(default_factory=dict)  # the loader's info: options, dropped rows, provenance

    def to_frame(self) -> pd.DataFrame:
        return self.groups.copy()

    def to_dict(self) -> dict[str, Any]:
        rows = [{k: _plain(v) for k, v in row.items()} for row in self.groups.to_dict(orient="records")]
        return {
            "dataset": self.dataset,
            "split": self.split,
            "n_samples": self.n_samples,
            "n_patients": self.n_patients,
            "n_positive": self.n_positive,
            "prevalence": _plain(self.n_positive / self.n_samples) if self.n_samples else None,
            "split_sizes": self.split_sizes,
            "label": self.label,
            "loader": self.loader,
            "attributes": self.attributes,
            "groups": rows,
        }

    def to_markdown(self) -> str:
        scope = f" ({self.split} split)" if self.split else ""
        lines = [
            f"# Data card: {self.dataset}{scope}",
            "",
            f"{self.n_samples} samples, {self.n_patients} patients, {self.n_positive} positive "
            f"({_fmt(self.n_positive / self.n_samples if self.n_samples else float('nan'))}).",
        ]
        if self.split_sizes:
            lines.append("Splits: " + ", ".join(f"{k} {v}" for k, v in self.split_sizes.items()) + ".")
        lines += ["", f"- Label rule: {self.label['rule']}", f"- Label 1 means: {self.label['label_1']}",
                  f"- Prevalence (n_positive / n): {self.label['prevalence']}"]
        if self.loader.get("age_groups"):
            lines.append(f"- Age groups: {self.loader['age_groups']}")
        dropped = self.loader.get("dropped_rows")
        if isinstance(dropped, dict) and any(dropped.values()):
            lines.append("- Rows dropped by the loader: " + "; ".join(f"{n} ({why})" for why, n in dropped.items() if n))
        elif isinstance(dropped, int) and dropped:
            lines.append(f"- Rows dropped by the loader: {dropped}")
        if self.loader.get("absent_image_folders"):
            lines.append("- Absent image folders: " + ", ".join(self.loader["absent_image_folders"]))
        if self.loader.get("options"):
            lines.append("- Loader options: " + ", ".join(f"{k}={v!r}" for k, v in self.loader["options"].items()))
        lines += ["", "| attribute | skew (majority:minority) | unknown |", "|---|---|---|"]
        for name, facts in self.attributes.items():
            skew = facts["skew"]
            text = f"{_fmt(skew)} ({facts['majority']}:{facts['minority']})" if skew is not None else "-"
            lines.append(f"| {name} | {text} | {facts['n_unknown']} |")
        columns = list(self.groups.columns)
        lines += ["", "| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
        for row in self.groups.itertuples(index=False):
            lines.append("| " + " | ".join(_fmt(v) for v in row) + " |")
        return "\n".join(lines) + "\n"

    def save(self, folder: str | Path) -> tuple[Path, Path]:
        """Write ``card.json`` and ``card.csv`` into ``folder`` atomically; returns both paths."""
        folder = Path(folder)
        json_path, csv_path = folder / "card.json", folder / "card.csv"
        atomic_write_text(json_path, json.dumps(self.to_dict(), indent=1))
        atomic_write_text(csv_path, self.groups.to_csv(index=False))
        return json_path, csv_path


def _plain(value: Any) -> Any:
    """JSON-friendly scalars: numpy numbers to Python, NaN/<NA> to None."""
    if value is None or value is pd.NA:
        return None
    if hasattr(value, "item"):
        value = value.item()
    if isinstance(value, float) and math.isnan(value):
        return None
    return value


def _jsonable(value: Any) -> Any:
    """The loader's info as JSON data: mappings and sequences kept, paths and other objects as text."""
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if hasattr(value, "tolist") and not isinstance(value, str):
        return _jsonable(value.tolist())
    value = _plain(value)
    return value if value is None or isinstance(value, (str, int, float, bool)) else str(value)


def label_meaning(info: dict[str, Any]) -> dict[str, Any]:
    """What the card's label columns mean, from the loader's ``info`` (``label_rule``, ``label_1``,
    ``prevalence``); a loader that states none gets a card that says so rather than guessing."""
    rule = info.get("label_rule", "not stated by the loader")
    return {
        "rule": rule,
        "label_1": info.get("label_1", f"as the label rule says ({rule})"),
        "prevalence": info.get("prevalence", "share of samples with label 1"),
    }


def _fmt(value: Any) -> str:
    if value is None or value is pd.NA or (isinstance(value, float) and math.isnan(value)):
        return "-"
    if isinstance(value, float):
        return f"{value:.3f}"
    return str(value)


def build_data_card(dataset: MedicalDataset, split: str | None = None) -> DataCard:
    """Summarise ``dataset`` (or one of its splits) per sensitive attribute."""
    table = dataset.table
    if split is not None:
        if "split" not in table.columns:
            raise ValueError(f"dataset {dataset.name!r} has no split column; make one with medequity.data.splits")
        if split not in SPLITS:
            raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
        table = table[table["split"] == split]
    labels = table["label"].astype("Int64")
    has_splits = "split" in table.columns and split is None

    rows = []
    attributes: dict[str, dict[str, Any]] = {}
    for attribute in [c[len(GROUP_PREFIX):] for c in table.columns if c.startswith(GROUP_PREFIX)]:
        groups = table[GROUP_PREFIX + attribute].astype("string")
        sizes = groups.value_counts(dropna=True).sort_index()
        for group in sizes.index:
            rows.append(_group_row(attribute, str(group), groups == group, labels, table, has_splits))
        unknown = groups.isna()
        if unknown.any():
            rows.append(_group_row(attribute, UNKNOWN_GROUP, unknown, labels, table, has_splits))
        majority = sizes.idxmax() if len(sizes) else None
        minority = sizes.idxmin() if len(sizes) else None
        attributes[attribute] = {
            "groups": [str(g) for g in sizes.index],
            "n_unknown": int(unknown.sum()),
            "majority": None if majority is None else str(majority),
            "minority": None if minority is None else str(minority),
            "skew": float(sizes.max() / sizes.min()) if len(sizes) >= 2 and sizes.min() > 0 else None,
        }
    frame = pd.DataFrame(rows)
    if frame.empty:
        frame = pd.DataFrame(columns=COLUMNS)
    frame["share"] = frame["n"] / max(len(table), 1)
    split_sizes = {s: int((table["split"] == s).sum()) for s in SPLITS} if has_splits else {}
    return DataCard(
        dataset=dataset.name,
        n_samples=len(table),
        n_patients=int(table["patient_id"].nunique()),
        n_positive=int((labels == 1).sum()),
        split=split,
        groups=frame,
        attributes=attributes,
        split_sizes=split_sizes,
        label=label_meaning(dataset.info),
        loader=_jsonable(dataset.info),
    )


def _group_row(attribute: str, group: str, rows: pd.Series, labels: pd.Series, table: pd.DataFrame, has_splits: bool) -> dict[str, Any]:
    rows = rows.fillna(False).astype(bool)
    group_labels = labels[rows]
    known = group_labels.notna()
    n_positive = int((group_labels == 1).sum())
    row: dict[str, Any] = {
        "attribute": attribute,
        "group": group,
        "n": int(rows.sum()),
        "share": 0.0,  # filled in by the caller
        "n_negative": int((group_labels == 0).sum()),
        "n_positive": n_positive,
        "prevalence": n_positive / int(known.sum()) if known.any() else float("nan"),
    }
    if has_splits:
        for split in SPLITS:
            row[f"n_{split}"] = int((rows & (table["split"] == split).fillna(False)).sum())
    return row
