"""Attribute codings on the datasets' real value codes (DATASETS.md, FairDi §7.1, FairMedFM B.2)."""

import pandas as pd
import pytest

from medequity.data.attributes import (
    BRSET_SEX_CODES,
    HARVARD_LANGUAGE_CODES,
    HARVARD_MARITAL_CODES,
    HARVARD_RACE_CODES,
    HARVARD_SEX_CODES,
    PAPILA_SEX_CODES,
    add_group_columns,
    age_bins_medfair,
    age_groups,
    bmi_groups,
    cut_groups,
    ethnicity_groups,
    handedness_groups,
    intersect,
    language_groups,
    marital_status_groups,
    medfair_skin_type,
    quantile_groups,
    race_groups,
    sex_groups,
    skin_type_groups,
)


def as_list(series):
    return [None if pd.isna(v) else v for v in series]


def test_sex_text_codes_and_unknown_is_never_a_group():
    # HAM10000 "unknown", CheXpert "Unknown", NIH "M"/"F"
    assert as_list(sex_groups(["male", "female", "unknown", "M", "F", "Unknown", None])) == [
        "male", "female", None, "male", "female", None, None,
    ]


def test_sex_numeric_codes_depend_on_the_dataset():
    assert as_list(sex_groups([0, 1, 2], codes=PAPILA_SEX_CODES)) == ["male", "female", None]
    assert as_list(sex_groups([1, 2, 0], codes=BRSET_SEX_CODES)) == ["male", "female", None]
    assert as_list(sex_groups([0, 1, -1], codes=HARVARD_SEX_CODES)) == ["female", "male", None]
    assert as_list(sex_groups(["1.0", 2.0], codes=BRSET_SEX_CODES)) == ["male", "female"]


def test_numeric_sex_without_codes_is_refused():
    with pytest.raises(ValueError, match="codes="):
        sex_groups([0, 1, 1])


def test_age_threshold_side_is_explicit():
    ages = [59, 60, 61, None, -3]
    assert as_list(age_groups(ages, 60, ">")) == ["<=60", "<=60", ">60", None, None]
    assert as_list(age_groups(ages, 60, ">=")) == ["<60", ">=60", ">=60", None, None]
    assert as_list(age_groups([49, 50, 51], threshold=50, rule=">")) == ["<=50", "<=50", ">50"]
    with pytest.raises(ValueError):
        age_groups(ages, 60, "<")


def test_age_presets_quantiles_and_cuts():
    assert as_list(age_bins_medfair([0, 19, 20, 39, 40, 59, 60, 79, 80, 101, None])) == [
        "0-19", "0-19", "20-39", "20-39", "40-59", "40-59", "60-79", "60-79", "80+", "80+", None,
    ]
    assert as_list(cut_groups([10, 40, 59, 60], [40, 60])) == ["<40", "40-<60", "40-<60", ">=60"]
    quartiles = quantile_groups([1, 2, 3, 4, 5, 6, 7, 8], q=4)
    assert quartiles.nunique() == 4
    assert quartiles.iloc[0].startswith("Q1") and quartiles.iloc[-1].startswith("Q4")


def test_race_real_codes_white_vs_nonwhite():
    raw = [
        "White", "White, non-Hispanic", "WHITE - OTHER EUROPEAN",  # CheXpert DEMO, MIMIC-IV
        "Black or African American", "BLACK/AFRICAN AMERICAN", "Asian", "ASIAN - CHINESE", "Other",
        "Unknown", "Patient Refused", "UNABLE TO OBTAIN", "PATIENT DECLINED TO ANSWER", None,
    ]
    assert as_list(race_groups(raw)) == ["White"] * 3 + ["non-White"] * 5 + [None] * 5


