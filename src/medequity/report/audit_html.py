"""The self-contained HTML page of ``medequity audit``: :func:`render_audit_html`.

One file, no external resources: CSS inline, plots as ``data:`` URIs. The page is a jinja2
template (``templates/audit.html``) rendered with autoescaping on — column names, group names and
messages come from the user's data and are always escaped. This module turns an
:class:`~medequity.audit.core.AuditReport` into plain, already-formatted values (strings, lists,
dicts) for the template; the figures come from :mod:`medequity.report.plots`, which take plain data.
"""

from __future__ import annotations

import math
import warnings
from pathlib import Path

import jinja2
import numpy as np
import pandas as pd

from medequity.report import plots

TEMPLATES = Path(__file__).with_name("templates")
UNDEFINED = plots.UNDEFINED_TEXT
SIGNIFICANCE_LEVEL = 0.05

SHORT_METRIC_LABELS = {"auc": "AUC", "acc": "ACC", "tpr": "TPR", "tnr": "TNR", "fpr": "FPR", "fnr": "FNR",
                       "ppv": "PPV", "npv": "NPV", "selection_rate": "Sel. rate", "ece": "ECE", "bce": "BCE"}

SUMMARY_LABELS = {
    "gap": "Gap (max − min)",
    "gap_to_overall": "Max |group − overall|",
    "ratio": "Ratio (min / max)",
    "worst": "Worst group",
    "skewness": "Skewness (FairMedFM)",
    "es_std": "ES, std (FairMedFM)",
    "es_mean_abs_dev": "ES, mean abs dev (FairDi)",
    "es_sum_abs_dev": "ES, sum abs dev (Harvard)",
    "mean_psd": "MeanPSD (FairDi)",
    "max_psd": "MaxPSD (FairDi)",
}

GLOSSARY = [
    # (term, definition, source)
    ("AUC", "Area under the ROC curve of the scores in a group (ties count ½, as scikit-learn). Undefined "
     "for a group that has samples of only one class.", "Standard; per-group AUC as in FairMedFM, FairDi, MEDFAIR."),
    ("ACC, TPR, TNR, FPR, FNR, PPV, NPV", "Accuracy, true/false positive and negative rates, predictive values of "
     "the hard prediction at the decision threshold t in the header: ŷ = 1 if score > t for a fixed t (as "
     "FairMedFM, MEDFAIR and fairlearn), score ≥ t for a fitted one (t a score, as scikit-learn's curves). FNR is the "
     "under-diagnosis rate.", "Seyyed-Kalantari et al. (under-diagnosis); review Table 1."),
    ("Selection rate", "P(ŷ = 1) in a group.", "Demographic parity, review Table 1; fairlearn."),
    ("ECE", "Expected calibration error: 10 bins, sample-weighted mean over non-empty bins of |mean score − "
     "fraction positive|. 'unit' bins split [0, 1]; 'score_range' bins split [min, max] of the scores.",
     "Guo et al. 2017 ('unit'); FairMedFM code ('score_range')."),
    ("BCE", "Mean binary cross-entropy, log clamped at −100 (as torch BCELoss).", "FairMedFM."),
    ("Gap Δ", "max over groups − min over groups of a metric. Its p-value is a permutation test of Δ = 0.",
     "fairlearn difference(method='between_groups'); AUC Gap in FairDi, FairMedFM, MEDFAIR."),
    ("Max |group − overall|", "max_g |M(D_g) − M(D)|.", "fairlearn difference(method='to_overall')."),
    ("Ratio", "min_g M(D_g) / max_g M(D_g); 1 is parity.", "fairlearn ratio(method='between_groups')."),
    ("Worst group", "The lowest group value (the highest for error rates and losses: FPR, FNR, ECE, BCE).",
     "Worst-case AUC, MEDFAIR / FairDi."),
    ("Skewness", "max_g (1 − M_g) / min_g (1 − M_g); 1 is fair, undefined if a group has M = 1.",
     "FairMedFM (Jin et al. 2024)."),
    ("ES, std (ES-AUC in the headline)", "Equity-scaled metric M(D) / (1 + σ), σ the population standard "
     "deviation of the group values.", "FairMedFM (Jin et al. 2024), AUC_ES and DSC_ES."),
    ("ES, mean abs dev", "M(D) / (1 + (1/G) Σ_g |M(D) − M(D_g)|).",
     "FairDi — Fair Distillation (Masroor et al.), eq. 4 (ES-AUC)."),
    ("ES, sum abs dev", "M(D) / (1 + Σ_g |M(D) − M(D_g)|).",
     "Harvard FairVision / FairSeg (Luo et al.; Tian et al.) ES-AUC and ES-Dice; FairDi eq. 9–10 (ES-Dice, ES-IoU)."),
    ("MeanPSD, MaxPSD", "Performance-scaled disparity: std_g(M(D_g)) / M(D) and (max_g − min_g) / M(D).",
     "FairDi — Fair Distillation (Masroor et al.)."),
    ("DP", "Demographic parity difference: gap of the selection rate P(ŷ = 1).", "Review Table 1; fairlearn; Fair Diagnosis."),
    ("EO", "Equal opportunity difference: gap of the TPR.", "Review Table 1; Fair Diagnosis."),
    ("EOdds (fairlearn)", "max(ΔTPR, ΔFPR).", "fairlearn equalized_odds_difference; FairTune EOddsD."),
    ("EOdds (½ + ½)", "½ |ΔTPR| + ½ |ΔFPR| (with more than two groups each Δ is max − min).",
     "The review and FairMedFM paper, eq. 1."),
    ("EqOdds (FairMedFM code)", "1 − (ΔTPR + ΔTNR) / 2; higher is fairer. FairMedFM computes it at the best-F1 "
     "threshold of the test set; this page computes it at the report's threshold.", "FairMedFM code."),
    ("ADF", "Approximate diagnosis fairness I(S; Ŷ | Y) = Σ_y P(y) Σ_{s,ŷ} P(s,ŷ|y) log[P(s,ŷ|y) / (P(s|y) P(ŷ|y))], "
     "plug-in estimate from counts, natural log (nats); 0 when Ŷ carries no information about S beyond Y. "
     "The paper reports values × 10⁻³.", "Fair Diagnosis (Tian et al.), eq. 24."),
    ("Confidence interval", "Percentile bootstrap, resampling within each group × label stratum, so no replicate "
     "loses a group.", "medequity; fairlearn MetricFrame(n_boot=) is the plain, non-stratified reference."),
    ("p-value", "Permutation test of Δ = 0: group labels shuffled (within each label for label-conditional metrics "
     "such as AUC, TPR, FPR), p = (#{null Δ ≥ observed Δ} + 1) / (B + 1). Not adjusted for the many tests on this "
     "page; read small p-values together with the size of the gap and its CI.", "medequity."),
]


