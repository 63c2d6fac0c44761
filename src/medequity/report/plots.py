"""Figures for fairness reports (matplotlib, no display needed).

Every function takes plain data — arrays and DataFrames, never a report object — so the audit
report, the benchmark report and notebooks can share them, and returns a
:class:`matplotlib.figure.Figure`. Figures are built on the object-oriented API (``Figure`` with
an Agg canvas), not on ``pyplot``: nothing is registered with a GUI backend, nothing leaks between
calls, and importing this module never changes the user's backend. :func:`fig_to_data_uri` turns a
figure into a ``data:`` URI for self-contained HTML.

Conventions shared by all plots:
- one colour per group, from :func:`group_colors` (same order → same colour in every plot);
- the overall (whole-set) value is dark grey and dashed;
- a group whose value is undefined (NaN: one class for AUC, no positives for TPR, …) is written
  "undefined", never drawn as 0;
- groups under the minimum size are hatched and labelled "small".
"""

from __future__ import annotations

import base64
import io
from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch
from matplotlib.ticker import MaxNLocator

# Okabe & Ito (2008) colour-blind-safe palette (yellow and black left out: poor on white / taken
# by "overall"), then tab20 for many groups (intersections).
OKABE_ITO = ("#0072B2", "#E69F00", "#009E73", "#CC79A7", "#56B4E9", "#D55E00", "#8C6D31")
_TAB20 = (
    "#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22",
    "#17becf", "#aec7e8", "#ffbb78", "#98df8a", "#ff9896", "#c5b0d5", "#c49c94", "#f7b6d2", "#c7c7c7",
    "#dbdb8d", "#9edae5",
)
OVERALL_COLOR = "#333333"
SIGNIFICANT_COLOR = "#C0392B"
NEUTRAL_COLOR = "#555555"
UNDEFINED_TEXT = "undefined"

METRIC_LABELS = {
    "auc": "AUC",
    "acc": "Accuracy",
    "tpr": "TPR (sensitivity)",
    "tnr": "TNR (specificity)",
    "fpr": "FPR",
    "fnr": "FNR (under-diagnosis)",
    "ppv": "PPV (precision)",
    "npv": "NPV",
    "selection_rate": "Selection rate P(ŷ=1)",
    "ece": "ECE",
    "bce": "BCE",
    "mean": "Mean",
    "dice": "Dice",
    "iou": "IoU",
}


def metric_label(metric: str) -> str:
    return METRIC_LABELS.get(metric, metric)


# -- generic helpers ---------------------------------------------------------------------------------
def group_colors(groups: Sequence) -> dict[str, str]:
    """A colour per group name, by position: the same group list gives the same colours everywhere."""
    names = [str(g) for g in groups]
    palette = OKABE_ITO if len(names) <= len(OKABE_ITO) else _TAB20
    return {name: palette[i % len(palette)] for i, name in enumerate(names)}


