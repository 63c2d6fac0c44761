"""The benchmark's HTML report, on results folders written with the store's own writers (no training)."""

from __future__ import annotations

import html
import re

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from medequity.bench.report import build_bench_context, leaderboard_frame, render_bench_html, write_bench_report
from medequity.bench.spec import hparams_key
from medequity.bench.store import ResultsStore, frame_to_parquet, leaderboard, load_results
from medequity.report.bench_plots import cliques, fairness_utility_front

DATASET = "synth <&>"  # must be escaped wherever it is shown
METHODS = ("erm", "rs<b>", "groupdro")
GROUPS = ("female", "male")

# Test AUC per (usage, method, seed) for "female", "male"; the overall AUC is their mean here.
GROUP_AUC = {
    ("lp", "erm", 0): (0.70, 0.80), ("lp", "erm", 1): (0.72, 0.84),
    ("lp", "rs<b>", 0): (0.74, 0.78), ("lp", "rs<b>", 1): (0.75, 0.79),
    ("lp", "groupdro", 0): (0.76, 0.77), ("lp", "groupdro", 1): (0.73, 0.75),
    ("ft", "erm", 0): (0.78, 0.90), ("ft", "erm", 1): (0.80, 0.88),
    ("ft", "rs<b>", 0): (0.81, 0.85), ("ft", "rs<b>", 1): (0.83, 0.86),
    ("ft", "groupdro", 0): (0.82, 0.83), ("ft", "groupdro", 1): (0.80, 0.84),
}
RIVAL_AUC = (0.4321, 0.4321)  # a groupdro setting the selection rule drops: its values never show


