"""The HTML report of a benchmark's results folder: :func:`write_bench_report`.

One self-contained page (``<out>/report.html``; CSS inline, figures as ``data:`` URIs, jinja2 with
autoescaping, the CSS shared with the audit page): the settings and provenance, a leaderboard per
(dataset, usage, training attribute), Friedman + Nemenyi critical-difference diagrams across
settings, fairness–utility Pareto plots, per-group AUC plots (FairMedFM Fig. 2–5), representation
fairness (attribute probes and embeddings), and the failed runs.

Segmentation benchmarks (``task: segmentation``) show the same page on Dice: leaderboards per
(dataset, usage or prompt type, attribute) with Dice, worst-group Dice, the Dice gap Δ, ES-Dice
(FairSeg), the STD of group means and DSC_ES (FairMedFM), skewness, IoU and HD95; per-group Dice
(FairMedFM Fig. 7–9) and the distribution of per-sample Dice in each group per setting;
critical-difference diagrams of methods, of prompt types / usages and of segmenters across
settings; Dice–Δ trade-offs per method and per prompt type; each method's paired effect against
ERM; a gallery of overlays (best, median and worst test case per group, stored by each run:
:mod:`medequity.bench.gallery`); probes of the segmenters' image encoders.

Only the run each selection group keeps (hyper-parameters chosen on validation, ``selected``) is
shown; metrics are those of the training attribute. Values over several seeds are means; their
interval is the run's bootstrap CI with one seed and a t-interval over seeds with several — the
rule of :func:`medequity.bench.store.leaderboard`, which :func:`leaderboard_frame` extends.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from medequity.bench.effects import (
    REFERENCE,
    UTILITY_TOLERANCE,
    aggregate_effects,
    decision_verdict,
    paired_effects,
    verdict,
)
from medequity.bench.store import LEADERBOARD_KEYS, Results, leaderboard, load_results, read_bench
from medequity.report import plots
from medequity.report.audit_html import _environment, format_ci, format_value
from medequity.utils.io import atomic_write_text

REPORT_FILE = "report.html"
SIGNIFICANCE_LEVEL = 0.05
SETTING_KEYS = ("dataset", "model", "usage", "train_attribute")  # one fairness–utility picture each
RANK_SETTING_KEYS = (*SETTING_KEYS, "seed")  # the rows of the Friedman test
MAX_EMBEDDINGS = 8

# name -> (label, (metric, summary) in the summaries table or None for the overall AUC, higher is better)
QUANTITIES = {
    "auc": ("AUC", None, True),
    "worst_group_auc": ("Worst-group AUC", ("auc", "worst"), True),
    "auc_gap": ("AUC gap", ("auc", "gap"), False),
    "es_auc": ("ES-AUC", ("auc", "es_std"), True),
    "eo_gap": ("EO gap (ΔTPR)", ("tpr", "gap"), False),
    "dp_gap": ("DP gap (Δ selection rate)", ("selection_rate", "gap"), False),
    "adf": ("ADF", ("adf", None), False),
}
RANKED = ("auc", "worst_group_auc", "auc_gap", "es_auc")  # the critical-difference diagrams
UNBOUNDED = ("adf", "dice_skewness", "hd95")  # quantities whose t-interval is not clipped to [0, 1]

# Segmentation (FairMedFM SEG-ZS): per-sample Dice (mean over the sample's classes), summarised per group;
# ES-Dice is FairSeg's Dice / (1 + Σ_g |Dice − Dice_g|) (es_sum_abs_dev). "overall" rows are the
# metrics table's overall value of the named metric.
SEGMENTATION_QUANTITIES = {
    "dice": ("Dice", ("dice", "overall"), True),
    "worst_group_dice": ("Worst-group Dice", ("dice", "worst"), True),
    "dice_gap": ("Dice gap", ("dice", "gap"), False),
    "es_dice": ("ES-Dice", ("dice", "es_sum_abs_dev"), True),
    "dice_skewness": ("Dice skewness", ("dice", "skewness"), False),
    # FairMedFM: STD of the group mean Dice and DSC_ES = Dice / (1 + STD)
    "dice_std": ("Dice STD", ("dice", "std"), False),
    "dsc_es": ("DSC_ES", ("dice", "es_std"), True),
    "iou": ("IoU", ("iou", "overall"), True),
    "iou_gap": ("IoU gap", ("iou", "gap"), False),
    "hd95": ("HD95", ("hd95", "overall"), False),  # in pixels (or the spacing's units)
}
SEGMENTATION_RANKED = ("dice", "worst_group_dice", "dice_gap", "es_dice")


@dataclass(frozen=True)
class TaskView:
    """What the page shows for a task: its quantities, the headline metric, what competes in the
    critical-difference diagrams, and the words used."""

    quantities: dict
    metric: str  # the per-group metric of the group plots
    metric_label: str
    ranked: tuple[str, ...]
    # (competitor column, what a setting is made of, heading): methods across settings for
    # classification; segmenters and prompt types for segmentation
    rankings: tuple[tuple[str, tuple[str, ...], str], ...]
    pareto: tuple[str, tuple[str, ...]]  # (utility, fairness quantities)
    # quantities a method may win only while its utility stays within UTILITY_TOLERANCE of the best:
    # a gap closed by losing accuracy is levelling down, not fairness
    utility_bound: tuple[str, ...] = ()


TASK_VIEWS = {
    "classification": TaskView(QUANTITIES, "auc", "AUC", RANKED, (("method", RANK_SETTING_KEYS, "methods"),),
                               ("auc", ("auc_gap", "es_auc")), ("auc_gap", "eo_gap", "dp_gap", "adf")),
    "segmentation": TaskView(SEGMENTATION_QUANTITIES, "dice", "Dice", SEGMENTATION_RANKED,
                             (("method", RANK_SETTING_KEYS, "methods"),
                              ("usage", ("dataset", "model", "train_attribute", "seed"), "prompt types"),
                              ("model", ("dataset", "usage", "train_attribute", "seed"), "segmenters")),
                             ("dice", ("dice_gap", "es_dice")), ("dice_gap", "dice_skewness", "iou_gap", "dice_std")),
}


def task_view(results: Results) -> TaskView:
    return TASK_VIEWS.get(results.task, TASK_VIEWS["classification"])


# -- tables ---------------------------------------------------------------------------------------------
def run_table(results: Results) -> pd.DataFrame:
    """One row per selected run: identifiers and, on the training attribute, each quantity of
    :data:`QUANTITIES` (segmentation: :data:`SEGMENTATION_QUANTITIES`) present (``<q>``,
    ``<q>_ci_low``, ``<q>_ci_high`` and ``<q>_p`` for gaps)."""
    quantities = task_view(results).quantities
    runs = results.runs
    if runs.empty:
        return pd.DataFrame(columns=["run_id", *LEADERBOARD_KEYS, "model", "method", "seed"])
    table = runs[runs.selected].set_index("run_id")[["dataset", "model", "usage", "method", "train_attribute", "seed"]]
    metrics, summaries = results.metrics, results.summaries
    overall = metrics[metrics.selected & (metrics.attribute == metrics.train_attribute) & (metrics.group == "overall")]
    own = summaries[summaries.selected & (summaries.attribute == summaries.train_attribute)]
    for name, (_, key, _) in quantities.items():
        if key is None or key[1] == "overall":  # the overall value (None: the AUC)
            rows = overall[overall.metric == ("auc" if key is None else key[0])].set_index("run_id")
        elif key[1] is None:  # a quantity with a single summary row (ADF): whichever it has
            rows = own[own.metric == key[0]].drop_duplicates("run_id").set_index("run_id")
        else:
            rows = own[(own.metric == key[0]) & (own.summary == key[1])].set_index("run_id")
        if rows.empty:
            continue
        table[name] = rows["value"].reindex(table.index).astype(np.float64)
        table[f"{name}_ci_low"] = rows["ci_low"].reindex(table.index).astype(np.float64)
        table[f"{name}_ci_high"] = rows["ci_high"].reindex(table.index).astype(np.float64)
        if "p_value" in rows.columns and name.endswith("gap"):
            table[f"{name}_p"] = rows["p_value"].reindex(table.index).astype(np.float64)
    return table.reset_index()


def _interval(values: np.ndarray, lows: np.ndarray, highs: np.ndarray, bounded: bool = True) -> tuple[float, float]:
    """One seed: its bootstrap CI; several: a 95% t-interval over seeds (as store.leaderboard).

    With few seeds a t-interval is wide (t = 12.7 for two) and can leave [0, 1]; ``bounded``
    quantities (AUCs, gaps, ES) cannot, so their interval is clipped to it.
    """
    values = values[np.isfinite(values)]
    if len(values) == 0:
        return math.nan, math.nan
    if len(lows) == 1:
        return float(lows[0]), float(highs[0])
    if len(values) < 2:
        return math.nan, math.nan
    from scipy import stats

    half = stats.t.ppf(0.975, len(values) - 1) * np.std(values, ddof=1) / math.sqrt(len(values))
    low, high = float(values.mean() - half), float(values.mean() + half)
    return (max(low, 0.0), min(high, 1.0)) if bounded else (low, high)


def _aggregate(table: pd.DataFrame, keys: list[str], names: list[str]) -> pd.DataFrame:
    """Means over seeds of each quantity with their intervals (and gap p-values for one seed)."""
    rows = []
    for key, group in table.groupby(keys, sort=False):
        row = dict(zip(keys, key if isinstance(key, tuple) else (key,)))
        row["n_seeds"] = len(group)
        for name in names:
            values = group[name].to_numpy(np.float64)
            row[name] = float(np.nanmean(values)) if np.isfinite(values).any() else math.nan
            low, high = _interval(values, group[f"{name}_ci_low"].to_numpy(np.float64),
                                  group[f"{name}_ci_high"].to_numpy(np.float64), bounded=name not in UNBOUNDED)
            row[f"{name}_ci_low"], row[f"{name}_ci_high"] = low, high
            if f"{name}_p" in group:
                p = group[f"{name}_p"].to_numpy(np.float64)
                # Seeds share one test set, so their p-values cannot be combined as independent tests:
                # one seed shows its p, several show how many seeds reached p < α.
                row[f"{name}_p"] = float(p[0]) if len(p) == 1 else math.nan
                row[f"{name}_n_significant"] = int((p < SIGNIFICANCE_LEVEL).sum())
        rows.append(row)
    return pd.DataFrame(rows)


def leaderboard_frame(results: Results) -> pd.DataFrame:
    """The leaderboard of :func:`medequity.bench.store.leaderboard` (same rows, order and columns,
    so the terminal table and this page show the same numbers) with more columns.

    Added per (dataset, usage, training attribute, model, method): ``auc_ci_*``,
    ``worst_group_auc_ci_*``, ``es_auc_ci_*``; the gap again as ``auc_gap_ci_*`` with ``auc_gap_p``
    (one seed) and ``auc_gap_n_significant`` (seeds with p < 0.05); ``eo_gap`` and ``dp_gap`` with
    CIs and p; ``adf`` when the runs have it. Segmentation: ``dice``, ``worst_group_dice``,
    ``dice_gap`` (with p), ``es_dice``, ``dice_skewness``, ``iou`` and ``iou_gap``, each with CIs.
    """
    board = leaderboard(results)
    table = run_table(results)
    keys = [*LEADERBOARD_KEYS, "model", "method"]
    names = [n for n in task_view(results).quantities if n in table.columns]
    if board.empty or not names:
        return board
    extra = _aggregate(table, keys, names).drop(columns=["n_seeds", *[n for n in names if n in board.columns]])
    return board.merge(extra, on=keys, how="left", validate="one_to_one")


def spec_order(results: Results, bench: dict, column: str = "method") -> list[str]:
    """Values of ``column`` (methods, usages, …) in the order the spec lists them (the planned run
    ids follow the spec's order), so every table and figure shows them in the same order."""
    position = {run_id: i for i, run_id in enumerate(bench.get("run_ids", []))}
    runs = results.runs.assign(_pos=results.runs.run_id.map(position).fillna(len(position)))
    return list(dict.fromkeys(runs.sort_values(["_pos", "run_id"])[column].astype(str)))


def _ordered(values, order: list[str] | None = None) -> list[str]:
    present = list(dict.fromkeys(str(v) for v in values))
    return [v for v in order if v in present] + [v for v in present if v not in order] if order else present


# -- page sections -------------------------------------------------------------------------------------
def _cell(value, low=math.nan, high=math.nan, p=math.nan, n_significant=None, n_seeds=1) -> dict:
    text_p = ""
    significant = False
    if p is not None and np.isfinite(p):
        text_p = plots.format_p_value(p)
        significant = p < SIGNIFICANCE_LEVEL
    elif n_significant and n_seeds > 1:  # "0 of n seeds" would only add noise
        text_p = f"p < {SIGNIFICANCE_LEVEL:g} in {n_significant}/{n_seeds} seeds"
        significant = n_significant > n_seeds / 2
    finite = value is not None and np.isfinite(value)
    return {"value": format_value(value), "ci": format_ci(low, high), "p": text_p, "significant": significant,
            "undefined": not finite, "best": False}


def best_values(rows: pd.DataFrame, columns: list[dict], utility: str | None, utility_bound=(),
                tolerance: float = UTILITY_TOLERANCE) -> dict[str, float]:
    """The starred value of each column: the best, none when all tie. A column in ``utility_bound``
    (a gap) only counts rows whose ``utility`` is within ``tolerance`` of the table's best utility —
    closing a gap by losing more accuracy than that is levelling down and earns no star (issue 15)."""
    eligible = np.ones(len(rows), dtype=bool)
    if utility is not None and utility in rows.columns:
        values = rows[utility].to_numpy(np.float64)
        if np.isfinite(values).any():
            eligible = values >= np.nanmax(values) - tolerance - 1e-12
    best = {}
    for c in columns:
        values = rows[c["name"]].to_numpy(np.float64)
        finite = values[np.isfinite(values)]
        if len(finite) < 2 or np.allclose(finite, finite[0], rtol=0, atol=1e-12):  # all tied: no best
            continue
        if c["name"] in utility_bound:
            finite = values[np.isfinite(values) & eligible]
            if len(finite) == 0:
                continue
        best[c["name"]] = finite.max() if c["higher"] else finite.min()
    return best


def interval_label(n_seeds: list[int]) -> str:
    """What the brackets of a table mean: the run's bootstrap CI (one seed) or a t-interval over seeds."""
    if n_seeds == [1]:
        return "[ ] = 95% percentile bootstrap CI of the run's test set (one seed)"
    if min(n_seeds) > 1:
        seeds = "/".join(str(n) for n in n_seeds)
        return (f"[ ] = 95% t-interval of the mean over {seeds} seeds (not a bootstrap CI; clipped to the range of the "
                f"quantity: gaps ≥ 0, AUC/Dice ≤ 1)")
    return ("[ ] = 95% bootstrap CI for rows with one seed, 95% t-interval over seeds for the others (clipped: "
            "gaps ≥ 0)")


def _leaderboard_sections(board: pd.DataFrame, methods: list[str], quantities: dict | None = None,
                          segmentation: bool = False, view: TaskView | None = None) -> list[dict]:
    quantities = quantities if quantities is not None else QUANTITIES
    view = view if view is not None else TASK_VIEWS["segmentation" if segmentation else "classification"]
    names = [n for n in quantities if n in board.columns]
    columns = [{"name": n, "label": quantities[n][0], "higher": quantities[n][2]} for n in names]
    sections = []
    for key, rows in board.groupby(list(LEADERBOARD_KEYS), sort=False):
        rows = rows.assign(_order=rows.method.map({m: i for i, m in enumerate(methods)})).sort_values(["model", "_order"])
        several_models = rows.model.nunique() > 1 or segmentation  # segmentation compares segmenters
        show_method = not segmentation or rows.method.nunique() > 1
        best = best_values(rows, columns, view.metric, view.utility_bound)
        body = []
        for row in rows.itertuples(index=False):
            data = row._asdict()
            cells = []
            for c in columns:
                n = c["name"]
                cell = _cell(data[n], data.get(f"{n}_ci_low", math.nan), data.get(f"{n}_ci_high", math.nan),
                             data.get(f"{n}_p", math.nan), data.get(f"{n}_n_significant"), int(data["n_seeds"]))
                cell["best"] = n in best and np.isfinite(data[n]) and np.isclose(data[n], best[n], rtol=0, atol=1e-12)
                cells.append(cell)
            body.append({"model": data["model"], "method": data["method"], "n_seeds": int(data["n_seeds"]), "cells": cells})
        n_seeds = sorted(set(int(s) for s in rows.n_seeds))
        sections.append({"dataset": key[0], "usage": key[1], "attribute": key[2], "columns": columns, "rows": body,
                         "several_models": several_models, "show_method": show_method,
                         "n_seeds": n_seeds, "interval": interval_label(n_seeds)})
    return sections


def _effect_sections(out: Path, results: Results, methods: list[str], view: TaskView, n_boot: int) -> list[dict]:
    """Per (dataset, model, usage, attribute): each method's paired difference from ERM
    (:mod:`medequity.bench.effects`) in utility, gap and worst group, and its verdict."""
    effects = paired_effects(out, results, n_boot=n_boot)
    if effects.empty:
        return []
    aggregated = aggregate_effects(effects)
    label = view.metric_label
    sections = []
    for key, rows in aggregated.groupby(["dataset", "model", "usage", "train_attribute"], sort=False):
        rows = rows.assign(_order=rows.method.map({m: i for i, m in enumerate(methods)})).sort_values("_order")
        body = []
        for row in rows.to_dict("records"):
            n_seeds = int(row["n_seeds"])
            cells = [_cell(row[n], row[f"{n}_ci_low"], row[f"{n}_ci_high"], row[f"{n}_p"], row[f"{n}_n_significant"],
                           n_seeds) for n in ("utility", "gap", "worst")]
            for cell, n in zip(cells, ("utility", "gap", "worst")):
                cell["value"] = f"{row[n]:+.3f}" if np.isfinite(row[n]) else cell["value"]
            kind, sentence = verdict(row, utility_label=label)
            decisions = decision_verdict(row)
            if decisions:
                sentence = f"{sentence}; its decisions {decisions}"
                if kind == "no change" and decisions.startswith("close ") and row["utility"] >= -UTILITY_TOLERANCE:
                    kind = "mitigates"  # a post-processing method: same scores, fairer decisions at a stated cost
            body.append({"method": row["method"], "cells": cells, "kind": kind, "verdict": sentence, "n_seeds": n_seeds})
        n_seeds = sorted(set(int(n) for n in rows.n_seeds))
        sections.append({"dataset": key[0], "model": key[1], "usage": key[2], "attribute": key[3], "rows": body,
                         "interval": ("[ ] = 95% paired bootstrap CI (one seed)" if n_seeds == [1] else
                                      "[ ] = 95% t-interval of the mean difference over seeds"),
                         "labels": (f"Δ {label}", f"Δ {label} gap", f"Δ worst-group {label}")})
    return sections


def _findings(board: pd.DataFrame, effects: list[dict], view: TaskView) -> list[dict]:
    """The page's first lines, per leaderboard with an ERM row: ERM's gap with its interval and test,
    then what each method did to it (the verdicts of :func:`_effect_sections`)."""
    utility, gap = view.metric, f"{view.metric}_gap"
    if board.empty or gap not in board.columns:
        return []
    findings = []
    for key, rows in board.groupby(list(LEADERBOARD_KEYS), sort=False):
        for erm in rows[rows.method == "erm"].to_dict("records"):
            p = erm.get(f"{gap}_p", math.nan)
            p_text = plots.format_p_value(p) if p is not None and np.isfinite(p) else (
                f"p < {SIGNIFICANCE_LEVEL:g} in {erm.get(f'{gap}_n_significant', 0)}/{int(erm['n_seeds'])} seeds")
            def shown(name: str, erm=erm) -> str:
                return f"{format_value(erm[name])} {format_ci(erm.get(f'{name}_ci_low'), erm.get(f'{name}_ci_high'))}"

            worst = f"worst_group_{utility}"
            text = (f"ERM: {view.metric_label} {shown(utility)}, worst-group {view.metric_label} {shown(worst)}, "
                    f"{view.metric_label} gap {shown(gap)} ({p_text})")
            eo_p = erm.get("eo_gap_p", math.nan)
            if np.isfinite(erm.get("eo_gap", math.nan)):  # classification: the decisions' equal-opportunity gap
                eo_text = plots.format_p_value(eo_p) if eo_p is not None and np.isfinite(eo_p) else "no test"
                text += f", TPR gap {shown('eo_gap')} ({eo_text})"
            section = next((e for e in effects if (e["dataset"], e["usage"], e["attribute"]) == key
                            and e["model"] == erm["model"]), None)
            verdicts = [{"method": r["method"], "kind": r["kind"], "verdict": r["verdict"]} for r in (section or {}).get("rows", [])]
            significant = p is not None and np.isfinite(p) and p < SIGNIFICANCE_LEVEL
            findings.append({"setting": f"{key[0]} · {erm['model']} · {key[1]} · {key[2]}", "erm": text,
                             "biased": bool(significant), "verdicts": verdicts})
    return findings


def _rank_sections(table: pd.DataFrame, methods: list[str], colors: dict, fmt: str, view: TaskView | None = None,
                   orders: dict[str, list[str]] | None = None) -> list[dict]:
    """A critical-difference diagram per ranked quantity (:data:`RANKED`; segmentation:
    :data:`SEGMENTATION_RANKED`) and competitor (methods; segmentation: prompt types across
    dataset × segmenter × attribute × seed, and segmenters across dataset × prompt × attribute ×
    seed), or the reason there is none."""
    from medequity.metrics.ranking import compare_methods
    from medequity.report.bench_plots import cd_diagram, method_colors

    view = view if view is not None else TASK_VIEWS["classification"]
    orders = {"method": methods, **(orders or {})}
    out = []
    everything = table
    for competitor, setting_keys, heading in view.rankings:
        table = everything
        if len(view.rankings) > 1 and competitor == "method" and "method" in table.columns:
            if table.method.nunique() < 2:
                continue  # zero-shot only: ERM is the one method, there is nothing to rank
        elif len(view.rankings) > 1 and "method" in table.columns:
            # prompt types, usages and segmenters compete without mitigation: their ERM (zero-shot) runs
            table = table[table.method == REFERENCE]
            if competitor == "usage" and not all(str(u).startswith("seg_zs") for u in table.usage):
                heading = "usages"
        order = (orders.get(competitor) or _ordered(table[competitor])) if competitor in table.columns else []
        if competitor in table.columns:
            order = [o for o in order if o in set(table[competitor].astype(str))]
        palette = colors if competitor == "method" else method_colors(order)
        prompts = view.metric == "dice" and competitor != "method" and heading == "prompt types"
        words = {"train_attribute": "attribute", "usage": "prompt" if prompts else "usage"}
        setting_words = " × ".join(words.get(k, k) for k in setting_keys)
        one = heading[:-1]  # "method", "prompt type", "usage", "segmenter"
        if len(view.rankings) > 1 and competitor in table.columns and table[competitor].nunique() < 3:
            # one note for the competitor instead of one per quantity (e.g. a single segmenter)
            out.append({"name": view.ranked[0], "title": f"{heading.capitalize()}", "uri": None, "ranks": [], "friedman": "",
                        "competitor": heading, "note": f"Not enough {heading} for a Friedman test: "
                                                       f"{table[competitor].nunique()} {one}(s); ranking needs at least 3."})
            continue
        for name in view.ranked:
            label, _, higher = view.quantities[name]
            title = f"{label} ({'higher' if higher else 'lower'} is better)"
            if len(view.rankings) > 1:
                title = f"{label}, {heading} ({'higher' if higher else 'lower'} is better)"
            item = {"name": name, "title": title, "uri": None, "note": "", "ranks": [], "friedman": "",
                    "competitor": heading}
            if name not in table.columns or table.empty:
                item["note"] = f"No {label} values in the results."
                out.append(item)
                continue
            scores = table.pivot_table(index=list(setting_keys), columns=competitor, values=name, aggfunc="first")
            scores = scores[[m for m in order if m in scores.columns]]
            complete = scores.dropna(axis=0, how="any")
            if scores.shape[1] < 3:
                item["note"] = (f"Not enough {heading} for a Friedman test: {scores.shape[1]} {one}(s); "
                                f"ranking needs at least 3.")
            elif len(complete) < 2:
                item["note"] = (f"Not enough settings for a Friedman test: {len(complete)} setting(s) "
                                f"({setting_words}) have every {one}; it needs at least 2.")
            else:
                comparison = compare_methods(complete, higher_is_better=higher)
                p_text = plots.format_p_value(comparison.friedman_p_value)
                item["friedman"] = (f"Friedman χ² = {comparison.friedman_statistic:.2f}, {p_text}; "
                                    f"N = {comparison.n_settings} settings, k = {complete.shape[1]} {heading}; "
                                    f"Nemenyi CD = {comparison.critical_difference:.2f} (α = {SIGNIFICANCE_LEVEL:g})")
                item["significant"] = comparison.friedman_p_value < SIGNIFICANCE_LEVEL
                figure = cd_diagram(comparison.average_ranks, comparison.critical_difference, colors=palette,
                                    title=f"{title}: average rank, N = {comparison.n_settings}, Friedman {p_text}")
                item["uri"] = plots.fig_to_data_uri(figure, fmt)
                item["ranks"] = [{"method": m, "rank": f"{r:.2f}"} for m, r in comparison.average_ranks.items()]
                if len(complete) < len(scores):
                    item["note"] = f"{len(scores) - len(complete)} setting(s) without every {one} are left out."
            out.append(item)
    return out


def _pareto_figures(table: pd.DataFrame, methods: list[str], usage_order: list[str], colors: dict, fmt: str) -> list[dict]:
    from medequity.report.bench_plots import pareto_figure

    panels = [(n, QUANTITIES[n][0], not QUANTITIES[n][2]) for n in ("auc_gap", "es_auc") if n in table.columns]
    if "auc" not in table.columns or not panels:
        return []
    keys = list(SETTING_KEYS)
    names = [n for n in ("auc", "auc_gap", "es_auc") if n in table.columns]
    points = _aggregate(table, [*keys, "method"], names)
    figures = []
    for (dataset, model, attribute), sub in points.groupby(["dataset", "model", "train_attribute"], sort=False):
        usages = _ordered(sub.usage, usage_order)
        sub = sub.assign(_order=sub.method.map({m: i for i, m in enumerate(methods)})).sort_values("_order")
        figure = pareto_figure(sub, panels, usages, column="usage", colors=colors,
                               title=f"{dataset} · {model} · {attribute}")
        figures.append({"title": f"{dataset} · {model} · trained for {attribute}", "uri": plots.fig_to_data_uri(figure, fmt)})
    return figures


def _group_auc_figures(results: Results, methods: list[str], usage_order: list[str], fmt: str) -> list[dict]:
    from medequity.report.bench_plots import group_auc_figure

    metrics = results.metrics
    if metrics.empty:
        return []
    rows = metrics[metrics.selected & (metrics.attribute == metrics.train_attribute) & (metrics.metric == "auc")]
    rows = rows.assign(group=rows.group.astype(str)).rename(columns={"ci_low": "value_ci_low", "ci_high": "value_ci_high"})
    keys = ["dataset", "model", "usage", "train_attribute", "method", "group"]
    per_group = _aggregate(rows, keys, ["value"]).rename(columns={"value_ci_low": "ci_low", "value_ci_high": "ci_high"})
    figures = []
    for (dataset, model), sub in per_group.groupby(["dataset", "model"], sort=False):
        usages, attributes = _ordered(sub.usage, usage_order), _ordered(sub.train_attribute)
        shown = [m for m in methods if m in set(sub.method)]
        panels = []
        for attribute in attributes:
            for usage in usages:
                part = sub[(sub.usage == usage) & (sub.train_attribute == attribute)]
                if part.empty:
                    continue
                groups = _ordered([g for g in rows[(rows.train_attribute == attribute)].group if g != "overall"])
                panels.append({"table": part, "groups": groups, "title": f"{usage} · {attribute}"})
        figure = group_auc_figure(panels, methods=shown, ncols=min(len(usages), 3), title=f"{dataset} · {model}")
        figures.append({"title": f"{dataset} · {model}", "uri": plots.fig_to_data_uri(figure, fmt)})
    return figures


def _segmentation_pareto_figures(table: pd.DataFrame, usage_order: list[str], fmt: str) -> list[dict]:
    """Per (dataset, attribute): each prompt type's mean test Dice against its Dice gap and ES-Dice,
    one column per segmenter."""
    from medequity.report.bench_plots import method_colors, pareto_figure

    quantities = SEGMENTATION_QUANTITIES
    panels = [(n, quantities[n][0], not quantities[n][2]) for n in ("dice_gap", "es_dice") if n in table.columns]
    if "dice" not in table.columns or not panels or table.empty:
        return []
    names = [n for n in ("dice", "dice_gap", "es_dice") if n in table.columns]
    points = _aggregate(table, ["dataset", "model", "usage", "train_attribute"], names)
    prompts = _ordered(points.usage, usage_order)
    colors = method_colors(prompts)
    figures = []
    for (dataset, attribute), sub in points.groupby(["dataset", "train_attribute"], sort=False):
        sub = sub.assign(_order=sub.usage.map({u: i for i, u in enumerate(prompts)})).sort_values("_order")
        figure = pareto_figure(sub.rename(columns={"usage": "method"}), panels, _ordered(sub.model), column="model",
                               colors=colors, title=f"{dataset} · {attribute}", y="dice", y_label="Dice")
        figures.append({"title": f"{dataset} · {attribute}", "uri": plots.fig_to_data_uri(figure, fmt)})
    return figures


def _segmentation_method_pareto_figures(table: pd.DataFrame, methods: list[str], usage_order: list[str], colors: dict,
                                        fmt: str) -> list[dict]:
    """Per (dataset, segmenter, attribute) with a trained usage and more than one method: each
    method's mean test Dice against its Dice gap Δ (top) and ES-Dice (bottom), one column per usage."""
    from medequity.report.bench_plots import pareto_figure

    quantities = SEGMENTATION_QUANTITIES
    panels = [(n, quantities[n][0], not quantities[n][2]) for n in ("dice_gap", "es_dice") if n in table.columns]
    trained = table[~table.usage.astype(str).str.startswith("seg_zs")] if "usage" in table.columns else table
    if "dice" not in trained.columns or not panels or trained.empty:
        return []
    names = [n for n in ("dice", "dice_gap", "es_dice") if n in trained.columns]
    points = _aggregate(trained, [*SETTING_KEYS, "method"], names)
    figures = []
    for (dataset, model, attribute), sub in points.groupby(["dataset", "model", "train_attribute"], sort=False):
        if sub.method.nunique() < 2:
            continue
        sub = sub.assign(_order=sub.method.map({m: i for i, m in enumerate(methods)})).sort_values("_order")
        figure = pareto_figure(sub, panels, _ordered(sub.usage, usage_order), column="usage", colors=colors,
                               title=f"{dataset} · {model} · {attribute}", y="dice", y_label="Dice")
        figures.append({"title": f"{dataset} · {model} · trained for {attribute} — methods",
                        "uri": plots.fig_to_data_uri(figure, fmt)})
    return figures


def _selected_first_seed(results: Results) -> pd.DataFrame:
    runs = results.runs[results.runs.selected]
    if runs.empty:
        return runs
    first = runs.groupby(["dataset", "model", "train_attribute"], sort=False).seed.transform("min")
    return runs[runs.seed == first]


def _setting_label(usage: str, method: str, methods_shown: bool) -> str:
    return f"{usage} · {method}" if methods_shown else str(usage)


def _dice_distribution_figures(out: Path, results: Results, methods: list[str], usage_order: list[str],
                               fmt: str) -> list[dict]:
    """Per (dataset, segmenter, attribute): the per-sample test Dice of each group per setting
    (usage × method), each sample's Dice averaged over the seeds (they share the test set)."""
    from medequity.bench.effects import _per_sample_dice, _test_predictions
    from medequity.report.segmentation_bench_plots import dice_distribution_figure

    runs = results.runs[results.runs.selected]
    figures = []
    for (dataset, model, attribute), sub in runs.groupby(["dataset", "model", "train_attribute"], sort=False):
        several_methods = sub.method.nunique() > 1
        one_usage = sub.usage.nunique() == 1 and several_methods  # the methods alone name the settings
        sub = sub.assign(_u=sub.usage.map({u: i for i, u in enumerate(usage_order)}),
                         _m=sub.method.map({m: i for i, m in enumerate(methods)})).sort_values(["_u", "_m", "seed"])
        frames, settings = [], []
        for (usage, method), part in sub.groupby(["usage", "method"], sort=False):
            label = str(method) if one_usage else _setting_label(usage, method, several_methods)
            per_seed = [frame for frame in (_test_predictions(out, run_id) for run_id in part.run_id) if frame is not None]
            if not per_seed:
                continue
            values = pd.concat([_per_sample_dice(frame, f"group:{attribute}") for frame in per_seed])
            values = values.groupby(level=0).agg(value=("dice", "mean"), group=("group", "first"))
            frames.append(values.assign(setting=label, group=values.group.astype(str)))
            settings.append(label)
        if not frames:
            continue
        frame = pd.concat(frames, ignore_index=True)
        seeds = sorted(set(int(s) for s in sub.seed))
        title = f"{dataset} · {model} · {attribute}" + (f" (per-sample Dice, mean over seeds {seeds})" if len(seeds) > 1 else "")
        figure = dice_distribution_figure(frame, settings=settings, groups=_ordered(sorted(set(frame.group))), title=title)
        figures.append({"title": f"{dataset} · {model} · {attribute}", "uri": plots.fig_to_data_uri(figure, fmt)})
    return figures


MAX_GALLERIES = 12


def _gallery_figures(out: Path, results: Results, methods: list[str], usage_order: list[str], fmt: str) -> list[dict]:
    """One overlay figure per selected run of the first seed (at most :data:`MAX_GALLERIES`): per
    group of its training attribute the best, median and worst test case (:mod:`medequity.bench.gallery`)."""
    from medequity.bench.gallery import gallery_arrays
    from medequity.report.segmentation_bench_plots import gallery_figure

    runs = _selected_first_seed(results)
    if runs.empty:
        return []
    runs = runs.assign(_u=runs.usage.map({u: i for i, u in enumerate(usage_order)}),
                       _m=runs.method.map({m: i for i, m in enumerate(methods)})).sort_values(["dataset", "model", "_u", "_m"])
    figures = []
    for run in runs.itertuples(index=False):
        path = out / "runs" / run.run_id / "gallery.parquet"
        if len(figures) >= MAX_GALLERIES or not path.exists():
            continue
        table = pd.read_parquet(path)
        if table.empty:
            continue
        cases = []
        for row in table.to_dict("records"):
            image, truth, pred = gallery_arrays(row)
            cases.append({**row, "image": image, "truth": truth, "pred": pred})
        title = f"{run.dataset} · {run.model} · {run.usage} · {run.method} · {run.train_attribute} · seed {run.seed}"
        figure = gallery_figure(cases, groups=_ordered(table.group), title=title)
        figures.append({"title": title, "uri": plots.fig_to_data_uri(figure, fmt)})
    return figures


def _group_dice_figures(results: Results, usage_order: list[str], fmt: str, methods: list[str] | None = None) -> list[dict]:
    """Per dataset, a panel per (segmenter, attribute): each prompt type's (with several methods:
    each usage · method's) test Dice in every group and overall (FairMedFM Fig. 7–9)."""
    from medequity.report.bench_plots import group_auc_figure

    metrics = results.metrics
    if metrics.empty:
        return []
    rows = metrics[metrics.selected & (metrics.attribute == metrics.train_attribute) & (metrics.metric == "dice")]
    if rows.empty:
        return []
    rows = rows.assign(group=rows.group.astype(str)).rename(columns={"ci_low": "value_ci_low", "ci_high": "value_ci_high"})
    if rows.method.nunique() > 1:  # trained usages with methods: each setting is usage · method
        position = {m: i for i, m in enumerate(methods or [])}
        order = {u: i for i, u in enumerate(usage_order)}
        ranked = rows.assign(_u=rows.usage.map(order), _m=rows.method.map(position)).sort_values(["_u", "_m"])
        usage_order = list(dict.fromkeys(f"{u} · {m}" for u, m in zip(ranked.usage, ranked.method)))
        rows = rows.assign(usage=rows.usage.astype(str) + " · " + rows.method.astype(str))
    keys = ["dataset", "model", "usage", "train_attribute", "group"]
    per_group = _aggregate(rows, keys, ["value"]).rename(columns={"value_ci_low": "ci_low", "value_ci_high": "ci_high"})
    figures = []
    for dataset, sub in per_group.groupby("dataset", sort=False):
        prompts = _ordered(sub.usage, usage_order)
        panels = []
        for model in _ordered(sub.model):
            for attribute in _ordered(sub.train_attribute):
                part = sub[(sub.model == model) & (sub.train_attribute == attribute)]
                if part.empty:
                    continue
                groups = _ordered([g for g in rows[rows.train_attribute == attribute].group if g != "overall"])
                panels.append({"table": part.rename(columns={"usage": "method"}), "groups": groups,
                               "title": f"{model} · {attribute}"})
        figure = group_auc_figure(panels, methods=prompts, ncols=min(len(panels), 2), title=str(dataset), y_label="Dice")
        figures.append({"title": str(dataset), "uri": plots.fig_to_data_uri(figure, fmt)})
    return figures


def _probe_figures(results: Results, methods: list[str], usage_order: list[str], fmt: str) -> list[dict]:
    from medequity.report.bench_plots import probe_bars

    runs = results.runs[results.runs.selected]
    if results.task == "segmentation":
        # The image encoder, and so its probe, is the same for every prompt type: one bar per segmenter.
        runs = runs.drop_duplicates(["dataset", "model", "train_attribute", "seed"])
        runs = runs.assign(method=runs.model, usage="image encoder")
        methods = _ordered(runs.model)
    rows = []
    for run in runs.itertuples(index=False):
        probes = json.loads(run.probe_auc) if isinstance(run.probe_auc, str) else {}
        value = probes.get(run.train_attribute)
        rows.append({"dataset": run.dataset, "model": run.model, "usage": run.usage, "method": run.method,
                     "attribute": run.train_attribute, "value": np.nan if value is None else float(value)})
    frame = pd.DataFrame(rows)
    if frame.empty or not np.isfinite(frame.value).any():
        return []
    figures = []
    for (dataset, model, attribute), sub in frame.groupby(["dataset", "model", "attribute"], sort=False):
        # Whiskers: the range over seeds (a probe AUC has no bootstrap CI here).
        agg = sub.groupby(["method", "usage"], sort=False).value.agg(value="mean", low="min", high="max").reset_index()
        shown = [m for m in methods if m in set(agg.method)]
        figure = probe_bars(agg, methods=shown, usages=_ordered(agg.usage, usage_order),
                            title=f"Probe AUC for {attribute} from the test features — {dataset} · {model}")
        figures.append({"title": f"{dataset} · {model} · {attribute}", "uri": plots.fig_to_data_uri(figure, fmt)})
    return figures


def _embedding_figure(out: Path, results: Results, methods: list[str], fmt: str) -> dict | None:
    """t-SNE/PCA of a few selected runs: the first dataset, model, attribute and seed; every usage × method."""
    from medequity.report.bench_plots import embedding_scatter

    runs = results.runs[results.runs.selected]
    if runs.empty:
        return None
    segmentation = results.task == "segmentation"
    if segmentation:  # the encoder's embeddings do not depend on the prompt type: one panel per segmenter
        runs = runs.drop_duplicates(["dataset", "model", "train_attribute", "seed"])
    first = runs.iloc[0]
    pick = runs[(runs.dataset == first.dataset) & ((runs.model == first.model) | segmentation)
                & (runs.train_attribute == first.train_attribute) & (runs.seed == runs.seed.min())]
    pick = pick.assign(_order=pick.method.map({m: i for i, m in enumerate(methods)})).sort_values(["usage", "_order"])
    column = f"group:{first.train_attribute}"
    panels, groups = [], []
    for run in pick.head(MAX_EMBEDDINGS).itertuples(index=False):
        path = out / "runs" / run.run_id / "representation.parquet"
        if not path.exists():
            continue
        frame = pd.read_parquet(path)
        if frame.empty or column not in frame.columns:
            continue
        frame = frame.assign(group=frame[column].astype(str))
        groups += list(frame.group)
        probes = json.loads(run.probe_auc) if isinstance(run.probe_auc, str) else {}
        probe = probes.get(run.train_attribute)
        panels.append({"frame": frame, "title": (str(run.model) if segmentation else f"{run.usage} · {run.method}")
                       + (f" (probe AUC {probe:.2f})" if probe is not None else "")})
    if not panels:
        return None
    title = (f"{first.dataset} · {first.train_attribute} · seed {runs.seed.min()}" if segmentation else
             f"{first.dataset} · {first.model} · {first.train_attribute} · seed {runs.seed.min()}")
    figure = embedding_scatter(panels, groups=sorted(set(groups)), title=title)
    shown = f"{len(panels)} of {len(pick)}" if len(pick) > len(panels) else str(len(panels))
    return {"title": title, "uri": plots.fig_to_data_uri(figure, fmt), "shown": shown}


def _provenance_rows(out: Path, results: Results) -> list[tuple[str, str]]:
    """git revisions and versions recorded by the runs (several values are listed: mixed code)."""
    from medequity.provenance import provenance

    revisions, versions = {}, {}
    for run_id in results.runs.run_id:
        path = out / "runs" / run_id / "run.json"
        try:
            prov = json.loads(path.read_text(encoding="utf-8")).get("provenance", {})
        except (OSError, ValueError):
            continue
        revisions[str(prov.get("git_revision") or "unknown")] = revisions.get(str(prov.get("git_revision") or "unknown"), 0) + 1
        for package, version in (prov.get("versions") or {}).items():
            if version:
                versions.setdefault(package, set()).add(str(version))
    here = provenance()
    rows = [("Runs' git revision", "; ".join(f"{r} ({n} runs)" if len(revisions) > 1 else r
                                             for r, n in revisions.items()) or "—"),
            ("Runs' versions", ", ".join(f"{p} {'/'.join(sorted(v))}" for p, v in versions.items()) or "—"),
            ("Report written by", f"medequity {here['versions'].get('medequity') or '?'}, git "
                                  f"{here.get('git_revision') or 'unknown'}, Python {here.get('python')}")]
    return rows


def _settings_rows(bench: dict, results: Results) -> list[tuple[str, str]]:
    evaluation = bench.get("evaluation", {})
    rule = results.selection.get("rule", "")
    max_gap = results.selection.get("max_gap")
    runs = results.runs
    thresholds = runs.threshold.dropna() if "threshold" in runs else pd.Series(dtype=float)
    threshold = str(evaluation.get("threshold", "—"))
    if not isinstance(evaluation.get("threshold"), (int, float)):
        threshold += " rule, fitted on each run's validation set"
        if len(thresholds):
            threshold += f" (values {thresholds.min():.3g}–{thresholds.max():.3g})"
    grid_sizes = runs.groupby(["dataset", "model", "usage", "method", "train_attribute", "seed"]).size() if len(runs) else []
    rows = [
        ("Model selection", f"{rule}{f' (max gap {max_gap:g})' if max_gap is not None else ''}: per (dataset, model, "
                            f"usage, method, attribute, seed) the hyper-parameters are chosen on validation "
                            f"by this rule; only the chosen run is shown"
                            + (f"; up to {int(max(grid_sizes))} settings per method" if len(grid_sizes) else "")),
        ("Threshold", threshold),
        ("Bootstrap", f"B = {evaluation.get('n_boot', '—')} stratified resamples, 95% percentile intervals; "
                      f"with several seeds the interval is a 95% t-interval over seeds"),
        ("Gap test", "the gap (max − min) is a size; its p-value is the omnibus test that no group differs from "
                     "all test samples (bootstrap min-P over the group-vs-pool differences, which controls the "
                     f"family-wise error); highlighted at p < {SIGNIFICANCE_LEVEL:g}"),
        ("Datasets", ", ".join(_ordered(runs.dataset)) or "—"),
        ("Models", ", ".join(_ordered(runs.model)) or "—"),
        ("Usages", ", ".join(_ordered(runs.usage)) or "—"),
        ("Training attributes", ", ".join(_ordered(runs.train_attribute)) or "—"),
        ("Seeds", ", ".join(str(s) for s in sorted(set(runs.seed))) or "—"),
    ]
    if evaluation.get("probe", True):
        rows.append(("Representation", f"{evaluation.get('embedding', 'tsne')} of up to "
                                       f"{evaluation.get('embedding_samples', '—')} test samples; linear attribute probe"))
    if results.task == "segmentation":
        base = dict(rows)
        zero_shot = bool(len(runs)) and all(str(u).startswith("seg_zs") for u in runs.usage)
        trained = not zero_shot and bool(len(runs))
        segmentation = {
            "Model selection": base["Model selection"].replace("hyper-parameters are chosen on validation",
                                                               "hyper-parameters are chosen on validation Dice")
            + "; prompt types are settings, each reported (never selected)",
            "Threshold": ("logit > 0 (SAM's mask threshold) for zero-shot prompts; the argmax over the C + 1 output "
                          "channels for trained usages; nothing fitted (seg_thresholds fits its per-group offsets on "
                          "validation itself)" if trained else "logit > 0 (SAM's mask threshold), nothing fitted"),
            "Models": base["Models"] + (" (promptable segmenters, zero-shot)" if zero_shot else " (segmenters)"),
            "Usages": base["Usages"] + " (zero-shot: usage:prompt type)",
            "Training attributes": base["Training attributes"] + (
                " (nothing is trained: the attribute results are grouped by)" if zero_shot else
                " (the attribute the methods mitigate; zero-shot runs are only grouped by it)"),
            "Representation": (f"the image encoder's test embeddings, mean-pooled over space; "
                               f"{evaluation.get('embedding', 'tsne')} and linear attribute probe"),
        }
        rows = [("Task", "segmentation — per-sample Dice and IoU (mean over the sample's classes) at the original "
                         "image size, per group; ES-Dice = Dice / (1 + Σ_g |Dice − Dice_g|) (FairSeg)")] + [
            (key, segmentation.get(key, value)) for key, value in rows]
    return rows


def build_bench_context(out: str | Path, results: Results | None = None, *, fmt: str = "png") -> dict:
    """Everything the page shows, as formatted plain values."""
    from medequity.report.bench_plots import method_colors

    out = Path(out)
    results = results if results is not None else load_results(out)
    bench = read_bench(out)
    methods = spec_order(results, bench)
    usages = spec_order(results, bench, "usage")
    colors = method_colors(methods)
    table = run_table(results)
    board = leaderboard_frame(results)
    view = task_view(results)
    segmentation = results.task == "segmentation"
    planned = len(bench.get("run_ids", [])) or None
    failed = [{"run_id": row.run_id, "what": " / ".join(str(getattr(row, k)) for k in
                                                         ("dataset", "model", "usage", "method", "train_attribute")
                                                         if isinstance(getattr(row, k), str)) +
               (f" seed {int(row.seed)}" if pd.notna(row.seed) else ""),
               "error": (str(row.error).strip().splitlines() or [""])[0]} for row in results.failed.itertuples()]
    n_done = len(results.runs)
    embedding = _embedding_figure(out, results, methods, fmt)
    effects = _effect_sections(out, results, methods, view, int(bench.get("evaluation", {}).get("n_boot", 200)))
    return {
        "title": f"Benchmark — {bench.get('name', out.name)}",
        "name": bench.get("name", out.name),
        "n_done": n_done,
        "n_failed": len(failed),
        "n_planned": planned,
        "n_pending": (planned - n_done - len(failed)) if planned else 0,
        "n_selected": int(results.runs.selected.sum()) if n_done else 0,
        "rule": results.selection.get("rule", ""),
        "warnings": list(results.warnings),
        "settings_rows": _settings_rows(bench, results),
        "provenance_rows": _provenance_rows(out, results),
        "failed": failed,
        "task": results.task,
        "metric_label": view.metric_label,
        "leaderboards": _leaderboard_sections(board, methods, view.quantities, segmentation, view) if not board.empty else [],
        "effects": effects,
        "findings": _findings(board, effects, view),
        "tolerance": UTILITY_TOLERANCE,
        "ranks": _rank_sections(table, methods, colors, fmt, view, {"usage": usages}),
        "pareto": (_segmentation_method_pareto_figures(table, methods, usages, colors, fmt)
                   + _segmentation_pareto_figures(table[table.usage.astype(str).str.startswith("seg_zs")]
                                                  if "usage" in table.columns else table, usages, fmt)
                   if segmentation else _pareto_figures(table, methods, usages, colors, fmt)),
        "group_auc": (_group_dice_figures(results, usages, fmt, methods) if segmentation
                      else _group_auc_figures(results, methods, usages, fmt)),
        "setting_word": ("prompt type" if segmentation and all(str(u).startswith("seg_zs") for u in usages)
                         else "setting"),
        "distributions": _dice_distribution_figures(out, results, methods, usages, fmt) if segmentation else [],
        "gallery": _gallery_figures(out, results, methods, usages, fmt) if segmentation else [],
        "probes": _probe_figures(results, methods, usages, fmt),
        "embedding": embedding,
        "alpha": SIGNIFICANCE_LEVEL,
        "updated": bench.get("updated", ""),
    }


def render_bench_html(out: str | Path, results: Results | None = None, *, fmt: str = "png") -> str:
    """The benchmark report as one self-contained HTML page."""
    return _environment().get_template("bench.html").render(**build_bench_context(out, results, fmt=fmt))


def write_bench_report(out_dir: str | Path) -> Path:
    """Write ``<out_dir>/report.html`` (atomically) from the results folder; return its path."""
    out = Path(out_dir)
    return atomic_write_text(out / REPORT_FILE, render_bench_html(out))


__all__ = ["write_bench_report", "render_bench_html", "build_bench_context", "leaderboard_frame", "run_table", "spec_order",
           "SEGMENTATION_QUANTITIES", "TASK_VIEWS"]
