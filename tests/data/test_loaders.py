"""Each real-dataset loader on a tiny fake copy in the dataset's own layout (real column names and
value codes, a handful of 4×4 images), with hand-checked labels and groups, and malformed copies
(missing column, missing image, path escaping the root) refused with a message naming the place."""

import gzip

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from medequity.data import DatasetFormatError, create_dataset, make_splits


def write_image(path, mode="RGB"):
    path.parent.mkdir(parents=True, exist_ok=True)
    shape = (4, 4, 3) if mode == "RGB" else (4, 4)
    Image.fromarray(np.zeros(shape, dtype=np.uint8)).save(path)


def na_list(series):
    return [None if pd.isna(v) else v for v in series]


# --- HAM10000 ---------------------------------------------------------------------------------------

HAM_ROWS = [
    # lesion_id, image_id, dx, dx_type, age, sex, localization
    ("HAM_0000118", "ISIC_0027419", "bkl", "histo", 80.0, "male", "scalp"),
    ("HAM_0000118", "ISIC_0025030", "bkl", "histo", 80.0, "male", "scalp"),
    ("HAM_0002730", "ISIC_0026769", "mel", "histo", 60.0, "female", "back"),
    ("HAM_0001466", "ISIC_0031633", "akiec", "histo", 75.0, "female", "face"),
    ("HAM_0002761", "ISIC_0029176", "bcc", "histo", 45.0, "male", "trunk"),
    ("HAM_0005132", "ISIC_0025837", "nv", "follow_up", None, "male", "back"),
    ("HAM_0001396", "ISIC_0025276", "vasc", "consensus", 55.0, "unknown", "trunk"),
]


def make_ham(root, rows=HAM_ROWS):
    pd.DataFrame(rows, columns=["lesion_id", "image_id", "dx", "dx_type", "age", "sex", "localization"]).to_csv(
        root / "HAM10000_metadata.csv", index=False
    )
    for i, row in enumerate(rows):
        part = "HAM10000_images_part_1" if i % 2 == 0 else "HAM10000_images_part_2"
        write_image(root / part / f"{row[1]}.jpg")
    return root


def test_ham10000_labels_groups_and_drops(tmp_path):
    ds = create_dataset("ham10000", make_ham(tmp_path))
    t = ds.table.set_index("sample_id")
    # missing age (ISIC_0025837) and unknown sex (ISIC_0025276) are dropped: 5 of 7 remain
    assert sorted(t.index) == sorted(["ISIC_0027419", "ISIC_0025030", "ISIC_0026769", "ISIC_0031633", "ISIC_0029176"])
    assert t.loc["ISIC_0026769", "label"] == 1 and t.loc["ISIC_0031633", "label"] == 1  # mel, akiec
    assert t.loc["ISIC_0029176", "label"] == 0  # bcc is benign in the benchmark convention
    assert t.loc["ISIC_0026769", "group:age"] == "<=60"  # 60 is not > 60
    assert t.loc["ISIC_0031633", "group:age"] == ">60"
    assert t.loc["ISIC_0029176", "group:sex"] == "male"
    assert t.loc["ISIC_0025030", "patient_id"] == "HAM_0000118" == t.loc["ISIC_0027419", "patient_id"]
    assert t.loc["ISIC_0025030", "path"] == "HAM10000_images_part_2/ISIC_0025030.jpg"
    assert ds.load_image(0).shape == (4, 4, 3)


def test_ham10000_options(tmp_path):
    ds = create_dataset("ham10000", make_ham(tmp_path), malignant=["mel"], drop_missing=False, age_rule=">=")
    t = ds.table.set_index("sample_id")
    assert len(t) == 7
    assert t.loc["ISIC_0031633", "label"] == 0  # akiec no longer malignant
    assert pd.isna(t.loc["ISIC_0025276", "group:sex"]) and pd.isna(t.loc["ISIC_0025837", "group:age"])
    assert t.loc["ISIC_0026769", "group:age"] == ">=60"


def test_ham10000_malformed(tmp_path):
    root = make_ham(tmp_path)
    (root / "HAM10000_images_part_1" / "ISIC_0026769.jpg").unlink()
    with pytest.raises(DatasetFormatError, match=r"HAM10000_metadata.csv: 1 images not found.*row 2: ISIC_0026769"):
        create_dataset("ham10000", root)
    rows = [r if i != 2 else ("HAM_0002730", "../../etc/passwd", "mel", "histo", 60.0, "female", "back") for i, r in enumerate(HAM_ROWS)]
    pd.DataFrame(rows, columns=["lesion_id", "image_id", "dx", "dx_type", "age", "sex", "localization"]).to_csv(
        root / "HAM10000_metadata.csv", index=False)
    with pytest.raises(DatasetFormatError, match=r"row 2: column 'image_id' value '../../etc/passwd' is not a plain image name"):
        create_dataset("ham10000", root)
    pd.DataFrame(HAM_ROWS, columns=["lesion_id", "image_id", "diagnosis", "dx_type", "age", "sex", "localization"]).to_csv(
        root / "HAM10000_metadata.csv", index=False)
    with pytest.raises(DatasetFormatError, match=r"HAM10000_metadata.csv: missing column 'dx'.*available columns"):
        create_dataset("ham10000", root)


