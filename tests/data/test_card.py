"""The data card on a hand-counted table (FairDi Tables 6-10 style)."""

import json

import pandas as pd
import pytest

from medequity.data import MedicalDataset, build_data_card
from medequity.data.attributes import add_group_columns


@pytest.fixture
def ds():
    # 8 samples, 7 patients. sex: 4 female (3 positive), 3 male (1 positive), 1 unknown (positive).
    table = pd.DataFrame(
        {
            "sample_id": [f"s{i}" for i in range(8)],
            "patient_id": ["a", "a", "b", "c", "d", "e", "f", "g"],
            "label": [1, 1, 1, 0, 0, 1, 0, 1],
            "path": "x.png",
            "sex": ["female", "female", "female", "female", "male", "male", "male", "unknown"],
            "age": [70, 70, 30, 30, 30, 80, 40, 50],
            "split": ["train", "train", "train", "val", "train", "test", "train", "test"],
        }
    )
    return MedicalDataset("toy", add_group_columns(table, ["sex", "age"]))


def test_group_rows(ds):
    card = build_data_card(ds)
    frame = card.to_frame().set_index(["attribute", "group"])
    female = frame.loc[("sex", "female")]
    assert (female["n"], female["n_positive"], female["n_negative"]) == (4, 3, 1)
    assert female["prevalence"] == pytest.approx(0.75) and female["share"] == pytest.approx(0.5)
    assert (female["n_train"], female["n_val"], female["n_test"]) == (3, 1, 0)
    male = frame.loc[("sex", "male")]
    assert (male["n"], male["n_positive"], male["prevalence"]) == (3, 1, pytest.approx(1 / 3))
    unknown = frame.loc[("sex", "(unknown)")]
    assert (unknown["n"], unknown["n_positive"]) == (1, 1)
    old = frame.loc[("age", ">60")]
    assert (old["n"], old["n_positive"]) == (3, 3)
    assert (card.n_samples, card.n_patients, card.n_positive) == (8, 7, 5)
    assert card.split_sizes == {"train": 5, "val": 1, "test": 2}


def test_skew_and_unknown_counts(ds):
    facts = build_data_card(ds).attributes
    assert facts["sex"] == {"groups": ["female", "male"], "n_unknown": 1, "majority": "female", "minority": "male",
                            "skew": pytest.approx(4 / 3)}
    assert facts["age"]["skew"] == pytest.approx(5 / 3) and facts["age"]["n_unknown"] == 0


def test_one_split(ds):
    card = build_data_card(ds, split="train")
    frame = card.to_frame().set_index(["attribute", "group"])
    assert card.n_samples == 5 and frame.loc[("sex", "female"), "n"] == 3
    assert "n_train" not in frame.columns and ("sex", "(unknown)") not in frame.index
    with pytest.raises(ValueError, match="split must be one of"):
        build_data_card(ds, split="holdout")


def test_outputs_and_atomic_save(ds, tmp_path):
    card = build_data_card(ds)
    markdown = card.to_markdown()
    assert "# Data card: toy" in markdown
    assert "| sex | 1.333 (female:male) | 1 |" in markdown
    assert "| sex | female | 4 | 0.500 | 1 | 3 | 0.750 | 3 | 1 | 0 |" in markdown
    json_path, csv_path = card.save(tmp_path / "card")
    document = json.loads(json_path.read_text())
    assert document == json.loads(json.dumps(card.to_dict()))
    assert document["n_samples"] == 8 and document["groups"][0]["group"] == "female"
    pd.testing.assert_frame_equal(pd.read_csv(csv_path), card.to_frame(), check_dtype=False)
    assert sorted(p.name for p in (tmp_path / "card").iterdir()) == ["card.csv", "card.json"]
