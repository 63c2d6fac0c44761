"""``medequity audit``: a fairness report for predictions a team already has.

Data flow: predictions table (+ metadata) → :func:`load_audit_data` → per task and per attribute
(and intersections) :func:`medequity.metrics.group_metrics` with bootstrap CIs and gap tests, ADF
with its CI → :class:`AuditReport` → JSON / CSV / HTML.
"""

from __future__ import annotations

import json
import math
import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pandas as pd

from medequity.audit.inputs import AuditData, load_audit_data
from medequity.metrics import GroupMetricResult, GroupMetricWarning, group_metrics
from medequity.metrics._validation import warn_group
from medequity.metrics.causal import ADF_SUMMARY, adf_with_interval
from medequity.metrics.groups import encode_groups, intersection_name
from medequity.metrics.thresholds import resolve_threshold
from medequity.provenance import provenance
from medequity.utils.io import atomic_write_text


@dataclass
class TaskAudit:
    """One binary task (the positive class, or one class vs rest)."""

    name: str
    positive_label: object
    threshold: dict | None
    results: dict[str, GroupMetricResult]  # attribute (or "a & b") -> result
    adf: dict[str, dict]  # attribute -> {value, ci_low, ci_high}


@dataclass
class AuditReport:
    settings: dict
    tasks: dict[str, TaskAudit]
    data: AuditData | None = None  # the resolved inputs, kept for plots (not serialised)
    warnings: list[str] = field(default_factory=list)

    # -- tables ------------------------------------------------------------------------------------
    def groups_frame(self) -> pd.DataFrame:
        """One row per (task, attribute, group, metric): value, CI, n, n_pos, n_neg, flags."""
        frames = []
        for task in self.tasks.values():
            for result in task.results.values():
                frame = result.to_frame()
                frame.insert(0, "task", task.name)
                frames.append(frame)
        return pd.concat(frames, ignore_index=True)

    def gaps_frame(self) -> pd.DataFrame:
        """One row per (task, attribute, metric, summary): value, CI, p-value (for the gap)."""
        frames = []
        for task in self.tasks.values():
            for result in task.results.values():
                frame = result.summaries()
                frame.insert(0, "task", task.name)
                frames.append(frame)
            for attribute, adf in task.adf.items():
                frames.append(pd.DataFrame([{"task": task.name, "attribute": attribute, "metric": "adf",
                                             "summary": ADF_SUMMARY, "value": adf["value"],
                                             "ci_low": adf["ci_low"], "ci_high": adf["ci_high"], "p_value": np.nan}]))
        return pd.concat(frames, ignore_index=True)

    def headline(self) -> pd.DataFrame:
        """The short table a terminal shows: per task × attribute, AUC gap, worst group, ES-AUC, ADF."""
        rows = []
        for task in self.tasks.values():
            for attribute, result in task.results.items():
                row = {"task": task.name, "attribute": attribute, "groups": len(result.groups)}
                summaries = result.summaries().set_index(["metric", "summary"])
                for metric, summary, label in (("auc", None, "AUC"), ("auc", "worst", "worst AUC"),
                                               ("auc", "gap", "AUC gap"), ("auc", "es_std", "ES-AUC"),
                                               ("tpr", "gap", "TPR gap"), ("fpr", "gap", "FPR gap"),
                                               ("selection_rate", "gap", "DP")):
                    if metric not in result.metrics:
                        continue
                    if summary is None:
                        low, high = result._interval(metric)
                        row[label] = (result.values[metric][0], low[0], high[0], np.nan)
                    else:
                        s = summaries.loc[(metric, summary)]
                        row[label] = (s.value, s.ci_low, s.ci_high, s.p_value)
                if attribute in task.adf:
                    a = task.adf[attribute]
                    row["ADF"] = (a["value"], a["ci_low"], a["ci_high"], np.nan)
                rows.append(row)
        return pd.DataFrame(rows)

    # -- serialisation -----------------------------------------------------------------------------
    def to_dict(self) -> dict:
        tasks = {}
        for task in self.tasks.values():
            tasks[task.name] = {
                "positive_label": _jsonable(task.positive_label),
                "threshold": task.threshold,
                "attributes": {
                    attribute: {
                        "groups": list(result.groups),
                        "settings": result.settings(),
                        "counts": _records(result.counts.reset_index(names="group")),
                        "values": _records(result.to_frame()),
                        "summaries": _records(result.summaries()),
                        "warnings": result.warnings,
                    }
                    for attribute, result in task.results.items()
                },
                "adf": task.adf,
            }
        return _clean({"settings": self.settings, "tasks": tasks, "warnings": self.warnings})

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, allow_nan=False)

    def save(self, out_dir: str | Path, *, html: bool = True) -> dict[str, Path]:
        """Write report.json, groups.csv, gaps.csv (and report.html) atomically into ``out_dir``."""
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        paths = {
            "json": atomic_write_text(out / "report.json", self.to_json()),
            "groups": atomic_write_text(out / "groups.csv", self.groups_frame().to_csv(index=False)),
            "gaps": atomic_write_text(out / "gaps.csv", self.gaps_frame().to_csv(index=False)),
        }
        if html:
            from medequity.report.audit_html import render_audit_html

            paths["html"] = atomic_write_text(out / "report.html", render_audit_html(self))
        return paths


