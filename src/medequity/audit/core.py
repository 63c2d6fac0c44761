"""``medequity audit``: a fairness report for predictions a team already has.

Data flow: predictions table (+ metadata) → :func:`load_audit_data` → per task, every attribute
(and intersection) on one set of bootstrap replicates
(:func:`~medequity.metrics.frame.group_metrics_shared`): per-group metrics with CIs, contrasts and
gap tests, ADF with its CI → :class:`AuditReport` → JSON / CSV / HTML.
"""

from __future__ import annotations

import json
import math
import re
import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pandas as pd

from medequity.audit.inputs import AuditData, AuditInputError, load_audit_data
from medequity.metrics import DEFAULT_METRICS, METRICS, GroupMetricResult, GroupMetricWarning
from medequity.metrics._validation import warn_group
from medequity.metrics.causal import ADF_SUMMARY
from medequity.metrics.frame import SHARED_BOOTSTRAP, group_metrics_shared
from medequity.metrics.groups import intersection_name
from medequity.metrics.thresholds import Threshold, resolve_threshold
from medequity.provenance import provenance
from medequity.report.findings import attribute_findings, findings_frame, overview
from medequity.utils.io import atomic_directory

# The files an audit report folder holds (classification and segmentation); an earlier report's
# folder holding only these is replaced as a whole by a new report (see :meth:`AuditReport.save`).
AUDIT_REPORT_FILES = frozenset({"report.json", "report.html", "groups.csv", "gaps.csv", "contrasts.csv",
                                "findings.csv", "samples.csv"})
GAP_TEST = ("each group vs all audited samples (difference of the metric), bootstrap percentile p-values adjusted "
            "over the attribute's groups by single-step min-P (Westfall & Young); simultaneous intervals agree with "
            "the adjusted p-values; the gap's p-value is the omnibus test (the smallest adjusted p-value)")
PROBABILITY_METRICS = ("ece", "bce")  # calibration: defined on probabilities only


@dataclass
class TaskAudit:
    """One binary task (the positive class, or one class vs rest)."""

    name: str
    positive_label: object
    threshold: dict | None
    results: dict[str, GroupMetricResult]  # attribute (or "a & b") -> result
    adf: dict[str, dict]  # attribute -> {value, ci_low, ci_high}
    label_column: str | None = None
    score_column: str | None = None
    n_positive: int | None = None


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
        if not frames:
            return pd.DataFrame(columns=["task", "attribute", "group", "metric", "value", "ci_low", "ci_high",
                                         "n", "n_pos", "n_neg", "small_group"])
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
    def contrasts_frame(self) -> pd.DataFrame:
        """One row per (task, attribute, metric, group): group − all samples, simultaneous interval, adjusted p."""
        frames = []
        for task in self.tasks.values():
            for result in task.results.values():
                frame = result.contrasts()
                frame.insert(0, "task", task.name)
                frames.append(frame)
        return pd.concat(frames, ignore_index=True)

    def findings(self) -> pd.DataFrame:
        """The finding first: per task × attribute × headline metric (AUC, TPR, FPR), the group on the
        worse side of all samples with its value, its difference's interval and adjusted p-value, the
        gap as a size, and the sentence the reports print (:mod:`medequity.audit.findings`)."""
        rows = [row for task in self.tasks.values() for result in task.results.values()
                for row in attribute_findings(result, task=task.name)]
        return findings_frame(rows)

    def overview(self) -> pd.DataFrame:
        """Across tasks (findings of a multi-label table): each task's largest significant difference."""
        return overview(self.findings())

    def to_dict(self) -> dict:
        tasks = {}
        for task in self.tasks.values():
            tasks[task.name] = {
                "label_column": task.label_column,
                "score_column": task.score_column,
                "n_positive": task.n_positive,
                "positive_label": _jsonable(task.positive_label),
                "threshold": task.threshold,
                "attributes": {
                    attribute: {
                        "groups": list(result.groups),
                        "settings": result.settings(),
                        "counts": _records(result.counts.reset_index(names="group")),
                        "values": _records(result.to_frame()),
                        "summaries": _records(result.summaries()),
                        "contrasts": _records(result.contrasts()),
                        "warnings": result.warnings,
                    }
                    for attribute, result in task.results.items()
                },
                "adf": task.adf,
            }
        findings = self.findings()
        return _clean({"findings": _records(findings), "overview": _records(overview(findings)),
                       "settings": self.settings, "tasks": tasks, "warnings": self.warnings})

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, allow_nan=False)

    def save(self, out_dir: str | Path, *, html: bool = True) -> dict[str, Path]:
        """Write report.json, groups.csv, gaps.csv (and report.html) into ``out_dir``: all or none.

        Everything is rendered first and written into a temporary sibling folder that then replaces
        ``out_dir`` (:func:`~medequity.utils.io.atomic_directory`): a failure leaves an earlier
        report there untouched, and a new report never mixes with an earlier one's files.
        """
        contents = {"json": ("report.json", self.to_json()),
                    "groups": ("groups.csv", self.groups_frame().to_csv(index=False)),
                    "gaps": ("gaps.csv", self.gaps_frame().to_csv(index=False)),
                    "contrasts": ("contrasts.csv", self.contrasts_frame().to_csv(index=False)),
                    "findings": ("findings.csv", self.findings().to_csv(index=False))}
        if html:
            from medequity.report.audit_html import render_audit_html

            contents["html"] = ("report.html", render_audit_html(self))
        return write_report_files(out_dir, contents)


