"""Patient-level, label × group stratified train/val/test splits, seeded and saved to a file.

DATASETS.md ("Splits"; FairDi §6, FairTune A.4): random 80/10/10 by patient unless the dataset
has an official split; PAPILA 70/10/20 (its loader puts the ratios in ``info["split_ratios"]``).
Stratified by label × group where possible, seeded, and saved so every method sees the same split.

How: scikit-learn's :class:`~sklearn.model_selection.StratifiedGroupKFold` cuts the patients into
``k`` folds (k = the smallest number of folds that expresses the ratios, e.g. 10 for 80/10/10 and
70/10/20) keeping each fold's label × group mix close to the whole; whole folds then go to train,
val and test. Groups (patients) never straddle folds, so no patient is in two splits. When there
are fewer patients than folds, or no stratum has k samples, patients are shuffled and cut by the
ratios directly (hand-written: StratifiedGroupKFold refuses to make more folds than that).

Official splits are reused: train/val/test as given; a dataset with only train and test (NIH
ChestX-ray14) gets val carved out of train by patient the same way.

File format (JSON, or CSV with a ``# membership_sha256=`` first line): sample_id → split and a
SHA-256 hash of the sorted sample ids, so a split file made for another version of the data is
refused rather than silently misapplied.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
import warnings
from collections.abc import Sequence
from dataclasses import replace
from fractions import Fraction
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.model_selection import StratifiedGroupKFold

from medequity.data.base import GROUP_PREFIX, DatasetFormatError, MedicalDataset

SPLITS = ("train", "val", "test")
DEFAULT_RATIOS = (0.8, 0.1, 0.1)
MAX_FOLDS = 20
FORMAT = "medequity-splits/1"


def split_ratios(dataset: MedicalDataset) -> tuple[float, float, float]:
    """The dataset's split ratios: its own (PAPILA 70/10/20) or the default 80/10/10."""
    return tuple(dataset.info.get("split_ratios", DEFAULT_RATIOS))  # type: ignore[return-value]


def _fold_counts(ratios: Sequence[float]) -> tuple[int, list[int]]:
    """Smallest k ≤ MAX_FOLDS with ratios × k whole numbers: (0.8, 0.1, 0.1) → 10 folds, 8/1/1."""
    if len(ratios) != 3 or any(r < 0 for r in ratios) or not np.isclose(sum(ratios), 1.0):
        raise ValueError(f"ratios must be three non-negative numbers summing to 1, got {tuple(ratios)}")
    fractions = [Fraction(r).limit_denominator(MAX_FOLDS) for r in ratios]
    k = int(np.lcm.reduce([f.denominator for f in fractions]))
    if k > MAX_FOLDS:
        k = MAX_FOLDS
    counts = [round(float(r) * k) for r in ratios]
    counts[0] = k - counts[1] - counts[2]
    return k, counts


def strata(table: pd.DataFrame, attributes: Sequence[str] | None = None) -> pd.Series:
    """The stratification key of each row: label × every group attribute (unknown is its own level)."""
    if attributes is None:
        attributes = [c[len(GROUP_PREFIX):] for c in table.columns if c.startswith(GROUP_PREFIX) and "&" not in c]
    key = table["label"].astype("string").fillna("NA")
    for attribute in attributes:
        key = key + "|" + table[GROUP_PREFIX + attribute].astype("string").fillna("NA")
    return key