# -- formatting ------------------------------------------------------------------------------------------
def _finite(value) -> bool:
    try:
        return value is not None and math.isfinite(float(value))
    except (TypeError, ValueError):
        return False


def format_value(value, digits: int = 3) -> str:
    """A metric value for the page: 3 decimals, scientific for tiny values, "undefined" for NaN."""
    if not _finite(value):
        return UNDEFINED
    value = float(value)
    if value != 0 and abs(value) < 10 ** (-digits):
        return f"{value:.2g}"  # 0.00045, or 4.5e-05 when smaller still
    return f"{value:.{digits}f}"


def format_ci(low, high, digits: int = 3) -> str:
    """``[low, high]``, or an empty string when there is no interval (no bootstrap, undefined)."""
    if not (_finite(low) and _finite(high)):
        return ""
    return f"[{format_value(low, digits)}, {format_value(high, digits)}]"


def _count(value) -> str:
    return str(int(value)) if _finite(value) else "—"


# -- the page model --------------------------------------------------------------------------------------
def _environment() -> jinja2.Environment:
    return jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(TEMPLATES)),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )


def _sample_groups(report, name: str, result) -> np.ndarray | None:
    """Group name of each sample of ``report.data.frame`` for attribute (or intersection) ``name``."""
    from medequity.metrics.groups import INTERSECTION_SEP, encode_groups

    data = report.data
    if data is None:
        return None
    if name in data.attributes:
        columns = [name]
    else:
        columns = name.split(INTERSECTION_SEP)
        if not all(c in data.attributes for c in columns):
            return None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        encoded = encode_groups(data.frame[columns], missing=report.settings.get("missing_attribute_values", "drop"),
                                require_two=False)
    if tuple(encoded.names) != tuple(result.groups):
        return None
    names = np.array(list(encoded.names) + [None], dtype=object)
    return names[np.where(encoded.codes >= 0, encoded.codes, len(encoded.names))]


def _summaries_by_key(result) -> dict:
    table = result.summaries()
    return {(row.metric, row.summary): row for row in table.itertuples(index=False)}


