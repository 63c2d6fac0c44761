"""TorchImageDataset: lazy reads, labels, group codes (-1 unknown), batches with progress."""

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

import medequity.data.base as base
from medequity.data import MedicalDataset
from medequity.data.torch_dataset import TorchImageDataset, iterate_batches, make_data_loader
from medequity.data.transforms import build_transform

SEXES = ["male", "female", None, "female", "male"]
AGES = [">60", ">60", "<=60", None, "<=60"]


@pytest.fixture
def png_dataset(tmp_path):
    """Five 8×8 grayscale PNGs; image i is constant 10·i."""
    for i in range(5):
        Image.fromarray(np.full((8, 8), 10 * i, dtype=np.uint8)).save(tmp_path / f"img{i}.png")
    table = pd.DataFrame(
        {
            "sample_id": [f"s{i}" for i in range(5)],
            "patient_id": [f"p{i}" for i in range(5)],
            "label": pd.array([1, 0, 1, 0, pd.NA], dtype="Int64"),
            "path": [f"img{i}.png" for i in range(5)],
            "group:sex": pd.array(SEXES, dtype="string"),
            "group:age": pd.array(AGES, dtype="string"),
        }
    )
    return MedicalDataset(name="pngs", table=table, root=tmp_path)


@pytest.fixture
def read_counter(monkeypatch):
    calls = []
    original = base.read_image
    monkeypatch.setattr(base, "read_image", lambda path: calls.append(path) or original(path))
    return calls


def test_sample_fields_labels_and_group_codes(png_dataset, read_counter):
    view = TorchImageDataset(png_dataset)
    assert view.attributes == ["sex", "age"]
    assert view.group_categories == {"sex": ["female", "male"], "age": ["<=60", ">60"]}
    sample = view[2]
    assert set(sample) == {"image", "label", "groups", "index", "sample_id"}
    assert sample["sample_id"] == "s2" and sample["index"] == 2
    assert sample["label"].dtype == torch.int64 and sample["label"].item() == 1
    assert sample["groups"].tolist() == [-1, 0]  # sex unknown → -1; age "<=60" → 0
    assert view[3]["groups"].tolist() == [0, -1]
    assert view[0]["groups"].tolist() == [1, 1]
    assert view[4]["label"].item() == -1  # missing label
    image = view[1]["image"]  # no transform: float (C, H, W) in [0, 1]
    assert image.shape == (1, 8, 8) and image.dtype == torch.float32
    assert torch.allclose(image, torch.full((1, 8, 8), 10 / 255))
    assert view.group_name("sex", 1) == "male" and view.group_name("sex", -1) is None


def test_reading_is_lazy(png_dataset, read_counter):
    view = TorchImageDataset(png_dataset, attributes=["sex"])
    assert read_counter == []  # construction reads nothing
    view[3]
    assert len(read_counter) == 1 and read_counter[0].name == "img3.png"
    batches = iterate_batches(view, batch_size=2)
    assert len(read_counter) == 1  # a generator: nothing read until iterated
    next(batches)
    assert len(read_counter) == 3


def test_iterate_batches_covers_the_dataset_in_order_with_progress(png_dataset, read_counter):
    view = TorchImageDataset(png_dataset, transform=build_transform({"name": "2d", "resize": 16, "crop": 12}))
    heard = []
    batches = list(iterate_batches(view, batch_size=2, description="Extracting", progress=lambda *a: heard.append(a)))
    assert [len(b["sample_id"]) for b in batches] == [2, 2, 1]
    assert batches[0]["image"].shape == (2, 3, 12, 12)
    assert batches[0]["groups"].shape == (2, 2)
    assert torch.cat([b["index"] for b in batches]).tolist() == [0, 1, 2, 3, 4]
    assert sum((b["sample_id"] for b in batches), []) == ["s0", "s1", "s2", "s3", "s4"]
    assert torch.cat([b["label"] for b in batches]).tolist() == [1, 0, 1, 0, -1]
    assert len(read_counter) == 5  # each image read once
    assert heard == [(2, 5, "Extracting"), (4, 5, "Extracting"), (5, 5, "Extracting")]


def test_group_coding_is_shared_across_subsets(png_dataset):
    full = TorchImageDataset(png_dataset)
    males = png_dataset.subset([0, 4])
    assert TorchImageDataset(males).group_categories["sex"] == ["male"]  # own coding: shifts codes
    aligned = TorchImageDataset(males, group_categories=full.group_categories)
    assert aligned[0]["groups"].tolist() == [1, 1]
    assert aligned[1]["groups"].tolist() == [1, 0]
    with pytest.raises(ValueError, match="not in the coding"):
        TorchImageDataset(png_dataset, group_categories={"sex": ["male"]})


def test_categorical_columns_keep_their_categories_in_subsets(png_dataset):
    table = png_dataset.table.copy()
    table["group:sex"] = pd.Categorical(SEXES, categories=["male", "female"])
    dataset = MedicalDataset(name="cat", table=table, root=png_dataset.root)
    females = TorchImageDataset(dataset.subset([1, 3]), attributes=["sex"])
    assert females.group_categories["sex"] == ["male", "female"]
    assert females[0]["groups"].tolist() == [1]


def test_in_memory_images_and_volumes(tmp_path):
    table = pd.DataFrame({"sample_id": ["a", "b"], "patient_id": ["a", "b"], "label": [0, 1]})
    volumes = np.random.default_rng(0).random((2, 6, 7, 5)).astype(np.float32)
    view = TorchImageDataset(MedicalDataset(name="vol", table=table, images=volumes))
    assert view.attributes == []
    sample = view[1]
    assert sample["groups"].shape == (0,)
    assert sample["image"].shape == (6, 7, 5)  # volumes pass through as float tensors
    assert torch.equal(sample["image"], torch.from_numpy(volumes[1]))
    transformed = TorchImageDataset(view.dataset, transform=build_transform({"name": "2.5d", "num_slices": 4}))
    assert transformed[0]["image"].shape == (4, 3, 224, 224)


def test_data_loader_shuffles_reproducibly(png_dataset):
    view = TorchImageDataset(png_dataset)
    orders = [
        torch.cat([b["index"] for b in make_data_loader(view, 2, shuffle=True, seed=3)]).tolist() for _ in range(2)
    ]
    assert orders[0] == orders[1] and sorted(orders[0]) == [0, 1, 2, 3, 4]
