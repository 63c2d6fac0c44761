"""CheXpert and NIH ChestX-ray14 as fairness researchers use them, on tiny copies in the official
layouts: CSV headers exactly as shipped (NIH's split "OriginalImage[Width,Height]" columns
included), the CHEXPERT DEMO spreadsheet as .xlsx, tiny JPG/PNG images. Every option (views, one
image per patient, uncertain labels, valid.csv, age bins, the table alone) and every error
(renamed finding column, unknown finding name, absent image folders) is checked by hand-counted
expectations, and the data card is checked to say what label 1 means and how the data were loaded.
"""

import inspect
import json
import tomllib
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image
from typer.testing import CliRunner

from medequity.cli import app
from medequity.data import DatasetFormatError, build_data_card, create_dataset, make_splits
from medequity.data.attributes import with_age_groups
from medequity.data.loaders.chexpert import load_chexpert
from medequity.data.loaders.nih_cxr14 import load_nih_cxr14

REPO = Path(__file__).resolve().parents[2]

# --- CheXpert-v1.0-small ----------------------------------------------------------------------------

CHEXPERT_HEADER = (
    "Path,Sex,Age,Frontal/Lateral,AP/PA,No Finding,Enlarged Cardiomediastinum,Cardiomegaly,Lung Opacity,"
    "Lung Lesion,Edema,Consolidation,Pneumonia,Atelectasis,Pneumothorax,Pleural Effusion,Pleural Other,"
    "Fracture,Support Devices"
)
P = "CheXpert-v1.0-small/train/"
# Path, Sex, Age, Frontal/Lateral, AP/PA, No Finding, ..., Edema (10th finding), ..., Pleural Effusion (15th)
TRAIN_ROWS = [
    # patient00001: three studies written out of order; study2 precedes study10 numerically
    f"{P}patient00001/study10/view1_frontal.jpg,Female,68,Frontal,AP,,,,1.0,,-1.0,,,,,1.0,,,1.0",
    f"{P}patient00001/study2/view2_lateral.jpg,Female,67,Lateral,,,,,,,1.0,,,,,,,,",
    f"{P}patient00001/study2/view1_frontal.jpg,Female,67,Frontal,PA,1.0,,,,,,,,,,,,,",
    f"{P}patient00002/study1/view1_frontal.jpg,Male,60,Frontal,PA,,,,,,0.0,,,,,-1.0,,,",
    f"{P}patient00003/study1/view1_frontal.jpg,Male,45,Frontal,AP,,,1.0,,,-1.0,,,,,1.0,,,",
    f"{P}patient00004/study1/view1_frontal.jpg,Unknown,20,Frontal,AP,1.0,,,,,,,,,,,,,",
    f"{P}patient00005/study1/view1_frontal.jpg,Female,85,Frontal,AP,,,,,,1.0,,,,,0.0,,,",
]
VALID_ROWS = [
    "CheXpert-v1.0-small/valid/patient64541/study1/view1_frontal.jpg,Male,73,Frontal,AP,0.0,1.0,1.0,1.0,0.0,0.0,0.0,0.0,0.0,0.0,0.0,0.0,0.0,1.0",
    "CheXpert-v1.0-small/valid/patient64542/study1/view1_frontal.jpg,Female,70,Frontal,PA,1.0,0.0,0.0,0.0,0.0,0.0,0.0,0.0,0.0,0.0,0.0,0.0,0.0,0.0",
]
DEMO = pd.DataFrame(
    {
        "PATIENT": ["patient00001", "patient00002", "patient00003", "patient00005", "patient64541", "patient64542"],
        "GENDER": ["Female", "Male", "Male", "Female", "Male", "Female"],
        "AGE_AT_CXR": [67, 60, 45, 85, 73, 70],
        "PRIMARY_RACE": ["White", "Race and Ethnicity Unknown", "Patient Refused", "Declines to State", "Other", "Asian"],
        "ETHNICITY": ["Non-Hispanic/Non-Latino", "Unknown", "Patient Refused", "Unknown", "Hispanic/Latino", "Non-Hispanic/Non-Latino"],
    }
)


def write_jpg(path):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((4, 4), 128, dtype=np.uint8)).save(path)