def _stat(value, low=np.nan, high=np.nan, p=np.nan, n_permutations=None) -> dict:
    significant = _finite(p) and float(p) < SIGNIFICANCE_LEVEL
    return {
        "value": format_value(value),
        "ci": format_ci(low, high),
        "p": plots.format_p_value(p, n_permutations) if _finite(p) else "",
        "significant": significant,
        "undefined": not _finite(value),
    }


def _replicate_gap(result, metric: str) -> np.ndarray | None:
    reps = result.replicates.get(metric)
    if reps is None or reps.shape[1] < 3:
        return None
    with np.errstate(invalid="ignore"):
        return reps[:, 1:].max(axis=1) - reps[:, 1:].min(axis=1)


def _interval(replicates: np.ndarray | None, ci: float) -> tuple[float, float]:
    from medequity.metrics.bootstrap import percentile_interval

    if replicates is None or replicates.size == 0:
        return np.nan, np.nan
    low, high = percentile_interval(replicates, ci)
    return float(low), float(high)


def _headline(task, name: str, result, n_permutations) -> list[dict]:
    """Cards: AUC gap, worst-group AUC, ES-AUC, DP, EO, EOdds (3 forms), ADF."""
    s = _summaries_by_key(result)
    cards = []

    def card(title, key, note="", extra=()):
        row = s.get(key)
        if row is None:
            return
        cards.append({"title": title, **_stat(row.value, row.ci_low, row.ci_high, row.p_value, n_permutations),
                      "note": note, "extra": list(extra)})

    if "auc" in result.metrics:
        card("AUC gap", ("auc", "gap"), note=f"overall AUC {format_value(result.values['auc'][0])}")
        groups_auc = result.values["auc"][1:]
        worst = ""
        if np.isfinite(groups_auc).all() and groups_auc.size:
            worst = f"lowest group: {result.groups[int(np.argmin(groups_auc))]}"
        elif np.isnan(groups_auc).any():
            worst = "AUC undefined for some group"
        card("Worst-group AUC", ("auc", "worst"), note=worst)
        extra = []
        for key, label in ((("auc", "es_mean_abs_dev"), "FairDi (mean abs dev)"),
                           (("auc", "es_sum_abs_dev"), "Harvard (sum abs dev)")):
            if key in s:
                extra.append(f"{label}: {format_value(s[key].value)}")
        card("ES-AUC", ("auc", "es_std"), note="FairMedFM (std)", extra=extra)
    card("DP (selection-rate gap)", ("selection_rate", "gap"))
    card("EO (TPR gap)", ("tpr", "gap"))
    if "tpr" in result.metrics and "fpr" in result.metrics:
        tpr_gap, fpr_gap = s[("tpr", "gap")].value, s[("fpr", "gap")].value
        tpr_reps, fpr_reps = _replicate_gap(result, "tpr"), _replicate_gap(result, "fpr")
        both = tpr_reps is not None and fpr_reps is not None
        low, high = _interval(np.maximum(tpr_reps, fpr_reps) if both else None, result.ci)
        half = 0.5 * (tpr_gap + fpr_gap)
        extra = [(f"½ΔTPR + ½ΔFPR: {format_value(half)} "
                  f"{format_ci(*_interval(0.5 * (tpr_reps + fpr_reps) if both else None, result.ci))}").strip()]
        if ("tnr", "gap") in s:
            extra.append(f"FairMedFM EqOdds 1 − (ΔTPR+ΔTNR)/2: {format_value(1 - 0.5 * (tpr_gap + s[('tnr', 'gap')].value))}")
        cards.append({"title": "EOdds", **_stat(max(tpr_gap, fpr_gap) if _finite(tpr_gap) and _finite(fpr_gap) else np.nan,
                                                low, high), "note": "fairlearn max(ΔTPR, ΔFPR)", "extra": extra})
    adf = task.adf.get(name)
    if adf is not None:
        value = adf.get("value")
        extra = [f"= {1e3 * float(value):.3g} × 10⁻³ nats, the paper's unit"] if _finite(value) else []
        cards.append({"title": "ADF I(S;Ŷ|Y)", **_stat(value, adf.get("ci_low"), adf.get("ci_high")),
                      "note": "nats (Fair Diagnosis eq. 24)", "extra": extra})
    return cards


