"""Comparing methods across datasets/settings: average ranks, Friedman test, Nemenyi post-hoc.

MEDFAIR ranked methods without a Friedman test and drew critical-difference diagrams with Orange's
since-removed code; FairDi (Fig. 3–4) and FairMedFM (Fig. 15) use Friedman + Nemenyi. Here:
``scipy.stats.friedmanchisquare`` and scikit-posthocs ``posthoc_nemenyi_friedman``; the critical
difference is q_α·√(k(k+1)/(6N)) (Demšar 2006).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd


@dataclass
class RankComparison:
    average_ranks: pd.Series  # method -> mean rank (1 = best)
    friedman_statistic: float
    friedman_p_value: float
    nemenyi_p_values: pd.DataFrame  # method x method
    critical_difference: float
    n_settings: int
    higher_is_better: bool

    def to_dict(self) -> dict:
        return {
            "average_ranks": self.average_ranks.to_dict(),
            "friedman_statistic": self.friedman_statistic,
            "friedman_p_value": self.friedman_p_value,
            "nemenyi_p_values": self.nemenyi_p_values.to_dict(),
            "critical_difference": self.critical_difference,
            "n_settings": self.n_settings,
            "higher_is_better": self.higher_is_better,
        }


def nemenyi_critical_difference(k: int, n: int, alpha: float = 0.05) -> float:
    """Nemenyi CD = q_α √(k(k+1)/(6N)), q_α = studentized range quantile / √2 (Demšar 2006)."""
    from scipy.stats import studentized_range

    q = studentized_range.ppf(1 - alpha, k, np.inf) / np.sqrt(2)
    return float(q * np.sqrt(k * (k + 1) / (6.0 * n)))


def compare_methods(scores: pd.DataFrame, *, higher_is_better: bool = True, alpha: float = 0.05) -> RankComparison:
    """``scores``: rows = settings (dataset × attribute × …), columns = methods, one value each."""
    import scikit_posthocs as sp
    from scipy.stats import friedmanchisquare

    table = scores.dropna(axis=0, how="any")
    if table.shape[1] < 3:
        raise ValueError(f"the Friedman test needs at least 3 methods (columns); got {table.shape[1]}")
    if table.shape[0] < 2:
        raise ValueError(f"the Friedman test needs at least 2 settings (rows without NaN); got {table.shape[0]}")
    ranks = (-table if higher_is_better else table).rank(axis=1, method="average")
    statistic, p_value = friedmanchisquare(*[table[c].to_numpy() for c in table.columns])
    nemenyi = sp.posthoc_nemenyi_friedman(-table.to_numpy() if higher_is_better else table.to_numpy())
    nemenyi.index = nemenyi.columns = table.columns
    return RankComparison(
        average_ranks=ranks.mean(axis=0).sort_values(),
        friedman_statistic=float(statistic),
        friedman_p_value=float(p_value),
        nemenyi_p_values=nemenyi,
        critical_difference=nemenyi_critical_difference(table.shape[1], table.shape[0], alpha),
        n_settings=int(table.shape[0]),
        higher_is_better=higher_is_better,
    )