# --- Fitzpatrick17k ---------------------------------------------------------------------------------

FITZ_COLUMNS = ["md5hash", "fitzpatrick_scale", "fitzpatrick_centaur", "label", "nine_partition_label", "three_partition_label", "qc",
                "url", "url_alphanum"]
FITZ_ROWS = [
    ("5e82a45bc5d78bd24ae9202d194423f8", 3, 3, "drug induced pigmentary changes", "inflammatory", "non-neoplastic", None, "http://x", "x"),
    ("fa2911a9b13b6f8af79cb700937cc14f", 1, 1, "photodermatoses", "inflammatory", "non-neoplastic", None, "http://x", "x"),
    ("d2bac3c9e4499032ca8e9b07c7d3bc40", 4, 4, "melanoma", "malignant melanoma", "malignant", None, "http://x", "x"),
    ("0a94359e7eaacd7178e06b2823777789", 2, 3, "basal cell carcinoma", "malignant epidermal", "malignant", None, "http://x", "x"),
    ("a3b4c5d6e7f8091a2b3c4d5e6f708192", -1, 2, "acne", "inflammatory", "non-neoplastic", None, "http://x", "x"),
    ("b1c2d3e4f5a6b7c8d9e0f1a2b3c4d5e6", 6, 5, "seborrheic keratosis", "benign epidermal", "benign", None, "http://x", "x"),
]


def make_fitz(root):
    pd.DataFrame(FITZ_ROWS, columns=FITZ_COLUMNS).to_csv(root / "fitzpatrick17k.csv", index=False)
    for row in FITZ_ROWS:
        write_image(root / "images" / f"{row[0]}.jpg")
    return root


def test_fitzpatrick17k(tmp_path):
    ds = create_dataset("fitzpatrick17k", make_fitz(tmp_path))
    t = ds.table.set_index("sample_id")
    assert "a3b4c5d6e7f8091a2b3c4d5e6f708192" not in t.index  # fitzpatrick_scale -1 excluded
    assert len(t) == 5
    assert t["label"].to_dict() == {
        "5e82a45bc5d78bd24ae9202d194423f8": 0, "fa2911a9b13b6f8af79cb700937cc14f": 0,
        "d2bac3c9e4499032ca8e9b07c7d3bc40": 1, "0a94359e7eaacd7178e06b2823777789": 1,
        "b1c2d3e4f5a6b7c8d9e0f1a2b3c4d5e6": 0,
    }
    # scale 3 -> MEDFAIR code 2 -> I-III; scale 4 -> code 3 -> IV-VI
    assert t.loc["5e82a45bc5d78bd24ae9202d194423f8", "skin_type"] == 2
    assert t.loc["5e82a45bc5d78bd24ae9202d194423f8", "group:skin_type"] == "I-III"
    assert t.loc["d2bac3c9e4499032ca8e9b07c7d3bc40", "group:skin_type"] == "IV-VI"
    assert t.loc["d2bac3c9e4499032ca8e9b07c7d3bc40", "label_name"] == "melanoma"
    kept = create_dataset("fitzpatrick17k", tmp_path, drop_unknown=False).table.set_index("sample_id")
    assert pd.isna(kept.loc["a3b4c5d6e7f8091a2b3c4d5e6f708192", "group:skin_type"])


def test_fitzpatrick17k_malformed(tmp_path):
    root = make_fitz(tmp_path)
    (root / "images" / f"{FITZ_ROWS[2][0]}.jpg").unlink()
    with pytest.raises(DatasetFormatError, match=rf"fitzpatrick17k.csv: 1 images not found.*row 2: {FITZ_ROWS[2][0]}"):
        create_dataset("fitzpatrick17k", root)
    assert len(create_dataset("fitzpatrick17k", root, on_missing="drop")) == 4
    frame = pd.DataFrame(FITZ_ROWS, columns=FITZ_COLUMNS)
    frame.loc[0, "md5hash"] = "../secret"
    frame.to_csv(root / "fitzpatrick17k.csv", index=False)
    with pytest.raises(DatasetFormatError, match=r"row 0: column 'md5hash' value '../secret' is not a plain image name"):
        create_dataset("fitzpatrick17k", root)
    frame.drop(columns="three_partition_label").to_csv(root / "fitzpatrick17k.csv", index=False)
    with pytest.raises(DatasetFormatError, match=r"missing column 'three_partition_label'"):
        create_dataset("fitzpatrick17k", root)