def _group_table(result) -> dict:
    metrics = list(result.metrics)
    intervals = {m: result._interval(m) for m in metrics}
    names = ("overall",) + tuple(result.groups)
    rows = []
    for j, group in enumerate(names):
        count = result.counts.loc[group] if group in result.counts.index else None
        cells = []
        for metric in metrics:
            value = result.values[metric][j]
            low, high = intervals[metric]
            cells.append({"value": format_value(value), "ci": format_ci(low[j], high[j]), "undefined": not _finite(value)})
        rows.append({
            "group": group,
            "overall": j == 0,
            "n": _count(count["n"]) if count is not None else "—",
            "n_pos": _count(count["n_pos"]) if count is not None else "—",
            "n_neg": _count(count["n_neg"]) if count is not None else "—",
            "small": bool(count["small"]) if (count is not None and j > 0) else False,
            "cells": cells,
        })
    headers = [{"short": SHORT_METRIC_LABELS.get(m, m), "long": plots.metric_label(m)} for m in metrics]
    return {"metrics": headers, "rows": rows}


def _summary_table(result, n_permutations) -> dict:
    table = result.summaries()
    columns = [c for c in SUMMARY_LABELS if c in set(table["summary"])]
    rows = []
    for metric in result.metrics:
        sub = table[table["metric"] == metric].set_index("summary")
        cells = []
        for c in columns:
            if c in sub.index:
                r = sub.loc[c]
                cells.append(_stat(r["value"], r["ci_low"], r["ci_high"], r["p_value"], n_permutations))
            else:
                cells.append(None)
        rows.append({"metric": plots.metric_label(metric), "cells": cells})
    return {"columns": [SUMMARY_LABELS[c] for c in columns], "rows": rows}


def _plots(report, task, name: str, result, fmt: str) -> tuple[list[dict], str]:
    """The figures of one attribute (as data URIs) and a note when sample-level plots are skipped."""
    colors = plots.group_colors(result.groups)
    n_perm = report.settings.get("n_boot")  # p-values come from the bootstrap: the smallest is 1/(B+1)
    figures = [{
        "title": "Per-group metrics",
        "caption": "Bars: group values; whiskers: bootstrap CIs; dashed line: overall; hatched: small groups; "
                   "'undefined': the metric has no value for that group (never drawn as 0).",
        "uri": plots.fig_to_data_uri(plots.metric_bars(result.to_frame(), group_order=result.groups, colors=colors), fmt),
        "layout": "wide",
    }]
    note = ""
    data = report.data
    score_column = data.scores.get(task.name) if data is not None else None
    groups = _sample_groups(report, name, result) if data is not None else None
    if data is None:
        note = "Sample-level plots (ROC, calibration, score distributions) need the audited table; it is not kept in this report."
    elif score_column is None:
        note = "No score column: ROC, calibration and score-distribution plots need scores."
    elif groups is None:
        note = "Sample-level plots are skipped: the groups could not be rebuilt from the audited table."
    else:
        frame = data.frame
        y = (frame[data.label_column(task.name)] == task.positive_label).to_numpy().astype(int)
        score = frame[score_column].to_numpy(dtype=np.float64)
        threshold = (task.threshold or {}).get("value")
        ece_bins = report.settings.get("ece_bins", "unit")
        ece_bins = ece_bins if ece_bins in ("unit", "score_range", "quantile") else "unit"
        figures += [
            {"title": "ROC curves", "caption": "One curve per group; the legend gives each group's AUC.",
             "uri": plots.fig_to_data_uri(plots.roc_curves(y, score, groups, group_order=result.groups, colors=colors), fmt)},
        ]
        if data.score_type == "real":  # margins are not probabilities: no reliability diagram (nor ECE)
            note = "No calibration plot: the scores are not probabilities (pass --scores logit for logits)."
        else:
            figures.append(
                {"title": "Calibration", "caption": f"Reliability diagram ({ece_bins} bins, as the ECE); marker area ∝ samples in "
                                                    "the bin; points above the diagonal: the model under-estimates risk.",
                 "uri": plots.fig_to_data_uri(plots.calibration_curves(y, score, groups, bins=ece_bins, group_order=result.groups,
                                                                       colors=colors), fmt)})
        figures += [
            {"title": "Score distributions", "caption": "Per group: negatives (light) and positives (dark); "
                                                        "dashed line: decision threshold.",
             "uri": plots.fig_to_data_uri(plots.score_distributions(y, score, groups, threshold=threshold,
                                                                    group_order=result.groups, colors=colors), fmt),
             "layout": "wide" if len(result.groups) > 6 else ("span2" if len(result.groups) > 3 else "")},
        ]
    figures.append({
        "layout": "span2",
        "title": "Gaps", "caption": f"Max − min over groups with bootstrap CI; red: permutation p < {SIGNIFICANCE_LEVEL:g}.",
        "uri": plots.fig_to_data_uri(plots.gap_forest(result.summaries(), alpha=SIGNIFICANCE_LEVEL, n_permutations=n_perm), fmt),
    })
    for figure in figures:
        figure.setdefault("layout", "")
    return figures, note


