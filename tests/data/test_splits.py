"""Splits: never one patient in two splits (property-tested), ratios, stratification, seeds, files."""

import json

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from medequity.data import DatasetFormatError, MedicalDataset
from medequity.data.attributes import add_group_columns
from medequity.data.splits import (
    apply_splits,
    get_splits,
    load_splits,
    make_splits,
    membership_hash,
    save_splits,
)


def dataset(patients, labels, sexes, split=None, info=None):
    table = pd.DataFrame(
        {
            "sample_id": [f"s{i}" for i in range(len(patients))],
            "patient_id": [str(p) for p in patients],
            "label": labels,
            "path": "x.png",
            "sex": sexes,
        }
    )
    if split is not None:
        table["split"] = split
    return MedicalDataset("toy", add_group_columns(table, ["sex"]), info=info or {})


def random_dataset(n, n_patients, seed=0, prevalence=0.3):
    rng = np.random.default_rng(seed)
    patients = rng.integers(0, n_patients, n)
    return dataset(patients, (rng.random(n) < prevalence).astype(int), rng.choice(["M", "F", "unknown"], n, p=[0.6, 0.3, 0.1]))


@settings(max_examples=40, deadline=None)
@given(
    rows=st.lists(st.tuples(st.integers(0, 40), st.integers(0, 1), st.sampled_from(["M", "F", "U"])), min_size=1, max_size=150),
    seed=st.integers(0, 2**16),
    ratios=st.sampled_from([(0.8, 0.1, 0.1), (0.7, 0.1, 0.2), (0.6, 0.2, 0.2), (0.5, 0.25, 0.25)]),
)
def test_no_patient_in_two_splits(rows, seed, ratios):
    patients, labels, sexes = zip(*rows)
    ds = dataset(patients, labels, sexes)
    splits = make_splits(ds, ratios=ratios, seed=seed)
    assert len(splits) == len(ds) and set(splits.index) == set(ds.table["sample_id"])
    assert set(splits) <= {"train", "val", "test"}
    per_patient = pd.DataFrame({"p": ds.table["patient_id"].to_numpy(), "s": splits.to_numpy()}).groupby("p")["s"].nunique()
    assert (per_patient == 1).all()
    assert make_splits(ds, ratios=ratios, seed=seed).equals(splits)  # seeded: same input, same split


def test_ratios_by_patient_and_stratification():
    ds = random_dataset(6000, 3000, seed=1)
    splits = make_splits(ds, seed=3)
    patients = pd.Series(ds.table["patient_id"].to_numpy(), index=splits.index)
    share = patients.groupby(splits).nunique() / patients.nunique()
    assert share["train"] == pytest.approx(0.8, abs=0.01) and share["test"] == pytest.approx(0.1, abs=0.01)
    strata = (ds.table["label"].astype(str) + ds.table["group:sex"].astype(str)).to_numpy()
    mix = pd.crosstab(splits.to_numpy(), strata, normalize="index")
    assert (mix.max() - mix.min()).max() < 0.02  # every split has the same label × sex mix
    assert not make_splits(ds, seed=4).equals(splits)


def test_papila_ratios_come_from_dataset_info():
    ds = random_dataset(400, 200, seed=2)
    ds.info["split_ratios"] = (0.7, 0.1, 0.2)
    splits = make_splits(ds, seed=0)
    patients = pd.Series(ds.table["patient_id"].to_numpy(), index=splits.index)
    share = patients.groupby(splits).nunique() / patients.nunique()
    assert share["test"] == pytest.approx(0.2, abs=0.03) and share["train"] == pytest.approx(0.7, abs=0.03)


def test_official_split_reused_and_val_carved_from_train():
    full = dataset([1, 2, 3], [0, 1, 0], ["M", "F", "M"], split=["test", "val", "train"])
    assert make_splits(full).tolist() == ["test", "val", "train"]
    patients = list(range(100)) * 2
    split = ["test" if p < 20 else "train" for p in patients]
    ds = dataset(patients, [p % 2 for p in patients], ["M"] * 200, split=split)
    splits = make_splits(ds, seed=0)
    assert (splits[np.array(split) == "test"] == "test").all()
    carved = splits[np.array(split) == "train"]
    assert set(carved) == {"train", "val"}
    val_patients = ds.table.loc[(splits == "val").to_numpy(), "patient_id"].nunique()
    assert val_patients == pytest.approx(80 * 0.1 / 0.9, abs=3)
    leaky = dataset([1, 1], [0, 1], ["M", "F"], split=["train", "test"])
    with pytest.raises(DatasetFormatError, match="patients are in more than one split"):
        make_splits(leaky)


@pytest.mark.parametrize("suffix", [".json", ".csv"])
def test_save_load_roundtrip_and_hash(tmp_path, suffix):
    ds = random_dataset(50, 20)
    splits = make_splits(ds, seed=5)
    path = save_splits(splits, tmp_path / f"split{suffix}", dataset="toy", seed=5)
    loaded = load_splits(path, ds)
    assert loaded.to_dict() == splits.to_dict()
    assert not list(tmp_path.glob(".*tmp"))  # atomic write leaves no temporary behind
    other = ds.subset(list(range(40)))
    with pytest.raises(DatasetFormatError, match=r"made for other samples.*10 in the file are not in the dataset"):
        load_splits(path, other)


def test_json_file_content_and_tampering(tmp_path):
    ds = random_dataset(10, 5)
    path = save_splits(make_splits(ds), tmp_path / "s.json")
    document = json.loads(path.read_text())
    assert document["membership_sha256"] == membership_hash([f"s{i}" for i in range(10)])
    assert sum(document["counts"].values()) == 10
    document["splits"]["extra"] = "train"
    path.write_text(json.dumps(document))
    with pytest.raises(DatasetFormatError, match="membership hash does not match"):
        load_splits(path)


def test_get_splits_makes_then_reuses_file(tmp_path):
    ds = random_dataset(60, 30)
    first = get_splits(ds, tmp_path / "split.json", seed=1)
    again = get_splits(ds, tmp_path / "split.json", seed=99)  # the file wins over a new seed
    assert first.table["split"].tolist() == again.table["split"].tolist()
    assert apply_splits(ds, make_splits(ds, seed=1)).table["split"].tolist() == first.table["split"].tolist()