# --- PAPILA -----------------------------------------------------------------------------------------

PAPILA_HEADER = ["ID", "Age", "Gender", "Diagnosis", "Refractive_Defect", None, None, "Phakic/Pseudophakic"]
PAPILA_SUB = [None, None, None, None, "dioptre_1", "dioptre_2", "astigmatism", None]


def make_papila(root, od_rows, os_rows, fmt="xlsx"):
    (root / "ClinicalData").mkdir(parents=True, exist_ok=True)
    for eye, rows in (("od", od_rows), ("os", os_rows)):
        # as distributed: a title row, the header, a sub-header row, then one row per patient
        sheet = [["Clinical data, " + eye.upper()] + [None] * 7, PAPILA_HEADER, PAPILA_SUB]
        sheet += [[r[0], r[1], r[2], r[3], 0.5, -0.25, 0, 0] for r in rows]
        frame = pd.DataFrame(sheet)
        path = root / "ClinicalData" / f"patient_data_{eye}.{fmt}"
        if fmt == "xlsx":
            frame.to_excel(path, index=False, header=False)
        else:
            frame.to_csv(path, index=False, header=False)
    for rows, eye in ((od_rows, "OD"), (os_rows, "OS")):
        for r in rows:
            if str(r[0]).lstrip("#").isdigit():
                write_image(root / "FundusImages" / f"RET{int(str(r[0]).lstrip('#')):03d}{eye}.jpg")
    return root


PAPILA_OD = [("#002", 39, 0, 0), ("#004", 73, 1, 1), ("#005", 61, 1, 2), ("#009", 60, 0, 1)]
PAPILA_OS = [("#002", 39, 0, 0), ("#004", 73, 1, 1), ("#005", 61, 1, 0), ("#009", 60, 0, 1)]


@pytest.mark.parametrize("fmt", ["xlsx", "csv"])
def test_papila(tmp_path, fmt):
    ds = create_dataset("papila", make_papila(tmp_path, PAPILA_OD, PAPILA_OS, fmt))
    t = ds.table.set_index("sample_id")
    assert "RET005OD" not in t.index and "RET005OS" in t.index  # suspect (2) excluded
    assert len(t) == 7
    assert t.loc["RET004OD", "label"] == 1 and t.loc["RET002OS", "label"] == 0
    assert t.loc["RET002OD", "group:sex"] == "male" and t.loc["RET004OS", "group:sex"] == "female"  # 0 male, 1 female
    assert t.loc["RET009OD", "group:age"] == "<=60" and t.loc["RET005OS", "group:age"] == ">60"
    assert t.loc["RET004OD", "patient_id"] == t.loc["RET004OS", "patient_id"] == "004"
    assert t.loc["RET009OS", "path"] == "FundusImages/RET009OS.jpg"
    assert ds.info["split_ratios"] == (0.7, 0.1, 0.2)


def test_papila_malformed(tmp_path):
    root = make_papila(tmp_path, PAPILA_OD, PAPILA_OS)
    (root / "FundusImages" / "RET004OS.jpg").unlink()
    with pytest.raises(DatasetFormatError, match=r"patient_data_os.xlsx: 1 of 4 files.*row 4: FundusImages/RET004OS.jpg"):
        create_dataset("papila", root)
    make_papila(tmp_path, [("../../x", 39, 0, 0)], PAPILA_OS)
    with pytest.raises(DatasetFormatError, match=r"patient_data_od.xlsx: row 3: column 'ID' value '../../x' is not a patient number"):
        create_dataset("papila", root)
    make_papila(tmp_path, [("#002", 39, 0, 7)], PAPILA_OS)
    with pytest.raises(DatasetFormatError, match=r"patient_data_od.xlsx: row 3: patient #002: column 'Diagnosis' value 7"):
        create_dataset("papila", root)
    frame = pd.DataFrame([PAPILA_HEADER[:3] + ["Diag"], ["#002", 39, 0, 0]])
    frame.to_excel(root / "ClinicalData" / "patient_data_od.xlsx", index=False, header=False)
    with pytest.raises(DatasetFormatError, match=r"patient_data_od.xlsx: missing column 'Diagnosis' \(did you mean 'Diag'\?\)"):
        create_dataset("papila", root)


# --- CheXpert ---------------------------------------------------------------------------------------

