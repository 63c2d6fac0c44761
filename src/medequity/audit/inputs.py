"""Reading a predictions table for an audit: column resolution, metadata join, binning, checks.

A clinical-AI team has a table of predictions (CSV or Parquet): a label, a score (or one score
column per class), group columns, maybe an id to join a separate metadata table. Column names are
given or detected; a wrong name lists the columns that exist. Continuous attributes such as age are
binned with a threshold (``age=>60``, ``age=>=60``), cut points (``age=40,60,80``) or quantiles
(``age=q4``).

Multi-label predictions (the usual output of a chest X-ray model: one label and one score column
per finding) are audited as one task per finding. The pairs are given (``Cardiomegaly=score_Cardio``)
or found by name: a score column ``score_F``, ``F_score``, ``prob_F``, ``F_prob``, ``p_F`` or
``F_probability`` belongs to the label column ``F``, ``F_label`` or ``label_F``.

Every input is checked before any metric is computed, and each problem is one
:class:`AuditInputError` naming the column, row or option and the fix: empty tables, NaN/inf
scores, scores outside [0, 1] given as probabilities, duplicated ids, nested (list/dict) values
used as groups, ``--bin`` on a text column, bin rules with NaN or repeated cut points.
Attribute values that say the group is unknown ("Unknown", "Declines to state", "Patient refused",
"Not reported", empty text; :func:`medequity.data.attributes` coding) are missing by default —
excluded from that attribute's groups and counted — not a group of their own.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

# The one coding of "this value says the group is unknown" (CheXpert's "Declines to State", …).
from medequity.data.attributes import _is_unknown_text, age_groups, cut_groups, quantile_groups
from medequity.data.table import read_table, require_columns

LABEL_CANDIDATES = ("label", "y_true", "target", "y", "ground_truth", "diagnosis")
SCORE_CANDIDATES = ("score", "y_score", "y_prob", "prob", "probability", "pred_prob", "prediction_score")
PRED_CANDIDATES = ("y_pred", "pred", "prediction")
ID_CANDIDATES = ("id", "sample_id", "image_id", "study_id", "subject_id", "patient_id")
ATTRIBUTE_CANDIDATES = ("sex", "gender", "age", "age_group", "race", "ethnicity", "skin_tone", "fitzpatrick",
                        "skin_type", "language", "marital_status", "bmi", "site", "scanner", "insurance")
# Multi-label pairing rule: score-column spellings of a finding F, and label-column spellings.
SCORE_AFFIXES = (("score_", ""), ("", "_score"), ("prob_", ""), ("", "_prob"), ("p_", ""), ("", "_probability"))
LABEL_AFFIXES = (("", ""), ("", "_label"), ("label_", ""))
# Ids that name a patient or a study may repeat (several images each); other ids name one prediction.
_GROUPED_ID = re.compile(r"patient|subject|study", re.IGNORECASE)
SCORE_TYPES = ("auto", "probability", "logit")


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
        if not column:
            raise AuditInputError(f"bin rule {text!r} names no column; write e.g. 'age=>60'")
        try:
            if rule.lower().startswith("q"):
                quantiles = int(rule[1:])
                if quantiles < 2:
                    raise AuditInputError(f"bin rule {text!r}: quantile bins need q2 or more, e.g. '{column}=q4'")
                return cls(column, "quantiles", quantiles=quantiles)
            side = ">=" if rule.startswith(">=") else ">"
            numbers = tuple(float(x) for x in rule.lstrip(">=").split(",") if x.strip())
        except ValueError:
            raise AuditInputError(f"bin rule {text!r}: cannot read {rule!r} as a threshold, cut points or q<N>") from None
        if not numbers:
            raise AuditInputError(f"bin rule {text!r} gives no number; write e.g. '{column}=>60' or '{column}=40,60,80'")
        if not all(math.isfinite(x) for x in numbers):
            raise AuditInputError(f"bin rule {text!r}: thresholds and cut points must be finite numbers, e.g. '{column}=>60'")
        if rule.startswith(">") and len(numbers) > 1:
            raise AuditInputError(f"bin rule {text!r}: a '>' rule takes one threshold; cut points are written '{column}=40,60,80'")
        if len(set(numbers)) < len(numbers):
            raise AuditInputError(f"bin rule {text!r} repeats a cut point; give each once, e.g. '{column}=40,60,80'")
        if len(numbers) == 1:
            return cls(column, "threshold", threshold=numbers[0], side=side)
        return cls(column, "cuts", cuts=numbers)

    def apply(self, values: pd.Series, source: str = "predictions table") -> pd.Series:
        """Group labels of ``values``; missing stays missing, text that is not a number is an error."""
        _require_numeric(values, self, source)
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
    """The resolved inputs: a tidy frame with label(s), score(s)/prediction and group columns.

    One task per entry of ``classes``: a binary task ``"positive"``, one class vs rest of a
    multi-class label (``scores`` per class, one ``label``), or one finding of a multi-label table
    (``labels`` per finding).
    """

    frame: pd.DataFrame
    label: str  # the label column (the first finding's in a multi-label table)
    scores: dict[str, str]  # task name -> score column ("positive" for binary)
    prediction: str | None
    attributes: list[str]
    id_column: str | None
    classes: dict[str, object]  # task name -> label value that is positive for that task
    bins: list[BinRule]
    source: str
    labels: dict[str, str] = field(default_factory=dict)  # task -> label column; empty: ``label`` for every task
    score_type: str = "probability"  # "probability", "logit" (a sigmoid was applied) or "real" (ranks only)
    score_range: tuple[float, float] | None = None  # of the scores as read (before a sigmoid)
    excluded_unknown: dict[str, dict[str, int]] = field(default_factory=dict)  # attribute -> {value: rows}

    def label_column(self, task: str) -> str:
        return self.labels.get(task, self.label)


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
    label: str | Sequence[str] | None = None,
    score: str | Sequence[str] | None = None,
    score_prefix: str | None = None,
    prediction: str | None = None,
    attributes: list[str] | None = None,
    metadata: str | Path | pd.DataFrame | None = None,
    id_column: str | None = None,
    bins: list[str | BinRule] | None = None,
    positive_label=None,
    pairs: Mapping[str, str] | Sequence[str] | None = None,
    score_type: str = "auto",
    keep_unknown: bool = False,
) -> AuditData:
    """Resolve the audit's columns, join metadata on ``id_column``, bin continuous attributes.

    ``label`` repeated (a list) or ``pairs`` (``{label: score}`` or ``["label=score", …]``) make a
    multi-label audit, one task per finding; with neither, and no single label column, the pairing
    rule of the module docstring finds the findings. ``score_type``: ``"probability"`` (scores must
    lie in [0, 1]), ``"logit"`` (real-valued logits; a sigmoid turns them into probabilities) or
    ``"auto"`` (probabilities when every score lies in [0, 1], else real-valued scores such as
    margins: valid for AUC and thresholds, not for calibration). ``keep_unknown=True`` keeps
    "Unknown"-like attribute values as groups.
    """
    if score_type not in SCORE_TYPES:
        raise AuditInputError(f"scores type {score_type!r} is not one of {list(SCORE_TYPES)} (--scores)")
    source = str(predictions) if not isinstance(predictions, pd.DataFrame) else "predictions table"
    table = predictions.copy() if isinstance(predictions, pd.DataFrame) else _read(predictions)
    if table.empty:
        raise AuditInputError(f"{source} has no rows (only a header?); audit a table with predictions in it")
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
        _check_unique_ids(table, id_column, source)
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
    else:
        if id_column is None:
            id_column = _detect(table.columns, ID_CANDIDATES, "id", "--id", required=False)
        elif id_column not in table.columns:
            _check(table, [id_column], source)
        if id_column is not None:
            _check_unique_ids(table, id_column, source)

    labels_given = [label] if isinstance(label, str) else list(label or [])
    if len(set(labels_given)) < len(labels_given):
        twice = next(x for x in labels_given if labels_given.count(x) > 1)
        raise AuditInputError(f"label column {twice!r} is given twice (--label); name each finding once")
    score_list = [score] if isinstance(score, str) else list(score or [])
    task_labels: dict[str, str] = {}
    if pairs or len(labels_given) > 1 or (not labels_given and not score_list and not score_prefix
                                          and _detect(table.columns, LABEL_CANDIDATES, "label", "--label", required=False) is None
                                          and _pair_by_rule(table.columns, None)):
        if score_prefix:
            raise AuditInputError("--score-prefix is for one multi-class label column; a multi-label table pairs "
                                  "label and score columns (--task LABEL=SCORE, or the naming rule)")
        if prediction:
            raise AuditInputError("--prediction is one column of hard decisions; a multi-label audit thresholds each "
                                  "finding's scores (--threshold) — leave --prediction out")
        task_labels, scores = _resolve_tasks(table, labels_given, score_list, pairs, source)
        label = next(iter(task_labels.values()))
    else:
        label = labels_given[0] if labels_given else _detect(table.columns, LABEL_CANDIDATES, "label", "--label")
        _check(table, [label], source)
        if score_prefix:
            score_columns = [c for c in table.columns if str(c).startswith(score_prefix)]
            if not score_columns:
                raise AuditInputError(f"{source}: no column starts with {score_prefix!r}; available: {list(table.columns)}")
            scores = {str(c)[len(score_prefix):]: c for c in score_columns}
        elif len(score_list) > 1:
            _check(table, score_list, source)
            scores = {str(c): c for c in score_list}
        else:
            single = score_list[0] if score_list else None
            prediction_only = single is None and prediction is not None
            single = single or _detect(table.columns, SCORE_CANDIDATES, "score", "--score", required=not prediction_only)
            if single is not None:
                _check(table, [single], source)
            scores = {"positive": single} if single is not None else {}
    for column in dict.fromkeys([label, *task_labels.values()]):
        if table[column].isna().any():
            rows = np.flatnonzero(table[column].isna().to_numpy())[:5].tolist()
            raise AuditInputError(f"{source}: label column {column!r} has missing values (rows {rows}); drop or fill them")

    prediction = prediction or (None if scores else _detect(table.columns, PRED_CANDIDATES, "prediction", "--prediction"))
    if prediction:
        _check(table, [prediction], source)
        _check_binary(table[prediction], prediction, source)

    if task_labels:
        classes = {task: _binary_positive(table[column], positive_label, column, source) for task, column in task_labels.items()}
    else:
        classes = _task_classes(table[label], scores, positive_label, label, source)
    resolved_type, score_range = _resolve_scores(table, list(scores.values()), score_type, source)

    rules = [b if isinstance(b, BinRule) else BinRule.parse(b) for b in (bins or [])]
    if attributes is None:
        attributes = [c for c in table.columns if str(c).lower() in ATTRIBUTE_CANDIDATES]
        attributes += [r.column for r in rules if r.column not in attributes]
        if not attributes:
            raise AuditInputError(
                f"no sensitive-attribute columns found; name them with --attribute (e.g. --attribute sex). "
                f"Available columns: {[str(c) for c in table.columns]}"
            )
    else:
        attributes = list(attributes)
        twice = [a for a in dict.fromkeys(attributes) if attributes.count(a) > 1]
        if twice:
            raise AuditInputError(f"attribute {twice[0]!r} is given twice (--attribute); name each attribute once")
    binned = [r.column for r in rules]
    if len(set(binned)) < len(binned):
        twice = next(c for c in binned if binned.count(c) > 1)
        raise AuditInputError(f"column {twice!r} has two --bin rules; give one rule per column")
    _check(table, attributes + binned, source)
    for rule in rules:
        if rule.column not in attributes:
            attributes.append(rule.column)
    excluded: dict[str, dict[str, int]] = {}
    for attribute in attributes:
        _check_flat(table[attribute], attribute, source)
        if not keep_unknown:
            table[attribute], counts = _unknown_to_missing(table[attribute])
            if counts:
                excluded[attribute] = counts
    for rule in rules:
        table[rule.column] = rule.apply(table[rule.column], source)
    for attribute in attributes:
        if attribute not in binned and pd.api.types.is_float_dtype(table[attribute]) and table[attribute].nunique() > 20:
            raise AuditInputError(
                f"attribute {attribute!r} looks continuous ({table[attribute].nunique()} distinct values); "
                f"bin it, e.g. --bin '{attribute}=>60', --bin '{attribute}=40,60,80' or --bin '{attribute}=q4'"
            )
    return AuditData(table, label, scores, prediction, list(attributes), id_column, classes, rules, source,
                     labels=task_labels, score_type=resolved_type, score_range=score_range, excluded_unknown=excluded)


def finding_name(label_column: str) -> str:
    """The finding a label column names: ``Cardiomegaly``, ``Cardiomegaly_label`` and
    ``label_Cardiomegaly`` all name ``Cardiomegaly``."""
    text = str(label_column)
    for prefix, suffix in LABEL_AFFIXES[1:]:
        stripped = _strip_affixes(text, prefix, suffix)
        if stripped is not None:
            return stripped
    return text


def _strip_affixes(text: str, prefix: str, suffix: str) -> str | None:
    """``text`` without ``prefix``/``suffix`` (matched case-insensitively), or None if it lacks them."""
    lower = text.lower()
    if lower.startswith(prefix) and lower.endswith(suffix) and len(text) > len(prefix) + len(suffix):
        return text[len(prefix): len(text) - len(suffix)]
    return None


def _pair_by_rule(columns, label_column: str | None) -> dict[str, str]:
    """Label column -> score column by the naming rule (module docstring): the score column of
    ``label_column``, or every pair among ``columns`` when it is None."""
    by_name = {str(c).lower(): c for c in columns}

    def score_of(label: str):
        finding = finding_name(label)
        found = [by_name[name] for p, s in SCORE_AFFIXES if (name := f"{p}{finding}{s}".lower()) in by_name]
        return found[0] if found and found[0] != label else None

    if label_column is not None:
        score = score_of(label_column)
        return {label_column: score} if score is not None else {}
    pairs: dict[str, str] = {}
    for column in columns:
        for prefix, suffix in SCORE_AFFIXES:
            finding = _strip_affixes(str(column), prefix, suffix)
            labels = [] if finding is None else [
                by_name[name] for p, s in LABEL_AFFIXES if (name := f"{p}{finding}{s}".lower()) in by_name]
            if labels and labels[0] != column and labels[0] not in pairs and score_of(labels[0]) == column:
                pairs[labels[0]] = column
                break
    return pairs


def _resolve_tasks(table: pd.DataFrame, labels: list[str], scores: list[str], pairs, source: str):
    """task (finding) -> label column, task -> score column, for a multi-label table."""
    if pairs:
        items = list(pairs.items()) if isinstance(pairs, Mapping) else [_split_pair(p) for p in pairs]
        if labels or scores:
            raise AuditInputError("give the findings either as --task LABEL=SCORE pairs or with --label/--score, not both")
    elif scores:
        if len(scores) != len(labels):
            raise AuditInputError(f"{len(labels)} --label columns but {len(scores)} --score columns; give one score per "
                                  "label in the same order, or leave --score out to pair them by name")
        items = list(zip(labels, scores))
    elif labels:
        items = []
        for column in labels:
            _check(table, [column], source)
            match = _pair_by_rule(table.columns, column)
            if column not in match:
                tried = [f"{p}{finding_name(column)}{s}" for p, s in SCORE_AFFIXES]
                raise AuditInputError(f"{source}: no score column for label {column!r} (looked for {tried}); "
                                      f"pair it explicitly with --task {column}=SCORE_COLUMN")
            items.append((column, match[column]))
    else:
        items = list(_pair_by_rule(table.columns, None).items())
    label_columns = [label for label, _ in items]
    twice = [c for c in dict.fromkeys(label_columns) if label_columns.count(c) > 1]
    if twice:
        raise AuditInputError(f"label column {twice[0]!r} is paired twice; give each finding one score column")
    _check(table, label_columns + [score for _, score in items], source)
    task_labels, task_scores = {}, {}
    for label, score in items:
        name = finding_name(label)
        if name in task_labels:
            raise AuditInputError(f"label columns {task_labels[name]!r} and {label!r} both name the finding {name!r}")
        task_labels[name], task_scores[name] = label, score
    return task_labels, task_scores


def _split_pair(text: str) -> tuple[str, str]:
    label, sep, score = str(text).partition("=")
    if not sep or not label.strip() or not score.strip():
        raise AuditInputError(f"task {text!r} must name a label and a score column, e.g. --task Cardiomegaly=score_Cardiomegaly")
    return label.strip(), score.strip()


def _check_unique_ids(table: pd.DataFrame, id_column: str, source: str) -> None:
    """One prediction per id, unless the id names a patient or study (several images each)."""
    if _GROUPED_ID.search(str(id_column)):
        return
    duplicated = table[id_column].duplicated(keep=False)
    if duplicated.any():
        rows = np.flatnonzero(duplicated.to_numpy())
        first = table[id_column].iloc[rows[0]]
        first = first.item() if isinstance(first, np.generic) else first
        same = np.flatnonzero((table[id_column] == first).to_numpy())[:5].tolist()
        raise AuditInputError(
            f"{source}: id column {id_column!r} has {int(table[id_column].duplicated().sum())} duplicated values "
            f"(first: {first!r} at rows {same}); each prediction needs its own id — remove the duplicated rows, "
            f"or name a patient-level id column (patient_id, subject_id, study_id) if rows are several images per patient"
        )


def _check_binary(values: pd.Series, column: str, source: str) -> None:
    known = pd.unique(values.dropna())
    if values.isna().any() or not set(known.tolist()) <= {0, 1}:
        shown = sorted(map(str, known))[:10]
        raise AuditInputError(f"{source}: prediction column {column!r} must hold 0/1 decisions without missing values "
                              f"(values {shown}); give the scores with --score and a --threshold instead")


def _binary_positive(labels: pd.Series, positive_label, column: str, source: str):
    values = set(pd.unique(labels).tolist())
    if positive_label is not None:
        if positive_label not in values:
            raise AuditInputError(f"{source}: positive label {positive_label!r} not among {column!r} values {sorted(map(str, values))}")
        return positive_label
    if values <= {0, 1}:
        return 1
    raise AuditInputError(f"{source}: label column {column!r} is not binary 0/1 (values {sorted(map(str, values))[:10]}); "
                          f"give --positive-label, or recode it to 0/1")


def _resolve_scores(table: pd.DataFrame, columns: list[str], score_type: str, source: str):
    """Check the score columns (numeric, finite) and resolve their type; logits become probabilities."""
    if not columns:
        return "probability", None
    low, high = math.inf, -math.inf
    for column in columns:
        values = pd.to_numeric(table[column], errors="coerce")
        text = table[column].notna() & values.isna()
        if text.any():
            row = int(np.flatnonzero(text.to_numpy())[0])
            raise AuditInputError(f"{source}: score column {column!r} is not numeric (row {row}: {table[column].iloc[row]!r}); "
                                  "give the model's scores as numbers")
        array = values.to_numpy(dtype=np.float64)
        bad = ~np.isfinite(array)
        if bad.any():
            rows = np.flatnonzero(bad)
            raise AuditInputError(f"{source}: score column {column!r} has {rows.size} NaN/inf values (rows "
                                  f"{rows[:5].tolist()}); drop those rows or fill them with the model's scores")
        table[column] = array
        low, high = min(low, float(array.min())), max(high, float(array.max()))
    in_unit = 0.0 <= low and high <= 1.0
    if score_type == "probability" and not in_unit:
        raise AuditInputError(f"{source}: scores lie in [{low:.4g}, {high:.4g}], not [0, 1], so they are not probabilities; "
                              "pass --scores logit if they are logits (a sigmoid is applied), or --scores auto to audit "
                              "ranks and thresholds without calibration")
    if score_type == "logit":
        for column in columns:
            table[column] = 1.0 / (1.0 + np.exp(-table[column].to_numpy(dtype=np.float64)))
        return "logit", (low, high)
    return ("probability" if in_unit else "real"), (low, high)


def _check_flat(values: pd.Series, column: str, source: str) -> None:
    """A group column holds one plain value per row, not lists/dicts (a nested Parquet column)."""
    if values.dtype != object:
        return
    sample = values.dropna().head(1000)
    nested = sample.map(lambda v: pd.api.types.is_list_like(v) and not isinstance(v, str | bytes))
    if nested.any():
        example = sample[nested].iloc[0]
        raise AuditInputError(f"{source}: column {column!r} holds nested values ({type(example).__name__}, e.g. "
                              f"{str(example)[:40]}); an attribute needs one plain value per row — flatten it first "
                              f"(e.g. pandas.json_normalize) and name the flat column with --attribute")


def _unknown_to_missing(values: pd.Series) -> tuple[pd.Series, dict[str, int]]:
    """Text values that say the group is unknown → missing, with a count per value."""
    if pd.api.types.is_numeric_dtype(values) or pd.api.types.is_bool_dtype(values):
        return values, {}
    counts = values.value_counts(dropna=True)
    counts = counts[counts > 0]  # a categorical lists unused categories too
    unknown = [v for v in counts.index if isinstance(v, str) and _is_unknown_text(v)]
    if not unknown:
        return values, {}
    return values.mask(values.isin(unknown)), {str(v): int(counts[v]) for v in unknown}


def _require_numeric(values: pd.Series, rule: BinRule, source: str) -> None:
    if pd.api.types.is_numeric_dtype(values) and not pd.api.types.is_bool_dtype(values):
        return
    text = values.astype("string").str.strip().str.replace(r"[Yy]$", "", regex=True)  # NIH writes "058Y"
    numbers = pd.to_numeric(text, errors="coerce")
    bad = values.notna() & numbers.isna()
    if bad.any():
        row = int(np.flatnonzero(bad.to_numpy())[0])
        raise AuditInputError(f"{source}: --bin '{rule.column}=…' needs a numeric column, but {rule.column!r} holds text "
                              f"(row {row}: {values.iloc[row]!r}); audit it as groups without --bin")


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
