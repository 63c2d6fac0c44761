"""Hyper-parameter selection on validation data, the same rule for every method (MEDFAIR).

Runs that differ only in their hyper-parameters — same dataset, model, usage, method, training
attribute and seed — compete; the rule (:func:`medequity.metrics.selection.select_model` over the
per-group validation AUCs of each run's chosen epoch) picks one, which is marked ``selected``.
Segmentation runs compete on their per-group validation Dice instead (``score``/``group_scores``).
"""

from __future__ import annotations

import json

import numpy as np
import pandas as pd

from medequity.metrics.selection import select_model

SELECTION_GROUP = ("dataset", "model", "usage", "method", "train_attribute", "seed")


def mark_selected(runs: pd.DataFrame, rule: str = "worst_group", *, max_gap: float | None = None,
                  score: str = "val_auc", group_scores: str = "val_group_aucs") -> pd.Series:
    """Boolean Series (index of ``runs``): the run each selection group keeps.

    ``runs`` needs the :data:`SELECTION_GROUP` columns, ``hparams``, ``score`` (``val_auc``) and
    ``group_scores`` (``val_group_aucs``: a dict, or its JSON, of group name → validation AUC;
    higher is better). Ties go to the first setting in ``hparams`` order, so the choice does not
    depend on the order runs finished in.
    """
    missing = [c for c in (*SELECTION_GROUP, "hparams", score, group_scores) if c not in runs.columns]
    if missing:
        raise ValueError(f"runs lacks columns {missing}; has {list(runs.columns)}")
    selected = pd.Series(False, index=runs.index, dtype=bool)
    if runs.empty:
        return selected
    for _, group in runs.groupby(list(SELECTION_GROUP), sort=False, dropna=False):
        group = group.sort_values("hparams", kind="stable")
        selected.loc[group.index[_choose(group, rule, max_gap, score, group_scores)]] = True
    return selected


def _choose(group: pd.DataFrame, rule: str, max_gap: float | None, score: str = "val_auc",
            group_scores: str = "val_group_aucs") -> int:
    if len(group) == 1:
        return 0
    per_group = pd.DataFrame([_as_dict(v) for v in group[group_scores]], index=group.index)
    # A group without both classes in validation has no AUC for any candidate: it cannot decide.
    per_group = per_group.loc[:, per_group.notna().any(axis=0)].astype(np.float64)
    overall = group[score].astype(np.float64)
    if per_group.shape[1] == 0 or per_group.isna().any(axis=None):
        if overall.notna().any():
            return int(np.nanargmax(overall.to_numpy()))
        return 0
    candidates = per_group.assign(overall=overall.to_numpy())
    return select_model(candidates, rule=rule, group_columns=list(per_group.columns), max_gap=max_gap)


def _as_dict(value) -> dict:
    if isinstance(value, str):
        return json.loads(value)
    return dict(value) if value is not None else {}