def make_chexpert(parent, train=TRAIN_ROWS, header=CHEXPERT_HEADER, valid=True):
    base = parent / "CheXpert-v1.0-small"
    base.mkdir(parents=True, exist_ok=True)
    (base / "train.csv").write_text("\n".join([header, *train]) + "\n")
    if valid:
        (base / "valid.csv").write_text("\n".join([CHEXPERT_HEADER, *VALID_ROWS]) + "\n")
    for row in TRAIN_ROWS + VALID_ROWS:
        write_jpg(base / row.split(",")[0].split("/", 1)[1])
    DEMO.to_excel(parent / "CHEXPERT DEMO.xlsx", index=False)  # written and read through openpyxl
    return parent


def ids(ds):
    return sorted(ds.table["sample_id"])


def column(ds, name):
    return {sid: (None if pd.isna(v) else v) for sid, v in zip(ds.table["sample_id"], ds.table[name])}


def test_chexpert_label_1_is_healthy_and_the_card_says_so(tmp_path):
    ds = create_dataset("chexpert", make_chexpert(tmp_path))
    assert column(ds, "label") == {
        "train/patient00001/study10/view1_frontal.jpg": 0, "train/patient00001/study2/view2_lateral.jpg": 0,
        "train/patient00001/study2/view1_frontal.jpg": 1, "train/patient00002/study1/view1_frontal.jpg": 0,
        "train/patient00003/study1/view1_frontal.jpg": 0, "train/patient00005/study1/view1_frontal.jpg": 0,
    }  # patient00004 ("Unknown" sex) dropped; valid.csv not loaded by default
    card = build_data_card(ds)
    document = card.to_dict()
    assert document["prevalence"] == pytest.approx(1 / 6)
    assert "healthy" in document["label"]["label_1"] and "not disease prevalence" in document["label"]["prevalence"]
    assert "No Finding" in document["label"]["rule"]
    markdown = card.to_markdown()
    assert "Label 1 means: healthy" in markdown and "not disease prevalence" in markdown
    assert "1 (unknown sex or missing age)" in markdown
    # card.json records every loader option, with its value
    assert set(document["loader"]["options"]) == set(inspect.signature(load_chexpert).parameters) - {"root"}
    assert document["loader"]["options"]["uncertain"] == "zero" and document["loader"]["options"]["valid"] == "exclude"
    assert json.loads(json.dumps(document)) == document


def test_chexpert_finding_label_is_disease(tmp_path):
    ds = create_dataset("chexpert", make_chexpert(tmp_path), finding="Pleural Effusion")
    assert column(ds, "label")["train/patient00003/study1/view1_frontal.jpg"] == 1
    assert column(ds, "label")["train/patient00002/study1/view1_frontal.jpg"] == 0  # -1 -> 0 (U-zeros)
    assert ds.info["label_1"] == "Pleural Effusion present (disease)" and ds.info["prevalence"].startswith("disease prevalence")
    with pytest.raises(ValueError, match=r"unknown finding 'Effusion'; choose one of \['No Finding'"):
        create_dataset("chexpert", tmp_path, finding="Effusion")


@pytest.mark.parametrize("renamed", ["Pleural Effusion", "Support Devices", "AP/PA"])
def test_chexpert_renamed_column_is_an_error_naming_it(tmp_path, renamed):
    header = CHEXPERT_HEADER.replace(renamed, renamed.replace(" ", "_").replace("/", "-"))
    make_chexpert(tmp_path, header=header)
    with pytest.raises(DatasetFormatError, match=rf"train.csv: missing column '{renamed}' \(did you mean .*available columns: \['Path'"):
        create_dataset("chexpert", tmp_path)
    dropped = ",".join(part for part in CHEXPERT_HEADER.split(",") if part != "Edema")
    rows = [",".join(p for i, p in enumerate(r.split(",")) if i != 10) for r in TRAIN_ROWS]
    make_chexpert(tmp_path, train=rows, header=dropped)
    with pytest.raises(DatasetFormatError, match=r"missing column 'Edema'; available columns: .*'Lung Lesion', 'Consolidation'"):
        create_dataset("chexpert", tmp_path)