CHEXPERT_FINDINGS = ["No Finding", "Enlarged Cardiomediastinum", "Cardiomegaly", "Lung Opacity", "Lung Lesion", "Edema",
                     "Consolidation", "Pneumonia", "Atelectasis", "Pneumothorax", "Pleural Effusion", "Pleural Other",
                     "Fracture", "Support Devices"]


def chexpert_row(path, sex, age, view, no_finding, edema=None):
    row = {"Path": path, "Sex": sex, "Age": age, "Frontal/Lateral": view, "AP/PA": "AP" if view == "Frontal" else None}
    row.update({f: None for f in CHEXPERT_FINDINGS})
    row["No Finding"], row["Edema"] = no_finding, edema
    return row


CHEXPERT_TRAIN = [
    chexpert_row("CheXpert-v1.0-small/train/patient00001/study1/view1_frontal.jpg", "Female", 68, "Frontal", 1.0),
    chexpert_row("CheXpert-v1.0-small/train/patient00002/study2/view1_frontal.jpg", "Female", 87, "Frontal", None, -1.0),
    chexpert_row("CheXpert-v1.0-small/train/patient00002/study1/view2_lateral.jpg", "Female", 83, "Lateral", None, 1.0),
    chexpert_row("CheXpert-v1.0-small/train/patient00003/study1/view1_frontal.jpg", "Male", 41, "Frontal", 0.0),
    chexpert_row("CheXpert-v1.0-small/train/patient00004/study1/view1_frontal.jpg", "Unknown", 20, "Frontal", 1.0),
]
CHEXPERT_VALID = [chexpert_row("CheXpert-v1.0-small/valid/patient64541/study1/view1_frontal.jpg", "Male", 73, "Frontal", 1.0)]
CHEXPERT_DEMO = pd.DataFrame(
    {
        "PATIENT": ["patient00001", "patient00002", "patient00003", "patient64541"],
        "GENDER": ["Female", "Female", "Male", "Male"],
        "AGE_AT_CXR": [68, 87, 41, 73],
        "PRIMARY_RACE": ["White, non-Hispanic", "Black or African American", "Unknown", "Asian"],
    }
)


def make_chexpert(root, train=CHEXPERT_TRAIN, nested=True):
    base = root / "CheXpert-v1.0-small" if nested else root
    base.mkdir(parents=True, exist_ok=True)
    pd.DataFrame(train).to_csv(base / "train.csv", index=False)
    pd.DataFrame(CHEXPERT_VALID).to_csv(base / "valid.csv", index=False)
    for row in train + CHEXPERT_VALID:
        write_image(base / row["Path"].split("/", 1)[1], mode="L")
    CHEXPERT_DEMO.to_excel(root / "CHEXPERT DEMO.xlsx", index=False)
    return root


@pytest.mark.parametrize("nested", [True, False])
def test_chexpert(tmp_path, nested):
    ds = create_dataset("chexpert", make_chexpert(tmp_path, nested=nested), valid="pool")
    t = ds.table.set_index("patient_id")
    assert len(ds) == 5  # "Unknown" sex dropped
    assert "patient00004" not in t.index
    labels = dict(zip(ds.table["sample_id"], ds.table["label"]))
    # sample ids are paths inside the dataset folder, whichever folder root names
    assert labels["train/patient00001/study1/view1_frontal.jpg"] == 1
    assert labels["train/patient00002/study2/view1_frontal.jpg"] == 0  # blank -> 0
    assert labels["train/patient00003/study1/view1_frontal.jpg"] == 0
    edema = dict(zip(ds.table["sample_id"], ds.table["label:Edema"]))
    assert edema["train/patient00002/study2/view1_frontal.jpg"] == 0  # uncertain -1 -> 0
    assert edema["train/patient00002/study1/view2_lateral.jpg"] == 1
    assert t.loc["patient00001", "group:race"] == "White"
    assert (t.loc["patient00002", "group:race"] == "non-White").all()
    assert pd.isna(t.loc["patient00003", "group:race"])  # "Unknown" is not non-White
    assert t.loc["patient64541", "group:race"] == "non-White" and t.loc["patient64541", "csv"] == "valid"
    assert t.loc["patient00003", "group:sex"] == "male" and t.loc["patient00003", "group:age"] == "<=60"
    assert ds.load_image(0).shape == (4, 4)
    assert len(create_dataset("chexpert", tmp_path, views="frontal", valid="pool")) == 4


def test_chexpert_without_demo_has_no_race(tmp_path):
    root = make_chexpert(tmp_path)
    (root / "CHEXPERT DEMO.xlsx").unlink()
    ds = create_dataset("chexpert", root)
    assert "race" not in ds.attributes and "not found" in ds.info["race"]


