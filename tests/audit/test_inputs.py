import numpy as np
import pandas as pd
import pytest

from medequity.audit import AuditInputError, BinRule, load_audit_data


@pytest.fixture
def tables():
    rng = np.random.default_rng(0)
    n = 200
    predictions = pd.DataFrame(
        {"image_id": [f"img{i}" for i in range(n)], "y_true": rng.integers(0, 2, n), "prob": rng.random(n)}
    )
    metadata = pd.DataFrame(
        {"image_id": [f"img{i}" for i in range(n)], "sex": rng.choice(["F", "M"], n), "age": rng.uniform(20, 90, n)}
    )
    return predictions, metadata


def test_columns_detected_and_metadata_joined(tables):
    predictions, metadata = tables
    data = load_audit_data(predictions, metadata=metadata, bins=["age=>60"])
    assert data.label == "y_true" and data.scores == {"positive": "prob"} and data.id_column == "image_id"
    assert data.attributes == ["sex", "age"]
    expected = np.where(metadata.age > 60, ">60", "<=60")
    assert (data.frame["age"].to_numpy(dtype=str) == expected).all()


def test_wrong_column_lists_available_columns(tables):
    predictions, _ = tables
    with pytest.raises(AuditInputError, match=r"'sexx'.*available columns.*'y_true'"):
        load_audit_data(predictions, attributes=["sexx"])


def test_missing_label_detection_names_option(tables):
    predictions, metadata = tables
    with pytest.raises(AuditInputError, match="--label"):
        load_audit_data(predictions.rename(columns={"y_true": "truth"}), metadata=metadata, bins=["age=>60"])


def test_duplicated_metadata_ids_rejected(tables):
    predictions, metadata = tables
    metadata.loc[1, "image_id"] = "img0"
    with pytest.raises(AuditInputError, match="duplicated"):
        load_audit_data(predictions, metadata=metadata, bins=["age=>60"])


def test_no_matching_ids_rejected(tables):
    predictions, metadata = tables
    metadata["image_id"] = metadata["image_id"] + "x"
    with pytest.raises(AuditInputError, match="no id"):
        load_audit_data(predictions, metadata=metadata, bins=["age=>60"])


def test_continuous_attribute_must_be_binned(tables):
    predictions, metadata = tables
    with pytest.raises(AuditInputError, match="--bin 'age=>60'"):
        load_audit_data(predictions, metadata=metadata, attributes=["sex", "age"])


def test_non_binary_label_needs_positive_label(tables):
    predictions, metadata = tables
    predictions["y_true"] = np.where(predictions["y_true"] == 1, "mel", "nv")
    with pytest.raises(AuditInputError, match="positive-label"):
        load_audit_data(predictions, metadata=metadata, attributes=["sex"])
    data = load_audit_data(predictions, metadata=metadata, attributes=["sex"], positive_label="mel")
    assert data.classes == {"positive": "mel"}


def test_per_class_scores_make_one_vs_rest_tasks():
    frame = pd.DataFrame({"dx": ["mel", "nv", "bcc", "nv"], "p_mel": [0.7, 0.1, 0.1, 0.2],
                          "p_nv": [0.2, 0.8, 0.1, 0.7], "p_bcc": [0.1, 0.1, 0.8, 0.1], "sex": ["F", "M", "F", "M"]})
    data = load_audit_data(frame, label="dx", score_prefix="p_", attributes=["sex"])
    assert data.classes == {"mel": "mel", "nv": "nv", "bcc": "bcc"}
    with pytest.raises(AuditInputError, match="no matching value"):
        load_audit_data(frame.rename(columns={"p_bcc": "p_akiec"}), label="dx", score_prefix="p_", attributes=["sex"])


@pytest.mark.parametrize(
    ("text", "values", "expected"),
    [
        ("age=>60", [59, 60, 61], ["<=60", "<=60", ">60"]),
        ("age=>=60", [59, 60, 61], ["<60", ">=60", ">=60"]),
        ("age=60", [60, 61], ["<=60", ">60"]),
        ("age=40,60", [39, 40, 60], ["<40", "40-<60", ">=60"]),
    ],
)
def test_bin_rules(text, values, expected):
    rule = BinRule.parse(text)
    assert rule.apply(pd.Series(values)).tolist() == expected


def test_quantile_bins_are_balanced():
    rule = BinRule.parse("age=q4")
    groups = rule.apply(pd.Series(np.arange(100.0)))
    assert groups.value_counts().tolist() == [25, 25, 25, 25]


def test_bad_bin_rule_message():
    with pytest.raises(AuditInputError, match="age=>60"):
        BinRule.parse("age>60")
