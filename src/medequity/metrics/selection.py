"""Fair model selection on validation data (MEDFAIR; METRICS.md "Model selection rules").

Candidates (checkpoints or hyper-parameter settings) are rows of a table of validation metrics
with one column per group AUC. MEDFAIR showed that tuning methods unequally fakes gains: whatever
the rule, it is applied to every method with the same budget, and recorded with the results.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

RULES = ("overall", "worst_group", "pareto", "dto", "constrained")


def pareto_front(group_values: np.ndarray) -> np.ndarray:
    """Boolean mask of candidates not dominated on the per-group values (higher is better)."""
    values = np.asarray(group_values, dtype=np.float64)
    better_eq = np.all(values[None, :, :] >= values[:, None, :], axis=2)  # [i, j]: j >= i everywhere
    strictly = np.any(values[None, :, :] > values[:, None, :], axis=2)
    return ~np.any(better_eq & strictly, axis=1)


def distance_to_utopia(group_values: np.ndarray) -> np.ndarray:
    """DTO: each group value divided by its best over candidates; Euclidean distance to all ones."""
    values = np.asarray(group_values, dtype=np.float64)
    return np.sqrt(((values / values.max(axis=0, keepdims=True) - 1.0) ** 2).sum(axis=1))


def select_model(
    candidates: pd.DataFrame,
    *,
    rule: str = "worst_group",
    group_columns: list[str],
    overall_column: str = "overall",
    max_gap: float | None = None,
) -> int:
    """Position (iloc) of the chosen candidate.

    ``overall``: best overall validation value; ``worst_group``: best minimum group value;
    ``pareto``: among the Pareto set of group values, the best on the weakest group; ``dto``:
    smallest distance to the utopia point; ``constrained``: best overall among candidates whose
    group gap ≤ ``max_gap`` (falls back to the smallest gap when none qualifies). Ties: first row.
    """
    if rule not in RULES:
        raise ValueError(f"rule must be one of {RULES}; got {rule!r}")
    missing = [c for c in [*group_columns, overall_column] if c not in candidates.columns]
    if missing:
        raise ValueError(f"candidates lack columns {missing}; has {list(candidates.columns)}")
    groups = candidates[group_columns].to_numpy(dtype=np.float64)
    overall = candidates[overall_column].to_numpy(dtype=np.float64)
    if rule == "overall":
        return int(np.nanargmax(overall))
    if rule == "worst_group":
        return int(np.nanargmax(groups.min(axis=1)))
    if rule == "pareto":
        front = np.flatnonzero(pareto_front(groups))
        return int(front[np.nanargmax(groups[front].min(axis=1))])
    if rule == "dto":
        return int(np.nanargmin(distance_to_utopia(groups)))
    if max_gap is None:
        raise ValueError("rule 'constrained' needs max_gap")
    gaps = groups.max(axis=1) - groups.min(axis=1)
    eligible = np.flatnonzero(gaps <= max_gap)
    if eligible.size == 0:
        return int(np.nanargmin(gaps))
    return int(eligible[np.nanargmax(overall[eligible])])