def test_chexpert_malformed(tmp_path):
    root = make_chexpert(tmp_path)
    (root / "CheXpert-v1.0-small" / "train/patient00003/study1/view1_frontal.jpg").unlink()
    with pytest.raises(DatasetFormatError,
                       match=r"train.csv: 1 of 5 files in column 'Path'.*row 3: CheXpert-v1.0-small/train/patient00003"):
        create_dataset("chexpert", root)
    bad = [dict(r) for r in CHEXPERT_TRAIN]
    bad[1]["Path"] = "CheXpert-v1.0-small/../../../etc/patient00002.jpg"
    pd.DataFrame(bad).to_csv(root / "CheXpert-v1.0-small" / "train.csv", index=False)
    with pytest.raises(DatasetFormatError, match=r"train.csv, row 1, column 'Path'\) points outside the dataset root"):
        create_dataset("chexpert", root)
    pd.DataFrame(CHEXPERT_TRAIN).drop(columns="Sex").to_csv(root / "CheXpert-v1.0-small" / "train.csv", index=False)
    with pytest.raises(DatasetFormatError, match=r"train.csv: missing column 'Sex'"):
        create_dataset("chexpert", root)


# --- MIMIC-CXR-JPG ----------------------------------------------------------------------------------

MIMIC_META = pd.DataFrame(
    {
        "dicom_id": ["02aa804e-bde0afdd-112c0b34-7bc16630-4e384014", "174413ec-4ec4c1f7-34ea26b7-c5f994f8-79ef1962",
                     "2a2277a9-b0ded155-c0de8eb9-c124d10e-82c5caab", "68b5c4b1-227d0485-9cc38c3f-7b84ab51-4b472714"],
        "subject_id": [10000032, 10000032, 10000764, 11000011],
        "study_id": [50414267, 53189527, 57375967, 51029426],
        "ViewPosition": ["PA", "AP", "AP", "LATERAL"],
    }
)
MIMIC_LABELS = pd.DataFrame(
    {"subject_id": [10000032, 10000032, 10000764, 11000011], "study_id": [50414267, 53189527, 57375967, 51029426],
     "No Finding": [1.0, None, None, 1.0], "Edema": [None, -1.0, 1.0, None]}
)
MIMIC_SPLIT = MIMIC_META[["dicom_id", "study_id", "subject_id"]].assign(split=["train", "train", "validate", "test"])
MIMIC_PATIENTS = pd.DataFrame({"subject_id": [10000032, 10000764, 11000011], "gender": ["F", "M", "F"],
                               "anchor_age": [52, 86, 61], "anchor_year": [2180, 2132, 2150], "dod": [None, None, None]})
MIMIC_ADMISSIONS = pd.DataFrame(
    {
        "subject_id": [10000032, 10000032, 10000032, 10000764, 11000011],
        "hadm_id": [1, 2, 3, 4, 5],
        "admittime": ["2180-05-06", "2180-06-26", "2180-07-23", "2132-10-14", "2150-01-01"],
        "race": ["WHITE", "WHITE", "UNKNOWN", "BLACK/AFRICAN AMERICAN", "PATIENT DECLINED TO ANSWER"],
    }
)


def make_mimic(root, meta=MIMIC_META):
    with gzip.open(root / "mimic-cxr-2.0.0-metadata.csv.gz", "wt") as f:
        meta.to_csv(f, index=False)
    MIMIC_LABELS.to_csv(root / "mimic-cxr-2.0.0-chexpert.csv", index=False)
    MIMIC_SPLIT.to_csv(root / "mimic-cxr-2.0.0-split.csv", index=False)
    (root / "hosp").mkdir(exist_ok=True)
    MIMIC_PATIENTS.to_csv(root / "hosp" / "patients.csv", index=False)
    MIMIC_ADMISSIONS.to_csv(root / "hosp" / "admissions.csv", index=False)
    for row in MIMIC_META.itertuples():
        s = str(row.subject_id)
        write_image(root / "files" / f"p{s[:2]}" / f"p{s}" / f"s{row.study_id}" / f"{row.dicom_id}.jpg", mode="L")
    return root


def test_mimic_cxr(tmp_path):
    ds = create_dataset("mimic_cxr", make_mimic(tmp_path))
    t = ds.table.set_index("sample_id")
    first = "02aa804e-bde0afdd-112c0b34-7bc16630-4e384014"
    assert t.loc[first, "path"] == f"files/p10/p10000032/s50414267/{first}.jpg"
    assert t["label"].tolist() == [1, 0, 0, 1]
    assert t["label:Edema"].tolist() == [0, 0, 1, 0]
    assert t["split"].tolist() == ["train", "train", "val", "test"]  # "validate" -> val
    assert t["group:sex"].tolist() == ["female", "female", "male", "female"]
    assert t["group:age"].tolist() == ["<=60", "<=60", ">60", ">60"]
    # subject 10000032: WHITE twice, UNKNOWN once -> White; declined -> unknown, not non-White
    assert na_list(t["group:race"]) == ["White", "White", "non-White", None]
    assert t["patient_id"].tolist() == ["10000032", "10000032", "10000764", "11000011"]
    splits = make_splits(ds)
    assert splits.tolist() == ["train", "train", "val", "test"]  # the official split is reused