def _jsonable(value):
    if isinstance(value, np.generic):
        return value.item()
    return value


def _records(frame: pd.DataFrame) -> list[dict]:
    return [{k: _jsonable(v) for k, v in row.items()} for row in frame.to_dict(orient="records")]


def _clean(obj):
    """NaN/inf → None (valid JSON), NumPy scalars → Python."""
    if isinstance(obj, dict):
        return {str(k): _clean(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_clean(v) for v in obj]
    if isinstance(obj, np.generic):
        obj = obj.item()
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if obj is pd.NA:
        return None
    return obj


def audit(
    predictions,
    *,
    label: str | None = None,
    score=None,
    score_prefix: str | None = None,
    prediction: str | None = None,
    attributes: list[str] | None = None,
    intersections: list[tuple[str, ...]] | bool = False,
    metadata=None,
    id_column: str | None = None,
    bins: list | None = None,
    positive_label=None,
    threshold="0.5",
    validation=None,
    metrics=None,
    n_boot: int = 1000,
    n_permutations: int = 1000,
    ci: float = 0.95,
    min_group_size: int = 30,
    missing: str = "drop",
    ece_bins: str = "unit",
    random_state: int = 0,
    progress=None,
    precomputed: Mapping[str, GroupMetricResult] | None = None,
) -> AuditReport:
    """Audit a predictions table: per-group metrics with CIs, gaps with tests, ADF, intersections.

    ``prediction``: a hard-prediction column; with a score column too, threshold metrics (TPR,
    FPR, DP, EO, ADF, …) use it and ``threshold`` is not applied — the audited model's own
    decisions, e.g. per-group thresholds — while AUC and calibration use the scores.
    ``threshold``: a number, ``"best_f1"`` or ``"youden"``; with ``validation`` (a table with the
    same columns) rules are fitted there and applied to the audited set (the honest choice).
    ``intersections=True`` adds every pair of attributes; or give the tuples to cross.
    ``progress(done, total, description)`` is called after each attribute (the CLI draws a bar).
    ``precomputed``: attribute -> :func:`group_metrics` result already computed on exactly these
    labels, scores and hard predictions with these settings (``medequity train`` evaluated its test
    predictions while training); used as is, so the bootstrap and permutation tests are not run
    twice. Attributes it lacks are computed here. Binary (single-task) audits only.
    """
    data = load_audit_data(
        predictions, label=label, score=score, score_prefix=score_prefix, prediction=prediction,
        attributes=attributes, metadata=metadata, id_column=id_column, bins=bins, positive_label=positive_label,
    )
    val_data = None
    if validation is not None:
        val_data = load_audit_data(
            validation, label=data.label,
            score=list(data.scores.values()) if len(data.scores) > 1 else next(iter(data.scores.values()), None),
            prediction=data.prediction, attributes=list(data.attributes), bins=data.bins, positive_label=positive_label,
            metadata=metadata, id_column=id_column,
        )
    threshold = _parse_threshold(threshold)
    precomputed = dict(precomputed or {})
    if precomputed and len(data.classes) > 1:
        raise ValueError("precomputed results are for a binary audit (one task)")
    for name, result in precomputed.items():
        if (result.n_boot, result.ci, result.random_state) != (n_boot, ci, random_state):
            raise ValueError(f"precomputed result of {name!r} has n_boot={result.n_boot}, ci={result.ci}, "
                             f"random_state={result.random_state}; this audit asks for {n_boot}, {ci}, {random_state}")
    frame = data.frame
    crosses = _intersections(data.attributes, intersections)
    caught_messages: list[str] = []
    tasks: dict[str, TaskAudit] = {}
    total_steps = len(data.classes) * (len(data.attributes) + len(crosses))
    done = 0
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", GroupMetricWarning)
        for task_name, positive in data.classes.items():
            y = (frame[data.label] == positive).to_numpy().astype(np.int8)
            score_column = data.scores.get(task_name)
            s = frame[score_column].to_numpy(dtype=np.float64) if score_column is not None else None
            # An explicit prediction column gives the hard decisions (e.g. a post-processing method's
            # per-group ones); scores still give AUC and calibration. One-vs-rest tasks threshold.
            if data.prediction is not None and (score_column is None or len(data.classes) == 1):
                pred = frame[data.prediction].to_numpy()
                resolved = None
            else:
                kwargs = {}
                if val_data is not None:
                    kwargs = {"y_val": (val_data.frame[data.label] == positive).to_numpy().astype(np.int8),
                              "score_val": val_data.frame[val_data.scores[task_name]].to_numpy(dtype=np.float64)}
                resolved = resolve_threshold(threshold, y, s, **kwargs)
                pred = resolved.predict(s)
            results = {}
            adf_values = {}
            for attribute_set in [(a,) for a in data.attributes] + crosses:
                features = frame[list(attribute_set)]
                name = intersection_name(attribute_set)
                if name in precomputed:
                    result = precomputed[name]
                    for message in result.warnings:  # reported as if computed here, in the same order
                        warn_group(message)
                else:
                    try:
                        result = group_metrics(
                            y, s, y_pred=pred, sensitive_features=features, metrics=metrics, threshold=resolved,
                            n_boot=n_boot, n_permutations=n_permutations, ci=ci, min_group_size=min_group_size,
                            missing=missing, ece_bins=ece_bins, random_state=random_state,
                        )
                    except ValueError as exc:
                        caught_messages.append(f"{task_name} / {name}: skipped — {exc}")
                        done += 1
                        continue
                if resolved is not None:
                    result = replace(result, threshold=resolved)  # a copy: a precomputed result stays as given
                results[name] = result
                groups = encode_groups(features, len(y), missing=missing, require_two=False)
                adf_values[name] = adf_with_interval(y, np.asarray(pred, dtype=np.int64), groups, n_boot=n_boot, ci=ci,
                                                     random_state=random_state)
                done += 1
                if progress is not None:
                    progress(done, total_steps, f"{task_name} / {name}")
            tasks[task_name] = TaskAudit(task_name, positive, None if resolved is None else resolved.to_dict(),
                                         results, adf_values)
    messages = list(dict.fromkeys([str(w.message) for w in caught] + caught_messages))
    settings = {
        "source": data.source,
        "n_samples": int(len(frame)),
        "label": data.label,
        "scores": data.scores,
        "prediction": data.prediction,
        "attributes": data.attributes,
        "intersections": [intersection_name(c) for c in crosses],
        "binning": [r.describe() for r in data.bins],
        "threshold_setting": str(threshold),
        "validation": None if validation is None else (str(validation) if not isinstance(validation, pd.DataFrame) else "validation table"),
        "n_boot": n_boot,
        "n_permutations": n_permutations,
        "ci": ci,
        "bootstrap": "percentile, stratified by group x label",
        "gap_test": "permutation test of max-min gap = 0 (group labels shuffled within label for label-conditional metrics)",
        "min_group_size": min_group_size,
        "missing_attribute_values": missing,
        "ece_bins": ece_bins,
        "random_state": random_state,
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "provenance": provenance(),
    }
    return AuditReport(settings=settings, tasks=tasks, data=data, warnings=messages)


def _parse_threshold(threshold):
    if isinstance(threshold, str):
        try:
            return float(threshold)
        except ValueError:
            return threshold
    return threshold


def _intersections(attributes: list[str], intersections) -> list[tuple[str, ...]]:
    if intersections is True:
        return [(a, b) for i, a in enumerate(attributes) for b in attributes[i + 1 :]]
    if not intersections:
        return []
    crosses = []
    for cross in intersections:
        cross = tuple(cross.split("x") if isinstance(cross, str) else cross)
        cross = tuple(c.strip() for c in cross)
        unknown = [c for c in cross if c not in attributes]
        if unknown:
            raise ValueError(f"intersection {cross} names attributes {unknown} that are not audited ({attributes})")
        crosses.append(cross)
    return crosses