def test_chexpert_views(tmp_path):
    root = make_chexpert(tmp_path)
    pa = create_dataset("chexpert", root, views="PA")
    assert ids(pa) == ["train/patient00001/study2/view1_frontal.jpg", "train/patient00002/study1/view1_frontal.jpg"]
    assert set(pa.table["view"]) == {"PA"}
    ap = create_dataset("chexpert", root, views=["ap"])
    assert ids(ap) == ["train/patient00001/study10/view1_frontal.jpg", "train/patient00003/study1/view1_frontal.jpg",
                       "train/patient00005/study1/view1_frontal.jpg"]
    lateral = create_dataset("chexpert", root, views="lateral")
    assert ids(lateral) == ["train/patient00001/study2/view2_lateral.jpg"]
    assert len(create_dataset("chexpert", root, views="frontal")) == 5 == len(create_dataset("chexpert", root, views="AP,PA"))
    assert lateral.info["dropped_rows"]["train.csv: view not in ['lateral']"] == 6
    assert lateral.info["options"]["views"] == "lateral"
    with pytest.raises(ValueError, match=r"unknown view 'oblique'.*\['AP', 'PA', 'lateral', 'frontal'\]"):
        create_dataset("chexpert", root, views="oblique")


def test_chexpert_one_image_per_patient_is_the_first_study_then_view(tmp_path):
    root = make_chexpert(tmp_path)
    first = create_dataset("chexpert", root, one_per_patient=True)
    # patient00001: study2 comes before study10 (numeric order), view1 before view2
    assert ids(first) == ["train/patient00001/study2/view1_frontal.jpg", "train/patient00002/study1/view1_frontal.jpg",
                          "train/patient00003/study1/view1_frontal.jpg", "train/patient00005/study1/view1_frontal.jpg"]
    assert first.table["patient_id"].is_unique
    assert first.info["dropped_rows"]["not the patient's first image (one_per_patient)"] == 2
    # the choice does not depend on the file's row order
    make_chexpert(tmp_path, train=TRAIN_ROWS[::-1])
    assert ids(create_dataset("chexpert", root, one_per_patient=True)) == ids(first)
    # views first, then the first of what is left
    assert ids(create_dataset("chexpert", root, one_per_patient=True, views="AP"))[0] == "train/patient00001/study10/view1_frontal.jpg"


def test_chexpert_uncertain_labels(tmp_path):
    root = make_chexpert(tmp_path)
    rows = ["train/patient00001/study10/view1_frontal.jpg", "train/patient00001/study2/view2_lateral.jpg",
            "train/patient00002/study1/view1_frontal.jpg", "train/patient00003/study1/view1_frontal.jpg",
            "train/patient00005/study1/view1_frontal.jpg"]
    # raw Edema: -1, 1, 0, -1, 1
    expected = {"zero": [0, 1, 0, 0, 1], "one": [1, 1, 0, 1, 1], "missing": [None, 1, 0, None, 1]}
    for policy, values in expected.items():
        edema = column(create_dataset("chexpert", root, uncertain=policy), "label:Edema")
        assert [edema[r] for r in rows] == values, policy
    # with the uncertain finding as the label, its -1 rows are dropped, and the card says how many
    masked = create_dataset("chexpert", root, uncertain="missing", finding="Edema")
    assert ids(masked) == sorted(rows[1:3] + rows[4:] + ["train/patient00001/study2/view1_frontal.jpg"])  # blank Edema is 0
    assert masked.info["dropped_rows"]["'Edema' uncertain (-1), uncertain='missing'"] == 2
    assert "2 ('Edema' uncertain (-1), uncertain='missing')" in build_data_card(masked).to_markdown()
    assert masked.labels.tolist() == [1, 0, 0, 1]  # file order: lateral 1, frontal blank 0, patient00002 0, patient00005 1
    with pytest.raises(ValueError, match=r"uncertain must be one of \('zero', 'one', 'missing'\)"):
        create_dataset("chexpert", root, uncertain="ignore")


def test_chexpert_valid_csv_is_never_pooled_unasked(tmp_path):
    root = make_chexpert(tmp_path)
    default = create_dataset("chexpert", root)
    assert not default.table["sample_id"].str.startswith("valid/").any() and "split" not in default.table.columns
    assert "not loaded" in default.info["valid"]
    official = create_dataset("chexpert", root, valid="test")
    split = column(official, "split")
    assert {k: v for k, v in split.items() if k.startswith("valid/")} == {
        "valid/patient64541/study1/view1_frontal.jpg": "test", "valid/patient64542/study1/view1_frontal.jpg": "test"}
    assert {v for k, v in split.items() if k.startswith("train/")} == {"train"}
    splits = make_splits(official, seed=0)
    assert set(splits[splits.index.str.startswith("valid/")]) == {"test"}
    assert set(splits[splits.index.str.startswith("train/")]) <= {"train", "val"}
    pooled = create_dataset("chexpert", root, valid="pool")
    assert len(pooled) == len(default) + 2 and set(pooled.table["csv"]) == {"train", "valid"} and "split" not in pooled.table
    (root / "CheXpert-v1.0-small" / "valid.csv").unlink()
    with pytest.raises(DatasetFormatError, match=r"valid.csv not found \(valid='test' asks for it\); pass valid='exclude'"):
        create_dataset("chexpert", root, valid="test")
    with pytest.raises(ValueError, match=r"valid must be one of \('exclude', 'test', 'pool'\)"):
        create_dataset("chexpert", root, valid=True)