def _assign_patients(
    patients: np.ndarray, key: pd.Series, ratios: Sequence[float], seed: int
) -> np.ndarray:
    """Split labels ("train"/"val"/"test") for rows, whole patients at a time."""
    k, counts = _fold_counts(ratios)
    unique_patients = pd.unique(patients)
    rng = np.random.default_rng(seed)
    codes = pd.factorize(key)[0]
    if len(unique_patients) < k or np.bincount(codes).max() < k:
        # Too few patients (or samples per stratum) for k folds, which StratifiedGroupKFold
        # refuses: shuffle the patients and cut them by the ratios.
        order = rng.permutation(len(unique_patients))
        bounds = np.round(np.cumsum(ratios)[:2] * len(unique_patients)).astype(int)
        patient_split = np.empty(len(unique_patients), dtype=object)
        for rank, position in enumerate(order):
            patient_split[position] = SPLITS[int(np.searchsorted(bounds, rank, side="right"))]
        lookup = dict(zip(unique_patients, patient_split))
        return np.array([lookup[p] for p in patients], dtype=object)

    # Shuffle the fold order too, so which folds become val/test depends on the seed only.
    folds = np.empty(len(patients), dtype=np.int64)
    with warnings.catch_warnings():
        # "The least populated class has only n members": rare strata are spread as well as possible.
        warnings.simplefilter("ignore", UserWarning)
        splitter = StratifiedGroupKFold(n_splits=k, shuffle=True, random_state=int(rng.integers(2**31 - 1)))
        for fold, (_, test_rows) in enumerate(splitter.split(np.zeros(len(patients)), codes, groups=patients)):
            folds[test_rows] = fold
    fold_to_split = np.array(["train"] * counts[0] + ["val"] * counts[1] + ["test"] * counts[2], dtype=object)
    fold_to_split = fold_to_split[rng.permutation(k)]
    return fold_to_split[folds]


def make_splits(
    dataset: MedicalDataset,
    ratios: Sequence[float] | None = None,
    seed: int = 0,
    attributes: Sequence[str] | None = None,
    use_official: bool = True,
) -> pd.Series:
    """A split name per sample (Series indexed by sample_id), patient-level and stratified.

    ``attributes`` picks the group columns to stratify by (default: all, with the label);
    ``ratios`` defaults to :func:`split_ratios`.
    """
    table = dataset.table
    ratios = tuple(ratios) if ratios is not None else split_ratios(dataset)
    patients = table["patient_id"].astype(str).to_numpy()
    key = strata(table, attributes)
    if use_official and "split" in table.columns and table["split"].notna().all():
        result = _reuse_official(table, patients, key, ratios, seed)
    else:
        result = _assign_patients(patients, key, ratios, seed)
    splits = pd.Series(result, index=pd.Index(table["sample_id"].astype(str), name="sample_id"), name="split", dtype="string")
    check_no_patient_overlap(table["patient_id"], splits)
    return splits


def _reuse_official(table: pd.DataFrame, patients: np.ndarray, key: pd.Series, ratios: Sequence[float], seed: int) -> np.ndarray:
    official = table["split"].astype(str).to_numpy().copy()
    present = set(official)
    unknown = present - set(SPLITS)
    if unknown:
        raise DatasetFormatError(f"official split has names {sorted(unknown)}; expected {SPLITS}")
    if present == set(SPLITS):
        return official
    if present == {"train", "test"}:
        # Carve val out of train by patient, with val's share of train+val as its ratio.
        train = official == "train"
        share = ratios[1] / (ratios[0] + ratios[1])
        inner = _assign_patients(patients[train], key[train].reset_index(drop=True), (1 - share, share, 0.0), seed)
        official[train] = inner
        return official
    raise DatasetFormatError(f"official split has only {sorted(present)}; pass use_official=False to make a new one")


def check_no_patient_overlap(patient_ids: pd.Series, splits: pd.Series) -> None:
    """Raise if any patient has samples in two splits."""
    frame = pd.DataFrame({"patient": patient_ids.astype(str).to_numpy(), "split": splits.astype(str).to_numpy()})
    per_patient = frame.groupby("patient")["split"].nunique()
    leaked = per_patient[per_patient > 1]
    if len(leaked):
        raise DatasetFormatError(
            f"{len(leaked)} patients are in more than one split (e.g. {leaked.index[:5].tolist()}); "
            "pass use_official=False to make a patient-level split"
        )


def apply_splits(dataset: MedicalDataset, splits: pd.Series) -> MedicalDataset:
    """A copy of ``dataset`` with its ``split`` column set from ``splits`` (sample_id → split)."""
    ids = dataset.table["sample_id"].astype(str)
    missing = ~ids.isin(splits.index)
    if missing.any():
        raise DatasetFormatError(f"split has no entry for {int(missing.sum())} samples, e.g. {ids[missing].head(5).tolist()}")
    table = dataset.table.copy()
    table["split"] = splits.reindex(ids.to_numpy()).to_numpy()
    table["split"] = table["split"].astype("string")
    return replace(dataset, table=table, info=dict(dataset.info))  # keeps the subclass (e.g. npz)