def new_figure(width: float, height: float) -> Figure:
    """A figure with an Agg canvas and constrained layout (no pyplot, no display)."""
    fig = Figure(figsize=(width, height), dpi=100, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def fig_to_data_uri(fig: Figure, fmt: str = "png", *, dpi: int = 110, close: bool = True) -> str:
    """The figure as a ``data:`` URI (PNG by default, or ``fmt="svg"``) for inline HTML images."""
    if fmt not in ("png", "svg"):
        raise ValueError(f"fmt must be 'png' or 'svg'; got {fmt!r}")
    buffer = io.BytesIO()
    fig.savefig(buffer, format=fmt, dpi=dpi, facecolor="white")
    if close:
        fig.clear()
    mime = "image/png" if fmt == "png" else "image/svg+xml"
    return f"data:{mime};base64,{base64.b64encode(buffer.getvalue()).decode('ascii')}"


def format_p_value(p, n_permutations: int | None = None) -> str:
    """``p = 0.031``; ``p ≤ 0.005`` at the smallest value B permutations can give; ``p n/a`` if untested."""
    if p is None or not np.isfinite(p):
        return "p n/a"
    if n_permutations and p <= 1.0 / (n_permutations + 1) + 1e-12:
        return f"p ≤ {p:.2g}"
    return f"p = {p:.2g}"


def _group_arrays(groups, n: int) -> tuple[np.ndarray, list[str]]:
    """Group name per sample as strings (missing → excluded) and the group order."""
    labels = pd.Series(groups).reset_index(drop=True)
    if len(labels) != n:
        raise ValueError(f"groups has {len(labels)} values but y_true has {n}")
    missing = labels.isna().to_numpy()
    as_text = labels.astype(object).where(~labels.isna(), None).map(lambda v: None if v is None else str(v)).to_numpy()
    order = sorted({v for v, m in zip(as_text, missing) if not m})
    return as_text, order


def _resolve_order(present: list[str], group_order: Sequence | None) -> list[str]:
    if group_order is None:
        return present
    order = [str(g) for g in group_order]
    return order + [g for g in present if g not in order]


def _short(text: str, width: int = 28) -> str:
    return text if len(text) <= width else text[: width - 1] + "…"


# -- per-group metric bars ----------------------------------------------------------------------------
def metric_bars(
    table: pd.DataFrame,
    *,
    metrics: Sequence[str] | None = None,
    group_order: Sequence | None = None,
    colors: Mapping[str, str] | None = None,
    ncols: int = 4,
    title: str | None = None,
) -> Figure:
    """Per-group values with CI whiskers, one panel per metric.

    ``table``: tidy rows with columns ``group``, ``metric``, ``value`` and optionally ``ci_low``,
    ``ci_high``, ``n``, ``small_group`` (the layout of ``GroupMetricResult.to_frame()``); the row
    with group ``"overall"`` is drawn as a dashed line. One horizontal bar per defined group;
    NaN groups get the text "undefined" instead of a bar; small groups are hatched.
    """
    required = {"group", "metric", "value"}
    if not required <= set(table.columns):
        raise ValueError(f"table needs columns {sorted(required)}; got {list(table.columns)}")
    table = table.copy()
    table["group"] = table["group"].astype(str)
    metrics = list(dict.fromkeys(table["metric"])) if metrics is None else list(metrics)
    present = list(dict.fromkeys(g for g in table["group"] if g != "overall"))
    order = [g for g in _resolve_order(present, group_order) if g in present]
    colors = dict(colors) if colors is not None else group_colors(order)
    ncols = max(1, min(ncols, len(metrics)))
    nrows = int(np.ceil(len(metrics) / ncols))
    panel_h = 0.9 + 0.32 * len(order)
    fig = new_figure(3.3 * ncols + 1.2, panel_h * nrows + (0.4 if title else 0))
    axes = np.atleast_1d(fig.subplots(nrows, ncols, sharey=True, squeeze=False)).ravel()
    y = np.arange(len(order))[::-1]  # first group on top

    rows_by_group = {}
    for metric in metrics:
        sub = table[table["metric"] == metric].set_index("group")
        rows_by_group[metric] = sub

    tick_labels = []
    first = rows_by_group[metrics[0]] if metrics else pd.DataFrame()
    for g in order:
        label = _short(g)
        if g in first.index and "n" in first.columns and pd.notna(first.loc[g, "n"]):
            label += f"  (n={int(first.loc[g, 'n'])}"
            small = "small_group" in first.columns and bool(first.loc[g, "small_group"])
            label += ", small)" if small else ")"
        tick_labels.append(label)

    for ax, metric in zip(axes, metrics):
        sub = rows_by_group[metric]
        values = np.array([float(sub.loc[g, "value"]) if g in sub.index else np.nan for g in order])
        low = np.array([float(sub.loc[g, "ci_low"]) if g in sub.index and "ci_low" in sub else np.nan for g in order])
        high = np.array([float(sub.loc[g, "ci_high"]) if g in sub.index and "ci_high" in sub else np.nan for g in order])
        small = np.array([bool(sub.loc[g, "small_group"]) if g in sub.index and "small_group" in sub else False for g in order])
        finite = np.isfinite(values)
        overall = float(sub.loc["overall", "value"]) if "overall" in sub.index else np.nan
        candidates = np.r_[values[finite], high[np.isfinite(high)], overall if np.isfinite(overall) else 0.0]
        top = float(np.max(candidates)) if candidates.size else 1.0
        upper = 1.0 if 0.5 < top <= 1.0 else max(top * 1.15, 1e-6)
        for i in np.flatnonzero(finite):
            ax.barh(y[i], values[i], height=0.66, color=colors.get(order[i], NEUTRAL_COLOR),
                    alpha=0.55 if small[i] else 0.9, hatch="///" if small[i] else None,
                    edgecolor="#222222" if small[i] else "none", linewidth=0.6)
        has_ci = finite & np.isfinite(low) & np.isfinite(high)
        if has_ci.any():
            ax.errorbar(values[has_ci], y[has_ci],
                        xerr=np.vstack([values[has_ci] - low[has_ci], high[has_ci] - values[has_ci]]).clip(min=0),
                        fmt="none", ecolor="#111111", elinewidth=1.1, capsize=3)
        for i in np.flatnonzero(~finite):
            ax.text(upper * 0.02, y[i], UNDEFINED_TEXT, va="center", ha="left", fontsize=9, style="italic",
                    color="#8A1C1C")
        if np.isfinite(overall):
            ax.axvline(overall, color=OVERALL_COLOR, linestyle="--", linewidth=1.2, label="overall")
        ax.set_xlim(0, upper)
        ax.xaxis.set_major_locator(MaxNLocator(5))
        ax.set_title(metric_label(metric), fontsize=10)
        ax.grid(axis="x", color="#dddddd", linewidth=0.6)
        ax.set_axisbelow(True)
        ax.tick_params(labelsize=8.5)
        for side in ("top", "right"):
            ax.spines[side].set_visible(False)
    for ax in axes[len(metrics):]:
        ax.set_visible(False)
    axes[0].set_yticks(y, tick_labels)
    axes[0].set_ylim(-0.6, len(order) - 0.4)
    handles = [Line2D([], [], color=OVERALL_COLOR, linestyle="--", label="overall"),
               Line2D([], [], color="#111111", marker="|", linestyle="-", label="CI")]
    if any(bool(v) for v in table.get("small_group", pd.Series(dtype=bool))):
        handles.append(Patch(facecolor="#bbbbbb", hatch="///", edgecolor="#222222", label="small group"))
    fig.legend(handles=handles, loc="outside lower center", ncols=len(handles), fontsize=8.5, frameon=False)
    if title:
        fig.suptitle(title, fontsize=11)
    return fig


# -- curves ----------------------------------------------------------------------------------------------
def _unit_square(ax, xlabel: str, ylabel: str, legend_loc: str, title: str) -> None:
    """The square [0, 1]² frame that ROC and calibration plots share."""
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.01)
    ax.set_aspect("equal")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.grid(color="#eeeeee", linewidth=0.6)
    ax.legend(loc=legend_loc, fontsize=8, frameon=True, framealpha=0.9)
    ax.set_title(title, fontsize=10)


