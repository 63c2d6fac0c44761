"""One picture per validation: each claim as its observed value against its bound (pass side
shaded), beside the numbers behind it (per-group AUCs, or the causal metrics per method)."""

from __future__ import annotations

import io
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from medequity.report.plots import group_colors, new_figure

if TYPE_CHECKING:
    from medequity.validation.result import ValidationResult

PASS_COLOR, FAIL_COLOR = "#009E73", "#D55E00"


def _claim_axes(ax, claim) -> None:
    values = [v for v in (claim.observed, claim.bound) if np.isfinite(v)]
    low, high = (min(values), max(values)) if values else (0.0, 1.0)
    pad = max(0.15 * (high - low), 0.02 * max(abs(high), 1e-3), 1e-3)
    low, high = low - pad, high + pad
    if np.isfinite(claim.bound):
        ax.axvspan(claim.bound, high, color=PASS_COLOR, alpha=0.12) if claim.op == ">=" else \
            ax.axvspan(low, claim.bound, color=PASS_COLOR, alpha=0.12)
        ax.axvline(claim.bound, color="0.3", lw=1, ls="--")
    if np.isfinite(claim.observed):
        ax.plot([claim.observed], [0], "o", ms=9, color=PASS_COLOR if claim.passed else FAIL_COLOR)
    ax.set_xlim(low, high)
    ax.set_yticks([])
    ax.set_title(f"{'PASS' if claim.passed else 'FAIL'}  {claim.name}: {claim.observed:.4g} {claim.op} {claim.bound:.4g}",
                 fontsize=9, loc="left", color=PASS_COLOR if claim.passed else FAIL_COLOR)
    ax.tick_params(labelsize=8)


def _group_auc_bars(ax, frame: pd.DataFrame, title: str, ylabel: str = "test AUC") -> None:
    """Bars of per-group AUC (columns ``auc:<group>``), one cluster per row of ``frame``."""
    columns = [c for c in frame.columns if c.startswith("auc:")]
    names = [c.split(":", 1)[1] for c in columns]
    colors = group_colors(names)
    width = 0.8 / max(len(columns), 1)
    x = np.arange(len(frame))
    for i, (column, name) in enumerate(zip(columns, names)):
        ax.bar(x + (i - (len(columns) - 1) / 2) * width, frame[column].to_numpy(), width, label=name, color=colors[name])
    ax.set_xticks(x, [str(label) for label in frame.index], rotation=20, ha="right", fontsize=8)
    ax.set_ylabel(ylabel, fontsize=8)
    values = frame[columns].to_numpy(dtype=float)
    finite = values[np.isfinite(values)]
    if finite.size:
        ax.set_ylim(max(0.0, finite.min() - 0.1), min(1.0, finite.max() + 0.05))
    ax.legend(fontsize=7, title="group", title_fontsize=7)
    ax.set_title(title, fontsize=9, loc="left")


def _detail(ax, result: ValidationResult) -> bool:
    table = result.table
    if result.method == "fairdi":
        mean = table.groupby("model", sort=False)[[c for c in table.columns if c.startswith("auc:")]].mean()
        mean.index = [m.replace("FairDi-", "").replace(" - Step 1", "").replace(" (Step 2)", "") for m in mean.index]
        _group_auc_bars(ax, mean, f"per-group test AUC, mean over seeds {result.settings.get('seeds')}")
        return True
    if result.method == "fairtune_fig1":
        frame = table.rename(columns=lambda c: f"auc:{c[4:-1]}" if c.startswith("auc[") else c)
        frame = frame.set_index(frame["split"] + " s" + frame["seed"].astype(str))
        _group_auc_bars(ax, frame, "final epoch of full fine-tuning: train vs test per-group AUC", "AUC")
        return True
    if result.method == "fair_diagnosis":
        methods = table["method"].tolist()
        x = np.arange(len(methods))
        ax.bar(x - 0.2, table["ADF"], 0.4, label="ADF ×1e-3", color="#0072B2")
        ax.bar(x + 0.2, table["DP"], 0.4, label="DP ×1e-2", color="#E69F00")
        ax.set_xticks(x, methods, rotation=20, ha="right", fontsize=8)
        ax.legend(fontsize=7)
        ax.set_title("direct (ADF) vs total (DP) dependence on the attribute", fontsize=9, loc="left")
        return True
    return False


def validation_figure(result: ValidationResult):
    """The claims (left) and, where the method has one, the detail panel (right)."""
    n = len(result.claims)
    fig = new_figure(10, max(2.4, 1.0 * n + 0.6))
    grid = fig.add_gridspec(max(n, 1), 2, width_ratios=[1, 1.2])
    for i, claim in enumerate(result.claims):
        _claim_axes(fig.add_subplot(grid[i, 0]), claim)
    detail = fig.add_subplot(grid[:, 1])
    if not _detail(detail, result):
        detail.remove()
    fig.suptitle(f"{result.method} on {result.preset}: {'PASS' if result.passed else 'FAIL'}", fontsize=11)
    return fig


def save_validation_figure(result: ValidationResult, out: str | Path) -> Path:
    """``validation.png`` in ``out``, written atomically."""
    from medequity.utils.io import atomic_write_bytes

    buffer = io.BytesIO()
    validation_figure(result).savefig(buffer, format="png", dpi=110, facecolor="white")
    return atomic_write_bytes(Path(out) / "validation.png", buffer.getvalue())