def write_report_files(out_dir: str | Path, contents: Mapping[str, tuple[str, str]]) -> dict[str, Path]:
    """Write ``{kind: (file name, text)}`` as one report folder (all files or none); the paths by kind."""
    out = Path(out_dir)
    with atomic_directory(out, replaceable=AUDIT_REPORT_FILES) as scratch:
        for name, text in contents.values():
            (scratch / name).write_text(text, encoding="utf-8")
    return {kind: out / name for kind, (name, _) in contents.items()}


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
    label: str | list[str] | None = None,
    score=None,
    score_prefix: str | None = None,
    prediction: str | None = None,
    attributes: list[str] | None = None,
    intersections: list[tuple[str, ...]] | bool = False,
    metadata=None,
    id_column: str | None = None,
    bins: list | None = None,
    positive_label=None,
    pairs=None,
    score_type: str = "auto",
    keep_unknown: bool = False,
    threshold=None,
    validation=None,
    metrics=None,
    n_boot: int = 1000,
    n_permutations: int = 0,
    ci: float = 0.95,
    min_group_size: int = 30,
    missing: str = "drop",
    ece_bins: str = "unit",
    random_state: int = 0,
    progress=None,
    precomputed: Mapping[str, GroupMetricResult] | None = None,
    shared_bootstrap: bool = True,
) -> AuditReport:
    """Audit a predictions table: per-group metrics with CIs, gaps with tests, ADF, intersections.

    ``prediction``: a hard-prediction column; with a score column too, threshold metrics (TPR,
    FPR, DP, EO, ADF, …) use it and ``threshold`` is not applied — the audited model's own
    decisions, e.g. per-group thresholds — while AUC and calibration use the scores.
    ``threshold``: a number, ``"best_f1"`` or ``"youden"``; with ``validation`` (a table with the
    same columns) rules are fitted there and applied to the audited set (the honest choice). The
    default (None) is 0.5 for probabilities and 0 for real-valued scores (the decision boundary of a
    margin or a logit; a sigmoid maps 0 to 0.5).
    ``label`` (a list), ``pairs`` or the naming rule make a multi-label audit: one task per finding
    (:func:`~medequity.audit.inputs.load_audit_data`). ``score_type``: ``"auto"``, ``"probability"``
    or ``"logit"``; real-valued scores under ``"auto"`` give AUC and threshold metrics, and the
    calibration metrics (ECE, BCE: probabilities only) are skipped with a warning.
    ``keep_unknown=True`` keeps "Unknown"/"Declines to state"-like values as groups (default: they
    are missing, excluded and counted in ``settings["excluded_unknown"]``).
    ``intersections=True`` adds every pair of attributes; or give the tuples to cross.
    A group with fewer than ``min_group_size`` samples, positives or negatives is flagged
    (``small_group``; the warning says which count is short).
    Every option and input is checked before any metric is computed (an :class:`AuditInputError`
    naming the fix); ``progress(done, total, description)`` is first called with ``done=0`` once
    they passed, then after each attribute (the CLI draws a bar). An attribute whose groups cannot
    be audited is skipped with a warning; when nothing can be audited, AuditInputError says why.
    ``precomputed``: attribute -> :func:`group_metrics` result already computed on exactly these
    labels, scores and hard predictions with these settings (``medequity train`` evaluated its test
    predictions while training); used as is, so the bootstrap and permutation tests are not run
    twice. Attributes it lacks are computed here. Binary (single-task) audits only.
    ``shared_bootstrap``: every attribute of a task on one set of replicates, stratified by the
    cells of all attributes × label (fast; a group's cell composition is held fixed, which can
    narrow a coarse attribute's intervals by a few percent when its cells differ); False gives
    each attribute its own group × label replicates (:func:`~medequity.metrics.frame.group_metrics_shared`).
    """
    _check_options(n_boot=n_boot, n_permutations=n_permutations, ci=ci, min_group_size=min_group_size, missing=missing,
                   ece_bins=ece_bins, metrics=metrics)
    data = load_audit_data(
        predictions, label=label, score=score, score_prefix=score_prefix, prediction=prediction,
        attributes=attributes, metadata=metadata, id_column=id_column, bins=bins, positive_label=positive_label,
        pairs=pairs, score_type=score_type, keep_unknown=keep_unknown,
    )
    threshold = _parse_threshold(threshold, data.score_type)
    crosses = _intersections(data.attributes, intersections)
    val_data = None
    if validation is not None:
        val_scores = list(data.scores.values())
        val_data = load_audit_data(
            validation, label=None if data.labels else data.label,
            pairs=[f"{data.labels[t]}={data.scores[t]}" for t in data.labels] or None,
            score=None if data.labels else (val_scores if len(val_scores) > 1 else next(iter(val_scores), None)),
            prediction=data.prediction, attributes=list(data.attributes), bins=data.bins, positive_label=positive_label,
            metadata=metadata, id_column=id_column, score_type="logit" if data.score_type == "logit" else "auto",
            keep_unknown=keep_unknown,
        )
    precomputed = dict(precomputed or {})
    if precomputed and len(data.classes) > 1:
        raise ValueError("precomputed results are for a binary audit (one task)")
    for name, result in precomputed.items():
        if (result.n_boot, result.ci, result.random_state) != (n_boot, ci, random_state):
            raise ValueError(f"precomputed result of {name!r} has n_boot={result.n_boot}, ci={result.ci}, "
                             f"random_state={result.random_state}; this audit asks for {n_boot}, {ci}, {random_state}")
    frame = data.frame
    notes: list[str] = []  # report warnings made here (the metric layer's are caught below)
    metrics, skipped_metrics = _metrics_for(metrics, data)
    if skipped_metrics:
        low, high = data.score_range or (np.nan, np.nan)
        notes.append(f"calibration metrics {', '.join(skipped_metrics)} skipped: the scores lie in [{low:.4g}, {high:.4g}], "
                     "not [0, 1], so they are not probabilities (AUC and threshold metrics are valid for any real-valued "
                     "score); pass --scores logit if they are logits to get calibration after a sigmoid")
    if data.score_type == "real" and threshold == 0.0:
        notes.append("scores are real-valued: the decision threshold is 0 (score > 0), the boundary of a margin or a "
                     "logit; give --threshold to choose another")
    notes += _unknown_notes(data.excluded_unknown)
    attribute_sets = [(a,) for a in data.attributes] + crosses
    skipped = _unusable_attribute_sets(frame, attribute_sets, missing)
    if len(skipped) == len(attribute_sets):
        raise AuditInputError("nothing to audit: " + "; ".join(f"{name} {why}" for name, why in skipped.items()))
    for name, why in skipped.items():
        notes.append(f"{name}: skipped — {why}")
    tasks: dict[str, TaskAudit] = {}
    total_steps = len(data.classes) * (len(attribute_sets) - len(skipped))
    done = 0
    if progress is not None:
        progress(done, total_steps, "auditing")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", GroupMetricWarning)
        for task_name, positive in data.classes.items():
            y = (frame[data.label_column(task_name)] == positive).to_numpy().astype(np.int8)
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
                    kwargs = {"y_val": (val_data.frame[val_data.label_column(task_name)] == positive).to_numpy().astype(np.int8),
                              "score_val": val_data.frame[val_data.scores[task_name]].to_numpy(dtype=np.float64)}
                resolved = resolve_threshold(threshold, y, s, **kwargs)
                pred = resolved.predict(s)
            results = {}
            adf_values = {}
            # Every attribute (and intersection) of the task on one set of bootstrap replicates: one
            # draw and one pass over the weights instead of one per attribute (group_metrics_shared).
            todo = [a for a in attribute_sets if intersection_name(a) not in skipped and intersection_name(a) not in precomputed]
            # Its warnings are re-emitted per attribute below (from each result's own list), so the
            # report lists them in attribute order whether a result was computed here or precomputed.
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", GroupMetricWarning)
                shared = dict(zip(todo, group_metrics_shared(
                    y, s, y_pred=pred, sensitive_features=[frame[list(a)] for a in todo], metrics=metrics,
                    threshold=resolved, n_boot=n_boot, n_permutations=n_permutations, ci=ci,
                    min_group_size=min_group_size, missing=missing, ece_bins=ece_bins, random_state=random_state,
                    shared=shared_bootstrap,
                ))) if todo else {}
            for attribute_set in attribute_sets:
                name = intersection_name(attribute_set)
                if name in skipped:
                    continue
                if name in precomputed:
                    result = precomputed[name]
                    for message in result.warnings:  # reported as if computed here, in the same order
                        warn_group(message)
                else:
                    computed = shared[attribute_set]
                    if isinstance(computed, ValueError):
                        notes.append(f"{task_name} / {name}: skipped — {computed}")
                        done += 1
                        continue
                    result = computed
                    for message in result.warnings:
                        warn_group(message)
                result, short = _flag_small_classes(result, min_group_size)
                notes += short
                if resolved is not None:
                    result = replace(result, threshold=resolved)  # a copy: a precomputed result stays as given
                results[name] = result
                # group_metrics had labels and decisions: ADF comes from its bootstrap replicates
                adf_values[name] = result.adf
                done += 1
                if progress is not None:
                    progress(done, total_steps, f"{task_name} / {name}")
            tasks[task_name] = TaskAudit(task_name, positive, None if resolved is None else resolved.to_dict(),
                                         results, adf_values, label_column=data.label_column(task_name),
                                         score_column=score_column, n_positive=int(y.sum()))
    if not any(task.results for task in tasks.values()):
        raise AuditInputError("nothing to audit: every attribute was skipped — " + "; ".join(notes))
    messages = list(dict.fromkeys([str(w.message) for w in caught] + notes))
    settings = {
        "source": data.source,
        "n_samples": int(len(frame)),
        "label": data.label,
        "labels": {task: data.label_column(task) for task in data.classes} if data.labels else None,
        "scores": data.scores,
        "score_type": {"probability": "probabilities", "logit": "logits (a sigmoid was applied)",
                       "real": "real-valued scores (ranks and thresholds only)"}[data.score_type],
        "score_range": None if data.score_range is None else list(data.score_range),
        "metrics_skipped": {m: "scores are not probabilities" for m in skipped_metrics},
        "prediction": data.prediction,
        "attributes": data.attributes,
        "intersections": [intersection_name(c) for c in crosses],
        "binning": [r.describe() for r in data.bins],
        "excluded_unknown": data.excluded_unknown,
        "unknown_values": "kept as groups" if keep_unknown else "missing (excluded, counted)",
        "threshold_setting": str(threshold),
        "validation": None if validation is None else (str(validation) if not isinstance(validation, pd.DataFrame) else "validation table"),
        "n_boot": n_boot,
        "n_permutations": n_permutations,
        "ci": ci,
        "bootstrap": (SHARED_BOOTSTRAP if shared_bootstrap and n_boot and len(attribute_sets) - len(skipped) > 1
                      else "percentile, stratified by group x label"),
        "gap_test": GAP_TEST + ("" if not n_permutations else "; also a permutation test of max - min = 0 "
                                "(p_permutation; group labels shuffled within label for label-conditional metrics)"),
        "min_group_size": min_group_size,
        "small_group_rule": f"fewer than {min_group_size} samples, positives or negatives",
        "missing_attribute_values": missing,
        "ece_bins": ece_bins,
        "random_state": random_state,
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "provenance": provenance(),
    }
    return AuditReport(settings=settings, tasks=tasks, data=data, warnings=messages)