def _per_group_inputs(y_true, y_score, groups, group_order, colors):
    """Labels and scores as flat arrays, each sample's group, the group order and a colour per group:
    what every per-group curve plot starts from."""
    y = np.asarray(y_true).astype(int).reshape(-1)
    s = np.asarray(y_score, dtype=np.float64).reshape(-1)
    labels, present = _group_arrays(groups, y.size)
    order = _resolve_order(present, group_order)
    return y, s, labels, order, dict(colors) if colors is not None else group_colors(order)


def roc_curves(
    y_true,
    y_score,
    groups,
    *,
    group_order: Sequence | None = None,
    colors: Mapping[str, str] | None = None,
    title: str | None = None,
) -> Figure:
    """ROC curve per group (scikit-learn ``roc_curve``) with its AUC in the legend, and the chance
    diagonal. A group with one class has no curve; the legend says its AUC is undefined."""
    from sklearn.metrics import roc_auc_score, roc_curve

    y, s, labels, order, colors = _per_group_inputs(y_true, y_score, groups, group_order, colors)
    fig = new_figure(5.2, 4.4)
    ax = fig.add_subplot()
    ax.plot([0, 1], [0, 1], color="#999999", linestyle=":", linewidth=1, label="chance")
    for g in order:
        mask = labels == g
        yg, sg = y[mask], s[mask]
        if mask.sum() == 0:
            continue
        if np.unique(yg).size < 2:
            ax.plot([], [], color=colors.get(g, NEUTRAL_COLOR), linestyle="none", marker="x",
                    label=f"{_short(g)}: AUC {UNDEFINED_TEXT} (one class)")
            continue
        fpr, tpr, _ = roc_curve(yg, sg)
        auc = roc_auc_score(yg, sg)
        ax.plot(fpr, tpr, color=colors.get(g, NEUTRAL_COLOR), linewidth=1.6,
                label=f"{_short(g)}: AUC {auc:.3f} (n={int(mask.sum())})")
    _unit_square(ax, "False positive rate", "True positive rate", "lower right", title or "ROC curves by group")
    return fig