def _tables(female: float, male: float, seed: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    """metrics.parquet and summaries.parquet of one run, in the layout the pipeline writes."""
    rng = np.random.default_rng(seed)
    overall = (female + male) / 2
    metric_rows, summary_rows = [], []
    for metric, values in (("auc", (overall, female, male)),
                           ("tpr", tuple(rng.uniform(0.5, 0.9, 3))),
                           ("selection_rate", tuple(rng.uniform(0.2, 0.5, 3)))):
        for group, value in zip(("overall", *GROUPS), values):
            metric_rows.append({"attribute": "sex", "group": group, "metric": metric, "value": value,
                                "ci_low": value - 0.05, "ci_high": value + 0.05, "n": 100, "n_pos": 40, "n_neg": 60,
                                "small_group": False})
        group_values = np.array(values[1:])
        gap = group_values.max() - group_values.min()
        summary_rows += [
            {"attribute": "sex", "metric": metric, "summary": "gap", "value": gap, "ci_low": max(gap - 0.03, 0),
             "ci_high": gap + 0.03, "p_value": 0.01 if gap > 0.1 else 0.4},
            {"attribute": "sex", "metric": metric, "summary": "worst", "value": group_values.min(),
             "ci_low": group_values.min() - 0.05, "ci_high": group_values.min() + 0.05, "p_value": np.nan},
            {"attribute": "sex", "metric": metric, "summary": "es_std", "value": values[0] / (1 + group_values.std()),
             "ci_low": np.nan, "ci_high": np.nan, "p_value": np.nan},
        ]
    return pd.DataFrame(metric_rows), pd.DataFrame(summary_rows)


def _write_run(store: ResultsStore, run_id: str, usage: str, method: str, seed: int, aucs: tuple, val_auc: float,
               hparams: dict) -> None:
    metrics, summaries = _tables(*aucs, seed)
    rng = np.random.default_rng(seed)
    representation = pd.DataFrame({"sample_id": [f"s{i}" for i in range(30)], "x": rng.normal(size=30),
                                   "y": rng.normal(size=30), "label": rng.integers(0, 2, 30),
                                   "group:sex": rng.choice(GROUPS, 30)})
    labels = {"dataset": DATASET, "model": "cnn", "usage": usage, "method": method, "train_attribute": "sex",
              "seed": seed, "hparams": hparams_key(hparams, {})}
    record = {"run_id": run_id, "labels": labels, "seconds": 1.0, "best_epoch": 0,
              "threshold": {"value": 0.5, "rule": "best_f1", "fitted_on": "validation set"},
              "validation": {"val_auc": val_auc, "val_worst_group_auc": val_auc, "val_es_auc": val_auc,
                             "val_auc_group": {g: val_auc for g in GROUPS}},
              "representation": {"probe_auc": {"sex": 0.55 + 0.01 * seed}, "embedding": "pca"},
              "provenance": {"git_revision": "abc123", "versions": {"numpy": "2.0"}}}
    store.write_run(run_id, {"metrics": frame_to_parquet(metrics), "summaries": frame_to_parquet(summaries),
                             "representation": frame_to_parquet(representation)}, record)


def _folder(out, usages=("lp", "ft"), seeds=(0, 1)):
    store = ResultsStore(out)
    run_ids = []
    for usage in usages:
        for method in METHODS:
            for seed in seeds:
                run_id = f"{usage}-{re.sub(r'[^a-z]', '', method)}-{seed}"
                _write_run(store, run_id, usage, method, seed, GROUP_AUC[(usage, method, seed)], 0.8, {})
                run_ids.append(run_id)
                if method == "groupdro":  # a rival setting with a worse validation AUC
                    _write_run(store, run_id + "-rival", usage, method, seed, RIVAL_AUC, 0.6, {"step_size": 1.0})
                    run_ids.append(run_id + "-rival")
    store.write_error("broken-run", {"run_id": "broken-run", "error": "ValueError: boom <here>\nsecond line",
                                     "labels": {"dataset": DATASET, "model": "cnn", "usage": usages[0], "method": "erm",
                                                "train_attribute": "sex", "seed": 7, "hparams": "{}"}})
    store.write_header("name: t\n", {"name": "bench <x>", "selection": {"rule": "worst_group", "max_gap": None},
                                     "warnings": ["unequal tuning budget: groupdro has 2 settings"],
                                     "evaluation": {"threshold": "best_f1", "n_boot": 50, "n_permutations": 50},
                                     "run_ids": [*run_ids, "broken-run"]})
    return out


@pytest.fixture(scope="module")
def bench_out(tmp_path_factory):
    out = _folder(tmp_path_factory.mktemp("bench") / "out")
    return out, write_bench_report(out).read_text(encoding="utf-8")


def test_the_page_is_self_contained_and_escapes_names(bench_out):
    out, page = bench_out
    assert page.lstrip().startswith("<!DOCTYPE html>") and page.rstrip().endswith("</html>")
    lowered = page.lower()
    for pattern in ("http://", "https://", "@import", "<script", "<link", 'src="//'):
        assert pattern not in lowered, pattern
    sources = re.findall(r'<img[^>]*\ssrc="([^"]*)"', page)
    assert sources and all(src.startswith("data:image/png;base64,") for src in sources)
    for raw in (DATASET, "rs<b>", "bench <x>", "boom <here>"):
        assert raw not in page and html.escape(raw, quote=False) in page
    assert not list(out.glob("*.tmp")) and not list(out.glob(".*.tmp"))  # written atomically


def test_leaderboard_shows_the_selected_runs_values(bench_out):
    out, page = bench_out
    results = load_results(out)
    board = leaderboard_frame(results)
    # ft · erm: overall AUC is (0.78+0.90)/2 and (0.80+0.88)/2 over the two seeds -> 0.840.
    row = board[(board.usage == "ft") & (board.method == "erm")].iloc[0]
    assert row.auc == pytest.approx(0.84) and row.n_seeds == 2
    assert row.worst_group_auc == pytest.approx((0.78 + 0.80) / 2)
    sections = {(s["usage"], r["method"]): r for s in build_bench_context(out, results)["leaderboards"] for r in s["rows"]}
    assert sections[("ft", "erm")]["cells"][0]["value"] == "0.840"
    assert ">0.840<" in page
    # groupdro keeps its better-validated setting: the rival's AUC appears nowhere.
    dro = board[(board.usage == "lp") & (board.method == "groupdro")].iloc[0]
    assert dro.auc == pytest.approx(np.mean([0.765, 0.74])) and "0.432" not in page
    # The best AUC gap in the lp table is groupdro's (mean of 0.01 and 0.02), highlighted.
    lp_gap = {method: r["cells"][2] for (usage, method), r in sections.items() if usage == "lp"}
    assert lp_gap["groupdro"]["best"] and not lp_gap["erm"]["best"]
    assert lp_gap["groupdro"]["value"] == "0.015"


def test_leaderboard_frame_extends_the_terminal_leaderboard(bench_out):
    results = load_results(bench_out[0])
    base, board = leaderboard(results), leaderboard_frame(results)
    pd.testing.assert_frame_equal(board[list(base.columns)], base)
    assert {"eo_gap", "dp_gap", "auc_ci_low", "auc_gap_p"} <= set(board.columns)
    # One seed: the run's own p-value; several: how many seeds reached p < 0.05.
    assert board.auc_gap_p.isna().all() and (board.auc_gap_n_significant >= 0).all()


def test_four_critical_difference_diagrams_across_settings(bench_out):
    out, page = bench_out
    assert page.count('alt="Critical-difference diagram') == 4
    assert "Not enough settings" not in page
    ranks = {r["name"]: r for r in build_bench_context(out)["ranks"]}
    # Four settings (2 usages × 2 seeds). On AUC gap erm is worst (largest gap) in every one of them.
    assert ranks["auc_gap"]["ranks"][-1] == {"method": "erm", "rank": "3.00"}
    assert "N = 4 settings" in ranks["auc_gap"]["friedman"]


def test_one_setting_says_not_enough_settings(tmp_path):
    out = _folder(tmp_path / "out", usages=("lp",), seeds=(0,))
    page = render_bench_html(out)
    assert "Critical-difference diagram" not in page
    assert page.count("Not enough settings for a Friedman test") == 4
    assert "Failed runs (1)" in page and "broken-run" in page and "second line" not in page


def test_cli_report_command_writes_the_page(bench_out, tmp_path):
    from medequity.cli.bench import bench_app

    out = _folder(tmp_path / "out", usages=("lp",), seeds=(0, 1))
    result = CliRunner().invoke(bench_app, ["report", str(out)])
    assert result.exit_code == 0, result.output
    assert (out / "report.html").read_text(encoding="utf-8").count("<h2>Leaderboard</h2>") == 1


def test_pareto_front_on_hand_made_points():
    gap = [0.10, 0.20, 0.05, 0.30, np.nan, 0.10]
    auc = [0.80, 0.90, 0.70, 0.85, 0.95, 0.80]
    # (0.3, 0.85) loses to (0.2, 0.9); NaN is never on the front; the two equal points both stay.
    assert fairness_utility_front(gap, auc).tolist() == [True, True, True, False, False, True]
    # ES-AUC: higher is fairer, so (0.9, 0.8) beats (0.5, 0.7).
    assert fairness_utility_front([0.9, 0.5, 0.95], [0.8, 0.7, 0.6], fairness_lower_is_better=False).tolist() == [
        True, False, True]
    with pytest.raises(ValueError):
        fairness_utility_front([0.1], [0.5, 0.6])


def test_cd_cliques_join_methods_closer_than_the_critical_difference():
    ranks = pd.Series({"a": 1.0, "b": 1.5, "c": 3.0, "d": 3.2})
    assert cliques(ranks, 1.0) == [(0, 1), (2, 3)]
    assert cliques(ranks, 2.5) == [(0, 3)]
    assert cliques(ranks, 0.1) == []