def _check_options(*, n_boot, n_permutations, ci, min_group_size, missing, ece_bins, metrics) -> None:
    """The numeric and named options, each with the CLI flag and a valid example."""
    def whole(value) -> bool:
        return isinstance(value, int | np.integer) and not isinstance(value, bool)

    if not whole(n_boot) or n_boot < 0:
        raise AuditInputError(f"--n-boot {n_boot}: the number of bootstrap replicates must be 0 (no intervals) or more, e.g. 1000")
    if not whole(n_permutations) or n_permutations < 0:
        raise AuditInputError(f"--n-permutations {n_permutations}: the number of permutations must be 0 (no test) or more, "
                              "e.g. 1000")
    if not isinstance(ci, int | float | np.number) or not 0 < ci < 1:
        raise AuditInputError(f"--ci {ci}: the confidence level must lie strictly between 0 and 1, e.g. 0.95")
    if not whole(min_group_size) or min_group_size < 1:
        raise AuditInputError(f"--min-group-size {min_group_size}: must be 1 or more, e.g. 30")
    if missing not in ("drop", "category"):
        raise AuditInputError(f"--missing {missing!r}: give 'drop' (missing attribute values are excluded and counted) or "
                              "'category' (they form a group named 'missing')")
    if ece_bins not in ("unit", "quantile"):
        raise AuditInputError(f"ece_bins {ece_bins!r}: give 'unit' or 'quantile'")
    unknown = [m for m in metrics or () if m not in METRICS]
    if unknown:
        raise AuditInputError(f"unknown metrics {unknown}; known: {', '.join(METRICS.names())}")


