"""Hyper-parameter selection on a hand-made runs table, where each rule's answer is worked out by hand."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from medequity.bench.selection import mark_selected

CELL = {"dataset": "synthetic", "model": "small_cnn", "usage": "lp", "method": "groupdro", "train_attribute": "sex", "seed": 0}


def run(hparam: str, overall: float, female: float, male: float, **cell) -> dict:
    return {**CELL, **cell, "hparams": json.dumps({"method": {"step_size": hparam}}), "val_auc": overall,
            "val_group_aucs": json.dumps({"female": female, "male": male})}


# Setting a: best overall, poor on women; b: best worst-group; c: dominated by b; d: balanced but low.
#   gaps: a 0.20, b 0.06, c 0.10, d 0.01.  DTO (best female 0.80, best male 0.90):
#   a: (0.65/0.8-1, 0.85/0.9-1) → 0.193; b: (0, 0.86/0.9-1) → 0.044; c: 0.127; d: 0.168.
RUNS = pd.DataFrame([run("a", 0.90, 0.65, 0.85), run("b", 0.84, 0.80, 0.86), run("c", 0.80, 0.76, 0.86),
                     run("d", 0.75, 0.74, 0.75),
                     # Another seed of the same cell competes separately: here 'a' wins on the weakest group.
                     run("a", 0.88, 0.79, 0.90, seed=1), run("b", 0.85, 0.70, 0.88, seed=1),
                     # A cell with one setting keeps it.
                     run("a", 0.70, 0.60, 0.70, method="erm")])


def chosen(selected: pd.Series, runs: pd.DataFrame = RUNS) -> list[tuple]:
    picked = runs[selected]
    return sorted(zip(picked["method"], picked["seed"], [json.loads(h)["method"]["step_size"] for h in picked["hparams"]]))


@pytest.mark.parametrize(("rule", "max_gap", "expected_seed0"), [
    ("worst_group", None, "b"),
    ("overall", None, "a"),
    ("pareto", None, "b"),  # front {a, b, d}; weakest group best at b
    ("dto", None, "b"),
    ("constrained", 0.05, "d"),  # only d has gap ≤ 0.05
    ("constrained", 0.15, "b"),  # b, c, d qualify; b has the best overall AUC
])
def test_each_rule_picks_the_setting_worked_out_by_hand(rule, max_gap, expected_seed0):
    selected = mark_selected(RUNS, rule, max_gap=max_gap)
    assert selected.dtype == bool and selected.index.equals(RUNS.index)
    picks = chosen(selected)
    assert ("groupdro", 0, expected_seed0) in picks
    assert ("erm", 0, "a") in picks
    assert len(picks) == 3  # exactly one per (dataset, model, usage, method, attribute, seed)


def test_seed_one_is_selected_on_its_own_validation_values():
    assert ("groupdro", 1, "a") in chosen(mark_selected(RUNS, "worst_group"))
    # gaps: a 0.11, b 0.18; none within 0.05 → the smallest gap
    assert ("groupdro", 1, "a") in chosen(mark_selected(RUNS, "constrained", max_gap=0.05))


def test_ties_go_to_the_first_setting_whatever_order_runs_finished_in():
    tied = pd.DataFrame([run("z", 0.8, 0.7, 0.8), run("m", 0.8, 0.7, 0.8), run("b", 0.8, 0.7, 0.8)])
    for order in ([0, 1, 2], [2, 0, 1], [1, 2, 0]):
        shuffled = tied.iloc[order]
        assert chosen(mark_selected(shuffled, "worst_group"), shuffled) == [("groupdro", 0, "b")]


def test_a_group_without_validation_auc_cannot_decide():
    runs = pd.DataFrame([run("a", 0.9, 0.7, 0.8), run("b", 0.8, 0.75, 0.8)])
    runs["val_group_aucs"] = [json.dumps({"female": 0.7, "male": 0.8, "other": None}),
                              json.dumps({"female": 0.75, "male": 0.8, "other": None})]
    assert chosen(mark_selected(runs, "worst_group"), runs) == [("groupdro", 0, "b")]
    runs["val_group_aucs"] = json.dumps({"female": None})  # nothing per group: fall back to overall AUC
    assert chosen(mark_selected(runs, "worst_group"), runs) == [("groupdro", 0, "a")]


def test_missing_columns_are_named():
    with pytest.raises(ValueError, match=r"lacks columns \['val_group_aucs'\]"):
        mark_selected(RUNS.drop(columns="val_group_aucs"))
    assert not mark_selected(RUNS.iloc[:0]).any() and np.all(mark_selected(RUNS.iloc[:1]))
