"""Fitzpatrick17k (Groh et al. 2021), read from the project's csv and downloaded images.

Layout: ``fitzpatrick17k.csv`` (md5hash, fitzpatrick_scale, fitzpatrick_centaur, label,
nine_partition_label, three_partition_label, qc, url, url_alphanum) and ``<md5hash>.jpg`` in the
root or in ``images/``, ``data/finalfitz17k/`` or ``finalfitz17k/``.

Convention (MEDFAIR; FairDi §7.1-7.2; FairTune A.4): label 1 = three_partition_label ==
"malignant" (benign and non-neoplastic are 0). Skin type: MEDFAIR code = fitzpatrick_scale - 1,
grouped code <= 2 vs > 2, i.e. types I-III vs IV-VI ("0 to 2" in FairDi is this 0-based code);
scale -1 (unknown) is excluded - dropped by default (16,012 images remain, FairDi Table 5) or kept
with group <NA> if ``drop_unknown=False``.

Known traps avoided: FairDi's "0 to 2" is not the 1-6 Fitzpatrick scale (types I-III, not I-II);
-1 is never coded as a skin type. The dataset has no patient ids, so each image is its own
patient (md5hash) - near-duplicate images of one patient can still fall in different splits; it
is recorded in ``info``. Images whose URL died are common: ``on_missing="drop"`` skips them.
"""

from __future__ import annotations

from pathlib import Path

from medequity.data.attributes import add_group_columns, medfair_skin_type
from medequity.data.base import GROUP_PREFIX, MedicalDataset, register_dataset
from medequity.data.loaders._common import find_file, image_paths_from_ids, index_images
from medequity.data.table import finish_table, read_table, require_columns
from medequity.data.zero_shot import derm_prompts

METADATA = "fitzpatrick17k.csv"
IMAGE_FOLDERS = (".", "images", "data/finalfitz17k", "finalfitz17k")
COLUMNS = ("md5hash", "fitzpatrick_scale", "three_partition_label")


@register_dataset("fitzpatrick17k")
def load_fitzpatrick17k(root: str | Path, *, drop_unknown: bool = True, on_missing: str = "error") -> MedicalDataset:
    root = Path(root)
    source_path = find_file(root, [METADATA, f"data/{METADATA}"], "Fitzpatrick17k metadata")
    source = str(source_path)
    meta = read_table(source_path)
    require_columns(meta, COLUMNS, source)

    # the csv's own "label" column is the disease name; keep it as label_name
    meta = meta.rename(columns={"label": "label_name"})
    meta = meta.assign(skin_type=medfair_skin_type(meta["fitzpatrick_scale"]))
    if drop_unknown:
        meta = meta[meta["skin_type"].notna()]
    index = index_images(root, IMAGE_FOLDERS, (".jpg", ".jpeg", ".png"))
    paths, present = image_paths_from_ids(
        root, meta["md5hash"], index, source, "md5hash", f"looked in {', '.join(IMAGE_FOLDERS)}", on_missing
    )
    meta, paths = meta[present], paths[present]
    table = meta.assign(
        sample_id=meta["md5hash"].astype(str),
        patient_id=meta["md5hash"].astype(str),
        label=(meta["three_partition_label"].astype("string").str.strip().str.lower() == "malignant").astype(int),
        path=paths,
    )
    table = add_group_columns(table, {"skin_type": {"kind": "skin_type", "column": "fitzpatrick_scale"}})
    keep = ["sample_id", "patient_id", "label", "path", "fitzpatrick_scale", "skin_type",
            "three_partition_label", "nine_partition_label", "label_name", GROUP_PREFIX + "skin_type"]
    return MedicalDataset(
        name="fitzpatrick17k",
        table=finish_table(table[[c for c in keep if c in table.columns]]),
        root=root,
        info={
            "source": source,
            "label_rule": "three_partition_label == 'malignant'",
            "zero_shot": derm_prompts("HAM10000's wording in FairMedFM (Fitzpatrick17k is not in it)"),
            "convention": "MEDFAIR skin_type = fitzpatrick_scale - 1; I-III vs IV-VI",
            "patient_id": "none in the dataset: md5hash (each image its own patient)",
        },
    )