def _metrics_for(metrics, data: AuditData) -> tuple[tuple[str, ...] | None, list[str]]:
    """The metrics to compute, less calibration when the scores are not probabilities."""
    if data.score_type != "real":
        return (None if metrics is None else tuple(metrics)), []
    wanted = tuple(metrics) if metrics is not None else DEFAULT_METRICS
    return tuple(m for m in wanted if m not in PROBABILITY_METRICS), [m for m in wanted if m in PROBABILITY_METRICS]


def _unknown_notes(excluded: Mapping[str, Mapping[str, int]]) -> list[str]:
    notes = []
    for attribute, counts in excluded.items():
        listed = ", ".join(f"{value!r} ({n})" for value, n in counts.items())
        notes.append(f"{attribute}: {sum(counts.values())} rows valued {listed} are treated as missing (excluded from "
                     f"its groups, not a group); --keep-unknown keeps them as groups")
    return notes


def _unusable_attribute_sets(frame: pd.DataFrame, attribute_sets, missing: str) -> dict[str, str]:
    """name -> why, for each attribute (set) with fewer than two groups — known before any metric."""
    reasons = {}
    for attribute_set in attribute_sets:
        columns = frame[list(attribute_set)]
        if missing == "drop":
            columns = columns.dropna()
        distinct = columns.drop_duplicates()
        name = intersection_name(attribute_set)
        if len(distinct) < 2:
            shown = [" & ".join("missing" if pd.isna(v) else str(v) for v in row) for row in distinct.itertuples(index=False)]
            reasons[name] = (f"has {len(distinct)} group{'s' if len(distinct) != 1 else ''} {shown} among {len(frame)} rows; "
                             "a gap needs two or more groups (check the column and its missing or unknown values)")
    return reasons