def membership_hash(sample_ids: Sequence[str] | pd.Index | pd.Series) -> str:
    """SHA-256 of the sorted sample ids: which samples a split covers, whatever their order."""
    joined = "\n".join(sorted(str(s) for s in sample_ids))
    return hashlib.sha256(joined.encode()).hexdigest()


def atomic_write_text(path: Path, text: str) -> None:
    """Write via a temporary file in the same folder and ``os.replace``: readers never see half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(handle, "w", encoding="utf-8") as f:
            f.write(text)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def save_splits(splits: pd.Series, path: str | Path, **metadata: object) -> Path:
    """Write sample_id → split (JSON by default, CSV for a .csv path) atomically, with the hash."""
    path = Path(path)
    digest = membership_hash(splits.index)
    if path.suffix.lower() == ".csv":
        frame = pd.DataFrame({"sample_id": splits.index.astype(str), "split": splits.astype(str).to_numpy()})
        atomic_write_text(path, f"# membership_sha256={digest}\n" + frame.to_csv(index=False))
    else:
        document = {
            "format": FORMAT,
            "membership_sha256": digest,
            "counts": {s: int((splits == s).sum()) for s in SPLITS},
            **{k: v for k, v in metadata.items()},
            "splits": {str(k): str(v) for k, v in splits.items()},
        }
        atomic_write_text(path, json.dumps(document, indent=1, default=str))
    return path


def load_splits(path: str | Path, dataset: MedicalDataset | None = None) -> pd.Series:
    """Read a split file; with ``dataset``, refuse it unless it covers exactly that dataset's samples."""
    path = Path(path)
    if not path.is_file():
        raise DatasetFormatError(f"split file not found: {path}")
    if path.suffix.lower() == ".csv":
        with path.open(encoding="utf-8") as f:
            first = f.readline().strip()
        if not first.startswith("# membership_sha256="):
            raise DatasetFormatError(f"{path}: first line must be '# membership_sha256=<hash>'")
        stored = first.split("=", 1)[1]
        frame = pd.read_csv(path, comment=None, skiprows=1, dtype=str)
        if list(frame.columns[:2]) != ["sample_id", "split"]:
            raise DatasetFormatError(f"{path}: expected columns sample_id, split; found {list(frame.columns)}")
        splits = pd.Series(frame["split"].to_numpy(), index=pd.Index(frame["sample_id"], name="sample_id"), name="split")
    else:
        try:
            document = json.loads(path.read_text(encoding="utf-8"))
            stored = document["membership_sha256"]
            mapping = document["splits"]
        except (json.JSONDecodeError, KeyError, TypeError) as exc:
            raise DatasetFormatError(f"{path}: not a medequity split file ({exc})") from None
        splits = pd.Series(mapping, name="split")
        splits.index.name = "sample_id"
    splits = splits.astype("string")
    if membership_hash(splits.index) != stored:
        raise DatasetFormatError(f"{path}: membership hash does not match its own sample ids (file edited or damaged)")
    bad = set(splits.unique()) - set(SPLITS)
    if bad:
        raise DatasetFormatError(f"{path}: unknown split names {sorted(bad)}")
    if dataset is not None:
        ids = dataset.table["sample_id"].astype(str)
        if membership_hash(ids) != stored:
            missing = int((~ids.isin(splits.index)).sum())
            extra = int((~splits.index.isin(ids)).sum())
            raise DatasetFormatError(
                f"{path} was made for other samples than dataset {dataset.name!r}: {missing} of its samples "
                f"are not in the file and {extra} in the file are not in the dataset; make a new split"
            )
    return splits


def get_splits(
    dataset: MedicalDataset,
    path: str | Path | None = None,
    ratios: Sequence[float] | None = None,
    seed: int = 0,
    attributes: Sequence[str] | None = None,
    use_official: bool = True,
) -> MedicalDataset:
    """The dataset with a ``split`` column: loaded from ``path`` if it exists, else made (and saved)."""
    if path is not None and Path(path).is_file():
        splits = load_splits(path, dataset)
    else:
        splits = make_splits(dataset, ratios=ratios, seed=seed, attributes=attributes, use_official=use_official)
        if path is not None:
            save_splits(splits, path, dataset=dataset.name, seed=seed, ratios=list(ratios or split_ratios(dataset)))
    return apply_splits(dataset, splits)