def test_chexpert_race_unknown_codes_are_missing_not_non_white(tmp_path):
    ds = create_dataset("chexpert", make_chexpert(tmp_path), valid="pool")
    race = ds.table.drop_duplicates("patient_id").set_index("patient_id")["group:race"]
    assert race["patient00001"] == "White"
    for patient in ("patient00002", "patient00003", "patient00005"):  # Race and Ethnicity Unknown, Refused, Declines
        assert pd.isna(race[patient]), patient
    assert race["patient64541"] == "non-White" and race["patient64542"] == "non-White"  # Other, Asian
    assert build_data_card(ds).attributes["race"]["n_unknown"] == 3


def test_openpyxl_is_a_declared_dependency():
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    assert any(dep.split(">")[0].split("=")[0].strip() == "openpyxl" for dep in project["dependencies"])
    assert "openpyxl==" in (REPO / "requirements.lock").read_text()


def test_chexpert_sample_id_does_not_depend_on_the_root_folder(tmp_path):
    make_chexpert(tmp_path / "a")
    make_chexpert(tmp_path / "some" / "other_name")
    parent = create_dataset("chexpert", tmp_path / "a")
    inside = create_dataset("chexpert", tmp_path / "a" / "CheXpert-v1.0-small")
    renamed = create_dataset("chexpert", tmp_path / "some" / "other_name")
    assert ids(parent) == ids(inside) == ids(renamed)
    assert parent.table["path"].str.startswith("CheXpert-v1.0-small/train/").all()
    assert inside.table["path"].str.startswith("train/").all()
    assert parent.load_image(0).shape == inside.load_image(0).shape == (4, 4)


def test_age_bins_presets(tmp_path):
    root = make_chexpert(tmp_path)
    sid = "train/patient00002/study1/view1_frontal.jpg"  # age exactly 60
    assert column(create_dataset("chexpert", root), "group:age")[sid] == "<=60"  # MEDFAIR/FairDi: > 60 is old
    assert column(create_dataset("chexpert", root, age_bins="medfair"), "group:age")[sid] == "<=60"
    fairmedfm = create_dataset("chexpert", root, age_bins="fairmedfm")
    assert column(fairmedfm, "group:age")[sid] == ">=60" and fairmedfm.info["age_groups"].startswith("old if age >= 60")
    five = column(create_dataset("chexpert", root, age_bins="medfair_5bins"), "group:age")
    assert five[sid] == "60-79" and five["train/patient00005/study1/view1_frontal.jpg"] == "80+"
    assert five["train/patient00003/study1/view1_frontal.jpg"] == "40-59"
    cuts = column(create_dataset("chexpert", root, age_bins=[50, 70]), "group:age")
    assert cuts[sid] == "50-<70" and cuts["train/patient00003/study1/view1_frontal.jpg"] == "<50"
    regrouped = with_age_groups(create_dataset("chexpert", root), "40,60")
    assert column(regrouped, "group:age")[sid] == ">=60" and "cut at" in regrouped.info["age_groups"]
    with pytest.raises(ValueError, match=r"unknown age bins 'decades'; choose one of \['binary', 'medfair', 'fairmedfm'"):
        create_dataset("chexpert", root, age_bins="decades")


# --- NIH ChestX-ray14 -------------------------------------------------------------------------------

NIH_HEADER = ("Image Index,Finding Labels,Follow-up #,Patient ID,Patient Age,Patient Gender,View Position,"
              "OriginalImage[Width,Height],OriginalImagePixelSpacing[x,y]")
NIH_ROWS = [
    "00000001_001.png,Cardiomegaly|Emphysema,1,1,58,M,PA,2894,2729,0.143,0.143",
    "00000001_000.png,Cardiomegaly,0,1,57,M,PA,2682,2749,0.143,0.143",
    "00000002_000.png,No Finding,0,2,80,M,AP,2500,2048,0.171,0.171",
    "00000003_000.png,Hernia|Pneumonia,0,3,60,F,PA,2582,2991,0.143,0.143",
    "00000004_000.png,No Finding,0,4,61,?,AP,2048,2500,0.168,0.168",
    "00000005_000.png,No Finding,0,5,35,F,AP,2048,2500,0.168,0.168",
]