def _flag_small_classes(result: GroupMetricResult, min_group_size: int) -> tuple[GroupMetricResult, list[str]]:
    """Flag groups with fewer than ``min_group_size`` positives or negatives, not only samples.

    A group of 500 with 14 positives has a TPR/AUC resting on 14 cases; the sample count alone
    would not flag it. Returns a copy with ``counts.small`` updated and one warning per attribute
    naming each such group and which count is short (too few samples is said by the metric layer).
    """
    counts = result.counts
    if "n_pos" not in counts or counts["n_pos"].isna().all():
        return result, []
    counts = counts.copy()
    short_groups = []
    for group in result.groups:
        row = counts.loc[group]
        short = [f"{int(row[col])} {what}" for col, what in (("n_pos", "positives"), ("n_neg", "negatives"))
                 if row[col] < min_group_size]
        if short and row["n"] >= min_group_size:
            short_groups.append(f"{group!r} ({' and '.join(short)})")
        counts.loc[group, "small"] = bool(row["n"] < min_group_size or short)
    notes = []
    if short_groups:
        notes.append(f"groups of {result.attribute!r} with fewer than {min_group_size} positives or negatives: "
                     f"{', '.join(short_groups)}; their label-conditional metrics (AUC, TPR, FPR, …) are unreliable")
    return replace(result, counts=counts), notes


