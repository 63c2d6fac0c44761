"""Model selection rules (MEDFAIR), Pareto fronts, Friedman/Nemenyi ranking, representation probe."""

import itertools

import numpy as np
import pandas as pd
import pytest
from scipy.stats import friedmanchisquare, rankdata, studentized_range

from medequity.metrics import (
    attribute_probe_auc,
    compare_methods,
    distance_to_utopia,
    nemenyi_critical_difference,
    pareto_front,
    select_model,
)

CANDIDATES = pd.DataFrame(
    {
        "overall": [0.90, 0.85, 0.80, 0.84, 0.88],
        "a": [0.95, 0.86, 0.80, 0.85, 0.90],
        "b": [0.70, 0.84, 0.85, 0.82, 0.80],
    }
)
GROUPS = ["a", "b"]


def test_select_overall_and_worst_group():
    assert select_model(CANDIDATES, rule="overall", group_columns=GROUPS) == 0
    assert select_model(CANDIDATES, rule="worst_group", group_columns=GROUPS) == 1  # min 0.84


def test_select_dto_by_hand():
    # group maxima: a 0.95, b 0.85; distances to (1, 1) of the normalised rows
    a, b = CANDIDATES.a / 0.95, CANDIDATES.b / 0.85
    hand = np.sqrt((a - 1) ** 2 + (b - 1) ** 2)
    np.testing.assert_allclose(distance_to_utopia(CANDIDATES[GROUPS].to_numpy()), hand, atol=1e-12)
    assert int(np.argmin(hand)) == 4  # (0.947, 0.941): closer than the fairest row 1 (0.905, 0.988)
    assert select_model(CANDIDATES, rule="dto", group_columns=GROUPS) == 4


def test_select_constrained():
    # gaps: 0.25, 0.02, 0.05, 0.03, 0.10 -> eligible at 0.06: rows 1, 2, 3; best overall: row 1
    assert select_model(CANDIDATES, rule="constrained", group_columns=GROUPS, max_gap=0.06) == 1
    # at 0.12 row 4 (overall 0.88) qualifies
    assert select_model(CANDIDATES, rule="constrained", group_columns=GROUPS, max_gap=0.12) == 4
    # none qualifies: fall back to the smallest gap
    assert select_model(CANDIDATES, rule="constrained", group_columns=GROUPS, max_gap=0.001) == 1


def test_select_pareto_differs_from_worst_group_on_dominated_ties():
    table = pd.DataFrame({"overall": [0.8, 0.8, 0.9], "a": [0.8, 0.8, 0.99], "b": [0.90, 0.95, 0.5]})
    # rows 0 and 1 tie on the weakest group (0.8); row 0 is dominated by row 1
    assert select_model(table, rule="worst_group", group_columns=GROUPS) == 0
    assert select_model(table, rule="pareto", group_columns=GROUPS) == 1
    assert select_model(CANDIDATES, rule="pareto", group_columns=GROUPS) == 1


def test_select_model_uses_positions_not_labels():
    shuffled = CANDIDATES.iloc[[3, 0, 4, 1, 2]].set_index(pd.Index([10, 11, 12, 13, 14]))
    assert select_model(shuffled, rule="overall", group_columns=GROUPS) == 1
    assert select_model(shuffled, rule="dto", group_columns=GROUPS) == 2


def _pareto_brute_force(values):
    n = len(values)
    keep = []
    for i in range(n):
        dominated = any(
            all(values[j][k] >= values[i][k] for k in range(len(values[i])))
            and any(values[j][k] > values[i][k] for k in range(len(values[i])))
            for j in range(n)
            if j != i
        )
        keep.append(not dominated)
    return np.array(keep)


@pytest.mark.parametrize("seed", range(25))
def test_pareto_front_brute_force(seed):
    rng = np.random.default_rng(seed)
    values = rng.integers(0, 4, size=(int(rng.integers(1, 12)), int(rng.integers(1, 4)))).astype(float)
    np.testing.assert_array_equal(pareto_front(values), _pareto_brute_force(values.tolist()))


def test_pareto_front_duplicates_are_both_kept():
    values = np.array([[0.8, 0.8], [0.8, 0.8], [0.7, 0.9], [0.6, 0.6]])
    np.testing.assert_array_equal(pareto_front(values), [True, True, True, False])


# --- Friedman / Nemenyi ------------------------------------------------------------------------

# Demšar (2006) Table 5(a): critical values q_0.05 of the two-tailed Nemenyi test
DEMSAR_Q05 = {2: 1.960, 3: 2.343, 4: 2.569, 5: 2.728, 6: 2.850, 7: 2.949, 8: 3.031, 9: 3.102, 10: 3.164}