def test_race_fairdi_and_fairtune_schemes():
    raw = ["White", "Black", "Asian", "Other", "Unknown"]
    assert as_list(race_groups(raw, "white_vs_black_asian")) == ["White", "non-White", "non-White", None, None]
    assert as_list(race_groups(raw, "black_vs_asian_white")) == ["Asian or White", "Black", "Asian or White", None, None]
    assert as_list(race_groups([0, 1, 2, -1], "raw", codes=HARVARD_RACE_CODES)) == ["Asian", "Black", "White", None]


def test_skin_type_medfair_code_and_groups():
    scale = [1, 2, 3, 4, 5, 6, -1]
    assert as_list(medfair_skin_type(scale)) == [0, 1, 2, 3, 4, 5, None]
    # FairDi's "0 to 2" is the 0-based code: Fitzpatrick I-III vs IV-VI
    assert as_list(skin_type_groups(scale)) == ["I-III", "I-III", "I-III", "IV-VI", "IV-VI", "IV-VI", None]


def test_language_marital_ethnicity_bmi_handedness():
    assert as_list(language_groups([0, 1, 2, -1], codes=HARVARD_LANGUAGE_CODES)) == ["English", "non-English", "non-English", None]
    assert as_list(language_groups(["english", "Spanish"], scheme="raw")) == ["English", "Spanish"]
    assert as_list(marital_status_groups([0, 1, 3, 4, -1], codes=HARVARD_MARITAL_CODES)) == [
        "Married or Partnered", "Single", "Widowed", "Legally Separated", None,
    ]
    assert as_list(marital_status_groups([0, 2], scheme="binary", codes=HARVARD_MARITAL_CODES)) == ["Married or Partnered", "Not married"]
    assert as_list(ethnicity_groups(["Non-Hispanic", "hispanic", "Unknown"])) == ["non-Hispanic", "Hispanic", None]
    assert as_list(bmi_groups([18.49, 18.5, 24.99, 25, 29.99, 30, 0])) == [
        "underweight", "normal", "normal", "overweight", "overweight", "obese", None,
    ]
    assert as_list(handedness_groups(["R", "L", "A", "x"])) == ["right", "non-right", "non-right", None]


def test_add_group_columns_and_intersection():
    table = pd.DataFrame({"sex": ["female", "male", "unknown", "female"], "age": [70, 40, 80, 60], "site": ["a", "b", None, "a"]})
    out = add_group_columns(table, {"sex": None, "age": {"threshold": 60}, "site": None}, intersections=[("sex", "age")])
    assert list(table.columns) == ["sex", "age", "site"]  # input untouched
    assert as_list(out["group:sex"]) == ["female", "male", None, "female"]
    assert as_list(out["group:site"]) == ["a", "b", None, "a"]
    assert as_list(out["group:sex & age"]) == ["female & >60", "male & <=60", None, "female & <=60"]
    assert as_list(intersect(out, ["sex", "age"])) == as_list(out["group:sex & age"])
    renamed = add_group_columns(pd.DataFrame({"PatientSex": [1, 2]}),
                                {"sex": {"kind": "sex", "column": "PatientSex", "codes": BRSET_SEX_CODES}})
    assert as_list(renamed["group:sex"]) == ["male", "female"]
    with pytest.raises(KeyError, match="nope"):
        add_group_columns(table, ["nope"])


def test_with_intersections_adds_missing_intersection_columns_only():
    from medequity.data.attributes import with_intersections
    from medequity.data.synthetic import make_synthetic

    dataset = make_synthetic("derm-unbiased", n=60, image_size=16, seed=0)
    assert with_intersections(dataset, ["sex", "age"]) is dataset  # nothing to add
    out = with_intersections(dataset, ["sex&age", "sex&age", "skin_tone"])
    assert "sex&age" in out.attributes and "sex&age" not in dataset.attributes  # original untouched
    expected = dataset.table["group:sex"] + " & " + dataset.table["group:age"]
    assert (out.groups("sex&age") == expected).all()
    with pytest.raises(KeyError, match=r"has no attribute \['site'\]"):
        with_intersections(dataset, ["sex&site"])
