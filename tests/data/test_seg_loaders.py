"""Segmentation loaders on tiny fake copies in each dataset's own layout: row counts, attribute
groups, masks as class-index maps with named classes, paths escaping the root refused and a missing
mask named in the error."""

import json

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
import SimpleITK as sitk
from PIL import Image

from medequity.data import DatasetFormatError, create_dataset
from medequity.data.loaders._seg import all_zero_masks, encode_mask


def png(path, array):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.asarray(array, dtype=np.uint8)).save(path)


def nifti(path, array):
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(np.asarray(array), np.eye(4)), str(path))


def na_list(series):
    return [None if pd.isna(v) else v for v in series]


def assert_escape_refused(ds, column="mask_path"):
    """A table path that leaves the root is refused when the mask is read, naming row and column."""
    ds = ds.subset([0])
    ds.table.loc[0, column] = "../../outside"
    with pytest.raises(DatasetFormatError, match=rf"row 0, column '{column}'.*outside the dataset root"):
        ds.load_mask(0)


LESION = np.array([[0, 255, 255, 0]] * 4, dtype=np.uint8)


# --- HAM10000 ---------------------------------------------------------------------------------------


def make_ham(root, with_masks=("ISIC_0000001", "ISIC_0000002", "ISIC_0000003")):
    rows = [
        ("HAM_1", "ISIC_0000001", "mel", "histo", 70.0, "male", "back"),
        ("HAM_2", "ISIC_0000002", "nv", "histo", 60.0, "female", "face"),
        ("HAM_3", "ISIC_0000003", "bkl", "histo", None, "unknown", "trunk"),
    ]
    pd.DataFrame(rows, columns=["lesion_id", "image_id", "dx", "dx_type", "age", "sex", "localization"]).to_csv(
        root / "HAM10000_metadata.csv", index=False
    )
    for _, image_id, *_ in rows:
        png(root / "HAM10000_images_part_1" / f"{image_id}.jpg", np.zeros((4, 4, 3)))
    for image_id in with_masks:
        png(root / "HAM10000_segmentations_lesion_tschandl" / f"{image_id}_segmentation.png", LESION)