def warning_kind(message: str) -> str:
    """The badge of a warning in the audit reports (classification and segmentation)."""
    text = message.lower()
    if "undefined" in text or "nan" in text or "empty" in text:
        return "undefined"
    if "fewer than" in text or "small" in text:
        return "small group"
    if "missing" in text:
        return "missing values"
    if "skipped" in text:
        return "skipped"
    return "note"


def _warnings(report) -> list[dict]:
    messages = list(report.warnings)
    for task in report.tasks.values():
        for result in task.results.values():
            messages += list(result.warnings)
    unique = list(dict.fromkeys(str(m) for m in messages))
    order = {"undefined": 0, "small group": 1, "missing values": 2, "skipped": 3, "note": 4}
    items = [{"kind": warning_kind(m), "message": m} for m in unique]
    return sorted(items, key=lambda w: order[w["kind"]])


def _threshold_text(threshold: dict | None, settings: dict) -> str:
    if not threshold:
        return "hard predictions given in the table (no threshold)"
    value, rule, fitted = threshold.get("value"), threshold.get("rule"), threshold.get("fitted_on")
    if rule == "fixed":
        return f"fixed, score > {value:g}"
    where = {"evaluated set": "the audited set itself (optimistic: a label leak)",
             "validation set": "the validation set"}.get(fitted, fitted)
    return f"{rule} rule, score ≥ {value:.4g}, fitted on {where}"  # fitted rules: score >= t (metrics.thresholds)


def _settings_rows(report) -> list[tuple[str, str]]:
    s = report.settings
    ci = s.get("ci")
    rows = [
        ("Source", str(s.get("source"))),
        ("Samples", str(s.get("n_samples"))),
        ("Created", str(s.get("created"))),
        ("Label column", str(s.get("label"))),
        ("Score columns", ", ".join(f"{k}: {v}" for k, v in (s.get("scores") or {}).items()) or "—"),
        ("Prediction column", str(s.get("prediction") or "—")),
        ("Attributes", ", ".join(map(str, s.get("attributes") or [])) or "—"),
        ("Intersections", ", ".join(map(str, s.get("intersections") or [])) or "—"),
        ("Binning", "; ".join(map(str, s.get("binning") or [])) or "—"),
        ("Threshold setting", str(s.get("threshold_setting"))),
        ("Validation data", str(s.get("validation") or "none (rules are fitted on the audited set)")),
    ]
    for task in report.tasks.values():
        rows.append((f"Threshold — task {task.name} (positive = {task.positive_label})", _threshold_text(task.threshold, s)))
    rows += [
        ("Bootstrap", f"B = {s.get('n_boot')}, {s.get('bootstrap')}, "
                      f"{'' if ci is None else f'{100 * float(ci):g}% '}percentile intervals"),
        ("Gap test", f"{s.get('gap_test')}; highlighted at p < {SIGNIFICANCE_LEVEL:g}"),
        ("Minimum group size", f"{s.get('min_group_size')} (smaller groups are flagged 'small')"),
        ("Missing attribute values", str(s.get("missing_attribute_values"))),
        ("ECE bins", str(s.get("ece_bins"))),
        ("Random state", str(s.get("random_state"))),
    ]
    return rows


def _provenance_rows(report) -> list[tuple[str, str]]:
    prov = report.settings.get("provenance") or {}
    rows = [("git revision", str(prov.get("git_revision") or "unknown")),
            ("Python", str(prov.get("python") or "—")),
            ("Platform", str(prov.get("platform") or "—"))]
    versions = prov.get("versions") or {}
    rows.append(("Versions", ", ".join(f"{k} {v}" for k, v in versions.items() if v) or "—"))
    return rows


def _contrast_table(result) -> dict:
    """Per group and headline metric: group − all samples with its simultaneous interval and adjusted p."""
    from medequity.report.findings import HEADLINE_METRICS

    metrics = [m for m in HEADLINE_METRICS if m in result.metrics]
    return contrast_table(result.contrasts(), result.groups, metrics, [SHORT_METRIC_LABELS.get(m, m) for m in metrics])