def test_mimic_cxr_malformed(tmp_path):
    root = make_mimic(tmp_path)
    (root / "files/p10/p10000764/s57375967/2a2277a9-b0ded155-c0de8eb9-c124d10e-82c5caab.jpg").unlink()
    with pytest.raises(DatasetFormatError, match=r"metadata.csv.gz: 1 of 4 files.*row 2: files/p10/p10000764/s57375967/2a2277a9"):
        create_dataset("mimic_cxr", root)
    make_mimic(root, MIMIC_META.assign(dicom_id=["../../../../../../etc/passwd"] + MIMIC_META["dicom_id"].tolist()[1:]))
    with pytest.raises(DatasetFormatError,
                       match=r"metadata.csv.gz: row 0: column 'dicom_id' value '../../../../../../etc/passwd' is not a plain id"):
        create_dataset("mimic_cxr", root)
    make_mimic(root)
    MIMIC_PATIENTS.drop(columns="anchor_age").to_csv(root / "hosp" / "patients.csv", index=False)
    with pytest.raises(DatasetFormatError, match=r"patients.csv: missing column 'anchor_age'"):
        create_dataset("mimic_cxr", root)
    (root / "hosp" / "patients.csv").unlink()
    with pytest.raises(DatasetFormatError, match=r"MIMIC-IV patients.csv \(pass mimic_iv_root=\) not found"):
        create_dataset("mimic_cxr", root)


# --- NIH ChestX-ray14 -------------------------------------------------------------------------------

NIH = pd.DataFrame(
    {
        "Image Index": ["00000001_000.png", "00000001_001.png", "00000002_000.png", "00000003_000.png", "00000004_000.png"],
        "Finding Labels": ["Cardiomegaly", "Cardiomegaly|Emphysema", "No Finding", "Hernia|Pneumonia", "No Finding"],
        "Follow-up #": [0, 1, 0, 0, 0],
        "Patient ID": [1, 1, 2, 3, 4],
        "Patient Age": [57, 58, 80, 74, 61],
        "Patient Gender": ["M", "M", "M", "F", "?"],
        "View Position": ["PA", "PA", "PA", "PA", "AP"],
    }
)


def make_nih(root, table=NIH):
    table.to_csv(root / "Data_Entry_2017_v2020.csv", index=False)
    for i, name in enumerate(NIH["Image Index"]):
        write_image(root / f"images_00{1 + i % 2}" / "images" / name, mode="L")
    (root / "test_list.txt").write_text("00000002_000.png\n00000003_000.png\n")
    (root / "train_val_list.txt").write_text("00000001_000.png\n00000001_001.png\n00000004_000.png\n")
    return root


def test_nih_cxr14(tmp_path):
    ds = create_dataset("nih_cxr14", make_nih(tmp_path))
    t = ds.table.set_index("sample_id")
    assert "00000004_000.png" not in t.index  # sex "?" is unknown -> dropped
    assert t["label"].tolist() == [0, 0, 1, 0]  # "No Finding"
    assert t["label:Pneumonia"].tolist() == [0, 0, 0, 1]
    assert t["split"].tolist() == ["train", "train", "test", "test"]
    assert t["group:sex"].tolist() == ["male", "male", "male", "female"]
    assert t["group:age"].tolist() == ["<=60", "<=60", ">60", ">60"]
    assert t.loc["00000001_001.png", "path"] == "images_002/images/00000001_001.png"
    pneumonia = create_dataset("nih_cxr14", tmp_path, finding="Pneumonia")
    assert pneumonia.labels.tolist() == [0, 0, 0, 1]
    splits = make_splits(ds)
    assert set(splits[["00000002_000.png", "00000003_000.png"]]) == {"test"}
    assert splits["00000001_000.png"] == splits["00000001_001.png"]  # val carved by patient


