"""The data layer uses the one group coding of metrics.groups: intersections in both spellings,
fixed codings for training views, and the atomic safetensors writer of utils.io."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pandas as pd
import pytest

from medequity.data.attributes import add_group_columns, with_intersections
from medequity.data.base import GROUP_PREFIX
from medequity.data.synthetic import make_synthetic


@pytest.fixture(scope="module")
def dataset():
    return make_synthetic("derm-unbiased", n=60, image_size=16, seed=0)


@pytest.mark.parametrize("spelling", ["sex&age", "sex & age"])
def test_intersection_attribute_in_either_spelling(dataset, spelling):
    out = with_intersections(dataset, [spelling])
    assert GROUP_PREFIX + spelling in out.table.columns  # named as the caller spelled it
    expected = dataset.table["group:sex"] + " & " + dataset.table["group:age"]
    for other in ("sex&age", "sex & age", "sex &age"):
        assert out.has_attribute(other)
        assert (out.groups(other) == expected).all()
    # asking again in the other spelling adds nothing; both spellings in one call add one column
    assert with_intersections(out, ["sex & age", "sex&age"]) is out
    both = with_intersections(dataset, ["sex & age", "sex&age"])
    assert sum(c.startswith(GROUP_PREFIX + "sex") and "age" in c for c in both.table.columns) == 1
    with pytest.raises(KeyError, match="no attribute"):
        dataset.groups(spelling)


def test_add_group_columns_names_intersections_in_one_form():
    table = pd.DataFrame({"sex": ["female", "male"], "age": [70, 40]})
    for combo in (("sex", "age"), "sex&age", "sex & age"):
        out = add_group_columns(table, ["sex", "age"], intersections=[combo])
        assert list(out.columns)[-1] == "group:sex & age"
        assert out["group:sex & age"].tolist() == ["female & >60", "male & <=60"]


def test_training_view_and_torch_view_share_the_fixed_coding(dataset):
    import torch

    from medequity.data.torch_dataset import TorchImageDataset
    from medequity.training.data import make_split_data

    names = ("male", "female")  # a fixed order, not the sorted one
    table = dataset.table.copy()
    table.loc[[0, 1], "group:sex"] = pd.NA
    part = replace(dataset, table=table)
    split = make_split_data(part, "sex", lambda image: torch.zeros(1), names)
    expected = table["group:sex"].map({"male": 0, "female": 1}).fillna(-1).to_numpy(dtype=np.int64)
    np.testing.assert_array_equal(split.groups, expected)
    torch_view = TorchImageDataset(part, attributes=["sex"], group_categories={"sex": list(names)})
    np.testing.assert_array_equal(torch_view.group_codes[:, 0], expected)
    assert torch_view.group_name("sex", 0) == "male" and torch_view.group_name("sex", -1) is None


def test_atomic_save_safetensors_round_trip_and_nothing_left_on_failure(tmp_path, monkeypatch):
    import torch
    from safetensors import safe_open
    from safetensors.torch import load_file

    from medequity.utils import io

    path = tmp_path / "sub" / "model.safetensors"
    weight = torch.arange(12.0).reshape(3, 4)
    io.atomic_save_safetensors(path, {"w": weight.t(), "b": torch.zeros(2)}, metadata={"method": "erm"})
    loaded = load_file(path)
    assert torch.equal(loaded["w"], weight.t()) and torch.equal(loaded["b"], torch.zeros(2))  # a view is fine
    with safe_open(path, "pt") as handle:
        assert handle.metadata() == {"method": "erm"}
    assert sorted(p.name for p in path.parent.iterdir()) == ["model.safetensors"]

    before = path.read_bytes()
    with pytest.raises(TypeError, match="metadata"):
        io.atomic_save_safetensors(path, {"w": weight}, metadata={"epochs": 3})

    def fail(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(io.os, "fsync", fail)  # the write fails after the temporary file exists
    with pytest.raises(OSError, match="disk full"):
        io.atomic_save_safetensors(path, {"w": torch.ones(5)})
    assert path.read_bytes() == before  # the old file is intact
    assert sorted(p.name for p in path.parent.iterdir()) == ["model.safetensors"]  # no temporary file left
    fresh = tmp_path / "new.safetensors"
    with pytest.raises(OSError, match="disk full"):
        io.atomic_save_safetensors(fresh, {"w": torch.ones(5)})
    assert not fresh.exists() and sorted(p.name for p in tmp_path.iterdir()) == ["sub"]  # never a partial file

