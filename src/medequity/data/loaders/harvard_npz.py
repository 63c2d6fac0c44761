"""Harvard Ophthalmology AI Lab datasets: one ``.npz`` per subject.

Harvard-GF3300 (Luo et al. 2023), FairVLMed10k (FairCLIP, Luo et al. 2024) and Harvard-FairSeg
(Tian et al. 2024). Layout: ``data_XXXXX.npz`` files, in split folders when distributed that way
(``Training/``, ``Validation/``, ``Test``/``Testing/``; also ``train/val/test``), which become the
official ``split``. Each npz holds the image and the subject's attributes; the keys present are
read (never with pickle), images lazily on :meth:`load_image`.

Code maps, as the datasets' READMEs document them (FairSeg, FairCLIP, Harvard-GF):

==================================  ====================================================================
key                                 codes
==================================  ====================================================================
``gender`` / ``male``               0 female, 1 male
``race``                            0 Asian, 1 Black (or African American), 2 White (or Caucasian)
``ethnicity`` / ``hispanic``        0 non-Hispanic, 1 Hispanic, -1 unknown
``language``                        0 English, 1 Spanish, 2 Other, -1 unknown
``maritalstatus``                   0 Married or Partnered, 1 Single, 2 Divorced, 3 Widowed,
                                    4 Legally Separated, -1 unknown
``age``                             years
``glaucoma``                        0 non-glaucoma, 1 glaucoma (the label)
``slo_fundus``/``fundus_slo``/      image (FairSeg, FairVLMed10k / GF3300 RNFLT map)
``rnflt``
``disc_cup_mask``                   FairSeg mask as stored (0 background; rim and cup as negative codes)
==================================  ====================================================================

String values (some releases and the ``data_summary.csv`` carry "female"/"male", "white") are read
as words with the same coding. Groups (FairMedFM D.1.2 / B.2, FairDi §7.1): sex, age > 60, race
White vs non-White (``race_scheme="raw"`` for Asian/Black/White as in FairSeg), ethnicity,
language English vs non-English, marital status categories. -1 is unknown (<NA>), never a group.

Known traps avoided: FairMedFM codes female as 1 for classification but 0 for segmentation; here
female is always "female", read from the dataset's own 0 = female code. GF3300 names the sex key
``male``, the others ``gender``: both are read with the same map. FairSeg has no classification
label: its ``label`` is <NA> and the task is segmentation.

Segmentation (``"fairseg"``, FairMedFM B.2 / FairSeg code, SEGMENTATION.md):

- masks: ``disc_cup_mask`` stores 0 background, -1 rim, -2 cup; :meth:`NpzDataset.load_mask`
  returns class indices 0 background, 1 rim, 2 cup (``info["classes"]``); masks already coded
  1/2 are read the same way, any other value is an error naming the file;
- race: the released npz files code race 2/3/7 (FairSeg's code maps them to 0/1/2) while the
  README says 0/1/2. ``race_codes="auto"`` reads 2/3/7 as Asian/Black/White when any file holds
  a 3 or a 7, else the README's 0/1/2 (``"fairseg"``/``"readme"`` force one; the choice is in
  ``info["race_coding"]``). Groups: Asian/Black/White (``race_scheme="raw"``);
- age: FairSeg stores age in days; ``age_unit="auto"`` reads ages as days when their median is
  over 150 (no adult cohort has a median age of 150 years) and converts to years (raw days kept in
  ``age_days``), then splits at 60 years (old: age > 60);
- language English/Spanish/Other and marital status in the five B.2 categories;
- all-zero masks (some downloaded files have them) are found while the files are scanned: listed
  in ``info["empty_masks"]``, flagged in the ``mask_empty`` column, warned about, and dropped with
  ``drop_empty_masks=True``.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from medequity.data.attributes import (
    HARVARD_ETHNICITY_CODES,
    HARVARD_LANGUAGE_CODES,
    HARVARD_MARITAL_CODES,
    HARVARD_RACE_CODES,
    HARVARD_SEX_CODES,
    add_group_columns,
)
from medequity.data.base import GROUP_PREFIX, DatasetFormatError, MedicalDataset, register_dataset, safe_join
from medequity.data.loaders._seg import encode_mask
from medequity.data.table import SPLIT_ALIASES, finish_table
from medequity.data.zero_shot import FUNDUS_TEMPLATE, HARVARD_TEMPLATES, fundus_prompts

# attribute -> (npz keys that may hold it, code map)
ATTRIBUTE_KEYS: dict[str, tuple[tuple[str, ...], dict[int, str] | None]] = {
    "sex": (("gender", "male", "sex"), HARVARD_SEX_CODES),
    "age": (("age",), None),
    "race": (("race",), HARVARD_RACE_CODES),
    "ethnicity": (("ethnicity", "hispanic"), HARVARD_ETHNICITY_CODES),
    "language": (("language",), HARVARD_LANGUAGE_CODES),
    "marital_status": (("maritalstatus", "marital_status", "marital status", "marriagestatus"), HARVARD_MARITAL_CODES),
}
IMAGE_KEYS = ("slo_fundus", "fundus_slo", "rnflt")
MASK_KEY = "disc_cup_mask"
LABEL_KEY = "glaucoma"
FAIRSEG_CLASSES = ["background", "rim", "cup"]
FAIRSEG_MASK_VALUES = {0: 0, -1: 1, -2: 2, 1: 1, 2: 2}  # stored -1 rim / -2 cup; 1/2 if already coded
FAIRSEG_RACE_CODES = {2: "Asian", 3: "Black", 7: "White"}  # the npz files' codes (FairSeg code: -> 0/1/2)


class NpzDataset(MedicalDataset):
    """A :class:`MedicalDataset` whose rows are ``.npz`` files; image and mask are arrays in them."""

    def _array(self, index: int, key: str) -> np.ndarray:
        path = self.image_path(index)
        with np.load(path, allow_pickle=False) as data:
            if key not in data.files:
                raise DatasetFormatError(f"{path}: no key {key!r}; keys: {sorted(data.files)}")
            return np.asarray(data[key])

    def load_image(self, index: int) -> np.ndarray:
        return self._array(index, self.info["image_key"])

    def load_mask(self, index: int) -> np.ndarray:
        raw = self._array(index, MASK_KEY)
        if self.info.get("classes") is None:
            return raw
        where = f"{self.image_path(index)} key {MASK_KEY!r}"
        return encode_mask(raw, self.info.get("mask_values"), self.info["classes"], where=where)


def _scalar(value: np.ndarray) -> Any:
    item = value.item() if value.size == 1 else None
    if isinstance(item, bytes):
        item = item.decode()
    return item


def _decode(value: Any, codes: dict[int, str] | None) -> Any:
    """Numeric code -> word through ``codes`` (unknown code -> <NA>); words pass through."""
    if value is None:
        return pd.NA
    if isinstance(value, str):
        text = value.strip()
        try:
            value = float(text)
        except ValueError:
            return text
    if codes is None:
        return value
    number = float(value)
    return codes.get(int(number), pd.NA) if number.is_integer() else pd.NA


def _split_of(relative: Path) -> Any:
    for part in relative.parts[:-1]:
        if part.lower() in SPLIT_ALIASES:
            return SPLIT_ALIASES[part.lower()]
    return pd.NA


def load_harvard_npz(
    root: str | Path,
    *,
    name: str = "harvard_npz",
    image_key: str | None = None,
    age_threshold: float = 60,
    age_rule: str = ">",
    race_scheme: str = "white_vs_nonwhite",
    language_scheme: str = "english_vs_other",
    race_codes: str = "readme",
    age_unit: str = "years",
    check_masks: bool = False,
    drop_empty_masks: bool = False,
) -> NpzDataset:
    if race_codes not in ("readme", "fairseg", "auto"):
        raise ValueError(f"race_codes must be 'readme', 'fairseg' or 'auto', got {race_codes!r}")
    if age_unit not in ("years", "days", "auto"):
        raise ValueError(f"age_unit must be 'years', 'days' or 'auto', got {age_unit!r}")
    root = Path(root)
    files = sorted((p for p in root.rglob("*.npz") if p.is_file()), key=lambda p: (p.name, str(p)))
    if not files:
        raise DatasetFormatError(f"no .npz files under {root} (expected data_XXXXX.npz, e.g. in Training/)")
    rows = []
    image_keys: set[str] = set()
    has_mask = has_label = True
    for path in files:
        relative = path.relative_to(root)
        safe_join(root, relative, where=str(relative))  # a symlink leading out of root is refused
        try:
            with np.load(path, allow_pickle=False) as data:
                keys = set(data.files)
                row: dict[str, Any] = {"path": relative.as_posix(), "split": _split_of(relative)}
                for attribute, (aliases, codes) in ATTRIBUTE_KEYS.items():
                    key = next((k for k in aliases if k in keys), None)
                    if key is not None:
                        # race codes are decoded once the whole dataset is seen (README 0/1/2 or npz 2/3/7)
                        row[attribute] = _decode(_scalar(data[key]), None if attribute == "race" else codes)
                row["label"] = _scalar(data[LABEL_KEY]) if LABEL_KEY in keys else pd.NA
                if check_masks and MASK_KEY in keys:
                    row["mask_empty"] = not np.any(data[MASK_KEY])
        except (OSError, ValueError) as exc:
            raise DatasetFormatError(f"cannot read {path}: {exc}") from None
        chosen = image_key or next((k for k in IMAGE_KEYS if k in keys), None)
        if chosen is None or chosen not in keys:
            wanted = image_key or " or ".join(IMAGE_KEYS)
            raise DatasetFormatError(f"{path}: no image key {wanted}; keys: {sorted(keys)}")
        image_keys.add(chosen)
        has_mask &= MASK_KEY in keys
        has_label &= LABEL_KEY in keys
        rows.append(row)
    if len(image_keys) > 1:
        raise DatasetFormatError(f"{root}: files use different image keys {sorted(image_keys)}; pass image_key=")

    table = pd.DataFrame(rows)
    race_coding = None
    if "race" in table.columns:
        table["race"], race_coding = _decode_race(table["race"], race_codes)
    if "age" in table.columns and age_unit != "years":
        ages = pd.to_numeric(table["age"], errors="coerce")
        in_days = age_unit == "days" or (ages.notna().any() and float(ages.median()) > 150)
        if in_days:
            table["age_days"] = ages
            table["age"] = ages / 365.25
        age_unit = "days" if in_days else "years"
    stems = table["path"].str.rsplit("/", n=1).str[-1].str.removesuffix(".npz")
    table["sample_id"] = stems if not stems.duplicated().any() else table["path"].str.removesuffix(".npz")
    table["patient_id"] = table["sample_id"]  # one subject per file (dataset documentation)
    if has_label:
        label = pd.to_numeric(table["label"], errors="coerce")
        bad = ~label.isin([0, 1])
        if bad.any():
            row = int(np.flatnonzero(bad.to_numpy())[0])
            raise DatasetFormatError(f"{root / table.at[row, 'path']}: key 'glaucoma' is {table.at[row, 'label']}, not 0 or 1")
        table["label"] = label.astype("Int64")
    else:
        table["label"] = pd.Series(pd.NA, index=table.index, dtype="Int64")
    if table["split"].isna().all():
        table = table.drop(columns="split")
    empty: list[str] = []
    if "mask_empty" in table.columns:
        table["mask_empty"] = table["mask_empty"].fillna(False).astype(bool)
        empty = table.loc[table["mask_empty"], "sample_id"].tolist()
        if empty:
            action = "dropped (drop_empty_masks=True)" if drop_empty_masks else "kept; drop_empty_masks=True drops them"
            warnings.warn(
                f"{root}: {len(empty)} of {len(table)} files have an all-zero {MASK_KEY!r} "
                f"(e.g. {', '.join(empty[:5])}); {action}",
                stacklevel=2,
            )
            if drop_empty_masks:
                table = table[~table["mask_empty"]].reset_index(drop=True)

    attributes: dict[str, Any] = {}
    options = {
        "sex": {}, "age": {"threshold": age_threshold, "rule": age_rule}, "race": {"scheme": race_scheme},
        "ethnicity": {}, "language": {"scheme": language_scheme}, "marital_status": {},
    }
    for attribute, kwargs in options.items():
        if attribute in table.columns:
            attributes[attribute] = kwargs
    table = add_group_columns(table, attributes)
    front = ["sample_id", "patient_id", "label", "path", *(["split"] if "split" in table.columns else [])]
    front += [c for c in ATTRIBUTE_KEYS if c in table.columns]
    front += [c for c in ("age_days", "mask_empty") if c in table.columns]
    rest = [c for c in table.columns if c.startswith(GROUP_PREFIX)]
    chosen_key = image_keys.pop()
    segmentation = has_mask and not has_label
    info: dict[str, Any] = {
        "image_key": chosen_key,
        "mask_key": MASK_KEY if has_mask else None,
        "label_rule": "glaucoma == 1" if has_label else "no classification label (segmentation)",
        "convention": "Harvard README code maps; FairMedFM/FairDi groups",
        "patient_id": "one subject per npz file",
    }
    if has_label:
        info["zero_shot"] = fundus_prompts(template=HARVARD_TEMPLATES.get(name, FUNDUS_TEMPLATE))
    if race_coding is not None:
        info["race_coding"] = race_coding
    if age_unit != "years":
        info["age_unit"] = age_unit
    if segmentation:
        info.update(classes=list(FAIRSEG_CLASSES), mask_values=dict(FAIRSEG_MASK_VALUES), mask_other="error")
    if check_masks:
        info["empty_masks"] = empty
    return NpzDataset(
        name=name,
        table=finish_table(table[front + rest]),
        root=root,
        task="segmentation" if segmentation else "binary",
        info=info,
    )


def _decode_race(raw: pd.Series, race_codes: str) -> tuple[pd.Series, str]:
    """Race words from the raw values: the README's 0/1/2 or the npz files' 2/3/7 (see docstring)."""
    numbers = pd.to_numeric(raw, errors="coerce")
    if race_codes == "auto":
        race_codes = "fairseg" if numbers.isin([3, 7]).any() else "readme"
    codes = FAIRSEG_RACE_CODES if race_codes == "fairseg" else HARVARD_RACE_CODES
    decoded = pd.Series([pd.NA if pd.isna(v) else _decode(v, codes) for v in raw], index=raw.index, dtype=object)
    return decoded, race_codes


@register_dataset("harvard_gf3300")
def load_harvard_gf3300(root: str | Path, **kwargs: Any) -> NpzDataset:
    """Harvard-GF3300: RNFLT maps (``rnflt``), glaucoma label, ``male`` sex key."""
    return load_harvard_npz(root, name="harvard_gf3300", **kwargs)


@register_dataset("fairvlmed10k")
def load_fairvlmed10k(root: str | Path, **kwargs: Any) -> NpzDataset:
    """FairVLMed10k: SLO fundus (``slo_fundus``/``fundus_slo``), glaucoma label, notes ignored."""
    return load_harvard_npz(root, name="fairvlmed10k", **kwargs)


@register_dataset("fairseg")
def load_fairseg(root: str | Path, **kwargs: Any) -> NpzDataset:
    """Harvard-FairSeg: SLO fundus and ``disc_cup_mask`` (segmentation, classes background/rim/cup).

    FairMedFM B.2 groups: race Asian/Black/White, language English/Spanish/Other, marital status
    categories, ethnicity, sex, age > 60 years (age stored in days); all-zero masks reported.
    """
    options = {
        "race_scheme": "raw", "language_scheme": "raw", "race_codes": "auto", "age_unit": "auto", "check_masks": True,
    }
    return load_harvard_npz(root, name="fairseg", **{**options, **kwargs})
