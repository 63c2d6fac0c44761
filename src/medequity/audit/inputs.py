"""Reading a predictions table for an audit: column resolution, metadata join, binning.

A clinical-AI team has a table of predictions (CSV or Parquet): a label, a score (or one score
column per class), group columns, maybe an id to join a separate metadata table. Column names are
given or detected; a wrong name lists the columns that exist. Continuous attributes such as age are
binned with a threshold (``age=>60``, ``age=>=60``), cut points (``age=40,60,80``) or quantiles
(``age=q4``).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from medequity.data.attributes import age_groups, cut_groups, quantile_groups
from medequity.data.table import read_table, require_columns

LABEL_CANDIDATES = ("label", "y_true", "target", "y", "ground_truth", "diagnosis")
SCORE_CANDIDATES = ("score", "y_score", "y_prob", "prob", "probability", "pred_prob", "prediction_score")
PRED_CANDIDATES = ("y_pred", "pred", "prediction")
ID_CANDIDATES = ("id", "sample_id", "image_id", "study_id", "subject_id", "patient_id")
ATTRIBUTE_CANDIDATES = ("sex", "gender", "age", "age_group", "race", "ethnicity", "skin_tone", "fitzpatrick",
                        "skin_type", "language", "marital_status", "bmi", "site", "scanner", "insurance")


class AuditInputError(ValueError):
    """The predictions/metadata tables do not fit the audit; the message says how to fix it."""


@dataclass(frozen=True)
class BinRule:
    """How to group a continuous attribute: ``threshold`` (with side), ``cuts`` or ``quantiles``."""

    column: str
    kind: str  # "threshold" | "cuts" | "quantiles"
    threshold: float | None = None
    side: str = ">"
    cuts: tuple[float, ...] = ()
    quantiles: int = 0

    @classmethod
    def parse(cls, text: str) -> BinRule:
        """``age=>60`` | ``age=>=60`` | ``age=60`` (means >60) | ``age=40,60,80`` | ``age=q4``."""
        if "=" not in text:
            raise AuditInputError(f"bin rule {text!r} must look like 'age=>60', 'age=40,60,80' or 'age=q4'")
        column, rule = text.split("=", 1)
        column, rule = column.strip(), rule.strip()
        try:
            if rule.lower().startswith("q"):
                return cls(column, "quantiles", quantiles=int(rule[1:]))
            if rule.startswith(">="):
                return cls(column, "threshold", threshold=float(rule[2:]), side=">=")
            if rule.startswith(">"):
                return cls(column, "threshold", threshold=float(rule[1:]), side=">")
            numbers = tuple(float(x) for x in rule.split(",") if x.strip())
        except ValueError:
            raise AuditInputError(f"bin rule {text!r}: cannot read {rule!r} as a threshold, cut points or q<N>") from None
        if len(numbers) == 1:
            return cls(column, "threshold", threshold=numbers[0], side=">")
        return cls(column, "cuts", cuts=numbers)

    def apply(self, values: pd.Series) -> pd.Series:
        if self.kind == "threshold":
            return age_groups(values, threshold=self.threshold, rule=self.side)
        if self.kind == "cuts":
            return cut_groups(values, self.cuts)
        return quantile_groups(values, q=self.quantiles)

    def describe(self) -> str:
        if self.kind == "threshold":
            return f"{self.column} split at {self.side}{self.threshold:g}"
        if self.kind == "cuts":
            return f"{self.column} cut at {', '.join(f'{c:g}' for c in self.cuts)}"
        return f"{self.column} in {self.quantiles} quantile bins"


@dataclass
class AuditData:
    """The resolved inputs: a tidy frame with label, score(s)/prediction and group columns."""

    frame: pd.DataFrame
    label: str
    scores: dict[str, str]  # task name -> score column ("positive" for binary)
    prediction: str | None
    attributes: list[str]
    id_column: str | None
    classes: dict[str, object]  # task name -> label value that is positive for that task
    bins: list[BinRule]
    source: str


def _detect(columns, candidates, what: str, option: str, required: bool = True) -> str | None:
    lowered = {str(c).lower(): c for c in columns}
    for candidate in candidates:
        if candidate in lowered:
            return lowered[candidate]
    if required:
        raise AuditInputError(
            f"no {what} column found (looked for {list(candidates)}); name it with {option}. "
            f"Available columns: {[str(c) for c in columns]}"
        )
    return None


def _check(table: pd.DataFrame, columns, source: str) -> None:
    try:
        require_columns(table, columns, source)
    except ValueError as exc:
        raise AuditInputError(str(exc)) from None


def load_audit_data(
    predictions: str | Path | pd.DataFrame,
    *,
    label: str | None = None,
    score: str | list[str] | None = None,
    score_prefix: str | None = None,
    prediction: str | None = None,
    attributes: list[str] | None = None,
    metadata: str | Path | pd.DataFrame | None = None,
    id_column: str | None = None,
    bins: list[str | BinRule] | None = None,
    positive_label=None,
) -> AuditData:
    """Resolve the audit's columns, join metadata on ``id_column``, bin continuous attributes."""
    source = str(predictions) if not isinstance(predictions, pd.DataFrame) else "predictions table"
    table = predictions.copy() if isinstance(predictions, pd.DataFrame) else _read(predictions)
    if metadata is not None:
        meta_source = str(metadata) if not isinstance(metadata, pd.DataFrame) else "metadata table"
        meta = metadata.copy() if isinstance(metadata, pd.DataFrame) else _read(metadata)
        id_column = id_column or _detect(table.columns, ID_CANDIDATES, "id", "--id")
        _check(table, [id_column], source)
        _check(meta, [id_column], meta_source)
        duplicated = meta[id_column].duplicated()
        if duplicated.any():
            raise AuditInputError(
                f"{meta_source}: id column {id_column!r} has {int(duplicated.sum())} duplicated values "
                f"(first: {meta[id_column][duplicated].iloc[0]!r}); one metadata row per id is needed"
            )
        overlap = [c for c in meta.columns if c in table.columns and c != id_column]
        merged = table.merge(meta.drop(columns=overlap), on=id_column, how="left", indicator=True)
        unmatched = int((merged["_merge"] == "left_only").sum())
        if unmatched == len(merged):
            raise AuditInputError(
                f"no id of {source} matches {meta_source} on {id_column!r} "
                f"(e.g. {table[id_column].iloc[0]!r}); check the id column and its type"
            )
        table = merged.drop(columns="_merge")
        if unmatched:
            import warnings

            warnings.warn(f"{unmatched} predictions have no metadata row; their attributes are missing", stacklevel=2)
    elif id_column is None:
        id_column = _detect(table.columns, ID_CANDIDATES, "id", "--id", required=False)

    label = label or _detect(table.columns, LABEL_CANDIDATES, "label", "--label")
    _check(table, [label], source)
    if table[label].isna().any():
        rows = np.flatnonzero(table[label].isna().to_numpy())[:5].tolist()
        raise AuditInputError(f"{source}: label column {label!r} has missing values (rows {rows}); drop or fill them")

    if score_prefix:
        score_columns = [c for c in table.columns if str(c).startswith(score_prefix)]
        if not score_columns:
            raise AuditInputError(f"{source}: no column starts with {score_prefix!r}; available: {list(table.columns)}")
        scores = {str(c)[len(score_prefix):]: c for c in score_columns}
    elif isinstance(score, list | tuple) and len(score) > 1:
        _check(table, score, source)
        scores = {str(c): c for c in score}
    else:
        single = score[0] if isinstance(score, list | tuple) else score
        prediction_only = single is None and prediction is not None
        single = single or _detect(table.columns, SCORE_CANDIDATES, "score", "--score", required=not prediction_only)
        if single is not None:
            _check(table, [single], source)
        scores = {"positive": single} if single is not None else {}

    prediction = prediction or (None if scores else _detect(table.columns, PRED_CANDIDATES, "prediction", "--prediction"))
    if prediction:
        _check(table, [prediction], source)

    classes = _task_classes(table[label], scores, positive_label, label, source)

    rules = [b if isinstance(b, BinRule) else BinRule.parse(b) for b in (bins or [])]
    if attributes is None:
        attributes = [c for c in table.columns if str(c).lower() in ATTRIBUTE_CANDIDATES]
        attributes += [r.column for r in rules if r.column not in attributes]
        if not attributes:
            raise AuditInputError(
                f"no sensitive-attribute columns found; name them with --attribute (e.g. --attribute sex). "
                f"Available columns: {[str(c) for c in table.columns]}"
            )
    _check(table, attributes + [r.column for r in rules], source)
    for rule in rules:
        if rule.column not in attributes:
            attributes.append(rule.column)
        table[rule.column] = rule.apply(table[rule.column])
    for attribute in attributes:
        if attribute not in {r.column for r in rules} and pd.api.types.is_float_dtype(table[attribute]) and table[attribute].nunique() > 20:
            raise AuditInputError(
                f"attribute {attribute!r} looks continuous ({table[attribute].nunique()} distinct values); "
                f"bin it, e.g. --bin '{attribute}=>60', --bin '{attribute}=40,60,80' or --bin '{attribute}=q4'"
            )
    return AuditData(table, label, scores, prediction, list(attributes), id_column, classes, rules, source)


def _read(path) -> pd.DataFrame:
    try:
        return read_table(path)
    except ValueError as exc:
        raise AuditInputError(str(exc)) from None


def _task_classes(labels: pd.Series, scores: dict[str, str], positive_label, label: str, source: str) -> dict:
    values = pd.unique(labels)
    if len(scores) <= 1:
        task = next(iter(scores), "positive")
        if positive_label is not None:
            if positive_label not in set(values.tolist()):
                raise AuditInputError(f"{source}: positive label {positive_label!r} not among {label!r} values {sorted(map(str, values))}")
            return {task: positive_label}
        if set(values.tolist()) <= {0, 1}:
            return {task: 1}
        raise AuditInputError(
            f"{source}: label column {label!r} is not binary 0/1 (values {sorted(map(str, values))[:10]}); "
            f"give --positive-label, or one score column per class with --score-prefix"
        )
    # One-vs-rest per class: the task name (score column suffix) must match a label value.
    as_text = {str(v): v for v in values}
    missing = [task for task in scores if task not in as_text]
    if missing:
        raise AuditInputError(
            f"{source}: score columns for classes {missing} have no matching value in {label!r} "
            f"(values {sorted(as_text)[:10]})"
        )
    return {task: as_text[task] for task in scores}
