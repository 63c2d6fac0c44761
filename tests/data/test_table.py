"""The generic table loader: correct mapping and errors that name the row, path or column."""

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from medequity.data import DatasetFormatError, create_dataset


def write_image(path, value=0):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((4, 4), value, dtype=np.uint8)).save(path)


@pytest.fixture
def user_data(tmp_path):
    for name in ("a.png", "b.png", "sub/c.png", "sub/d.png"):
        write_image(tmp_path / "img" / name, 10)
    table = pd.DataFrame(
        {
            "file": ["img/a.png", "img/b.png", "img/sub/c.png", "img/sub/d.png"],
            "diagnosis": ["mel", "nv", "nv", "bcc"],
            "y": [1, 0, 0, 1],
            "sex": ["F", "M", "U", "F"],
            "age": [70, 30, 65, 61],
            "pid": ["p1", "p1", "p2", "p3"],
        }
    )
    table.to_csv(tmp_path / "meta.csv", index=False)
    return tmp_path, table


def test_csv_and_parquet_load_the_same(user_data):
    root, table = user_data
    table.to_parquet(root / "meta.parquet")
    kwargs = dict(path_column="file", label_column="y", attributes=["sex", "age"], patient_column="pid")
    from_csv = create_dataset("table", root, table="meta.csv", **kwargs)
    from_parquet = create_dataset("table", root, table="meta.parquet", **kwargs)
    assert from_csv.labels.tolist() == [1, 0, 0, 1]
    assert from_csv.table["patient_id"].tolist() == ["p1", "p1", "p2", "p3"]
    assert from_csv.table["group:sex"].tolist()[:2] == ["female", "male"] and pd.isna(from_csv.table.at[2, "group:sex"])
    assert from_csv.table["group:age"].tolist() == [">60", "<=60", ">60", ">60"]
    pd.testing.assert_frame_equal(from_csv.table, from_parquet.table)
    assert from_csv.load_image(2).shape == (4, 4)


def test_positive_values_map_labels(user_data):
    root, _ = user_data
    ds = create_dataset("table", root, table="meta.csv", path_column="file", label_column="diagnosis", positive_values=["mel", "bcc"])
    assert ds.labels.tolist() == [1, 0, 0, 1]
    # without a patient column each sample is its own patient
    assert ds.table["patient_id"].tolist() == ds.table["sample_id"].tolist()


def test_non_binary_label_names_values(user_data):
    root, _ = user_data
    with pytest.raises(DatasetFormatError, match=r"not binary.*\['bcc', 'mel', 'nv'\].*positive_values"):
        create_dataset("table", root, table="meta.csv", path_column="file", label_column="diagnosis")


def test_column_typo_suggests_and_lists_columns(user_data):
    root, _ = user_data
    with pytest.raises(DatasetFormatError) as error:
        create_dataset("table", root, table="meta.csv", path_column="fiel", label_column="y")
    message = str(error.value)
    assert "'fiel'" in message and "did you mean 'file'" in message
    assert "available columns" in message and "'diagnosis'" in message and "meta.csv" in message


def test_missing_image_names_row_and_path(user_data):
    root, table = user_data
    (root / "img" / "sub" / "c.png").unlink()
    with pytest.raises(DatasetFormatError, match=r"1 of 4 files.*row 2: img/sub/c.png"):
        create_dataset("table", root, table="meta.csv", path_column="file", label_column="y")


def test_missing_images_report_first_few(tmp_path):
    table = pd.DataFrame({"path": [f"x{i}.png" for i in range(9)], "label": [0, 1] * 4 + [0]})
    with pytest.raises(DatasetFormatError, match=r"9 of 9 files.*row 4: x4.png; \.\.\. and 4 more"):
        create_dataset("table", tmp_path, table=table)


def test_path_escaping_root_is_refused(user_data, tmp_path_factory):
    root, table = user_data
    outside = tmp_path_factory.mktemp("outside")
    write_image(outside / "secret.png")
    table.loc[1, "file"] = f"../{outside.name}/secret.png"
    with pytest.raises(DatasetFormatError,
                       match=r"'../outside\d*/secret.png' \(table, row 1, column 'file'\) points outside the dataset root"):
        create_dataset("table", root, table=table, path_column="file", label_column="y")
    table.loc[1, "file"] = str(outside / "secret.png")  # an absolute path is refused too
    with pytest.raises(DatasetFormatError, match=r"row 1, column 'file'\) points outside the dataset root"):
        create_dataset("table", root, table=table, path_column="file", label_column="y")


def test_empty_label_and_missing_table_file(user_data):
    root, table = user_data
    table.loc[3, "y"] = None
    with pytest.raises(DatasetFormatError, match=r"empty labels \(rows 3\)"):
        create_dataset("table", root, table=table, path_column="file", label_column="y")
    with pytest.raises(DatasetFormatError, match="table file not found"):
        create_dataset("table", root, table="nope.csv")


def test_mask_and_split_columns(user_data):
    root, table = user_data
    table = table.assign(mask=table["file"], fold=["Training", "validate", "test", "Test"])
    ds = create_dataset("table", root, table=table, path_column="file", label_column="y", mask_column="mask", split_column="fold")
    assert ds.task == "segmentation"
    assert ds.table["split"].tolist() == ["train", "val", "test", "test"]
    assert ds.load_mask(0).shape == (4, 4)
    with pytest.raises(DatasetFormatError, match=r"split names \['holdout'\]"):
        create_dataset("table", root, table=table.assign(fold="holdout"), path_column="file", label_column="y", split_column="fold")
