"""metrics.groups: one coding for discovered and fixed group names, one intersection name format."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from medequity.metrics import GroupMetricWarning
from medequity.metrics.groups import (
    GROUP_PREFIX,
    INTERSECTION_SEP,
    Groups,
    canonical_attribute,
    encode_groups,
    group_names,
    intersection_name,
    is_intersection,
    same_attribute,
    split_intersection,
)


def test_fixed_names_give_positions_and_minus_one_for_missing_or_unknown():
    values = pd.Series(["male", None, "female", pd.NA, "other", "male"], dtype="string")
    groups = Groups.from_names(values, ("female", "male"), attribute="sex")
    np.testing.assert_array_equal(groups.codes, [1, -1, 0, -1, -1, 1])
    assert groups.names == ("female", "male") and groups.attribute == "sex" and groups.n_excluded_missing == 2
    assert groups.name_of(0) == "female" and groups.name_of(-1) is None
    with pytest.raises(ValueError, match=r"group 'other' of row 4 is not in the coding \['female', 'male'\]"):
        Groups.from_names(values, ("female", "male"), unknown="raise")
    # the order of the names is the coding (not re-sorted), and another split keeps it
    other = groups.encode(["female", "female", np.nan])
    np.testing.assert_array_equal(other.codes, [0, 0, -1])
    assert other.names == groups.names
    np.testing.assert_array_equal(Groups.from_names(["b", "a"], ["b", "a"]).codes, [0, 1])
    with pytest.raises(ValueError, match="distinct"):
        Groups.from_names(["a"], ["a", "a"])


def test_fixed_names_agree_with_discovered_names():
    rng = np.random.default_rng(0)
    values = pd.Series(rng.choice(np.array(["<=60", ">60", None], dtype=object), 200))
    with pytest.warns(GroupMetricWarning, match="missing"):
        discovered = encode_groups(values, require_two=False)
    fixed = Groups.from_names(values, group_names(values))
    assert fixed.names == discovered.names == ("<=60", ">60")  # codes order = sorted names
    np.testing.assert_array_equal(fixed.codes, discovered.codes)


def test_group_names_of_a_column():
    assert group_names(pd.Series(["b", None, "a", "b"])) == ("a", "b")
    categorical = pd.Series(pd.Categorical(["female"], categories=["male", "female"]))
    assert group_names(categorical) == ("male", "female")  # a categorical keeps its categories


@pytest.mark.parametrize("spelling", ["sex&age", "sex & age", "sex &age", " sex&  age"])
def test_intersection_names_accept_both_spellings_and_produce_one(spelling):
    assert is_intersection(spelling)
    assert split_intersection(spelling) == ("sex", "age")
    assert canonical_attribute(spelling) == "sex & age"
    assert same_attribute(spelling, "sex & age")


def test_one_separator_for_attribute_and_value_names():
    assert INTERSECTION_SEP == " & " and GROUP_PREFIX == "group:"
    assert intersection_name(["sex", "age"]) == "sex & age"
    assert intersection_name(["female", ">60"]) == "female & >60"
    assert not is_intersection("sex") and canonical_attribute("sex") == "sex" and split_intersection("sex") == ("sex",)
    with pytest.raises(ValueError, match="empty part"):
        split_intersection("sex&")
    groups = encode_groups(pd.DataFrame({"sex": ["F", "M"], "age": [">60", "<=60"]}))
    assert groups.attribute == intersection_name(["sex", "age"])
    assert set(groups.names) == {intersection_name(["F", ">60"]), intersection_name(["M", "<=60"])}
    from medequity.data.base import GROUP_PREFIX as data_prefix

    assert data_prefix is GROUP_PREFIX  # one constant, re-exported by the data layer