def _parse_threshold(threshold, score_type: str = "probability"):
    """A number (finite; in [0, 1] for probabilities: a fitted rule may land on 0 or 1), ``"best_f1"``
    or ``"youden"``, or a recorded :class:`Threshold` (a run's own, applied with its own rule and
    record); None → the default."""
    if threshold is None:
        return 0.0 if score_type == "real" else 0.5
    if isinstance(threshold, Threshold):
        return threshold
    value = threshold
    if isinstance(threshold, str):
        try:
            value = float(threshold)
        except ValueError:
            if threshold not in ("best_f1", "youden"):
                raise AuditInputError(f"--threshold {threshold!r}: give a number, 'best_f1' or 'youden'") from None
            return threshold
    if not isinstance(value, int | float | np.number) or isinstance(value, bool) or not math.isfinite(value):
        raise AuditInputError(f"--threshold {threshold!r}: give a finite number, 'best_f1' or 'youden'")
    if score_type != "real" and not 0 <= value <= 1:
        scale = "probabilities (after the sigmoid of --scores logit)" if score_type == "logit" else "probabilities"
        raise AuditInputError(f"--threshold {threshold}: the scores are {scale}, so the threshold must lie between 0 "
                              "and 1, e.g. 0.5")
    return float(value)


def _intersections(attributes: list[str], intersections) -> list[tuple[str, ...]]:
    if intersections is True:
        return [(a, b) for i, a in enumerate(attributes) for b in attributes[i + 1 :]]
    if not intersections:
        return []
    crosses = []
    for cross in intersections:
        text = cross if isinstance(cross, str) else ",".join(map(str, cross))
        cross = tuple(str(c).strip() for c in (re.split(r"[,&]", cross) if isinstance(cross, str) else cross))
        if len(cross) < 2 or not all(cross):
            raise AuditInputError(f"--intersect {text!r}: name two or more attributes, e.g. --intersect sex,age")
        if len(set(cross)) < len(cross):
            raise AuditInputError(f"--intersect {text!r} repeats an attribute; cross different ones, e.g. --intersect sex,age")
        unknown = [c for c in cross if c not in attributes]
        if unknown:
            raise AuditInputError(f"--intersect {text!r} names {unknown}, which are not audited ({attributes}); "
                                  "add them with --attribute")
        if cross in crosses:
            raise AuditInputError(f"--intersect {text!r} is given twice")
        crosses.append(cross)
    return crosses