def make_nih(root, rows=NIH_ROWS, header=NIH_HEADER, folders=("images_001", "images_002")):
    root.mkdir(parents=True, exist_ok=True)
    (root / "Data_Entry_2017_v2020.csv").write_text("\n".join([header, *rows]) + "\n")
    for i, row in enumerate(NIH_ROWS):
        folder = ("images_001", "images_002")[i % 2]
        if folder in folders:
            path = root / folder / "images" / row.split(",")[0]
            path.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(np.zeros((4, 4), dtype=np.uint8)).save(path)
    (root / "test_list.txt").write_text("00000002_000.png\n00000003_000.png\n")
    return root


def test_nih_label_1_is_healthy_and_the_card_records_the_options(tmp_path):
    ds = create_dataset("nih_cxr14", make_nih(tmp_path))
    assert column(ds, "label") == {"00000001_001.png": 0, "00000001_000.png": 0, "00000002_000.png": 1,
                                   "00000003_000.png": 0, "00000005_000.png": 1}
    document = build_data_card(ds).to_dict()
    assert "healthy" in document["label"]["label_1"] and "not disease prevalence" in document["label"]["prevalence"]
    assert set(document["loader"]["options"]) == set(inspect.signature(load_nih_cxr14).parameters) - {"root"}
    assert document["loader"]["dropped_rows"] == {"unknown sex or age": 1}
    assert column(ds, "Follow-up #")["00000001_001.png"] == 1


def test_nih_unknown_finding_name_and_missing_column_are_errors(tmp_path):
    rows = NIH_ROWS[:2] + ["00000002_000.png,Pleural Thickening,0,2,80,M,AP,2500,2048,0.171,0.171"] + NIH_ROWS[3:]
    make_nih(tmp_path, rows=rows)
    with pytest.raises(DatasetFormatError, match=r"row 2: column 'Finding Labels' names 'Pleural Thickening', which is not one"):
        create_dataset("nih_cxr14", tmp_path)
    make_nih(tmp_path, header=NIH_HEADER.replace("View Position", "ViewPosition"))
    with pytest.raises(DatasetFormatError, match=r"missing column 'View Position' \(did you mean 'ViewPosition'\?\); available"):
        create_dataset("nih_cxr14", tmp_path)


def test_nih_drop_reports_rows_and_absent_folders(tmp_path):
    root = make_nih(tmp_path, folders=("images_001",))  # images_002 never unpacked
    with pytest.raises(DatasetFormatError, match=r"3 images not found .*absent archive folders: images_002, images_003"):
        create_dataset("nih_cxr14", root)
    with pytest.warns(UserWarning, match=r"dropped 3 of 5 rows whose image is not under .*absent archive folders: images_002"):
        ds = create_dataset("nih_cxr14", root, on_missing="drop")
    assert ids(ds) == ["00000001_001.png", "00000002_000.png"]
    assert ds.info["dropped_rows"]["image file absent (on_missing='drop')"] == 3
    assert ds.info["absent_image_folders"] == [f"images_{i:03d}" for i in range(2, 13)]
    markdown = build_data_card(ds).to_markdown()
    assert "3 (image file absent (on_missing='drop'))" in markdown and "Absent image folders: images_002" in markdown


@pytest.mark.parametrize("on_missing", ["error", "drop"])
def test_nih_without_any_image_folder_says_the_images_are_missing(tmp_path, on_missing):
    root = make_nih(tmp_path, folders=())
    with pytest.raises(DatasetFormatError, match=r"images are missing: no images/ or images_001/images .*check_files=False") as error:
        create_dataset("nih_cxr14", root, on_missing=on_missing)
    assert "sex or age" not in str(error.value)
    (root / "images_001").mkdir()  # an empty folder: every image missing
    expected = r"5 images not found .*images_001" if on_missing == "error" else r"none of the 5 images .*images_001.*images are missing"
    with pytest.raises(DatasetFormatError, match=expected):
        create_dataset("nih_cxr14", root, on_missing=on_missing)