def calibration_curves(
    y_true,
    y_prob,
    groups,
    *,
    n_bins: int = 10,
    bins: str = "unit",
    group_order: Sequence | None = None,
    colors: Mapping[str, str] | None = None,
    title: str | None = None,
) -> Figure:
    """Reliability diagram: per group, fraction positive against mean predicted probability in each
    non-empty bin (:func:`medequity.metrics.calibration.calibration_curve`; marker area ∝ bin count),
    with the diagonal of perfect calibration."""
    from medequity.metrics.calibration import calibration_curve

    y, p, labels, order, colors = _per_group_inputs(y_true, y_prob, groups, group_order, colors)
    fig = new_figure(5.2, 4.4)
    ax = fig.add_subplot()
    ax.plot([0, 1], [0, 1], color="#999999", linestyle=":", linewidth=1, label="perfect calibration")
    for g in order:
        mask = labels == g
        if not mask.any():
            continue
        curve = calibration_curve(y[mask], p[mask], n_bins=n_bins, bins=bins)
        color = colors.get(g, NEUTRAL_COLOR)
        ax.plot(curve["mean_predicted"], curve["fraction_positive"], color=color, linewidth=1.4,
                label=f"{_short(g)} (n={int(mask.sum())})")
        sizes = 12 + 110 * curve["count"] / max(1, int(mask.sum()))
        ax.scatter(curve["mean_predicted"], curve["fraction_positive"], s=sizes, color=color, alpha=0.8,
                   edgecolor="white", linewidth=0.5, zorder=3)
    _unit_square(ax, "Mean predicted probability (bin)", "Fraction positive (bin)", "upper left",
                 title or f"Calibration by group ({n_bins} {bins} bins)")
    return fig


def score_distributions(
    y_true,
    y_score,
    groups,
    *,
    threshold: float | None = None,
    group_order: Sequence | None = None,
    colors: Mapping[str, str] | None = None,
    title: str | None = None,
) -> Figure:
    """Score distributions per group and label: a pair of violins per group (light = negatives,
    dark = positives), medians marked, the decision threshold as a dashed line. A label with fewer
    than two distinct scores in a group is drawn as points (a violin needs a spread)."""
    y, s, labels, order, colors = _per_group_inputs(y_true, y_score, groups, group_order, colors)
    fig = new_figure(max(5.2, 1.25 * len(order) + 2.0), 4.0)
    ax = fig.add_subplot()
    ticks, tick_labels = [], []
    for i, g in enumerate(order):
        mask = labels == g
        color = colors.get(g, NEUTRAL_COLOR)
        counts = []
        for label_value, offset, alpha in ((0, -0.2, 0.35), (1, 0.2, 0.85)):
            values = s[mask & (y == label_value)]
            counts.append(values.size)
            x = i + offset
            if np.unique(values).size >= 2:
                parts = ax.violinplot([values], positions=[x], widths=0.36, showextrema=False, showmedians=False)
                for body in parts["bodies"]:
                    body.set_facecolor(color)
                    body.set_edgecolor(color)
                    body.set_alpha(alpha)
                ax.plot([x - 0.1, x + 0.1], [np.median(values)] * 2, color="#111111", linewidth=1.3)
            elif values.size:
                ax.scatter(np.full(values.size, x), values, color=color, alpha=alpha, s=14, zorder=3)
        ticks.append(i)
        tick_labels.append(f"{_short(g, 18)}\nneg {counts[0]} | pos {counts[1]}")
    if threshold is not None and np.isfinite(threshold):
        ax.axhline(threshold, color=OVERALL_COLOR, linestyle="--", linewidth=1.1)
    ax.set_xticks(ticks, tick_labels, fontsize=8)
    ax.set_xlim(-0.6, len(order) - 0.4)
    low, high = (float(np.nanmin(s)), float(np.nanmax(s))) if s.size else (0.0, 1.0)
    pad = 0.03 * max(high - low, 1e-6)
    ax.set_ylim(min(0.0, low) - pad if low >= 0 else low - pad, max(1.0, high) + pad if high <= 1 else high + pad)
    ax.set_ylabel("Score")
    ax.grid(axis="y", color="#eeeeee", linewidth=0.6)
    handles = [Patch(facecolor="#777777", alpha=0.35, label="negatives (y=0)"),
               Patch(facecolor="#777777", alpha=0.85, label="positives (y=1)"),
               Line2D([], [], color="#111111", label="median")]
    if threshold is not None and np.isfinite(threshold):
        handles.append(Line2D([], [], color=OVERALL_COLOR, linestyle="--", label=f"threshold {threshold:.3g}"))
    fig.legend(handles=handles, loc="outside lower center", ncols=len(handles), fontsize=8, frameon=False)
    ax.set_title(title or "Score distributions by group and label", fontsize=10)
    return fig


