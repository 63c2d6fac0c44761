"""The finding first: for each attribute and headline metric, the group on the worse side of all
audited samples, its value with its interval, and whether its difference is significant.

A finding is read off :meth:`GroupMetricResult.contrasts` (group − all samples, min-P adjusted
over the attribute's groups, intervals that agree with the test), so the sentence a reader sees
and the interval beside it cannot contradict each other. The gap (max − min) is reported as a
size with its interval, never as the evidence.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import pandas as pd

from medequity.metrics import GroupMetricResult
from medequity.metrics.weighted import get_metric

HEADLINE_METRICS = ("auc", "tpr", "fpr", "dice", "iou", "hd95", "nsd")
METRIC_WORDS = {
    "auc": "AUC",
    "tpr": "sensitivity (TPR)",
    "fpr": "false-positive rate",
    "dice": "Dice",
    "iou": "IoU",
    "hd95": "HD95",
    "nsd": "NSD",
}
FINDING_COLUMNS = ["task", "attribute", "metric", "group", "value", "value_low", "value_high", "pooled",
                   "difference", "ci_low", "ci_high", "p_adjusted", "significant", "gap", "gap_low", "gap_high",
                   "p_omnibus", "n_groups", "sentence"]


def _fmt(value: float, digits: int = 3) -> str:
    return "n/a" if not np.isfinite(value) else f"{value:.{digits}f}"


def _fmt_p(p: float) -> str:
    if not np.isfinite(p):
        return "not tested"
    return f"p = {p:.3f}" if p >= 0.001 else "p < 0.001"


def attribute_findings(result: GroupMetricResult, *, task: str = "", metrics: Iterable[str] = HEADLINE_METRICS) -> list[dict]:
    """One finding per headline metric of one attribute (see the module docstring)."""
    contrasts = result.contrasts()
    summaries = result.summaries().set_index(["metric", "summary"])
    rows = []
    for metric in [m for m in metrics if m in result.metrics]:
        table = contrasts[contrasts.metric == metric].reset_index(drop=True)
        if table.empty or not np.isfinite(table.difference).any():
            continue
        higher = get_metric(metric).higher_is_better
        signed = table.difference if higher else -table.difference
        worst = int(np.nanargmin(signed.to_numpy()))
        row = table.iloc[worst]
        low, high = result._interval(metric)
        gap = summaries.loc[(metric, "gap")]
        finding = {
            "task": task, "attribute": result.attribute, "metric": metric, "group": row.group,
            "value": float(row.group_value), "value_low": float(low[worst + 1]), "value_high": float(high[worst + 1]),
            "pooled": float(row.pooled_value), "difference": float(row.difference),
            "ci_low": float(row.ci_low), "ci_high": float(row.ci_high), "p_adjusted": float(row.p_adjusted),
            "significant": bool(row.significant), "gap": float(gap.value), "gap_low": float(gap.ci_low),
            "gap_high": float(gap.ci_high), "p_omnibus": float(gap.p_value), "n_groups": len(result.groups),
        }
        finding["sentence"] = sentence(finding, ci=result.ci)
        rows.append(finding)
    return rows


def sentence(f: dict, *, ci: float = 0.95) -> str:
    """The finding in plain words, numbers with their intervals."""
    words = METRIC_WORDS.get(f["metric"], f["metric"])
    extreme = "lowest" if get_metric(f["metric"]).higher_is_better else "highest"
    side = "below" if f["difference"] < 0 else "above"
    value = f"{_fmt(f['value'])} [{_fmt(f['value_low'])}, {_fmt(f['value_high'])}]"
    difference = (f"{_fmt(abs(f['difference']))} {side} all samples ({_fmt(f['pooled'])}); difference "
                  f"{_fmt(f['ci_low'])} to {_fmt(f['ci_high'])} ({100 * ci:g}% simultaneous), adjusted {_fmt_p(f['p_adjusted'])}")
    if f["significant"]:
        return f"{f['group']} has the {extreme} {words}, {value}, {difference}. Significant."
    return f"no significant difference. {extreme.capitalize()}: {f['group']}, {value}, {difference}."


def findings_frame(rows: list[dict]) -> pd.DataFrame:
    return pd.DataFrame(rows, columns=FINDING_COLUMNS)


def overview(findings: pd.DataFrame) -> pd.DataFrame:
    """Across tasks: per task, its largest significant difference (any headline metric), largest first;
    tasks without one are listed last."""
    if findings.empty:
        return findings
    order = []
    for _, part in findings.groupby("task", sort=False):
        hits = part[part.significant]
        if hits.empty:
            best = part.iloc[[int(np.nanargmin(part.p_adjusted.fillna(1.0).to_numpy()))]]
        else:
            best = hits.iloc[[int(np.nanargmax(hits.difference.abs().to_numpy()))]]
        order.append(best)
    table = pd.concat(order, ignore_index=True)
    table["_rank"] = np.where(table.significant, -table.difference.abs(), np.inf)
    return table.sort_values("_rank", kind="stable").drop(columns="_rank").reset_index(drop=True)
