"""Figures of medequity.report.plots: the right artists, NaN groups as text, data URIs."""

from __future__ import annotations

import base64

import numpy as np
import pandas as pd
import pytest
from matplotlib.collections import PolyCollection
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle
from sklearn.metrics import roc_auc_score

from medequity.report import plots


@pytest.fixture(scope="module")
def sample():
    rng = np.random.default_rng(0)
    n = 300
    groups = rng.choice(["A", "B", "C"], size=n, p=[0.5, 0.3, 0.2]).astype(object)
    y = rng.integers(0, 2, size=n)
    score = np.clip(0.5 + 0.25 * (y - 0.5) + rng.normal(0, 0.2, size=n), 0, 1)
    return y, score, groups


def _table(values: dict, small=()):
    """A to_frame()-like table for one metric per key: {metric: [overall, A, B, C]}."""
    rows = []
    for metric, vals in values.items():
        for group, v in zip(["overall", "A", "B", "C"], vals):
            rows.append({"group": group, "metric": metric, "value": v, "ci_low": v - 0.05, "ci_high": v + 0.05,
                         "n": 50, "small_group": group in small})
    return pd.DataFrame(rows)


def _bars(ax):
    return [p for p in ax.patches if isinstance(p, Rectangle)]


def test_group_colors_are_stable_and_distinct():
    first = plots.group_colors(["F", "M", "X"])
    assert first == plots.group_colors(["F", "M", "X"])
    assert len(set(first.values())) == 3
    many = plots.group_colors([f"g{i}" for i in range(15)])
    assert len(set(many.values())) == 15


@pytest.mark.parametrize("fmt, mime, magic", [("png", "image/png", b"\x89PNG"), ("svg", "image/svg+xml", b"<?xml")])
def test_fig_to_data_uri(fmt, mime, magic):
    fig = plots.new_figure(2, 2)
    fig.add_subplot().plot([0, 1], [0, 1])
    uri = plots.fig_to_data_uri(fig, fmt)
    prefix = f"data:{mime};base64,"
    assert uri.startswith(prefix)
    assert base64.b64decode(uri[len(prefix):]).startswith(magic)
    with pytest.raises(ValueError, match="fmt"):
        plots.fig_to_data_uri(plots.new_figure(1, 1), "jpg")


def test_metric_bars_one_bar_per_defined_group_and_undefined_text():
    table = _table({"auc": [0.8, 0.85, np.nan, 0.7], "tpr": [0.6, 0.65, 0.55, 0.5]}, small=("C",))
    fig = plots.metric_bars(table)
    assert isinstance(fig, Figure)
    axes = [ax for ax in fig.axes if ax.get_visible()]
    assert len(axes) == 2
    auc_ax, tpr_ax = axes
    assert auc_ax.get_title() == "AUC"
    assert len(_bars(auc_ax)) == 2  # B is NaN: no bar …
    assert [t.get_text() for t in auc_ax.texts] == [plots.UNDEFINED_TEXT]  # … but the word
    assert len(_bars(tpr_ax)) == 3
    assert all(b.get_width() > 0 for b in _bars(auc_ax))  # never a zero-length bar for NaN
    hatched = [b for b in _bars(tpr_ax) if b.get_hatch()]
    assert len(hatched) == 1  # the small group C
    overall_lines = [line for line in auc_ax.lines if line.get_linestyle() == "--"]
    assert len(overall_lines) == 1 and overall_lines[0].get_xdata()[0] == pytest.approx(0.8)
    ticks = sorted(zip(auc_ax.get_yticks(), (t.get_text() for t in auc_ax.get_yticklabels())))
    assert ticks[-1][1].startswith("A")  # the first group on top
    assert ticks[0][1].startswith("C") and "small" in ticks[0][1]


def test_metric_bars_needs_columns():
    with pytest.raises(ValueError, match="columns"):
        plots.metric_bars(pd.DataFrame({"group": ["A"], "value": [1.0]}))


def test_roc_curves_one_line_per_group_plus_diagonal(sample):
    y, score, groups = sample
    fig = plots.roc_curves(y, score, groups)
    ax = fig.axes[0]
    assert len(ax.lines) == 3 + 1
    legend = [t.get_text() for t in ax.get_legend().get_texts()]
    mask = groups == "A"
    assert any(f"A: AUC {roc_auc_score(y[mask], score[mask]):.3f}" in text for text in legend)


def test_roc_curves_single_class_group_has_no_curve_but_says_undefined(sample):
    y, score, groups = sample
    y = y.copy()
    y[groups == "C"] = 0
    ax = plots.roc_curves(y, score, groups).axes[0]
    drawn = [line for line in ax.lines if len(line.get_xdata()) > 0]
    assert len(drawn) == 2 + 1
    assert any("C: AUC undefined" in t.get_text() for t in ax.get_legend().get_texts())


def test_calibration_curves_one_line_per_group_plus_diagonal(sample):
    y, score, groups = sample
    ax = plots.calibration_curves(y, score, groups, group_order=["C", "B", "A"]).axes[0]
    assert len(ax.lines) == 3 + 1
    legend = [t.get_text() for t in ax.get_legend().get_texts()]
    assert legend[1].startswith("C") and legend[3].startswith("A")  # the given order


def test_score_distributions_two_violins_per_group_and_threshold(sample):
    y, score, groups = sample
    ax = plots.score_distributions(y, score, groups, threshold=0.5).axes[0]
    violins = [c for c in ax.collections if isinstance(c, PolyCollection)]
    assert len(violins) == 2 * 3
    assert any(line.get_linestyle() == "--" and line.get_ydata()[0] == 0.5 for line in ax.lines)
    assert len(ax.get_xticks()) == 3


def test_score_distributions_tolerates_a_missing_label(sample):
    y, score, groups = sample
    y = y.copy()
    y[groups == "C"] = 0
    ax = plots.score_distributions(y, score, groups).axes[0]
    violins = [c for c in ax.collections if isinstance(c, PolyCollection)]
    assert len(violins) == 2 * 3 - 1


def test_gap_forest_rows_pvalues_and_highlight():
    summaries = pd.DataFrame({
        "metric": ["auc", "auc", "tpr", "ece"],
        "summary": ["gap", "worst", "gap", "gap"],
        "value": [0.1, 0.7, np.nan, 0.02],
        "ci_low": [0.05, 0.6, np.nan, 0.01],
        "ci_high": [0.15, 0.8, np.nan, 0.03],
        "p_value": [1 / 51, np.nan, np.nan, 0.4],
    })
    fig = plots.gap_forest(summaries, n_permutations=50)
    ax = fig.axes[0]
    assert [t.get_text() for t in ax.get_yticklabels()] == ["AUC", "TPR (sensitivity)", "ECE"]
    texts = {t.get_text(): t for t in ax.texts}
    assert "p ≤ 0.02" in texts and "p = 0.4" in texts and "p n/a" in texts
    assert texts["p ≤ 0.02"].get_color() == plots.SIGNIFICANT_COLOR
    assert texts["p = 0.4"].get_color() == plots.NEUTRAL_COLOR
    assert plots.UNDEFINED_TEXT in "".join(texts)


def test_format_p_value():
    assert plots.format_p_value(np.nan) == "p n/a"
    assert plots.format_p_value(1 / 1001, 1000) == "p ≤ 0.001"
    assert plots.format_p_value(0.0312, 1000) == "p = 0.031"
