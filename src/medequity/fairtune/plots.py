"""FairTune figures and the HTML/PNG report.

- :func:`mask_figure`: FairTune Fig. 4 — blocks × {attention, MLP, LayerNorm} grid; one mask is
  drawn trained/frozen, several masks (e.g. one per dataset/attribute) as selection frequency.
- :func:`convergence_figure`: FairTune Fig. 5 — the objective per trial and the best so far.
- :func:`comparison_figure`: Table 1 as bars (overall AUC, worst-group AUC, AUC gap per method).
- :func:`write_report`: best.json, history.csv, comparison.csv, the PNGs and a self-contained
  report.html (figures inlined with :func:`medequity.report.plots.fig_to_data_uri`).
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from pathlib import Path

import jinja2
import numpy as np
import pandas as pd
from markupsafe import Markup
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from medequity.report.audit_html import TEMPLATES
from medequity.report.plots import NEUTRAL_COLOR, OKABE_ITO, OVERALL_COLOR, fig_to_data_uri, new_figure

PARTS = ("attn", "mlp", "norm")
PART_LABELS = {"attn": "Attention", "mlp": "MLP", "norm": "LayerNorm"}
_BLOCK = re.compile(r"^blocks\.(\d+)\.(attn|mlp|norm)$")


def mask_frequency(masks: Mapping[str, int] | Sequence[Mapping[str, int]]) -> pd.Series:
    """Fraction of masks that train each group (a single mask gives 0/1), in group order."""
    masks = [masks] if isinstance(masks, Mapping) else list(masks)
    if not masks:
        raise ValueError("no masks to draw")
    frame = pd.DataFrame([{g: int(v) for g, v in m.items()} for m in masks]).fillna(0)
    return frame.mean(axis=0)


def mask_grid(frequency: pd.Series) -> pd.DataFrame | None:
    """Blocks × {attn, mlp, norm} for ViT groups; None when the groups are not ViT blocks."""
    cells = {}
    for group, value in frequency.items():
        match = _BLOCK.match(str(group))
        if match is None:
            return None
        cells[(int(match.group(1)), match.group(2))] = value
    blocks = sorted({b for b, _ in cells})
    return pd.DataFrame([[cells.get((b, p), np.nan) for p in PARTS] for b in blocks], index=blocks,
                        columns=[PART_LABELS[p] for p in PARTS])


def mask_figure(masks: Mapping[str, int] | Sequence[Mapping[str, int]], *, title: str | None = None,
                searched: Sequence[str] | None = None) -> Figure:
    """Fig. 4 style: which components are fine-tuned (dark) or frozen (light), per block.

    Groups outside the search space (``searched``) are hatched "not searched" (always frozen).
    """
    frequency = mask_frequency(masks)
    single = isinstance(masks, Mapping)
    grid = mask_grid(frequency)
    if grid is None:  # generic models: one row per named group
        grid = pd.DataFrame({"trained": frequency.to_numpy()}, index=list(frequency.index))
    unsearched = np.zeros(grid.shape, dtype=bool)
    if searched is not None:
        searched = set(searched)
        for i, row in enumerate(grid.index):
            for j, column in enumerate(grid.columns):
                name = f"blocks.{row}.{PARTS[j]}" if column in PART_LABELS.values() else str(row)
                unsearched[i, j] = name not in searched
    fig = new_figure(1.3 + 1.1 * grid.shape[1], 0.9 + 0.32 * grid.shape[0])
    ax = fig.add_subplot()
    image = ax.imshow(grid.to_numpy(dtype=float), cmap="Blues", vmin=0, vmax=1, aspect="auto")
    for i in range(grid.shape[0]):
        for j in range(grid.shape[1]):
            value = grid.iat[i, j]
            if unsearched[i, j]:
                ax.add_patch(_hatch(ax, j, i))
                text = "—"
            elif single:
                text = "train" if value >= 0.5 else "frozen"
            else:
                text = f"{value:.2f}"
            ax.text(j, i, text, ha="center", va="center", fontsize=7, color="white" if value >= 0.6 else OVERALL_COLOR)
    ax.set_xticks(range(grid.shape[1]), list(grid.columns))
    ax.set_yticks(range(grid.shape[0]), [f"block {b}" if isinstance(b, (int, np.integer)) else str(b) for b in grid.index])
    ax.xaxis.tick_top()
    if not single:
        fig.colorbar(image, ax=ax, label="selection frequency", shrink=0.8)
    ax.set_title(title or ("FairTune mask (dark = fine-tuned)" if single else "Frequency of fine-tuning each component"),
                 fontsize=9)
    return fig


def _hatch(ax, x, y):
    from matplotlib.patches import Rectangle

    return Rectangle((x - 0.5, y - 0.5), 1, 1, fill=False, hatch="///", edgecolor=NEUTRAL_COLOR, linewidth=0)


def convergence_figure(history: pd.DataFrame, *, direction: str = "maximize", objective: str = "objective") -> Figure:
    """Fig. 5 style: each trial's objective (pruned trials at their last reported value, marked ×)
    and the best completed value so far."""
    fig = new_figure(6.0, 3.4)
    ax = fig.add_subplot()
    frame = history.sort_values("number")
    complete = frame[frame.state == "COMPLETE"]
    pruned = frame[frame.state == "PRUNED"]
    ax.scatter(complete["number"], complete["value"], color=OKABE_ITO[0], s=22, label="trial (complete)", zorder=3)
    if len(pruned):
        ax.scatter(pruned["number"], pruned["last_reported"], color=NEUTRAL_COLOR, marker="x", s=22,
                   label="trial (pruned, last report)", zorder=3)
    values = frame["value"].where(frame.state == "COMPLETE")
    best = (values.cummax() if direction == "maximize" else values.cummin()).ffill()  # flat through pruned trials
    ax.step(frame["number"], best, where="post", color=OKABE_ITO[5], linewidth=1.8, label="best so far")
    ax.set_xlabel("trial")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_ylabel(objective)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="lower right" if direction == "maximize" else "upper right")
    ax.set_title("FairTune outer-loop convergence", fontsize=9)
    return fig


COMPARISON_COLUMNS = {"auc": "Overall AUC ↑", "worst_group_auc": "Worst-group AUC ↑", "auc_gap": "AUC gap ↓",
                      "es_auc": "ES-AUC (std) ↑"}


def comparison_figure(table: pd.DataFrame) -> Figure:
    """Table 1 as grouped bars: one panel per column, one bar per method (FairTune highlighted)."""
    columns = [c for c in COMPARISON_COLUMNS if c in table.columns]
    fig = new_figure(2.4 * len(columns), 3.0)
    axes = fig.subplots(1, len(columns), squeeze=False)[0]
    methods = table["method"].astype(str).tolist()
    colors = [OKABE_ITO[5] if m == "FairTune" else OKABE_ITO[0] for m in methods]
    for ax, column in zip(axes, columns):
        values = table[column].to_numpy(dtype=float)
        ax.barh(range(len(methods)), np.nan_to_num(values), color=colors)
        for i, v in enumerate(values):
            ax.text(0 if not np.isfinite(v) else v, i, f" {v:.3f}" if np.isfinite(v) else " undefined", va="center", fontsize=7)
        ax.set_yticks(range(len(methods)), methods if ax is axes[0] else [""] * len(methods))
        ax.invert_yaxis()
        ax.set_title(COMPARISON_COLUMNS[column], fontsize=9)
        if column != "auc_gap":
            finite = values[np.isfinite(values)]
            if finite.size:
                ax.set_xlim(max(0.0, finite.min() - 0.1), min(1.0, finite.max() + 0.08))
    return fig


def write_report(out_dir: str | Path, result, *, comparison: pd.DataFrame | None = None,
                 fig_one: pd.DataFrame | None = None) -> dict[str, Path]:
    """Write a search's outputs: best.json, history.csv, mask.png, convergence.png, and (when
    given) comparison.csv/.png, plus a self-contained report.html. ``result`` is a SearchResult."""
    from medequity.utils.io import atomic_write_text

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {"best": atomic_write_text(out / "best.json", json.dumps(result.to_dict(), indent=2, default=str))}
    history = result.history
    paths["history"] = atomic_write_text(out / "history.csv", history.to_csv(index=False))
    figures = {"mask": mask_figure(result.best_mask, searched=result.space.searched,
                                   title=f"Best mask ({result.space.name} space, LR {result.best_lr:.2e})"),
               "convergence": convergence_figure(history, direction=result.objective.direction, objective=result.objective.name)}
    if comparison is not None:
        paths["comparison"] = atomic_write_text(out / "comparison.csv", comparison.to_csv(index=False))
        figures["comparison_plot"] = comparison_figure(comparison)
    images = {}
    for name, fig in figures.items():
        fig.savefig(out / f"{name}.png", dpi=110, facecolor="white")
        paths[f"{name}_png"] = out / f"{name}.png"
        images[name] = fig_to_data_uri(fig)
    paths["html"] = atomic_write_text(out / "report.html", _html(result, history, images, comparison, fig_one))
    return paths


def _table_html(frame: pd.DataFrame) -> Markup:
    # pandas escapes the cells; Markup tells the template not to escape the table twice
    return Markup(frame.to_html(index=False, float_format=lambda v: f"{v:.4g}", border=0, classes="t", na_rep="—"))


def _html(result, history, images, comparison, fig_one) -> str:
    """The report page: ``report/templates/fairtune.html`` (extends the shared base)."""
    info = result.to_dict()
    states = history["state"].value_counts().to_dict() if len(history) else {}
    environment = jinja2.Environment(loader=jinja2.FileSystemLoader(str(TEMPLATES)), autoescape=True,
                                     undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True)
    return environment.get_template("fairtune.html").render(
        title="FairTune report", dataset=str(result.spec.dataset), dataset_options=json.dumps(result.spec.dataset_options),
        attribute=result.spec.attribute, model=result.spec.model, objective=result.objective.name,
        direction=result.objective.direction, space=result.space.name, n_bits=result.space.n_bits,
        lr_low=f"{result.space.lr_range[0]:g}", lr_high=f"{result.space.lr_range[1]:g}", sampler_seed=result.config.seed,
        reduction_factor=result.config.reduction_factor, min_resource=result.config.min_resource, n_trials=len(history),
        states=", ".join(f"{k.lower()} {v}" for k, v in states.items()), n_train_search=info["n_train_search"],
        n_train_full=info["n_train_full"], study_name=info["study_name"], best_value=f"{result.best_value:.4f}",
        best_lr=f"{result.best_lr:.3e}", mask_bits=info["mask_bits"], searched=", ".join(result.space.searched),
        images=images, comparison=_table_html(comparison) if comparison is not None else None,
        fig_one=_table_html(fig_one) if fig_one is not None else None, history=_table_html(history))
