"""What the benchmark report concludes: stars that do not reward levelling down, labelled intervals
that never put a gap below 0, paired effects against ERM, and figures whose labels and legends
cover nothing."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import roc_auc_score

from medequity.bench.effects import aggregate_effects, paired_effects, verdict
from medequity.bench.report import best_values, build_bench_context, interval_label
from medequity.bench.spec import hparams_key
from medequity.bench.store import ResultsStore, frame_to_parquet, leaderboard, load_results
from medequity.report.bench_plots import _short, group_auc_figure, pareto_figure

# -- stars ---------------------------------------------------------------------------------------------
COLUMNS = [{"name": "auc", "higher": True}, {"name": "worst_group_auc", "higher": True},
           {"name": "auc_gap", "higher": False}]


def test_a_gap_closed_by_losing_auc_gets_no_star():
    # resampling closes the gap at AUC 0.545 (near chance): levelling down. groupdro keeps its AUC
    # within 0.02 of the best (0.85) and has the smallest gap among those: it gets the star.
    rows = pd.DataFrame({"method": ["erm", "resampling", "groupdro"], "auc": [0.85, 0.545, 0.835],
                         "worst_group_auc": [0.74, 0.54, 0.78], "auc_gap": [0.15, 0.002, 0.08]})
    best = best_values(rows, COLUMNS, "auc", ("auc_gap",), tolerance=0.02)
    assert best == {"auc": 0.85, "worst_group_auc": 0.78, "auc_gap": 0.08}
    # without the utility rule the near-chance method would have won
    assert best_values(rows, COLUMNS, None)["auc_gap"] == 0.002
    # a loss of exactly the tolerance still counts; a little more does not
    rows.loc[2, "auc"] = 0.83
    assert best_values(rows, COLUMNS, "auc", ("auc_gap",), tolerance=0.02)["auc_gap"] == 0.08
    rows.loc[2, "auc"] = 0.8299
    assert best_values(rows, COLUMNS, "auc", ("auc_gap",), tolerance=0.02)["auc_gap"] == 0.15


def test_interval_labels_say_which_interval_it_is():
    assert "bootstrap" in interval_label([1]) and "t-interval" not in interval_label([1])
    several = interval_label([3])
    assert "t-interval" in several and "3 seeds" in several and "not a bootstrap" in several and "gaps ≥ 0" in several
    assert "bootstrap" in interval_label([1, 2]) and "t-interval" in interval_label([1, 2])


# -- a results folder with predictions -------------------------------------------------------------------
GROUPS = ("I-III", "IV-VI")


def _predictions(rng, n: int, separation: dict[str, float]) -> pd.DataFrame:
    """Test predictions: label, score with a group-specific separation, group column; plus a few val rows."""
    groups = rng.choice(GROUPS, size=n, p=[0.7, 0.3])
    label = rng.integers(0, 2, size=n)
    shift = np.array([separation[g] for g in groups])
    score = 1 / (1 + np.exp(-(shift * (label - 0.5) * 2 + rng.normal(0, 1, n))))
    frame = pd.DataFrame({"split": "test", "sample_id": [f"s{i}" for i in range(n)], "label": label, "score": score,
                          "pred": (score > 0.5).astype(np.int8), "group:skin_tone": groups})
    return pd.concat([frame, frame.head(5).assign(split="val")], ignore_index=True)


def _tables(predictions: pd.DataFrame, seed: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    test = predictions[predictions.split == "test"]
    metric_rows, values = [], {}
    for group, rows in [("overall", test), *test.groupby("group:skin_tone")]:
        value = roc_auc_score(rows.label, rows.score)
        values[group] = value
        metric_rows.append({"attribute": "skin_tone", "group": group, "metric": "auc", "value": value,
                            "ci_low": value - 0.05, "ci_high": value + 0.05, "n": len(rows)})
    group_values = np.array([values[g] for g in GROUPS])
    gap = float(group_values.max() - group_values.min())
    summary_rows = [{"attribute": "skin_tone", "metric": "auc", "summary": "gap", "value": gap,
                     "ci_low": max(gap - 0.04, 0.0), "ci_high": gap + 0.04, "p_value": 0.01},
                    {"attribute": "skin_tone", "metric": "auc", "summary": "worst", "value": group_values.min(),
                     "ci_low": group_values.min() - 0.05, "ci_high": group_values.min() + 0.05, "p_value": np.nan},
                    {"attribute": "skin_tone", "metric": "auc", "summary": "es_std", "value": values["overall"],
                     "ci_low": np.nan, "ci_high": np.nan, "p_value": np.nan}]
    return pd.DataFrame(metric_rows), pd.DataFrame(summary_rows)


SEPARATIONS = {  # the minority's score separation by method: ERM serves IV-VI worse, groupdro less so
    "erm": {"I-III": 2.0, "IV-VI": 0.6},
    "groupdro": {"I-III": 1.9, "IV-VI": 1.5},
}


def _folder(out, seeds=(0,)) -> ResultsStore:
    store = ResultsStore(out)
    run_ids = []
    for seed in seeds:
        for method, separation in SEPARATIONS.items():
            rng = np.random.default_rng(100 + seed)  # the same samples and noise for every method of a seed
            if method == "groupdro" and seed == 1:  # seeds differ: a wider gap in seed 1
                separation = {**separation, "IV-VI": 1.2}
            predictions = _predictions(rng, 600, separation)
            metrics, summaries = _tables(predictions, seed)
            run_id = f"{method}-{seed}"
            labels = {"dataset": "derm", "model": "cnn", "usage": "lp", "method": method, "train_attribute": "skin_tone",
                      "seed": seed, "hparams": hparams_key({}, {})}
            record = {"run_id": run_id, "labels": labels, "seconds": 1.0, "best_epoch": 0,
                      "validation": {"val_auc": 0.8, "val_auc_group": {g: 0.8 for g in GROUPS}}}
            store.write_run(run_id, {"metrics": frame_to_parquet(metrics), "summaries": frame_to_parquet(summaries),
                                     "predictions": frame_to_parquet(predictions)}, record)
            run_ids.append(run_id)
    store.write_header("name: t\n", {"name": "t", "selection": {"rule": "worst_group"}, "run_ids": run_ids,
                                     "evaluation": {"n_boot": 200}})
    return store


def test_paired_effects_against_erm_match_sklearn(tmp_path):
    out = tmp_path / "out"
    _folder(out)
    results = load_results(out)
    effects = paired_effects(out, results, n_boot=300)
    assert len(effects) == 1 and effects.method.iloc[0] == "groupdro"
    row = effects.iloc[0]

    def read(method):
        frame = pd.read_parquet(out / "runs" / f"{method}-0" / "predictions.parquet")
        return frame[frame.split == "test"]

    m, e = read("groupdro"), read("erm")

    def summaries(frame):
        per_group = [roc_auc_score(r.label, r.score) for _, r in frame.groupby("group:skin_tone")]
        return roc_auc_score(frame.label, frame.score), max(per_group) - min(per_group), min(per_group)

    (u_m, g_m, w_m), (u_e, g_e, w_e) = summaries(m), summaries(e)
    assert row.utility == pytest.approx(u_m - u_e)
    assert row.gap == pytest.approx(g_m - g_e)
    assert row.worst == pytest.approx(w_m - w_e)
    for name in ("utility", "gap", "worst"):
        assert row[f"{name}_ci_low"] <= row[name] <= row[f"{name}_ci_high"]
        assert 0 < row[f"{name}_p"] <= 1
    # groupdro's planted effect: a much smaller gap (its interval below 0), a better worst group
    assert row.gap_ci_high < 0 and row.worst_ci_low > 0 and row.gap_p < 0.05
    kind, sentence = verdict(aggregate_effects(effects).iloc[0], tolerance=0.02)
    assert kind == "mitigates" and "reduces the gap" in sentence

    context = build_bench_context(out, results)
    assert context["findings"][0]["verdicts"][0]["kind"] == "mitigates"
    assert context["effects"][0]["rows"][0]["method"] == "groupdro"


@pytest.mark.parametrize(("gap", "utility", "kind"), [
    ((-0.10, -0.15, -0.05), (-0.01, -0.02, 0.00), "mitigates"),
    ((-0.10, -0.15, -0.05), (-0.30, -0.35, -0.25), "levels down"),
    ((0.05, 0.01, 0.09), (0.00, -0.01, 0.01), "widens"),
    ((-0.02, -0.06, 0.02), (0.00, -0.01, 0.01), "no change"),
])
def test_verdicts_on_hand_made_effects(gap, utility, kind):
    row = {"gap": gap[0], "gap_ci_low": gap[1], "gap_ci_high": gap[2],
           "utility": utility[0], "utility_ci_low": utility[1], "utility_ci_high": utility[2]}
    assert verdict(row, tolerance=0.02)[0] == kind


def test_several_seeds_give_a_t_interval_and_never_a_gap_below_zero(tmp_path):
    out = tmp_path / "out"
    _folder(out, seeds=(0, 1))
    results = load_results(out)
    board = leaderboard(results)
    assert (board.n_seeds == 2).all() and (board.gap_ci_low >= 0).all()
    groupdro = board[board.method == "groupdro"].iloc[0]
    # two seeds: t(0.975, 1) = 12.7 makes the raw interval of groupdro's small gap go far below 0
    gaps = [s.value for s in results.summaries.itertuples() if s.summary == "gap" and s.run_id.startswith("groupdro")]
    half = 12.706 * np.std(gaps, ddof=1) / math.sqrt(2)
    assert np.mean(gaps) - half < 0 and groupdro.gap_ci_low == 0.0
    sections = build_bench_context(out, results)["leaderboards"]
    assert "t-interval" in sections[0]["interval"] and "2 seeds" in sections[0]["interval"]
    effects = aggregate_effects(paired_effects(out, results, n_boot=100))
    assert effects.n_seeds.iloc[0] == 2 and math.isnan(effects.gap_p.iloc[0])
    assert effects.gap_n_significant.iloc[0] >= 1


# -- figures -------------------------------------------------------------------------------------------------
def _overlap(a, b) -> bool:
    return min(a.x1, b.x1) > max(a.x0, b.x0) and min(a.y1, b.y1) > max(a.y0, b.y0)


def test_pareto_labels_do_not_collide():
    # six methods crowded into a small corner (but more than 2% apart, so each keeps its own label)
    methods = ["erm", "resampling", "groupdro", "fis", "threshold_optimizer", "adversarial"]
    points = pd.DataFrame({"method": methods, "usage": "lp", "auc": [0.80, 0.805, 0.81, 0.80, 0.79, 0.60],
                           "auc_gap": [0.10, 0.104, 0.10, 0.108, 0.103, 0.02]})
    fig = pareto_figure(points, [("auc_gap", "AUC gap", True)], ["lp"])
    ax = fig.axes[0]
    renderer = fig.canvas.get_renderer()
    texts = [t for t in ax.texts if t.get_text()]
    assert sorted(t.get_text() for t in texts) == sorted(_short(m, 18) for m in methods)  # long names end in "…"
    boxes = [t.get_window_extent(renderer) for t in texts]
    assert not any(_overlap(a, b) for i, a in enumerate(boxes) for b in boxes[i + 1:])
    axes_box = ax.get_window_extent(renderer)
    assert all(axes_box.x0 <= b.x0 and b.x1 <= axes_box.x1 and axes_box.y0 <= b.y0 and b.y1 <= axes_box.y1 for b in boxes)


def test_group_legends_sit_outside_the_axes():
    table = pd.DataFrame([{"method": m, "group": g, "value": v, "ci_low": v - 0.1, "ci_high": v + 0.1}
                          for m in ("erm", "resampling") for g, v in (("overall", 0.8), ("A", 0.62), ("B", 0.9))])
    fig = group_auc_figure([{"table": table, "groups": ["A", "B"], "title": "lp"}], methods=["erm", "resampling"], ncols=1)
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    ax = fig.axes[0]
    legend = ax.get_legend().get_window_extent(renderer)
    assert not _overlap(legend, ax.get_window_extent(renderer))


def test_decision_effects_see_a_post_processing_method_that_the_auc_effects_cannot(tmp_path):
    """ThresholdOptimizer changes decisions, not scores: its AUC effects are exactly 0, while the
    decision effects measure the TPR gap it closes and the accuracy it costs (hand-computed from
    the two runs' ``pred`` columns) and the verdict says so."""
    from medequity.bench.effects import decision_verdict

    out = tmp_path / "out"
    _folder(out)
    erm = pd.read_parquet(out / "runs" / "erm-0" / "predictions.parquet")
    # per-group thresholds: IV-VI (served worse) gets a lower one, so its TPR rises towards I-III's
    post = erm.assign(pred=np.where(erm["group:skin_tone"] == "IV-VI", erm.score > 0.3, erm.score > 0.5).astype(np.int8))
    metrics, summaries = _tables(post, 0)
    store = ResultsStore(out)
    labels = {"dataset": "derm", "model": "cnn", "usage": "lp", "method": "threshold_optimizer",
              "train_attribute": "skin_tone", "seed": 0, "hparams": hparams_key({}, {})}
    store.write_run("to-0", {"metrics": frame_to_parquet(metrics), "summaries": frame_to_parquet(summaries),
                             "predictions": frame_to_parquet(post)},
                    {"run_id": "to-0", "labels": labels, "seconds": 1.0, "best_epoch": 0,
                     "validation": {"val_auc": 0.8, "val_auc_group": {g: 0.8 for g in GROUPS}}})
    store.write_header("name: t\n", {"name": "t", "selection": {"rule": "worst_group"},
                                     "run_ids": ["erm-0", "groupdro-0", "to-0"], "evaluation": {"n_boot": 200}})
    effects = paired_effects(out, load_results(out), n_boot=300)
    row = effects[effects.method == "threshold_optimizer"].iloc[0]
    assert row.utility == 0 and row.gap == 0

    def tpr_gap_and_accuracy(frame):
        test = frame[frame.split == "test"]
        tpr = test[test.label == 1].groupby("group:skin_tone")["pred"].mean()
        return tpr.max() - tpr.min(), (test.pred == test.label).mean()

    (gap_m, acc_m), (gap_e, acc_e) = tpr_gap_and_accuracy(post), tpr_gap_and_accuracy(erm)
    assert row.tpr_gap == pytest.approx(gap_m - gap_e) and row.accuracy == pytest.approx(acc_m - acc_e)
    assert row.tpr_gap_ci_low <= row.tpr_gap <= row.tpr_gap_ci_high and row.tpr_gap_ci_high < 0
    sentence = decision_verdict(aggregate_effects(effects).set_index("method").loc["threshold_optimizer"])
    assert sentence is not None and sentence.startswith("close the TPR gap by") and "accuracy change" in sentence
    # groupdro changed scores, and the decisions' effect is computed for it too (not necessarily significant)
    assert np.isfinite(effects[effects.method == "groupdro"].tpr_gap.iloc[0])
    # the report's verdict badge: unchanged AUC, a closed TPR gap -> mitigates, the sentence states the cost
    context = build_bench_context(out, load_results(out))
    shown = {v["method"]: v for v in context["findings"][0]["verdicts"]}
    assert shown["threshold_optimizer"]["kind"] == "mitigates"
    assert "its decisions close the TPR gap by" in shown["threshold_optimizer"]["verdict"]
