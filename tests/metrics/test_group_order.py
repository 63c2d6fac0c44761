"""Groups are listed as a reader expects: numeric bins by their bounds, then text."""

import numpy as np
import pandas as pd
import pytest

from medequity.metrics import GroupMetricWarning, group_metrics
from medequity.metrics.groups import encode_groups, group_names, sort_group_names


@pytest.mark.parametrize(("names", "expected"), [
    (["60-<80", ">=80", "<40", "40-<60"], ["<40", "40-<60", "60-<80", ">=80"]),  # cut points (text order: 40-<60 first)
    ([">60", "<=60"], ["<=60", ">60"]),
    ([">=60", "<60"], ["<60", ">=60"]),
    (["80+", "0-19", "60-79", "20-39", "40-59"], ["0-19", "20-39", "40-59", "60-79", "80+"]),  # MEDFAIR bins
    (["Q10 [9, 10]", "Q2 [1, 2]", "Q1 [0, 1]"], ["Q1 [0, 1]", "Q2 [1, 2]", "Q10 [9, 10]"]),
    (["10", "2", "1"], ["1", "2", "10"]),
    (["White", "Black", "Asian"], ["Asian", "Black", "White"]),  # text: unchanged text order
    (["M & >=60", "F & >=60", "M & <60", "F & <60"], ["F & <60", "F & >=60", "M & <60", "M & >=60"]),
])
def test_sort_group_names(names, expected):
    assert sort_group_names(names) == expected


def test_encode_groups_codes_follow_the_listed_order():
    values = ["60-<80", ">=80", "<40", "40-<60", "<40", None]
    with pytest.warns(GroupMetricWarning, match="1 samples have a missing"):
        groups = encode_groups(values, missing="drop")
    assert groups.names == ("<40", "40-<60", "60-<80", ">=80")
    assert [groups.name_of(int(c)) for c in groups.codes] == ["60-<80", ">=80", "<40", "40-<60", "<40", None]
    assert group_names(pd.Series(values)) == groups.names


def test_group_metrics_rows_follow_the_numeric_order():
    rng = np.random.default_rng(0)
    age = rng.choice(["<40", "40-<60", "60-<80", ">=80"], 400)
    y = rng.integers(0, 2, 400)
    score = rng.random(400)
    result = group_metrics(y, score, sensitive_features=age, metrics=["tpr"], threshold=0.5, n_boot=0, n_permutations=0)
    assert list(result.by_group.index) == ["<40", "40-<60", "60-<80", ">=80"]
    for g, group in enumerate(result.groups):  # values sit at their own group's position
        positives = (age == group) & (y == 1)
        assert result.values["tpr"][g + 1] == pytest.approx(np.mean(score[positives] > 0.5), abs=1e-12)