def test_ham10000_seg(tmp_path):
    make_ham(tmp_path)
    ds = create_dataset("ham10000_seg", tmp_path)
    assert ds.task == "segmentation" and len(ds) == 3  # unknown sex/age kept (10,015 in FairMedFM)
    assert ds.info["classes"] == ["background", "lesion"]
    assert na_list(ds.table["group:sex"]) == ["male", "female", None]
    assert na_list(ds.table["group:age"]) == [">60", "<=60", None]
    mask = ds.load_mask(0)
    assert mask.dtype == np.uint8 and set(np.unique(mask)) == {0, 1}
    np.testing.assert_array_equal(mask, LESION // 255)
    assert ds.subset([1]).load_mask(0).sum() == 8  # the subclass survives subsetting
    # classification loader unchanged: masks off, unknown sex/age dropped
    assert create_dataset("ham10000", tmp_path).task == "binary"


def test_ham10000_seg_missing_mask_and_escape(tmp_path):
    make_ham(tmp_path, with_masks=("ISIC_0000001", "ISIC_0000002"))
    with pytest.raises(DatasetFormatError, match=r"row 2: ISIC_0000003_segmentation"):
        create_dataset("ham10000_seg", tmp_path)
    make_ham(tmp_path)
    ds = create_dataset("ham10000_seg", tmp_path)
    ds.table.loc[0, "mask_path"] = "../outside.png"
    with pytest.raises(DatasetFormatError, match=r"row 0, column 'mask_path'.*outside the dataset root"):
        ds.load_mask(0)


# --- TUSC -------------------------------------------------------------------------------------------


def make_tusc(root):
    pd.DataFrame(
        {"annot_id": ["1_", "2_", "3_"], "sex": ["F", "M", "F"], "age": [65, 40, 61],
         "histopath_diagnosis": ["Benign", "Papillary thyroid carcinoma", "Benign"]}
    ).to_csv(root / "metadata.csv", index=False)
    for annot, frames in (("1_", 3), ("2_", 2), ("3_", 1)):
        for frame in range(frames):
            png(root / "images" / f"{annot}_{frame}.png", np.zeros((4, 4)))
            png(root / "masks" / f"{annot}_{frame}.png", LESION)


def test_tusc(tmp_path):
    make_tusc(tmp_path)
    ds = create_dataset("tusc", tmp_path)
    assert len(ds) == 6 and ds.info["classes"] == ["background", "nodule"]
    t = ds.table
    assert t["annot_id"].tolist() == ["1_", "1_", "1_", "2_", "2_", "3_"]
    assert t["group:sex"].tolist() == ["female"] * 3 + ["male"] * 2 + ["female"]
    assert t["group:age"].tolist() == [">60"] * 3 + ["<=60"] * 2 + [">60"]
    assert t["label"].tolist() == [0, 0, 0, 1, 1, 0]
    assert set(np.unique(ds.load_mask(3))) == {0, 1}
    assert len(create_dataset("tusc", tmp_path, every=2)) == 4  # frames 0, 2 | 0 | 0
    assert_escape_refused(ds)
    (tmp_path / "masks" / "2__1.png").unlink()
    with pytest.raises(DatasetFormatError, match=r"images/2__1.png: mask masks/2__1.png not found"):
        create_dataset("tusc", tmp_path)
    assert len(create_dataset("tusc", tmp_path, on_missing="drop")) == 5


def test_tusc_metadata_errors(tmp_path):
    make_tusc(tmp_path)
    pd.DataFrame({"annot_id": ["1_"], "gender": ["F"], "age": [3]}).to_csv(tmp_path / "metadata.csv", index=False)
    with pytest.raises(DatasetFormatError, match=r"metadata.csv: missing column 'sex'"):
        create_dataset("tusc", tmp_path)


# --- Harvard-FairSeg --------------------------------------------------------------------------------


def write_npz(path, **arrays):
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez(path, **{k: np.asarray(v) for k, v in arrays.items()})


def test_fairseg_classes_codes_and_empty_masks(tmp_path):
    mask = np.array([[0, -1, -1], [-1, -2, 0]], dtype=np.int8)
    image = np.zeros((2, 3), np.uint8)
    common = dict(slo_fundus=image, ethnicity=0, maritalstatus=0)
    days = 365.25
    write_npz(tmp_path / "Training" / "data_00001.npz", disc_cup_mask=mask, age=70 * days, gender=1, race=2,
              language=0, **common)
    write_npz(tmp_path / "Training" / "data_00002.npz", disc_cup_mask=mask, age=50 * days, gender=0, race=3,
              language=1, **common)
    write_npz(tmp_path / "Test" / "data_00003.npz", disc_cup_mask=np.zeros_like(mask), age=61 * days, gender=0,
              race=7, language=2, **common)
    with pytest.warns(UserWarning, match=r"1 of 3 files have an all-zero 'disc_cup_mask' \(e.g. data_00003\)"):
        ds = create_dataset("fairseg", tmp_path)
    assert ds.task == "segmentation" and ds.info["classes"] == ["background", "rim", "cup"]
    np.testing.assert_array_equal(ds.load_mask(0), [[0, 1, 1], [1, 2, 0]])
    assert ds.info["race_coding"] == "fairseg" and ds.info["age_unit"] == "days"
    t = ds.table
    assert t["group:race"].tolist() == ["Asian", "Black", "White"]  # npz codes 2/3/7
    assert t["group:sex"].tolist() == ["male", "female", "female"]
    assert t["group:age"].tolist() == [">60", "<=60", ">60"]  # days -> years, old if > 60
    assert t["group:language"].tolist() == ["English", "Spanish", "Other"]
    assert t["group:marital_status"].tolist() == ["Married or Partnered"] * 3
    assert ds.info["empty_masks"] == ["data_00003"] and t["mask_empty"].tolist() == [False, False, True]
    assert all_zero_masks(ds) == ["data_00003"]
    assert_escape_refused(ds, column="path")  # image and mask live in one npz
    with pytest.warns(UserWarning, match="dropped"):
        assert len(create_dataset("fairseg", tmp_path, drop_empty_masks=True)) == 2


def test_fairseg_readme_codes_and_bad_mask_value(tmp_path):
    write_npz(tmp_path / "data_00001.npz", slo_fundus=np.zeros((2, 2)), disc_cup_mask=np.array([[0, -3], [0, 0]]),
              age=30.0, gender=1, race=2)
    ds = create_dataset("fairseg", tmp_path)
    assert ds.info["race_coding"] == "readme" and ds.table["group:race"].tolist() == ["White"]
    assert ds.table["group:age"].tolist() == ["<=60"]  # years kept
    with pytest.raises(DatasetFormatError, match=r"data_00001.npz key 'disc_cup_mask': mask values \[-3\]"):
        ds.load_mask(0)


# --- Montgomery -------------------------------------------------------------------------------------


def make_montgomery(root):
    base = root / "MontgomerySet"
    left = np.zeros((4, 4)); left[:, 2:] = 255   # noqa: E702
    right = np.zeros((4, 4)); right[:, :1] = 255  # noqa: E702
    readings = {"MCUCXR_0001_0": ("F", "065Y"), "MCUCXR_0002_1": ("M", "040Y"), "MCUCXR_0003_0": ("O", "")}
    for stem, (sex, age) in readings.items():
        png(base / "CXR_png" / f"{stem}.png", np.zeros((4, 4)))
        png(base / "ManualMask" / "leftMask" / f"{stem}.png", left)
        png(base / "ManualMask" / "rightMask" / f"{stem}.png", right)
        (base / "ClinicalReadings").mkdir(exist_ok=True)
        (base / "ClinicalReadings" / f"{stem}.txt").write_text(
            f"Patient's Sex: {sex}\nPatient's Age: {age}\nnormal\n")
    return base


def test_montgomery(tmp_path):
    base = make_montgomery(tmp_path)
    ds = create_dataset("montgomery", tmp_path)  # the parent of MontgomerySet/ works too
    assert len(ds) == 3 and ds.info["classes"] == ["background", "left lung", "right lung"]
    t = ds.table
    assert t["label"].tolist() == [0, 1, 0]
    assert na_list(t["group:sex"]) == ["female", "male", None]
    assert na_list(t["group:age"]) == [">60", "<=60", None]
    assert t["age"].tolist()[:2] == [65, 40]
    np.testing.assert_array_equal(ds.load_mask(0)[0], [2, 0, 1, 1])
    (base / "ManualMask" / "rightMask" / "MCUCXR_0002_1.png").unlink()
    with pytest.raises(DatasetFormatError, match=r"CXR_png/MCUCXR_0002_1.png: ManualMask/rightMask/MCUCXR_0002_1.png"):
        create_dataset("montgomery", base)
    assert len(create_dataset("montgomery", base, on_missing="drop")) == 2


def test_montgomery_overlap_and_escape(tmp_path):
    base = make_montgomery(tmp_path)
    png(base / "ManualMask" / "rightMask" / "MCUCXR_0001_0.png", np.full((4, 4), 255))
    ds = create_dataset("montgomery", base)
    with pytest.raises(DatasetFormatError, match="overlap"):
        ds.load_mask(0)
    ds.table.loc[1, "mask_path_right"] = "../../etc/passwd"
    with pytest.raises(DatasetFormatError, match=r"row 1, column 'mask_path_right'.*outside the dataset root"):
        ds.load_mask(1)


# --- KiTS23 -----------------------------------------------------------------------------------------


def test_kits23(tmp_path):
    cases = [
        {"case_id": "case_00000", "gender": "male", "bmi": 31.2, "age_at_nephrectomy": 70, "malignant": True},
        {"case_id": "case_00001", "gender": "female", "bmi": 22.0, "age_at_nephrectomy": 40, "malignant": False},
    ]
    (tmp_path / "dataset").mkdir()
    (tmp_path / "dataset" / "kits23.json").write_text(json.dumps(cases))
    seg = np.zeros((3, 3, 2), np.uint8)
    seg[0, 0, 0], seg[1, 1, 1], seg[2, 2, 0] = 1, 2, 3
    for case in cases:
        nifti(tmp_path / "dataset" / case["case_id"] / "imaging.nii.gz", np.zeros((3, 3, 2), np.float32))
        nifti(tmp_path / "dataset" / case["case_id"] / "segmentation.nii.gz", seg)
    ds = create_dataset("kits23", tmp_path)
    assert len(ds) == 2 and ds.task == "segmentation"
    assert ds.info["classes"] == ["background", "kidney", "tumor", "cyst"]
    assert ds.table["group:bmi"].tolist() == ["obese", "normal"]
    assert ds.table["group:sex"].tolist() == ["male", "female"]
    assert sorted(np.unique(ds.load_mask(0)).tolist()) == [0, 1, 2, 3]
    assert_escape_refused(ds)
    nifti(tmp_path / "dataset" / "case_00001" / "segmentation.nii.gz", seg * 3)
    with pytest.raises(DatasetFormatError, match=r"case_00001/segmentation.nii.gz \(row 1\): mask values \[6, 9\]"):
        ds.load_mask(1)
    (tmp_path / "dataset" / "case_00001" / "segmentation.nii.gz").unlink()
    with pytest.raises(DatasetFormatError, match=r"kits23.json row 1, column 'mask_path'.*case_00001/segmentation.nii.gz"):
        create_dataset("kits23", tmp_path)


# --- CANDI ------------------------------------------------------------------------------------------


def make_candi(root):
    labels = np.zeros((3, 3, 2), np.int16)
    labels[0, 0, 0], labels[0, 1, 0], labels[1, 1, 1], labels[2, 2, 1], labels[2, 0, 0] = 2, 3, 43, 17, 41
    for group, subject in (("HC", "HC_001"), ("HC", "HC_002"), ("SS", "SS_084")):
        folder = root / "SchizBull_2008" / group / subject
        nifti(folder / f"{subject}_procimg.nii.gz", np.zeros((3, 3, 2), np.float32))
        nifti(folder / f"{subject}_seg.nii.gz", labels)
    pd.DataFrame(
        {"Subject": ["HC_001", "HC_002", "SS_084"], "Gender": ["M", "F", "F"], "Age": [12, 8, 10],
         "Handedness": ["R", "L", "A"]}
    ).to_csv(root / "SchizBull_2008_Demographics.csv", index=False)


def test_candi(tmp_path):
    make_candi(tmp_path)
    ds = create_dataset("candi", tmp_path)
    t = ds.table
    assert len(ds) == 3 and t["diagnosis_group"].tolist() == ["HC", "HC", "SS"]
    assert t["group:sex"].tolist() == ["male", "female", "female"]
    assert t["group:age"].tolist() == [">10", "<=10", "<=10"]
    assert t["group:handedness"].tolist() == ["right", "non-right", "non-right"]
    assert len(ds.info["classes"]) == 7
    mask = ds.load_mask(0)
    assert sorted(np.unique(mask).tolist()) == [0, 1, 2, 4, 6]  # label 17 (hippocampus) is background
    assert_escape_refused(ds)
    (tmp_path / "SchizBull_2008" / "SS" / "SS_084" / "SS_084_procimg.nii.gz").unlink()
    with pytest.raises(DatasetFormatError, match=r"SS_084_seg.nii.gz has no image volume"):
        create_dataset("candi", tmp_path)


def test_candi_demographics_column_named(tmp_path):
    make_candi(tmp_path)
    pd.DataFrame({"Subject": ["HC_001"], "Gender": ["M"], "Age": [12]}).to_csv(
        tmp_path / "SchizBull_2008_Demographics.csv", index=False)
    with pytest.raises(DatasetFormatError, match=r"Demographics.csv: no handedness column.*'Subject', 'Gender', 'Age'"):
        create_dataset("candi", tmp_path)


# --- IRCADb -----------------------------------------------------------------------------------------


def write_dicom_series(folder, volume):
    folder.mkdir(parents=True, exist_ok=True)
    for z, plane in enumerate(volume):
        image = sitk.GetImageFromArray(plane.astype(np.int16))
        image.SetOrigin((0.0, 0.0, float(z)))
        for tag, value in (("0020|0032", f"0\\0\\{z}"), ("0020|0013", str(z + 1)), ("0020|000e", "1.2.3.4"),
                           ("0020|000d", "1.2.3"), ("0008|0060", "CT")):
            image.SetMetaData(tag, value)
        writer = sitk.ImageFileWriter()
        writer.KeepOriginalImageUIDOn()
        writer.SetFileName(str(folder / f"image_{z}.dcm"))
        writer.Execute(image)
        (folder / f"image_{z}.dcm").rename(folder / f"image_{z}")  # IRCADb slices have no extension


def test_ircadb(tmp_path):
    labels = np.zeros((2, 3, 3), np.int16)
    labels[0, 0, 0], labels[0, 1, 1], labels[1, 2, 2], labels[1, 0, 2] = 1, 193, 33, 2
    for n in (1, 2):
        write_dicom_series(tmp_path / f"3Dircadb1.{n}" / "PATIENT_DICOM", np.zeros((2, 3, 3)))
        write_dicom_series(tmp_path / f"3Dircadb1.{n}" / "LABELLED_DICOM", labels)
    pd.DataFrame({"patient": [1, 2], "sex": ["F", "M"]}).to_csv(tmp_path / "ircadb_patients.csv", index=False)
    ds = create_dataset("ircadb", tmp_path)
    assert ds.table["sample_id"].tolist() == ["3Dircadb1.1", "3Dircadb1.2"]
    assert ds.table["group:sex"].tolist() == ["female", "male"]
    assert ds.info["classes"][1:] == ["label_1", "label_17", "label_33", "label_65", "label_129", "label_193"]
    mask = ds.load_mask(0)
    assert mask.shape == (2, 3, 3)
    assert mask[0, 0, 0] == 1 and mask[0, 1, 1] == 6 and mask[1, 2, 2] == 3 and mask[1, 0, 2] == 0
    assert ds.load_image(1).shape == (2, 3, 3)
    assert_escape_refused(ds)
    import shutil

    shutil.rmtree(tmp_path / "3Dircadb1.2" / "LABELLED_DICOM")
    (tmp_path / "3Dircadb1.2" / "LABELLED_DICOM.zip").write_bytes(b"")
    with pytest.raises(DatasetFormatError, match=r"3Dircadb1.2/LABELLED_DICOM not found \(found the .zip"):
        create_dataset("ircadb", tmp_path)


# --- SPIDER -----------------------------------------------------------------------------------------


def test_spider(tmp_path):
    mask = np.zeros((2, 3, 3), np.uint16)
    mask[0, 0, 0], mask[0, 1, 1], mask[1, 1, 1], mask[1, 2, 2] = 3, 100, 203, 25
    for stem in ("1_t1", "1_t2", "2_t2_SPACE"):
        (tmp_path / "images").mkdir(exist_ok=True)
        (tmp_path / "masks").mkdir(exist_ok=True)
        sitk.WriteImage(sitk.GetImageFromArray(np.zeros((2, 3, 3), np.int16)), str(tmp_path / "images" / f"{stem}.mha"))
        sitk.WriteImage(sitk.GetImageFromArray(mask), str(tmp_path / "masks" / f"{stem}.mha"))
    pd.DataFrame({"new_file_name": ["1_t1", "1_t2", "2_t2_SPACE"], "sex": ["F", "F", "M"]}).to_csv(
        tmp_path / "overview.csv", index=False)
    ds = create_dataset("spider", tmp_path)
    t = ds.table
    assert len(ds) == 3 and t["patient_id"].tolist() == ["1", "1", "2"]
    assert t["sequence"].tolist() == ["t1", "t2", "t2_SPACE"]
    assert t["group:sex"].tolist() == ["female", "female", "male"]
    labels = ds.load_mask(2)
    assert labels[0, 0, 0] == 1 and labels[0, 1, 1] == 3 and labels[1, 1, 1] == 2 and labels[1, 2, 2] == 1
    assert ds.info["classes"] == ["background", "vertebra", "intervertebral disc", "spinal canal"]
    assert_escape_refused(ds)
    (tmp_path / "masks" / "1_t2.mha").unlink()
    with pytest.raises(DatasetFormatError, match=r"mask masks/1_t2.mha for image images/1_t2.mha not found"):
        create_dataset("spider", tmp_path)


# --- the generic table ------------------------------------------------------------------------------


def test_table_segmentation_2d_png_and_numpy(tmp_path):
    png(tmp_path / "img" / "a.png", np.zeros((4, 4)))
    png(tmp_path / "seg" / "a.png", LESION)
    np.save(tmp_path / "img" / "b.npy", np.zeros((4, 4), np.float32))
    np.save(tmp_path / "seg" / "b.npy", np.array([[0, 1], [2, 0]]))
    table = pd.DataFrame({"image": ["img/a.png", "img/b.npy"], "mask": ["seg/a.png", "seg/b.npy"], "sex": ["F", "M"]})
    ds = create_dataset("table", tmp_path, table=table, path_column="image", mask_column="mask", label_column=None,
                        attributes=["sex"], classes=["background", "lesion", "core"], mask_values={0: 0, 255: 1, 1: 1, 2: 2})
    assert ds.task == "segmentation" and ds.table["label"].isna().all()
    assert ds.table["group:sex"].tolist() == ["female", "male"]
    np.testing.assert_array_equal(ds.load_mask(0), LESION // 255)
    np.testing.assert_array_equal(ds.load_mask(1), [[0, 1], [2, 0]])
    assert ds.load_image(1).dtype == np.float32
    binary = create_dataset("table", tmp_path, table=table.iloc[:1], path_column="image", mask_column="mask",
                            label_column=None, mask_values="binary")
    assert binary.info["classes"] == ["background", "foreground"] and binary.load_mask(0).max() == 1
    strict = create_dataset("table", tmp_path, table=table.iloc[:1], path_column="image", mask_column="mask",
                            label_column=None, classes=["background", "lesion"])
    with pytest.raises(DatasetFormatError, match=r"seg/a.png \(row 0\): mask values \[255\] are not class indices 0..1"):
        strict.load_mask(0)


def test_table_segmentation_3d_nifti_errors(tmp_path):
    nifti(tmp_path / "vol" / "a.nii.gz", np.zeros((2, 2, 2), np.float32))
    nifti(tmp_path / "vol" / "a_seg.nii.gz", np.ones((2, 2, 2), np.uint8))
    table = pd.DataFrame({"path": ["vol/a.nii.gz"], "mask": ["vol/a_seg.nii.gz"], "age": [70]})
    ds = create_dataset("table", tmp_path, table=table, mask_column="mask", label_column=None, attributes=["age"],
                        classes=["background", "organ"])
    assert ds.load_mask(0).shape == (2, 2, 2) and ds.load_mask(0).min() == 1
    assert ds.table["group:age"].tolist() == [">60"]
    with pytest.raises(DatasetFormatError, match=r"row 0: vol/missing.nii.gz"):
        create_dataset("table", tmp_path, table=table.assign(mask="vol/missing.nii.gz"), mask_column="mask", label_column=None)
    with pytest.raises(DatasetFormatError, match=r"row 0, column 'mask'.*outside the dataset root"):
        create_dataset("table", tmp_path, table=table.assign(mask="../x.nii.gz"), mask_column="mask", label_column=None)


def test_encode_mask_codings():
    raw = np.array([[0, 128], [255, 0]])
    np.testing.assert_array_equal(encode_mask(raw, {0: 0, 128: 1, 255: 2}, ["background", "l", "r"]), [[0, 1], [2, 0]])
    np.testing.assert_array_equal(encode_mask(raw, "binary", ["background", "fg"]), [[0, 1], [1, 0]])
    np.testing.assert_array_equal(encode_mask(raw, {0: 0, 255: 1}, ["background", "fg"], other="background"), [[0, 0], [1, 0]])
    with pytest.raises(DatasetFormatError, match=r"x.png: mask values \[128\] are not in the coding"):
        encode_mask(raw, {0: 0, 255: 1}, ["background", "fg"], where="x.png")