def test_nih_card_from_the_csv_alone(tmp_path):
    root = make_nih(tmp_path, folders=())
    ds = create_dataset("nih_cxr14", root, check_files=False)
    assert len(ds) == 5 and ds.table["path"].tolist()[0] == "images/00000001_001.png"
    assert "not checked" in ds.info["images"]
    assert build_data_card(ds).n_positive == 2


def test_nih_views_one_per_patient_and_age_bins(tmp_path):
    root = make_nih(tmp_path)
    assert ids(create_dataset("nih_cxr14", root, views="AP")) == ["00000002_000.png", "00000005_000.png"]
    assert ids(create_dataset("nih_cxr14", root, views="pa")) == ["00000001_000.png", "00000001_001.png", "00000003_000.png"]
    assert len(create_dataset("nih_cxr14", root, views="frontal")) == 5
    with pytest.raises(DatasetFormatError, match=r"no rows left after the loader's filters \(1 unknown sex or age, 5 view not in"):
        create_dataset("nih_cxr14", root, views="lateral")
    first = create_dataset("nih_cxr14", root, one_per_patient=True)
    assert ids(first) == ["00000001_000.png", "00000002_000.png", "00000003_000.png", "00000005_000.png"]  # lowest Follow-up #
    assert first.info["dropped_rows"]["not the patient's first image (one_per_patient)"] == 1
    age = column(create_dataset("nih_cxr14", root, age_bins="fairmedfm"), "group:age")
    assert age["00000003_000.png"] == ">=60" and age["00000005_000.png"] == "<60"
    assert column(create_dataset("nih_cxr14", root), "group:age")["00000003_000.png"] == "<=60"


def test_data_card_cli_on_nih_table_alone(tmp_path):
    root = make_nih(tmp_path / "nih", folders=())
    out = tmp_path / "card"
    result = CliRunner().invoke(app, ["data", "card", "nih_cxr14", "--root", str(root), "--option", "check_files=false",
                                      "--option", "views=PA", "--age-bins", "medfair_5bins", "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert "healthy" in result.output
    document = json.loads((out / "card.json").read_text())
    assert document["n_samples"] == 3 and document["loader"]["options"]["views"] == "PA"
    assert {g["group"] for g in document["groups"] if g["attribute"] == "age"} == {"40-59", "60-79"}
    assert document["loader"]["age_groups"].startswith("MEDFAIR's 5 bins")
    assert document["loader"]["options"]["age_bins"] == "medfair_5bins"
    bad = CliRunner().invoke(app, ["data", "card", "nih_cxr14", "--root", str(root), "--option", "frontal_only=true"])
    assert bad.exit_code == 2 and "takes the options" in bad.output and "views" in bad.output
    no_images = CliRunner().invoke(app, ["data", "card", "nih_cxr14", "--root", str(root)])
    assert no_images.exit_code == 2 and "images are missing" in no_images.output


def test_nih_original_2017_table_with_its_trailing_comma(tmp_path):
    root = make_nih(tmp_path)
    (root / "Data_Entry_2017_v2020.csv").unlink()
    # the 2017 table ends every line with a comma (an unnamed 12th column) and wrote ages as "058Y"
    rows = [row.replace(",58,", ",058Y,") + "," for row in NIH_ROWS]
    (root / "Data_Entry_2017.csv").write_text("\n".join([NIH_HEADER + ",", *rows]) + "\n")
    ds = create_dataset("nih_cxr14", root)
    assert len(ds) == 5 and column(ds, "age")["00000001_001.png"] == 58


def test_race_codes_of_the_chexpert_demo_table():
    from medequity.data.attributes import race_groups

    raw = ["White", "White, non-Hispanic", "Black or African American", "Asian, non-Hispanic", "Other", "Other, Hispanic",
           "Unknown", "Race and Ethnicity Unknown", "Patient Refused", "Declines to State", "Declined", None]
    assert [None if pd.isna(v) else v for v in race_groups(raw)] == ["White"] * 2 + ["non-White"] * 4 + [None] * 6


def test_age_groups_need_a_raw_age_column():
    from medequity.data import MedicalDataset

    ds = MedicalDataset("toy", pd.DataFrame({"sample_id": ["a"], "patient_id": ["p"], "label": [1], "path": ["a.png"]}))
    with pytest.raises(KeyError, match=r"dataset 'toy' has no raw 'age' column to group; columns: \['sample_id'"):
        with_age_groups(ds, "medfair")
    with pytest.raises(ValueError, match="at least one cut point"):
        with_age_groups(ds.__class__("toy", ds.table.assign(age=[50])), [])