def test_nih_cxr14_malformed(tmp_path):
    root = make_nih(tmp_path)
    (root / "images_001" / "images" / "00000002_000.png").unlink()
    with pytest.raises(DatasetFormatError, match=r"Data_Entry_2017_v2020.csv: 1 images not found.*row 2: 00000002_000.png"):
        create_dataset("nih_cxr14", root)
    make_nih(root, NIH.assign(**{"Image Index": ["../../x.png"] + NIH["Image Index"].tolist()[1:]}))
    with pytest.raises(DatasetFormatError, match=r"row 0: column 'Image Index' value '../../x.png' is not a plain image name"):
        create_dataset("nih_cxr14", root)
    make_nih(root, NIH.drop(columns="Patient ID"))
    with pytest.raises(DatasetFormatError, match=r"missing column 'Patient ID'"):
        create_dataset("nih_cxr14", root)


# --- Harvard npz (GF3300, FairVLMed10k, FairSeg) ----------------------------------------------------


def write_npz(path, **keys):
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez(path, **{k: np.asarray(v) for k, v in keys.items()})


def test_fairvlmed10k(tmp_path):
    image = np.arange(16, dtype=np.uint8).reshape(4, 4)
    common = dict(slo_fundus=image, md=-1.5, note=np.array("clinical note"))
    write_npz(tmp_path / "Training" / "data_00001.npz",
              age=72.5, gender=0, race=2, ethnicity=0, language=0, maritalstatus=0, glaucoma=1, **common)
    write_npz(tmp_path / "Training" / "data_00002.npz",
              age=45.0, gender=1, race=1, ethnicity=1, language=1, maritalstatus=3, glaucoma=0, **common)
    write_npz(tmp_path / "Validation" / "data_00003.npz",
              age=60.0, gender=1, race=0, ethnicity=-1, language=-1, maritalstatus=-1, glaucoma=0, **common)
    write_npz(tmp_path / "Test" / "data_00004.npz",
              age=80.0, gender=-1, race=2, ethnicity=0, language=2, maritalstatus=1, glaucoma=1, **common)
    ds = create_dataset("fairvlmed10k", tmp_path)
    t = ds.table.set_index("sample_id")
    assert t["label"].tolist() == [1, 0, 0, 1]
    assert t["split"].tolist() == ["train", "train", "val", "test"]
    assert na_list(t["group:sex"]) == ["female", "male", "male", None]  # 0 = female in Harvard data
    assert na_list(t["group:race"]) == ["White", "non-White", "non-White", "White"]
    assert na_list(t["group:ethnicity"]) == ["non-Hispanic", "Hispanic", None, "non-Hispanic"]
    assert na_list(t["group:language"]) == ["English", "non-English", None, "non-English"]
    assert na_list(t["group:marital_status"]) == ["Married or Partnered", "Widowed", None, "Single"]
    assert na_list(t["group:age"]) == [">60", "<=60", "<=60", ">60"]
    assert ds.task == "binary" and ds.info["image_key"] == "slo_fundus"
    np.testing.assert_array_equal(ds.load_image(0), image)
    np.testing.assert_array_equal(ds.subset([1]).load_image(0), image)  # lazy reading survives subset


def test_harvard_gf3300_male_key_and_strings(tmp_path):
    rnflt = np.ones((4, 4), dtype=np.float32)
    write_npz(tmp_path / "train" / "data_0001.npz", rnflt=rnflt, glaucoma=1, age=65, male=1, race=1, hispanic=0)
    write_npz(tmp_path / "test" / "data_0002.npz", rnflt=rnflt, glaucoma=0, age=50, male=0, race=0, hispanic=1)
    write_npz(tmp_path / "test" / "data_0003.npz",
              rnflt=rnflt, glaucoma=0, age=50, male=np.array("female"), race=np.array("White"), hispanic=0)
    ds = create_dataset("harvard_gf3300", tmp_path)
    t = ds.table.set_index("sample_id")
    assert t["group:sex"].tolist() == ["male", "female", "female"]
    assert t["group:race"].tolist() == ["non-White", "non-White", "White"]
    assert t["group:ethnicity"].tolist() == ["non-Hispanic", "Hispanic", "non-Hispanic"]
    assert ds.info["image_key"] == "rnflt" and ds.load_image(2).dtype == np.float32


def test_fairseg_masks_and_raw_race(tmp_path):
    mask = np.array([[0, -1], [-2, 0]], dtype=np.int8)
    write_npz(tmp_path / "Training" / "data_00001.npz", slo_fundus=np.zeros((2, 2), np.uint8), disc_cup_mask=mask,
              age=30, gender=1, race=0, ethnicity=0, language=0, maritalstatus=1)
    write_npz(tmp_path / "Test" / "data_09001.npz", slo_fundus=np.zeros((2, 2), np.uint8), disc_cup_mask=mask,
              age=70, gender=0, race=1, ethnicity=0, language=0, maritalstatus=1)
    ds = create_dataset("fairseg", tmp_path, race_scheme="raw")
    assert ds.task == "segmentation"
    assert ds.table["label"].isna().all()
    assert ds.table["group:race"].tolist() == ["Asian", "Black"]
    # stored rim −1 and cup −2 (FairSeg's coding) come back as class indices 1 and 2
    np.testing.assert_array_equal(ds.load_mask(1), [[0, 1], [2, 0]])
    assert ds.info["classes"][:3] == ["background", "rim", "cup"]


