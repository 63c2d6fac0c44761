"""NIfTI volume datasets on tiny volumes written with nibabel, in each dataset's real layout."""

import json
import subprocess
import sys

import nibabel as nib
import numpy as np
import pandas as pd
import pytest

from medequity.data import DatasetFormatError, create_dataset
from medequity.data.volumes import VolumeDataset, load_kits23_volumes, load_nifti_volumes, read_volume


def _save(path, array, affine=None):
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(array, np.eye(4) if affine is None else affine), str(path))


def _volume(seed):
    return np.random.default_rng(seed).random((4, 5, 6)).astype(np.float32)


@pytest.fixture
def covid_root(tmp_path):
    """COVID-CT-MD-like: MEDFAIR's columns, one .nii.gz per patient folder name."""
    for seed, folder in enumerate(["P001", "P002", "P003"]):
        _save(tmp_path / f"{folder}.nii.gz", _volume(seed))
    pd.DataFrame(
        {
            "Folder": ["P001", "P002", "P003"],
            "Diagnosis": ["Normal", "CAP", "COVID-19"],
            "Patient Gender": ["M", "F", ""],
            "Patient Age": ["045Y", "71", ""],
        }
    ).to_csv(tmp_path / "metadata.csv", index=False)
    return tmp_path


def test_covid_ct_md_table_labels_and_groups(covid_root):
    dataset = load_nifti_volumes(covid_root)
    table = dataset.table
    assert list(table["sample_id"]) == ["P001", "P002", "P003"]
    assert list(table["patient_id"]) == ["P001", "P002", "P003"]
    assert list(table["label"]) == [0, 1, 1]  # Normal vs CAP/COVID-19
    assert list(table["path"]) == ["P001.nii.gz", "P002.nii.gz", "P003.nii.gz"]
    assert list(table["age"][:2]) == [45.0, 71.0]  # DICOM "045Y" read as 45 years
    assert table["group:sex"].tolist()[:2] == ["male", "female"]
    assert pd.isna(table["group:sex"][2])  # blank sex stays unknown, never "female"
    assert table["group:age"].tolist()[:2] == ["<50", ">=50"]  # FairMedFM: COVID-CT-MD at 50
    assert pd.isna(table["group:age"][2])
    assert set(dataset.attributes) == {"sex", "age"}


def test_volumes_are_read_lazily_and_exactly(covid_root, monkeypatch):
    calls = []
    import medequity.data.volumes as volumes_module

    original = volumes_module.read_volume
    monkeypatch.setattr(volumes_module, "read_volume", lambda *a, **k: calls.append(a) or original(*a, **k))
    dataset = load_nifti_volumes(covid_root)
    assert calls == []
    volume = dataset.load_image(1)
    assert len(calls) == 1
    assert volume.dtype == np.float32 and volume.shape == (4, 5, 6)
    np.testing.assert_array_equal(volume, _volume(1))


def test_registered_and_subset_keeps_reading_volumes(covid_root):
    dataset = create_dataset("nifti-volumes", covid_root)
    part = dataset.subset([2])
    assert isinstance(part, VolumeDataset)
    np.testing.assert_array_equal(part.load_image(0), _volume(2))


def test_volumes_are_reoriented_to_ras(tmp_path):
    array = _volume(7)
    flipped_x = np.diag([-1.0, 1.0, 1.0, 1.0])  # stored right-to-left
    _save(tmp_path / "v.nii", array, flipped_x)
    np.testing.assert_array_equal(read_volume(tmp_path / "v.nii"), array[::-1])
    np.testing.assert_array_equal(read_volume(tmp_path / "v.nii", canonical=False), array)


def test_custom_columns_file_and_mask(tmp_path):
    _save(tmp_path / "img" / "a.nii.gz", _volume(0))
    _save(tmp_path / "seg" / "a.nii.gz", (_volume(0) > 0.5).astype(np.uint8))
    pd.DataFrame(
        {"subject": ["s1"], "image": ["img/a.nii.gz"], "mask": ["seg/a.nii.gz"], "y": ["1"], "gender": ["Female"]}
    ).to_csv(tmp_path / "cases.csv", index=False)
    dataset = load_nifti_volumes(
        tmp_path, "cases.csv", subject_column="subject", file_column="image", mask_column="mask",
        label_column="y", positive_values=None, negative_values=None, sex_column="gender", age_column=None,
    )
    assert dataset.table["label"].tolist() == [1]
    assert dataset.table["group:sex"].tolist() == ["female"]
    mask = dataset.load_mask(0)
    assert mask.dtype == np.int16
    np.testing.assert_array_equal(mask, (_volume(0) > 0.5).astype(np.int16))


def test_adni_preset_drops_mci(tmp_path):
    rows = [("I1", "002_S_0001", "CN", "M", "74"), ("I2", "002_S_0002", "MCI", "F", "70"),
            ("I3", "002_S_0003", "AD", "F", "80")]
    for image_id, *_ in rows:
        _save(tmp_path / f"{image_id}.nii.gz", _volume(1))
    pd.DataFrame(rows, columns=["Image Data ID", "Subject", "Group", "Sex", "Age"]).to_csv(
        tmp_path / "ADNI1_Screening.csv", index=False
    )
    dataset = create_dataset("nifti-volumes", tmp_path, metadata="ADNI1_Screening.csv", preset="adni")
    assert dataset.table["patient_id"].tolist() == ["002_S_0001", "002_S_0003"]
    assert dataset.table["label"].tolist() == [0, 1]
    assert dataset.table["group:age"].tolist() == ["<75", ">=75"]  # FairMedFM: ADNI at 75
    assert dataset.info["dropped_rows"] == 1