def contrast_table(table: pd.DataFrame, groups, metrics: list[str], labels: list[str]) -> dict:
    """The "Each group vs all samples" table (macro ``contrast_table`` of ``_macros.html``) of one
    attribute, read off a contrasts frame (:meth:`GroupMetricResult.contrasts`: one row per metric
    and group): per group, one cell per metric with group − all, its simultaneous interval, the
    adjusted p-value and whether it is significant. Shared by the classification and the
    segmentation audit pages."""
    rows = []
    for group in groups:
        cells = []
        for metric in metrics:
            row = table[(table.metric == metric) & (table.group == group)].iloc[0]
            cells.append({"value": _signed(row.difference), "ci": format_ci(row.ci_low, row.ci_high),
                          "p": plots.format_p_value(row.p_adjusted) if _finite(row.p_adjusted) else "",
                          "significant": bool(row.significant)})
        rows.append({"group": group, "cells": cells})
    return {"metrics": list(labels), "rows": rows if metrics else []}


def _signed(value) -> str:
    return "—" if not _finite(value) else f"{float(value):+.3f}"


def _findings(report) -> tuple[list[dict], list[dict]]:
    from medequity.report.findings import METRIC_WORDS

    findings = report.findings()
    by_task = []
    for task, part in findings.groupby("task", sort=False):
        rows = [{"attribute": f.attribute, "metric_label": METRIC_WORDS.get(f.metric, f.metric), "sentence": f.sentence,
                 "significant": bool(f.significant), "gap": f"{format_value(f.gap)} {format_ci(f.gap_low, f.gap_high)}"}
                for f in part.itertuples(index=False)]
        by_task.append({"task": task, "rows": rows})
    overview = []
    if len(report.tasks) > 1:
        overview = [{"task": o.task, "attribute": o.attribute, "sentence": o.sentence, "significant": bool(o.significant)}
                    for o in report.overview().itertuples(index=False)]
    return by_task, overview


def build_context(report, *, fmt: str = "png") -> dict:
    """Everything the template shows, as formatted plain values (strings, lists, dicts)."""
    n_perm = report.settings.get("n_boot")  # p-values come from the bootstrap: the smallest is 1/(B+1)
    sections = []
    index = 0
    for task in report.tasks.values():
        for name, result in task.results.items():
            figures, note = _plots(report, task, name, result, fmt)
            sections.append({
                "id": f"s{index}",
                "task": task.name,
                "positive_label": str(task.positive_label),
                "attribute": name,
                "is_intersection": name not in (report.data.attributes if report.data is not None else [name]),
                "n_groups": len(result.groups),
                "groups": list(result.groups),
                "n_excluded_missing": int(result.n_excluded_missing),
                "cards": _headline(task, name, result, n_perm),
                "table": _group_table(result),
                "summaries": _summary_table(result, n_perm),
                "contrasts": _contrast_table(result),
                "figures": figures,
                "plot_note": note,
                "warnings": list(result.warnings),
            })
            index += 1
    findings, overview = _findings(report)
    return {
        "title": f"Fairness audit — {report.settings.get('source', '')}",
        "n_samples": report.settings.get("n_samples"),
        "created": report.settings.get("created"),
        "tasks": [{"name": t.name, "positive_label": str(t.positive_label)} for t in report.tasks.values()],
        "multi_task": len(report.tasks) > 1,
        "findings": findings,
        "overview": overview,
        "ci_label": f"{100 * float(report.settings.get('ci') or 0.95):g}%",
        "settings_rows": _settings_rows(report),
        "provenance_rows": _provenance_rows(report),
        "warnings": _warnings(report),
        "sections": sections,
        "glossary": GLOSSARY,
        "undefined": UNDEFINED,
        "alpha": SIGNIFICANCE_LEVEL,
    }


def render_audit_html(report, *, fmt: str = "png") -> str:
    """The audit report as one self-contained HTML page (plots as PNG, or ``fmt="svg"``)."""
    context = build_context(report, fmt=fmt)
    return _environment().get_template("audit.html").render(**context)


def expected_figure_count(report) -> int:
    """How many figures :func:`render_audit_html` draws (for tests and progress bars)."""
    total = 0
    for task in report.tasks.values():
        has_score = report.data is not None and report.data.scores.get(task.name) is not None
        for name, result in task.results.items():
            total += 2
            if has_score and _sample_groups(report, name, result) is not None:
                total += 3
    return total


__all__ = ["render_audit_html", "build_context", "format_value", "format_ci", "expected_figure_count", "GLOSSARY"]
