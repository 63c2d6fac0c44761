"""The self-contained HTML page of ``medequity audit --task segmentation``: :func:`render_segmentation_audit_html`.

One file, no external resources (CSS inline, plots as ``data:`` URIs), rendered from
``templates/audit_segmentation.html`` (which extends ``_base.html``) with autoescaping on. Per
attribute: headline cards (Dice Δ, worst-group Dice, DSC_ES, ES-Dice, Skew), the per-group table
of every audited metric with CIs, each group vs all samples (the rows of contrasts.csv: difference,
simultaneous interval, adjusted p-value, in the classification page's table), the FairMedFM/FairSeg
summaries with CIs and p-values, and figures: per-group metric bars with CI whiskers, per-group Dice
distributions (violin + box), the Δ forest plot, and the best and worst case of each group as
overlays (ground-truth contour solid, prediction dashed; 3D: the middle slice through the object).
The report object is read duck-typed (``settings``, ``results``, ``group_labels``, ``samples``,
``cases``, ``warnings``, ``contrasts_frame()``), so this module does not import the audit layer.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from medequity.report import plots
from medequity.report.audit_html import (
    SIGNIFICANCE_LEVEL,
    _environment,
    _finite,
    _provenance_rows,
    _stat,
    contrast_table,
    format_ci,
    format_value,
    warning_kind,
)

TRUTH_COLOR = "#00E5FF"  # cyan and magenta: visible on skin, fundus and grey scans
PREDICTION_COLOR = "#FF00FF"

SEG_METRIC_LABELS = {"dice": "Dice", "iou": "IoU", "hd95": "HD95", "nsd": "NSD"}

FAIRNESS_LABELS = {
    "overall": "Overall M(D)",
    "worst": "Worst group",
    "delta": "Δ (max − min)",
    "std": "STD of groups",
    "skew": "Skew (FairMedFM)",
    "es_std": "ES, std (DSC_ES)",
    "es_sum_abs_dev": "ES, sum abs dev (ES-Dice)",
}

GLOSSARY = [
    ("Dice (DSC)", "2|P ∩ T| / (|P| + |T|) per sample (image or volume) and foreground class, averaged over the classes "
     "of the sample, then over the samples of a group. Both masks empty: undefined (excluded and counted) unless the "
     "audit says otherwise.", "Standard; nnU-Net convention for empty pairs."),
    ("IoU", "|P ∩ T| / |P ∪ T|, averaged as Dice.", "Standard (Jaccard)."),
    ("HD95", "95th percentile Hausdorff distance between the mask boundaries, in physical units (voxel spacing): the "
     "max over the two directions of the 95th percentile of boundary-to-boundary distances. Lower is better. One empty "
     "mask: the image diagonal (a finite worst case).", "MONAI compute_hausdorff_distance(percentile=95)."),
    ("NSD", "Normalised surface Dice: the fraction of boundary voxels of both masks within the tolerance of the other "
     "boundary.", "Nikolov et al.; MONAI compute_surface_dice."),
    ("Δ (DSC_Δ)", "max over groups − min over groups of the group means. Its p-value is a permutation test of no "
     "disparity.", "FairMedFM (Jin et al. 2024)."),
    ("STD (DSC_STD)", "Population standard deviation of the group means.", "FairMedFM."),
    ("Skew (DSC_Skew)", "max_g (1 − D_g) / min_g (1 − D_g): how many times larger the worst group's error is than the "
     "best group's; 1 is fair.", "FairMedFM."),
    ("DSC_ES", "Equity-scaled Dice M(D) / (1 + STD), M(D) the mean over all samples.", "FairMedFM eq. 2."),
    ("ES-Dice / ES-IoU", "M(D) / (1 + Σ_g |M(D) − M(D_g)|).", "FairSeg (Tian et al. 2024); FairDi eqs. 9–10."),
    ("Confidence interval", "Percentile bootstrap of the samples, resampled within each group so no replicate loses "
     "a group.", "medequity."),
    ("p-value", "Permutation test: group labels shuffled, p = (#{null ≥ observed} + 1) / (B + 1), each summary tested "
     "with its own statistic. Not adjusted for the many tests on this page.", "medequity."),
    ("Overlays", "The best and the worst sample (by Dice) of each group: ground truth as a solid contour, the "
     "prediction dashed; for 3D masks the middle slice (last axis) among those the masks occupy.", "medequity."),
]


# -- figures ----------------------------------------------------------------------------------------------
def dice_distributions(values: np.ndarray, groups: np.ndarray, *, group_order, colors, metric: str = "dice") -> Figure:
    """Violin + box plot of per-sample values per group (undefined samples left out, counted in the labels)."""
    order = [str(g) for g in group_order]
    data, labels = [], []
    for g in order:
        member = np.asarray(groups == g, dtype=bool)
        v = values[member]
        defined = v[np.isfinite(v)]
        data.append(defined)
        undefined = f", {v.size - defined.size} undef.)" if v.size > defined.size else ")"
        labels.append(f"{plots._short(g, 20)}\n(n={defined.size}" + undefined)
    fig = plots.new_figure(1.2 + 1.25 * max(len(order), 2), 3.6)
    ax = fig.add_subplot()
    positions = np.arange(1, len(order) + 1)
    present = [i for i, d in enumerate(data) if d.size > 1]
    if present:
        parts = ax.violinplot([data[i] for i in present], positions=positions[present], showextrema=False, widths=0.8)
        for body, i in zip(list(parts["bodies"]), present):  # type: ignore[call-overload]
            body.set_facecolor(colors.get(order[i], plots.NEUTRAL_COLOR))
            body.set_alpha(0.45)
    nonempty = [i for i, d in enumerate(data) if d.size]
    if nonempty:
        ax.boxplot([data[i] for i in nonempty], positions=positions[nonempty], widths=0.18, showfliers=False,
                   medianprops={"color": "#111111"}, boxprops={"color": "#333333"}, whiskerprops={"color": "#333333"},
                   capprops={"color": "#333333"})
        rng = np.random.default_rng(0)
        for i in nonempty:
            x = positions[i] + rng.uniform(-0.12, 0.12, size=data[i].size)
            ax.scatter(x, data[i], s=5, color=colors.get(order[i], plots.NEUTRAL_COLOR), alpha=0.45, linewidths=0)
            ax.plot([positions[i] - 0.3, positions[i] + 0.3], [data[i].mean()] * 2, color="#111111", linestyle=":", linewidth=1.2)
    ax.set_xticks(positions, labels, fontsize=8.5)
    ax.set_ylabel(SEG_METRIC_LABELS.get(metric, metric) + " per sample")
    if metric in ("dice", "iou", "nsd"):
        ax.set_ylim(-0.02, 1.02)
    ax.grid(axis="y", color="#eeeeee", linewidth=0.6)
    for side in ("top", "right"):
        ax.spines[side].set_visible(False)
    handles = [Line2D([], [], color="#111111", label="median (box: quartiles)"),
               Line2D([], [], color="#111111", linestyle=":", label="mean")]
    fig.legend(handles=handles, loc="outside lower center", ncols=2, fontsize=8, frameon=False)
    return fig


def _background(image: np.ndarray | None, truth: np.ndarray) -> tuple[np.ndarray, str | None]:
    if image is None:
        return (truth > 0).astype(float) * 0.25, "gray"
    array = np.asarray(image, dtype=np.float64)
    finite = array[np.isfinite(array)]
    low, high = (np.percentile(finite, [1, 99]) if finite.size else (0.0, 1.0))
    array = np.clip((array - low) / (high - low if high > low else 1.0), 0, 1)
    return array, (None if array.ndim == 3 else "gray")


def case_overlays(cases: list, *, group_order, colors) -> Figure:
    """Grid: one row per group, worst and best case; truth solid, prediction dashed contours."""
    order = [str(g) for g in group_order]
    by_key = {(c.group, c.kind): c for c in cases}
    rows = [g for g in order if any((g, k) in by_key for k in ("worst", "best"))]
    fig = plots.new_figure(5.4, 0.6 + 2.5 * max(len(rows), 1))
    axes = np.atleast_2d(fig.subplots(max(len(rows), 1), 2, squeeze=False))
    for r, group in enumerate(rows):
        for col, kind in enumerate(("worst", "best")):
            ax = axes[r, col]
            ax.set_xticks([])
            ax.set_yticks([])
            case = by_key.get((group, kind))
            if case is None or case.truth is None:
                ax.set_axis_off()
                continue
            background, cmap = _background(case.image, case.truth)
            ax.imshow(background, cmap=cmap, vmin=0, vmax=1, interpolation="nearest")
            labels = sorted((set(np.unique(case.truth).tolist()) | set(np.unique(case.prediction).tolist())) - {0})
            for label in labels:
                for mask, color, style in ((case.truth, TRUTH_COLOR, "solid"), (case.prediction, PREDICTION_COLOR, "dashed")):
                    m = (mask == label).astype(float)
                    if m.any() and not m.all():
                        ax.contour(m, levels=[0.5], colors=[color], linestyles=style, linewidths=1.6)
            ax.set_title(f"{plots._short(group, 18)} · {kind}\nDice {format_value(case.dice)} · {plots._short(case.sample_id, 22)}",
                         fontsize=8.5, color=colors.get(group, "#111111"))
    handles = [Line2D([], [], color=TRUTH_COLOR, label="ground truth"),
               Line2D([], [], color=PREDICTION_COLOR, linestyle="--", label="prediction")]
    fig.legend(handles=handles, loc="outside lower center", ncols=2, fontsize=8.5, frameon=False)
    return fig


# -- the page model ---------------------------------------------------------------------------------------
def _cards(by_metric: dict, n_perm) -> list[dict]:
    result = by_metric.get("dice") or next(iter(by_metric.values()))
    metric = result.metric
    label = SEG_METRIC_LABELS.get(metric, metric)
    table = {row.summary: row for row in result.fairness_table().itertuples(index=False)}
    cards = []

    def card(title, key, note="", extra=()):
        row = table.get(key)
        if row is not None:
            cards.append({"title": title, **_stat(row.value, row.ci_low, row.ci_high, row.p_value, n_perm),
                          "note": note, "extra": list(extra)})

    card(f"{label} Δ (max − min)", "delta", note=f"overall {label} {format_value(result.values[metric][0])}")
    group_values = result.values[metric][1:]
    worst = ""
    if np.isfinite(group_values).any():
        pick = np.nanargmin(group_values) if result.higher_is_better else np.nanargmax(group_values)
        worst = f"worst group: {result.groups[int(pick)]}"
    card(f"Worst-group {label}", "worst", note=worst)
    card(f"{label} STD", "std")
    card(f"{label} Skew", "skew", note="FairMedFM; 1 is fair")
    card("DSC_ES" if metric == "dice" else f"{label} ES (std)", "es_std", note="FairMedFM M(D) / (1 + STD)")
    card("ES-Dice" if metric == "dice" else f"ES-{label}", "es_sum_abs_dev", note="FairSeg M(D) / (1 + Σ|M(D) − M(D_g)|)")
    for other, name in (("hd95", "HD95 Δ"), ("nsd", "NSD Δ")):
        if other in by_metric and other != metric:
            rows = by_metric[other].fairness_table().set_index("summary")
            r = rows.loc["delta"]
            cards.append({"title": name, **_stat(r.value, r.ci_low, r.ci_high, r.p_value, n_perm),
                          "note": f"overall {format_value(by_metric[other].values[other][0])}", "extra": []})
    return cards


def _group_table(by_metric: dict) -> dict:
    first = next(iter(by_metric.values()))
    names = ("overall",) + tuple(first.groups)
    intervals = {m: r._interval(m) for m, r in by_metric.items()}
    rows = []
    for j, group in enumerate(names):
        count = first.counts.loc[group] if group in first.counts.index else None
        cells = []
        for metric, result in by_metric.items():
            value = result.values[metric][j]
            low, high = intervals[metric]
            cells.append({"value": format_value(value), "ci": format_ci(low[j], high[j]), "undefined": not _finite(value)})
        rows.append({"group": group, "overall": j == 0,
                     "n": str(int(count["n"])) if count is not None and _finite(count["n"]) else "—",
                     "small": bool(count["small"]) if (count is not None and j > 0) else False, "cells": cells})
    headers = [SEG_METRIC_LABELS.get(m, m) + (" ↓" if not r.higher_is_better else "") for m, r in by_metric.items()]
    return {"metrics": headers, "rows": rows}


def _fairness_table(by_metric: dict, n_perm) -> dict:
    columns = list(FAIRNESS_LABELS)
    rows = []
    for metric, result in by_metric.items():
        table = result.fairness_table().set_index("summary")
        cells: list[dict | None] = []
        for key in columns:
            if key in table.index:
                r = table.loc[key]
                cells.append(_stat(r["value"], r["ci_low"], r["ci_high"], r["p_value"], n_perm))
            else:
                cells.append(None)
        rows.append({"metric": SEG_METRIC_LABELS.get(metric, metric), "cells": cells})
    return {"columns": [FAIRNESS_LABELS[c] for c in columns], "rows": rows}


def _figures(report, attribute: str, by_metric: dict, fmt: str) -> tuple[list[dict], str]:
    first = next(iter(by_metric.values()))
    colors = plots.group_colors(first.groups)
    n_perm = report.settings.get("n_boot")  # p-values come from the bootstrap: the smallest is 1/(B+1)
    tidy = pd.concat([r.to_frame() for r in by_metric.values()], ignore_index=True)
    tidy["metric"] = tidy["metric"].map(lambda m: SEG_METRIC_LABELS.get(m, m))
    figures = [{
        "title": "Per-group metrics", "layout": "wide",
        "caption": "Bars: group means; whiskers: bootstrap CIs; dashed line: overall; hatched: small groups. "
                   "HD95 is a distance (lower is better).",
        "uri": plots.fig_to_data_uri(plots.metric_bars(tidy, group_order=first.groups, colors=colors), fmt),
    }]
    labels = report.group_labels.get(attribute)
    metric = "dice" if "dice" in by_metric else first.metric
    if labels is not None and metric in report.samples:
        figures.append({
            "title": f"{SEG_METRIC_LABELS.get(metric, metric)} distributions", "layout": "span2" if len(first.groups) > 3 else "",
            "caption": "Per-sample values per group: violin (density), box (quartiles), points (samples), dotted line (mean).",
            "uri": plots.fig_to_data_uri(dice_distributions(report.samples[metric].to_numpy(dtype=np.float64), labels,
                                                            group_order=first.groups, colors=colors, metric=metric), fmt),
        })
    deltas = pd.concat([r.fairness_table() for r in by_metric.values()], ignore_index=True)
    deltas["metric"] = deltas["metric"].map(lambda m: SEG_METRIC_LABELS.get(m, m))
    figures.append({
        "title": "Gaps Δ", "layout": "",
        "caption": f"Max − min over groups with bootstrap CI; red: permutation p < {SIGNIFICANCE_LEVEL:g}.",
        "uri": plots.fig_to_data_uri(plots.gap_forest(deltas, summary="delta", alpha=SIGNIFICANCE_LEVEL,
                                                      n_permutations=n_perm, title="Δ between groups"), fmt),
    })
    cases = [c for c in report.cases if c.attribute == attribute]
    note = ""
    if any(c.truth is not None for c in cases):
        wheres = sorted({c.where for c in cases if c.truth is not None})
        figures.append({
            "title": "Best and worst case per group", "layout": "span2",
            "caption": "Worst (left) and best (right) sample by Dice in each group; ground truth solid, prediction dashed. "
                       + ("; ".join(wheres[:1]) + "." if wheres and wheres[0] != "2D image" else ""),
            "uri": plots.fig_to_data_uri(case_overlays(cases, group_order=first.groups, colors=colors), fmt),
        })
    else:
        note = "No overlays: the audit was given per-sample Dice without mask paths."
    return figures, note


def _settings_rows(report) -> list[tuple[str, str]]:
    s = report.settings
    ci = s.get("ci")
    counts = s.get("counts") or {}
    return [
        ("Source", str(s.get("source"))),
        ("Root", str(s.get("root"))),
        ("Samples", str(s.get("n_samples"))),
        ("Created", str(s.get("created"))),
        ("Columns", f"id: {s.get('id_column') or '—'}; truth: {s.get('truth_column') or '—'}; "
                    f"prediction: {s.get('prediction_column') or '—'}; Dice: {s.get('dice_column') or '—'}; "
                    f"image: {s.get('image_column') or '—'}"),
        ("Attributes", ", ".join(map(str, s.get("attributes") or [])) or "—"),
        ("Binning", "; ".join(map(str, s.get("binning") or [])) or "—"),
        ("Metrics", ", ".join(SEG_METRIC_LABELS.get(m, m) for m in s.get("metrics") or [])),
        ("Classes", str(s.get("classes") or "non-zero labels present in either mask, per sample")),
        ("Mask values", str(s.get("mask_values") or "stored values are class indices")),
        ("Empty masks", f"both empty: {s.get('empty')} ({counts.get('both_empty_pairs', 0)} sample-class pairs); "
                        f"one empty: HD95 = image diagonal, NSD = 0 ({counts.get('one_empty_pairs', 0)} pairs)"),
        ("Spacing", str(s.get("spacing"))),
        ("NSD tolerance", str(s.get("nsd_tolerance"))),
        ("Bootstrap", f"B = {s.get('n_boot')}, {s.get('bootstrap')}, {'' if ci is None else f'{100 * float(ci):g}% '}percentile intervals"),
        ("Disparity tests", str(s.get('gap_test'))),
        ("Minimum group size", f"{s.get('min_group_size')} (smaller groups are flagged 'small')"),
        ("Missing attribute values", str(s.get("missing_attribute_values"))),
        ("Random state", str(s.get("random_state"))),
    ]


def _warnings(report) -> list[dict]:
    messages = list(report.warnings)
    for by_metric in report.results.values():
        for result in by_metric.values():
            messages += list(result.warnings)
    unique = list(dict.fromkeys(str(m) for m in messages))

    return [{"kind": warning_kind(m), "message": m} for m in unique]


def build_segmentation_context(report, *, fmt: str = "png") -> dict:
    """Everything the template shows, as formatted plain values."""
    n_perm = report.settings.get("n_boot")  # p-values come from the bootstrap: the smallest is 1/(B+1)
    contrasts = report.contrasts_frame()  # the rows of contrasts.csv: the page shows the same numbers
    sections = []
    for index, (attribute, by_metric) in enumerate(report.results.items()):
        first = next(iter(by_metric.values()))
        figures, note = _figures(report, attribute, by_metric, fmt)
        group_table = _group_table(by_metric)
        sections.append({
            "id": f"s{index}", "attribute": attribute, "groups": list(first.groups), "n_groups": len(first.groups),
            "n_excluded_missing": int(first.n_excluded_missing), "cards": _cards(by_metric, n_perm),
            "table": group_table, "fairness": _fairness_table(by_metric, n_perm),
            "contrasts": contrast_table(contrasts[contrasts.attribute == attribute], first.groups, list(by_metric),
                                        group_table["metrics"]),
            "figures": [{**f, "layout": f.get("layout", "")} for f in figures], "plot_note": note,
        })
    from medequity.report.findings import METRIC_WORDS

    findings = [{"attribute": f.attribute, "metric_label": METRIC_WORDS.get(f.metric, f.metric), "sentence": f.sentence,
                 "significant": bool(f.significant), "gap": f"{format_value(f.gap)} {format_ci(f.gap_low, f.gap_high)}"}
                for f in report.findings().itertuples(index=False)]
    return {
        "findings": findings,
        "ci_label": f"{100 * float(report.settings.get('ci') or 0.95):g}%",
        "title": f"Segmentation fairness audit — {report.settings.get('source', '')}",
        "n_samples": report.settings.get("n_samples"),
        "created": report.settings.get("created"),
        "metrics": ", ".join(SEG_METRIC_LABELS.get(m, m) for m in report.settings.get("metrics") or []),
        "settings_rows": _settings_rows(report),
        "provenance_rows": _provenance_rows(report),
        "warnings": _warnings(report),
        "sections": sections,
        "glossary": GLOSSARY,
        "undefined": plots.UNDEFINED_TEXT,
        "alpha": SIGNIFICANCE_LEVEL,
    }


def render_segmentation_audit_html(report, *, fmt: str = "png") -> str:
    """The segmentation audit as one self-contained HTML page (plots as PNG, or ``fmt="svg"``)."""
    context = build_segmentation_context(report, fmt=fmt)
    return _environment().get_template("audit_segmentation.html").render(**context)


__all__ = ["render_segmentation_audit_html", "build_segmentation_context", "dice_distributions", "case_overlays", "GLOSSARY"]