def test_kits23_json(tmp_path):
    cases = [
        {"case_id": "case_00000", "gender": "male", "bmi": 31.2, "age_at_nephrectomy": 49, "malignant": True},
        {"case_id": "case_00001", "gender": "female", "bmi": 22.0, "age_at_nephrectomy": 74, "malignant": False},
    ]
    (tmp_path / "dataset").mkdir()
    (tmp_path / "dataset" / "kits23.json").write_text(json.dumps(cases))
    for case in cases:
        _save(tmp_path / "dataset" / case["case_id"] / "imaging.nii.gz", _volume(3))
        _save(tmp_path / "dataset" / case["case_id"] / "segmentation.nii.gz", np.ones((4, 5, 6), np.uint8) * 2)
    dataset = create_dataset("nifti-volumes", tmp_path, preset="kits23")
    assert dataset.task == "segmentation"
    assert dataset.table["label"].tolist() == [1, 0]
    assert dataset.table["group:sex"].tolist() == ["male", "female"]
    assert dataset.table["group:bmi"].tolist() == ["obese", "normal"]
    assert dataset.table["group:age"].tolist() == ["<60", ">=60"]
    assert (dataset.load_mask(1) == 2).all()


def test_kits23_without_images_names_the_missing_file(tmp_path):
    (tmp_path / "kits.json").write_text(json.dumps([{"case_id": "case_00007", "gender": "male", "bmi": 20}]))
    with pytest.raises(DatasetFormatError, match="lacks column.*malignant"):
        load_kits23_volumes(tmp_path)
    (tmp_path / "kits.json").write_text(
        json.dumps([{"case_id": "case_00007", "gender": "male", "bmi": 20, "age_at_nephrectomy": 50, "malignant": True}])
    )
    with pytest.raises(DatasetFormatError, match=r"kits.json row 0, column 'path'.*case_00007/imaging.nii.gz"):
        load_kits23_volumes(tmp_path)


# ----------------------------------------------------------------------- malformed tables


def _rewrite(root, **changes):
    table = pd.read_csv(root / "metadata.csv", dtype=str, keep_default_na=False)
    for column, (row, value) in changes.items():
        table.loc[row, column] = value
    table.to_csv(root / "metadata.csv", index=False)


def test_missing_column_is_named_with_the_columns_that_exist(covid_root):
    table = pd.read_csv(covid_root / "metadata.csv", dtype=str).drop(columns=["Diagnosis"])
    table.to_csv(covid_root / "metadata.csv", index=False)
    with pytest.raises(DatasetFormatError, match=r"metadata.csv lacks column\(s\) \['Diagnosis'\].*Patient Gender"):
        load_nifti_volumes(covid_root)


def test_missing_file_names_row_column_and_file(covid_root):
    (covid_root / "P002.nii.gz").unlink()
    with pytest.raises(DatasetFormatError, match=r"metadata.csv row 1, column 'path'.*P002.nii.gz.*does not exist"):
        load_nifti_volumes(covid_root)


def test_path_escaping_the_root_is_refused(covid_root):
    table = pd.read_csv(covid_root / "metadata.csv", dtype=str)
    table["file"] = ["P001.nii.gz", "../outside.nii.gz", "P003.nii.gz"]
    table.to_csv(covid_root / "metadata.csv", index=False)
    with pytest.raises(DatasetFormatError, match=r"\.\./outside.nii.gz.*row 1, column 'path'.*outside the dataset root"):
        load_nifti_volumes(covid_root, file_column="file")


def test_bad_values_name_row_and_column(covid_root):
    _rewrite(covid_root, **{"Patient Age": (2, "unknown age")})
    with pytest.raises(DatasetFormatError, match=r"row 2, column 'Patient Age'.*not a number"):
        load_nifti_volumes(covid_root)
    _rewrite(covid_root, **{"Patient Age": (2, "50"), "Diagnosis": (0, "")})
    with pytest.raises(DatasetFormatError, match=r"row 0, column 'Diagnosis' is empty"):
        load_nifti_volumes(covid_root)


def test_unlisted_label_values_are_rejected_without_classes(covid_root):
    with pytest.raises(DatasetFormatError, match=r"row 0, column 'Diagnosis' is 'Normal'; expected 0/1"):
        load_nifti_volumes(covid_root, negative_values=None)


def test_non_nifti_file_is_rejected(covid_root):
    (covid_root / "P001.png").write_bytes(b"")
    with pytest.raises(DatasetFormatError, match="not a NIfTI file"):
        load_nifti_volumes(covid_root, file_template="{Folder}.png")


def test_missing_metadata_and_unknown_preset(covid_root):
    with pytest.raises(DatasetFormatError, match="metadata table not found.*nope.csv"):
        load_nifti_volumes(covid_root, "nope.csv")
    with pytest.raises(ValueError, match="unknown volume preset 'oasis'.*adni"):
        load_nifti_volumes(covid_root, preset="oasis")


def test_corrupt_volume_names_the_file(tmp_path):
    (tmp_path / "broken.nii.gz").write_bytes(b"not a nifti")
    with pytest.raises(DatasetFormatError, match="broken.nii.gz"):
        read_volume(tmp_path / "broken.nii.gz")


def test_importing_medequity_data_stays_torch_and_nibabel_free():
    code = "import sys, medequity.data; print('torch' in sys.modules, 'nibabel' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.split() == ["False", "False"]