@pytest.mark.parametrize("k", sorted(DEMSAR_Q05))
def test_nemenyi_critical_difference_matches_demsar_table(k):
    n = 14
    expected = DEMSAR_Q05[k] * np.sqrt(k * (k + 1) / (6 * n))
    # q printed to 3 decimals; the published table is off by up to one unit in the last digit
    # (k=3: exact 2.3437, printed 2.343; k=7: exact 2.9483, printed 2.949), so allow one unit.
    tolerance = 0.001 * np.sqrt(k * (k + 1) / (6 * n))
    assert nemenyi_critical_difference(k, n) == pytest.approx(expected, abs=tolerance + 1e-9)


def test_nemenyi_critical_difference_k4_n14():
    assert nemenyi_critical_difference(4, 14) == pytest.approx(2.569 * np.sqrt(20 / 84), abs=3e-4)
    assert nemenyi_critical_difference(4, 14) == pytest.approx(1.2536, abs=3e-4)


@pytest.mark.parametrize("higher_is_better", [True, False])
def test_compare_methods_against_scipy(higher_is_better):
    rng = np.random.default_rng(0)
    data = rng.normal(size=(14, 4)) + np.array([0.0, 0.3, 0.6, 1.2])
    data[3, 1] = data[3, 2]  # a tie within a row
    scores = pd.DataFrame(data, columns=["ERM", "GroupDRO", "FairMixup", "Reweight"])
    result = compare_methods(scores, higher_is_better=higher_is_better)
    stat, p = friedmanchisquare(*data.T)
    assert result.friedman_statistic == pytest.approx(stat, rel=1e-12)
    assert result.friedman_p_value == pytest.approx(p, rel=1e-12)
    ranks = np.array([rankdata(-row if higher_is_better else row) for row in data]).mean(axis=0)
    expected_ranks = pd.Series(ranks, index=scores.columns)
    pd.testing.assert_series_equal(result.average_ranks, expected_ranks.sort_values(), check_names=False, atol=1e-12)
    assert result.average_ranks.index[0] == ("Reweight" if higher_is_better else "ERM")
    assert result.critical_difference == pytest.approx(2.569 * np.sqrt(4 * 5 / (6 * 14)), abs=3e-4)
    assert result.n_settings == 14
    # Nemenyi p-values by hand: |R_i - R_j| / sqrt(k(k+1)/(6N)) against the studentized range / sqrt(2)
    se = np.sqrt(4 * 5 / (6 * 14))
    for i, j in itertools.combinations(range(4), 2):
        z = abs(ranks[i] - ranks[j]) / se
        expected = studentized_range.sf(z * np.sqrt(2), 4, np.inf)
        got = result.nemenyi_p_values.loc[scores.columns[i], scores.columns[j]]
        assert got == pytest.approx(expected, abs=1e-6)
        assert got == result.nemenyi_p_values.loc[scores.columns[j], scores.columns[i]]
        # the pair differs significantly exactly when the rank gap exceeds the CD
        assert (got < 0.05) == (abs(ranks[i] - ranks[j]) > result.critical_difference)


def test_compare_methods_drops_incomplete_settings():
    scores = pd.DataFrame({"x": [1.0, 2.0, np.nan, 4.0], "y": [2.0, 1.0, 3.0, 5.0], "z": [3.0, 3.0, 1.0, 6.0]})
    result = compare_methods(scores)
    assert result.n_settings == 3
    assert result.friedman_statistic == pytest.approx(friedmanchisquare([1, 2, 4], [2, 1, 5], [3, 3, 6])[0])


# --- representation probe ----------------------------------------------------------------------


def test_attribute_probe_auc_random_features_is_chance():
    rng = np.random.default_rng(0)
    features = rng.normal(size=(600, 5))
    groups = rng.choice(["F", "M"], 600)
    assert attribute_probe_auc(features, groups) == pytest.approx(0.5, abs=0.08)


def test_attribute_probe_auc_features_containing_group():
    rng = np.random.default_rng(1)
    groups = rng.choice(["F", "M"], 400)
    features = np.c_[rng.normal(size=(400, 4)), (groups == "M") + 0.1 * rng.normal(size=400)]
    assert attribute_probe_auc(features, groups) > 0.98
    three = rng.choice(["<40", "40-60", ">60"], 400)
    onehot = pd.get_dummies(three).to_numpy(float) + 0.1 * rng.normal(size=(400, 3))
    assert attribute_probe_auc(np.c_[rng.normal(size=(400, 3)), onehot], three) > 0.98
    assert attribute_probe_auc(rng.normal(size=(400, 3)), three) == pytest.approx(0.5, abs=0.1)
