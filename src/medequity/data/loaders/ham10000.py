"""HAM10000 (Tschandl et al. 2018), read from the Harvard Dataverse layout.

Layout: ``HAM10000_metadata.csv`` (lesion_id, image_id, dx, dx_type, age, sex, localization) and
``<image_id>.jpg`` in ``HAM10000_images_part_1/`` and ``HAM10000_images_part_2/`` (or one folder
``HAM10000_images/``, ``images/`` or the root). Optional lesion masks
``<image_id>_segmentation.png`` (``HAM10000_segmentations_lesion_tschandl/``, the Dataverse
archive ``HAM10000_segmentations_lesion_tschandl.zip`` unpacked beside the images) with
``masks=True``: a :class:`SegmentationDataset` whose masks are class maps (0 background, 1 lesion;
stored 0/255, any value > 0 is lesion).

Registered twice: ``"ham10000"`` (classification) and ``"ham10000_seg"`` (FairMedFM B.2 segmentation:
masks on, every image with a mask kept, 10,015; unknown sex or age stay in the table as <NA>
groups, excluded from that attribute only; age > 60 is old).

Convention (MEDFAIR / FairTune A.4 / FairDi §7.2, after Maron et al. 2019): label 1 = malignant
= dx in {akiec, mel}; benign = {bcc, bkl, df, nv, vasc} (``malignant=`` changes it). Rows with
unknown sex or missing age are dropped (9,948 images remain), as the benchmarks do. Sex is the
csv's "male"/"female"; age groups use age > 60 (FairDi), ``age_rule=">="`` for FairMedFM.
Patient id = lesion_id: several images show the same lesion, so splits group by it.

Known traps avoided: "unknown" sex is never mapped to female (FairMedFM's ``sex != "M"``);
images of one lesion never straddle splits; bcc is benign in this convention even though it is
a carcinoma - it is a documented choice, configurable.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from medequity.data.attributes import add_group_columns
from medequity.data.base import GROUP_PREFIX, MedicalDataset, register_dataset
from medequity.data.loaders._common import find_file, image_paths_from_ids, index_images
from medequity.data.loaders._seg import SegmentationDataset, segmentation_info
from medequity.data.table import finish_table, read_table, require_columns
from medequity.data.zero_shot import derm_prompts

METADATA = "HAM10000_metadata.csv"
IMAGE_FOLDERS = ("HAM10000_images_part_1", "HAM10000_images_part_2", "HAM10000_images", "images", ".")
MASK_FOLDERS = ("HAM10000_segmentations_lesion_tschandl", "HAM10000_segmentations", "masks")
COLUMNS = ("lesion_id", "image_id", "dx", "age", "sex")
MALIGNANT = ("akiec", "mel")
CLASSES = ["background", "lesion"]


@register_dataset("ham10000")
def load_ham10000(
    root: str | Path,
    *,
    malignant: Iterable[str] = MALIGNANT,
    drop_missing: bool = True,
    age_threshold: float = 60,
    age_rule: str = ">",
    masks: bool = False,
    on_missing: str = "error",
    name: str = "ham10000",
) -> MedicalDataset:
    root = Path(root)
    source_path = find_file(root, [METADATA], "HAM10000 metadata")
    source = str(source_path)
    meta = read_table(source_path)
    require_columns(meta, COLUMNS, source)

    if drop_missing:
        known_sex = meta["sex"].astype("string").str.lower().isin(["male", "female"])
        meta = meta[known_sex & meta["age"].notna()]

    index = index_images(root, IMAGE_FOLDERS, (".jpg", ".jpeg"))
    paths, present = image_paths_from_ids(
        root, meta["image_id"], index, source, "image_id", f"looked in {', '.join(IMAGE_FOLDERS)}", on_missing
    )
    meta, paths = meta[present], paths[present]

    malignant = {m.lower() for m in malignant}
    table = meta.assign(
        sample_id=meta["image_id"].astype(str),
        patient_id=meta["lesion_id"].astype(str),
        label=meta["dx"].astype("string").str.lower().isin(malignant).astype(int),
        path=paths,
    )
    task = "binary"
    if masks:
        mask_index = index_images(root, MASK_FOLDERS, (".png",))
        mask_ids = table["image_id"].astype(str) + "_segmentation"
        table["mask_path"], _ = image_paths_from_ids(
            root, mask_ids, mask_index, source, "image_id", f"masks in {', '.join(MASK_FOLDERS)}"
        )
        task = "segmentation"
    table = add_group_columns(table, {"sex": None, "age": {"threshold": age_threshold, "rule": age_rule}})
    columns = ["sample_id", "patient_id", "label", "path", *(["mask_path"] if masks else []),
               "sex", "age", "dx", "dx_type", "localization"]
    columns = [c for c in columns if c in table.columns] + [GROUP_PREFIX + "sex", GROUP_PREFIX + "age"]
    info = {
        "source": source,
        "label_rule": f"dx in {sorted(malignant)} (malignant) = 1",
        "convention": "MEDFAIR/FairTune/FairDi",
        "patient_id": "lesion_id",
    }
    if masks:
        return SegmentationDataset(
            name=name, table=finish_table(table[columns]), root=root, task=task,
            info=segmentation_info(CLASSES, "binary", **info),
        )
    return MedicalDataset(name=name, table=finish_table(table[columns]), root=root, task=task,
                          info={**info, "zero_shot": derm_prompts()})


@register_dataset("ham10000_seg")
def load_ham10000_seg(root: str | Path, *, drop_missing: bool = False, age_rule: str = ">", **kwargs) -> SegmentationDataset:
    """HAM10000 lesion segmentation (FairMedFM B.2): masks on, rows with unknown sex/age kept."""
    return load_ham10000(root, masks=True, drop_missing=drop_missing, age_rule=age_rule, name="ham10000_seg", **kwargs)