def test_harvard_npz_malformed(tmp_path):
    write_npz(tmp_path / "Training" / "data_00001.npz", slo_fundus=np.zeros((2, 2)), glaucoma=3, age=30, gender=1, race=0)
    with pytest.raises(DatasetFormatError, match=r"data_00001.npz: key 'glaucoma' is 3, not 0 or 1"):
        create_dataset("fairvlmed10k", tmp_path)
    write_npz(tmp_path / "Training" / "data_00001.npz", image=np.zeros((2, 2)), glaucoma=1, age=30)
    with pytest.raises(DatasetFormatError,
                       match=r"data_00001.npz: no image key slo_fundus or fundus_slo or rnflt; keys: \['age', 'glaucoma', 'image'\]"):
        create_dataset("fairvlmed10k", tmp_path)
    (tmp_path / "Training" / "data_00001.npz").unlink()
    outside = tmp_path.parent / f"{tmp_path.name}_outside.npz"
    write_npz(outside, slo_fundus=np.zeros((2, 2)), glaucoma=1, age=30)
    (tmp_path / "Training" / "data_00002.npz").symlink_to(outside)
    with pytest.raises(DatasetFormatError, match=r"'Training/data_00002.npz'.*points outside the dataset root"):
        create_dataset("fairvlmed10k", tmp_path)
    with pytest.raises(DatasetFormatError, match=r"no .npz files under"):
        create_dataset("fairseg", tmp_path / "Training" / "empty")


# --- BRSET ------------------------------------------------------------------------------------------

BRSET = pd.DataFrame(
    {
        "image_id": ["img00001", "img00002", "img00003", "img00004", "img00005"],
        "patient_id": [1, 1, 2, 3, 4],
        "camera": ["Canon CR", "Canon CR", "NIKon NF5050", "Canon CR", "Canon CR"],
        "patient_age": [48.0, 48.0, 71.0, None, 60.0],
        "comorbidities": ["diabetes1", "diabetes1", "SAH", "0", "diabetes"],
        "patient_sex": [1, 1, 2, 2, 2],
        "exam_eye": [1, 2, 1, 1, 2],
        "diabetes": ["yes", "yes", "no", "no", "yes"],
        "DR_ICDR": [0, 2, 0, 0, 4],
        "diabetic_retinopathy": [0, 1, 0, 0, 1],
    }
)


def make_brset(root, table=BRSET):
    table.to_csv(root / "labels.csv", index=False)
    for image_id in BRSET["image_id"]:
        write_image(root / "fundus_photos" / f"{image_id}.jpg")
    return root


def test_brset(tmp_path):
    ds = create_dataset("brset", make_brset(tmp_path))
    t = ds.table.set_index("sample_id")
    assert "img00004" not in t.index  # missing age dropped
    assert t["label"].tolist() == [0, 1, 0, 1]
    assert t["group:sex"].tolist() == ["male", "male", "female", "female"]  # 1 male, 2 female
    assert t["group:age"].tolist() == ["<=60", "<=60", ">60", "<=60"]
    assert t.loc["img00002", "patient_id"] == t.loc["img00001", "patient_id"] == "1"
    severe = create_dataset("brset", tmp_path, label_column="DR_ICDR", positive_values=[3, 4])
    assert severe.labels.tolist() == [0, 0, 0, 1]
    with pytest.raises(DatasetFormatError, match=r"label column 'DR_ICDR' is not binary; values found: \['0', '2', '4'\]"):
        create_dataset("brset", tmp_path, label_column="DR_ICDR")


def test_brset_malformed(tmp_path):
    root = make_brset(tmp_path)
    (root / "fundus_photos" / "img00003.jpg").unlink()
    with pytest.raises(DatasetFormatError, match=r"labels.csv: 1 images not found.*row 2: img00003"):
        create_dataset("brset", root)
    make_brset(root, BRSET.assign(image_id=["img00001", "../img00002", "img00003", "img00004", "img00005"]))
    with pytest.raises(DatasetFormatError, match=r"row 1: column 'image_id' value '../img00002' is not a plain image name"):
        create_dataset("brset", root)
    make_brset(root, BRSET.rename(columns={"patient_sex": "sex"}))
    with pytest.raises(DatasetFormatError, match=r"missing column 'patient_sex'"):
        create_dataset("brset", root)