# -- gaps ------------------------------------------------------------------------------------------------
def gap_forest(
    summaries: pd.DataFrame,
    *,
    summary: str | Sequence[str] = "gap",
    alpha: float = 0.05,
    n_permutations: int | None = None,
    title: str | None = None,
) -> Figure:
    """Forest plot of gap summaries: one row per metric × summary, point and CI whisker, the
    p-value written beside it; rows with p < ``alpha`` are highlighted. ``summaries`` has columns
    ``metric``, ``summary``, ``value``, ``ci_low``, ``ci_high``, ``p_value`` (the layout of
    ``GroupMetricResult.summaries()``). An undefined (NaN) gap is written "undefined";
    ``n_permutations`` lets the smallest attainable p-value, 1/(B+1), be written "p ≤ …"."""
    wanted = [summary] if isinstance(summary, str) else list(summary)
    rows = summaries[summaries["summary"].isin(wanted)].reset_index(drop=True)
    n = len(rows)
    fig = new_figure(6.8, 0.9 + 0.34 * max(n, 1))
    ax = fig.add_subplot()
    y = np.arange(n)[::-1]
    finite_ends = np.r_[rows["value"].to_numpy(float), rows.get("ci_low", pd.Series(dtype=float)).to_numpy(float),
                        rows.get("ci_high", pd.Series(dtype=float)).to_numpy(float)]
    finite_ends = finite_ends[np.isfinite(finite_ends)]
    x_min = min(0.0, float(finite_ends.min())) if finite_ends.size else 0.0
    x_max = float(finite_ends.max()) if finite_ends.size else 1.0
    x_max = x_max if x_max > x_min else x_min + 1.0
    labels = []
    for i, row in rows.iterrows():
        p = row.get("p_value", np.nan)
        significant = bool(np.isfinite(p) and p < alpha)
        color = SIGNIFICANT_COLOR if significant else NEUTRAL_COLOR
        name = metric_label(row["metric"]) + ("" if len(wanted) == 1 else f" · {row['summary']}")
        labels.append(name)
        value, low, high = row["value"], row.get("ci_low", np.nan), row.get("ci_high", np.nan)
        if np.isfinite(value):
            if np.isfinite(low) and np.isfinite(high):
                ax.errorbar([value], [y[i]], xerr=[[max(value - low, 0)], [max(high - value, 0)]], fmt="o",
                            color=color, ecolor=color, elinewidth=1.6 if significant else 1.1, capsize=3,
                            markersize=6 if significant else 4.5)
            else:
                ax.plot([value], [y[i]], "o", color=color)
        else:
            ax.text(x_min, y[i], f" {UNDEFINED_TEXT}", va="center", ha="left", fontsize=8.5, style="italic",
                    color="#8A1C1C")
        text = format_p_value(p, n_permutations)
        ax.annotate(text, xy=(1.01, y[i]), xycoords=("axes fraction", "data"), va="center", fontsize=8.5,
                    color=color, fontweight="bold" if significant else "normal")
    ax.axvline(0, color="#999999", linewidth=1)
    ax.set_yticks(y, labels, fontsize=8.5)
    ax.set_ylim(-0.7, n - 0.3)
    ax.set_xlim(x_min - 0.02 * (x_max - x_min), x_max + 0.05 * (x_max - x_min))
    ax.set_xlabel("max − min over groups" if wanted == ["gap"] else "value")
    ax.grid(axis="x", color="#eeeeee", linewidth=0.6)
    for side in ("top", "right"):
        ax.spines[side].set_visible(False)
    handles = [Line2D([], [], color=SIGNIFICANT_COLOR, marker="o", label=f"p < {alpha:g}"),
               Line2D([], [], color=NEUTRAL_COLOR, marker="o", label=f"p ≥ {alpha:g} or untested")]
    fig.legend(handles=handles, loc="outside lower center", ncols=2, fontsize=8, frameon=False)
    ax.set_title(title or "Gaps between groups with CIs and permutation p-values", fontsize=10)
    return fig
