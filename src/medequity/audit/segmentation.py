"""``medequity audit --task segmentation``: a fairness report for predicted masks a team already has.

Input: a table (CSV/Parquet or a DataFrame) with one row per image or volume: an id, the
ground-truth mask path and the predicted mask path (relative to ``root``; a path that leaves
``root`` is refused, naming its row and column) — or a per-sample Dice column instead of the
predicted masks — and the sensitive attributes (or a metadata table joined on the id). Masks are
PNG/JPEG/TIFF, ``.npy``, NIfTI or ``.mha`` (:func:`medequity.data.loaders._seg.read_array`), 2D or 3D.

Data flow: one mask pair at a time (memory bounded by one volume) → per-sample Dice, IoU, HD95,
NSD (:mod:`medequity.metrics.segmentation`, :mod:`medequity.metrics.surface`) → per attribute and
metric :func:`segmentation_group_metrics_from_values` (stratified bootstrap CIs, permutation tests,
FairMedFM Δ/STD/Skew/DSC_ES and FairSeg ES-Dice) → the best and worst case of each group re-read as
2D slices for overlays → :class:`SegmentationAuditReport` → report.json, groups.csv, gaps.csv,
samples.csv, report.html.

Spacing: ``spacing=None`` takes NIfTI voxel sizes from the header (after reorientation to RAS, as
the masks are read) and 1 per axis for other files; a number or one value per axis overrides it.
HD95 with exactly one empty mask is the image diagonal (``one_empty="diagonal"``), so means stay
finite; both masks empty give NaN (excluded from the means and counted).
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pandas as pd

from medequity.audit.core import _clean, _records, write_report_files
from medequity.audit.inputs import ATTRIBUTE_CANDIDATES, ID_CANDIDATES, AuditInputError, BinRule, _check, _detect, _read
from medequity.data.base import DatasetFormatError, safe_join
from medequity.data.loaders._seg import NIFTI_SUFFIXES, read_array
from medequity.data.masks import encode_mask
from medequity.metrics import GroupMetricWarning
from medequity.metrics.groups import encode_groups
from medequity.metrics.segmentation import SegmentationGroupResult, dice_per_sample, iou_per_sample, segmentation_group_metrics_from_values
from medequity.metrics.surface import check_spacing, hd95_per_sample, nsd_per_sample
from medequity.provenance import provenance
from medequity.report.findings import attribute_findings, findings_frame

TRUTH_CANDIDATES = ("mask_path", "truth_path", "gt_path", "ground_truth_path", "truth", "gt", "ground_truth",
                    "mask", "label_path", "seg_path", "target_path")
PREDICTION_CANDIDATES = ("pred_path", "prediction_path", "pred_mask_path", "predicted_mask_path", "prediction",
                         "pred", "pred_mask", "predicted_mask", "prediction_mask", "output_path")
DICE_CANDIDATES = ("dice", "dsc", "dice_score", "dice_per_sample")
IMAGE_CANDIDATES = ("image_path", "img_path", "image", "path")
SEGMENTATION_AUDIT_METRICS = ("dice", "iou", "hd95", "nsd")


@dataclass
class SegmentationCase:
    """The best or worst sample of one group, kept as a 2D slice for an overlay."""

    attribute: str
    group: str
    kind: str  # "best" | "worst"
    sample_id: str
    row: int
    dice: float
    truth: np.ndarray | None  # 2D label slice
    prediction: np.ndarray | None
    image: np.ndarray | None  # 2D (H, W) or (H, W, 3), when an image column is given
    where: str  # "2D image" or "slice k/n along axis a"


@dataclass
class SegmentationAuditReport:
    settings: dict
    results: dict[str, dict[str, SegmentationGroupResult]]  # attribute -> metric -> result
    samples: pd.DataFrame  # one row per sample: id, paths, attributes, per-sample metrics
    group_labels: dict[str, np.ndarray] = field(default_factory=dict)  # attribute -> group name per sample (None: excluded)
    cases: list[SegmentationCase] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    @property
    def metrics(self) -> list[str]:
        return list(self.settings.get("metrics", []))

    # -- tables ------------------------------------------------------------------------------------
    def groups_frame(self) -> pd.DataFrame:
        """One row per (attribute, group incl. overall, metric): value, CI, n, small-group flag."""
        frames = [result.to_frame().drop(columns=["n_pos", "n_neg"], errors="ignore")
                  for by_metric in self.results.values() for result in by_metric.values()]
        return pd.concat(frames, ignore_index=True)

    def gaps_frame(self) -> pd.DataFrame:
        """One row per (attribute, metric, summary): overall, worst, delta, std (and for Dice, IoU,
        NSD skew, es_std = DSC_ES, es_sum_abs_dev = ES-Dice) with CI and permutation p-value."""
        frames = [result.fairness_table() for by_metric in self.results.values() for result in by_metric.values()]
        return pd.concat(frames, ignore_index=True)

    def findings(self) -> pd.DataFrame:
        """The finding first, as the classification audit: per attribute and metric (Dice, IoU, HD95,
        NSD) the group on the worse side of all samples, its difference's simultaneous interval and
        adjusted p-value, the gap as a size, and a sentence (:mod:`medequity.report.findings`)."""
        rows = [row for by_metric in self.results.values() for metric, result in by_metric.items()
                for row in attribute_findings(result, task="segmentation", metrics=(metric,))]
        return findings_frame(rows)

    def contrasts_frame(self) -> pd.DataFrame:
        """One row per (attribute, metric, group): group − all samples, simultaneous interval, adjusted p."""
        return pd.concat([result.contrasts() for by_metric in self.results.values() for result in by_metric.values()],
                         ignore_index=True)

    def headline(self) -> pd.DataFrame:
        """Per attribute: overall Dice, worst group, Δ Dice (value, CI low, CI high, p), DSC_ES, ES-Dice."""
        rows = []
        for attribute, by_metric in self.results.items():
            result = by_metric.get("dice")
            if result is None:
                continue
            table = result.fairness_table().set_index("summary")
            values = result.values["dice"][1:]
            worst = result.groups[int(np.nanargmin(values))] if np.isfinite(values).any() else None
            row: dict = {"attribute": attribute, "groups": len(result.groups), "worst group": worst}
            for key, label in (("overall", "Dice"), ("worst", "worst Dice"), ("delta", "Dice Δ"),
                               ("es_std", "DSC_ES"), ("es_sum_abs_dev", "ES-Dice")):
                if key in table.index:
                    r = table.loc[key]
                    row[label] = (r.value, r.ci_low, r.ci_high, r.p_value)
            rows.append(row)
        return pd.DataFrame(rows)

    # -- serialisation -----------------------------------------------------------------------------
    def to_dict(self) -> dict:
        attributes = {}
        for attribute, by_metric in self.results.items():
            first = next(iter(by_metric.values()))
            attributes[attribute] = {
                "groups": list(first.groups),
                "counts": _records(first.counts.reset_index(names="group")),
                "metrics": {
                    metric: {"settings": result.settings(), "values": _records(result.to_frame()),
                             "fairness": _records(result.fairness_table()), "warnings": result.warnings}
                    for metric, result in by_metric.items()
                },
            }
        cases = [{"attribute": c.attribute, "group": c.group, "kind": c.kind, "sample_id": c.sample_id, "row": c.row,
                  "dice": c.dice, "slice": c.where} for c in self.cases]
        return _clean({"settings": self.settings, "attributes": attributes, "cases": cases, "warnings": self.warnings})

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, allow_nan=False)

    def save(self, out_dir: str | Path, *, html: bool = True) -> dict[str, Path]:
        """Write report.json, groups.csv, gaps.csv, samples.csv (and report.html) into ``out_dir``:
        all or none, replacing an earlier report as a whole (:func:`medequity.audit.core.write_report_files`)."""
        contents = {"json": ("report.json", self.to_json()),
                    "groups": ("groups.csv", self.groups_frame().to_csv(index=False)),
                    "gaps": ("gaps.csv", self.gaps_frame().to_csv(index=False)),
                    "contrasts": ("contrasts.csv", self.contrasts_frame().to_csv(index=False)),
                    "findings": ("findings.csv", self.findings().to_csv(index=False)),
                    "samples": ("samples.csv", self.samples.to_csv(index=False))}
        if html:
            from medequity.report.segmentation_html import render_segmentation_audit_html

            contents["html"] = ("report.html", render_segmentation_audit_html(self))
        return write_report_files(out_dir, contents)


# -- inputs ----------------------------------------------------------------------------------------------
def _join_metadata(table: pd.DataFrame, metadata, id_column: str, source: str) -> pd.DataFrame:
    meta_source = str(metadata) if not isinstance(metadata, pd.DataFrame) else "metadata table"
    meta = metadata.copy() if isinstance(metadata, pd.DataFrame) else _read(metadata)
    _check(meta, [id_column], meta_source)
    duplicated = meta[id_column].duplicated()
    if duplicated.any():
        raise AuditInputError(f"{meta_source}: id column {id_column!r} has {int(duplicated.sum())} duplicated values "
                              f"(first: {meta[id_column][duplicated].iloc[0]!r}); one metadata row per id is needed")
    overlap = [c for c in meta.columns if c in table.columns and c != id_column]
    merged = table.merge(meta.drop(columns=overlap), on=id_column, how="left", indicator=True)
    unmatched = int((merged["_merge"] == "left_only").sum())
    if unmatched == len(merged):
        raise AuditInputError(f"no id of {source} matches {meta_source} on {id_column!r} (e.g. {table[id_column].iloc[0]!r})")
    if unmatched:
        warnings.warn(f"{unmatched} samples have no metadata row; their attributes are missing", stacklevel=3)
    return merged.drop(columns="_merge")


def _resolve_attributes(table: pd.DataFrame, attributes, rules: list[BinRule], source: str) -> list[str]:
    if attributes is None:
        attributes = [c for c in table.columns if str(c).lower() in ATTRIBUTE_CANDIDATES]
        attributes += [r.column for r in rules if r.column not in attributes]
        if not attributes:
            raise AuditInputError("no sensitive-attribute columns found; name them with --attribute (e.g. --attribute sex). "
                                  f"Available columns: {[str(c) for c in table.columns]}")
    attributes = list(attributes)
    _check(table, attributes + [r.column for r in rules], source)
    for rule in rules:
        if rule.column not in attributes:
            attributes.append(rule.column)
        table[rule.column] = rule.apply(table[rule.column])
    binned = {r.column for r in rules}
    for attribute in attributes:
        if attribute not in binned and pd.api.types.is_float_dtype(table[attribute]) and table[attribute].nunique() > 20:
            raise AuditInputError(f"attribute {attribute!r} looks continuous ({table[attribute].nunique()} distinct values); "
                                  f"bin it, e.g. --bin '{attribute}=>60' or --bin '{attribute}=q4'")
    return attributes


def _mask_classes(mask_values) -> list[str] | None:
    if isinstance(mask_values, Mapping):
        return [str(k) for k in range(max(int(v) for v in mask_values.values()) + 1)]
    return None


class _MaskReader:
    """Reads the masks of one row, with errors that name the row, the column and the file."""

    def __init__(self, root: Path, source: str, mask_values, spacing):
        self.root, self.source, self.mask_values, self.spacing = root, source, mask_values, spacing
        self.classes = _mask_classes(mask_values)

    def path(self, value, row: int, sample_id, column: str) -> Path:
        where = f"row {row}, id {sample_id!r}, column {column!r}"
        if value is None or (not isinstance(value, str | Path) and pd.isna(value)) or not str(value).strip():
            raise AuditInputError(f"{self.source}: {where}: no path given")
        try:
            return safe_join(self.root, str(value).strip(), where=f"{self.source}, {where}")
        except DatasetFormatError as exc:
            raise AuditInputError(str(exc)) from None

    def read(self, path: Path, row: int, sample_id, column: str, *, mask: bool = True) -> np.ndarray:
        where = f"{self.source}: row {row}, id {sample_id!r}, column {column!r}"
        if not path.exists():
            raise AuditInputError(f"{where}: file not found: {path}")
        try:
            array = read_array(path, mask=mask)
            if mask and self.mask_values is not None:
                array = encode_mask(array, self.mask_values, self.classes, where=f"{where}: {path}")
        except DatasetFormatError as exc:
            raise AuditInputError(f"{where}: {exc}") from None
        if mask:
            if array.ndim == 3 and 1 in array.shape and path.suffix.lower() == ".npy":
                array = np.squeeze(array)
            if array.ndim not in (2, 3):
                raise AuditInputError(f"{where}: mask {path} has shape {array.shape}; expected a 2D or 3D label mask")
            if array.size and array.min() < 0:
                raise AuditInputError(f"{where}: mask {path} has negative labels (min {array.min()})")
        return array

    def pair(self, record: Mapping, row: int, sample_id, truth_column: str, prediction_column: str):
        truth_path = self.path(record[truth_column], row, sample_id, truth_column)
        pred_path = self.path(record[prediction_column], row, sample_id, prediction_column)
        truth = self.read(truth_path, row, sample_id, truth_column)
        pred = self.read(pred_path, row, sample_id, prediction_column)
        if pred.shape != truth.shape:
            raise AuditInputError(
                f"{self.source}: row {row}, id {sample_id!r}: predicted mask {pred_path} (column {prediction_column!r}) "
                f"has shape {pred.shape} but the ground truth {truth_path} (column {truth_column!r}) has {truth.shape}"
            )
        return truth, pred, truth_path

    def sample_spacing(self, truth_path: Path, ndim: int, row: int, sample_id) -> np.ndarray:
        spacing = self.spacing
        if spacing is None:
            spacing = _header_spacing(truth_path, ndim)
        try:
            return check_spacing(spacing, 1, ndim)[0]
        except ValueError as exc:
            raise AuditInputError(f"{self.source}: row {row}, id {sample_id!r}: {exc}") from None


def _header_spacing(path: Path, ndim: int):
    if not path.name.lower().endswith(NIFTI_SUFFIXES):
        return None
    import nibabel as nib

    try:
        zooms = nib.as_closest_canonical(nib.load(str(path))).header.get_zooms()[:ndim]
    except Exception:  # unreadable headers were already reported by read_array
        return None
    zooms = tuple(float(z) for z in zooms)
    return zooms if len(zooms) == ndim and all(z > 0 for z in zooms) else None


def _middle_slice(truth: np.ndarray, pred: np.ndarray, image: np.ndarray | None):
    """2D views: the image itself, or the middle slice (last axis) through the union of the masks."""
    if truth.ndim == 2:
        return truth, pred, image, "2D image"
    union = (truth > 0) | (pred > 0)
    occupied = np.flatnonzero(union.any(axis=(0, 1)))
    k = int(occupied[len(occupied) // 2]) if occupied.size else truth.shape[2] // 2
    view = image[..., k] if image is not None and image.shape == truth.shape else None
    return truth[..., k], pred[..., k], view, f"slice {k + 1}/{truth.shape[2]} along the last (axial) axis, middle of the object"


# -- the audit -------------------------------------------------------------------------------------------
def audit_segmentation(
    table: str | Path | pd.DataFrame,
    *,
    root: str | Path | None = None,
    id_column: str | None = None,
    truth_column: str | None = None,
    prediction_column: str | None = None,
    dice_column: str | None = None,
    image_column: str | None = None,
    attributes: Sequence[str] | None = None,
    metadata: str | Path | pd.DataFrame | None = None,
    bins: Sequence[str | BinRule] | None = None,
    metrics: Sequence[str] = SEGMENTATION_AUDIT_METRICS,
    spacing=None,
    tolerance: float = 1.0,
    classes: Sequence[int] | None = None,
    mask_values=None,
    empty: str = "nan",
    n_boot: int = 1000,
    n_permutations: int = 0,
    ci: float = 0.95,
    min_group_size: int = 30,
    missing: str = "drop",
    random_state: int = 0,
    progress: Callable[[int, int, str], None] | None = None,
) -> SegmentationAuditReport:
    """Audit predicted segmentation masks for per-group Dice/IoU/HD95/NSD gaps.

    ``root``: the folder mask (and image) paths are relative to (default: the table's folder, or
    the working directory for a DataFrame); no path may leave it. ``truth_column`` +
    ``prediction_column``: mask paths (detected if omitted); or ``dice_column``: per-sample Dice
    already computed (then only Dice is audited; masks, if also given, are read for the overlays
    only). ``mask_values``: ``"binary"`` (any value > 0 is class 1, e.g. 0/255 PNGs), a mapping
    ``{stored value: class}``, or None (stored values are class indices). ``classes``: the
    foreground classes scored (default: those present in either mask of a sample). ``spacing``:
    None (NIfTI header, else 1), a number or one value per axis. ``tolerance``: NSD tolerance in
    physical units. ``empty``: both masks empty → NaN (default, excluded and counted), "zero" or
    "one" (Dice/IoU/NSD). ``progress(done, total, description)`` is called per sample.
    """
    source = str(table) if not isinstance(table, pd.DataFrame) else "segmentation table"
    frame = table.copy() if isinstance(table, pd.DataFrame) else _read(table)
    if root is None:
        root = Path(table).parent if not isinstance(table, pd.DataFrame) else Path.cwd()
    root = Path(root)
    if not root.is_dir():
        raise AuditInputError(f"root {str(root)!r} is not a folder; give the folder the mask paths are relative to (--root)")
    unknown = [m for m in metrics if m not in SEGMENTATION_AUDIT_METRICS]
    if unknown or not metrics:
        raise AuditInputError(f"metrics must be some of {list(SEGMENTATION_AUDIT_METRICS)}; got {list(metrics)}")
    if isinstance(mask_values, str) and mask_values != "binary":
        raise AuditInputError(f"mask_values must be 'binary', a mapping or None; got {mask_values!r}")

    if metadata is not None:
        id_column = id_column or _detect(frame.columns, ID_CANDIDATES, "id", "--id")
        _check(frame, [id_column], source)
        frame = _join_metadata(frame, metadata, str(id_column), source)
    elif id_column is None:
        id_column = _detect(frame.columns, ID_CANDIDATES, "id", "--id", required=False)
    if id_column is not None:
        _check(frame, [id_column], source)

    # Columns: explicit names are checked; otherwise masks are preferred over a Dice column.
    for column in (truth_column, prediction_column, dice_column, image_column):
        if column is not None:
            _check(frame, [column], source)
    if dice_column is None and prediction_column is None:
        prediction_column = _detect(frame.columns, PREDICTION_CANDIDATES, "predicted-mask", "--prediction", required=False)
        if prediction_column is None:
            dice_column = _detect(frame.columns, DICE_CANDIDATES, "predicted-mask or per-sample Dice",
                                  "--prediction (mask paths) or --dice (per-sample Dice)", required=False)
            if dice_column is None:
                raise AuditInputError(
                    f"no predicted-mask column (looked for {list(PREDICTION_CANDIDATES)}) and no per-sample Dice column "
                    f"(looked for {list(DICE_CANDIDATES)}); name one with --prediction or --dice. "
                    f"Available columns: {[str(c) for c in frame.columns]}")
    if truth_column is None:
        truth_column = _detect(frame.columns, TRUTH_CANDIDATES, "ground-truth mask", "--truth", required=dice_column is None)
    if prediction_column is None and dice_column is not None:
        prediction_column = _detect(frame.columns, PREDICTION_CANDIDATES, "predicted-mask", "--prediction", required=False)
    if image_column is None:
        image_column = _detect([c for c in frame.columns if c not in (truth_column, prediction_column)],
                               IMAGE_CANDIDATES, "image", "--image", required=False)
    if len(frame) == 0:
        raise AuditInputError(f"{source} has no rows")

    rules = [b if isinstance(b, BinRule) else BinRule.parse(b) for b in (bins or [])]
    attribute_list = _resolve_attributes(frame, None if attributes is None else list(attributes), rules, source)
    frame = frame.reset_index(drop=True)
    ids = frame[id_column].astype(str).to_numpy() if id_column else np.array([f"row-{i}" for i in range(len(frame))])
    has_masks = truth_column is not None and prediction_column is not None
    reader = _MaskReader(root, source, mask_values, spacing)
    audited = ["dice"] if dice_column is not None else list(dict.fromkeys(metrics))

    # -- per-sample values, one mask pair at a time ----------------------------------------------
    n = len(frame)
    values = {m: np.full(n, np.nan) for m in audited}
    shapes: list[str] = []
    spacings: list[str] = []
    counters = {"both_empty_pairs": 0, "one_empty_pairs": 0, "empty_truth_samples": 0}
    if dice_column is not None:
        dice = pd.to_numeric(frame[dice_column], errors="coerce")
        bad = dice.notna() & ~dice.between(0, 1)
        if bad.any():
            first = int(np.flatnonzero(bad.to_numpy())[0])
            raise AuditInputError(f"{source}: Dice column {dice_column!r} has values outside [0, 1] (row {first}: {dice.iloc[first]!r})")
        values["dice"] = dice.to_numpy(dtype=np.float64)
    else:
        records = frame[[truth_column, prediction_column]].to_dict(orient="records")
        for i, record in enumerate(records):
            truth, pred, truth_path = reader.pair(record, i, ids[i], str(truth_column), str(prediction_column))
            one_truth, one_pred = truth[None], pred[None]
            try:
                if "dice" in values:
                    overlap = dice_per_sample(one_pred, one_truth, classes=classes, empty=empty)
                    values["dice"][i] = overlap.values[0]
                    counters["both_empty_pairs"] += overlap.n_empty
                if "iou" in values:
                    values["iou"][i] = iou_per_sample(one_pred, one_truth, classes=classes, empty=empty).values[0]
                sample_spacing = reader.sample_spacing(truth_path, truth.ndim, i, ids[i])
                if "hd95" in values:
                    hd = hd95_per_sample(one_pred, one_truth, spacing=sample_spacing, classes=classes,
                                         empty="nan" if empty == "one" else empty, one_empty="diagonal")
                    values["hd95"][i] = hd.values[0]
                    counters["one_empty_pairs"] += hd.n_one_empty
                if "nsd" in values:
                    values["nsd"][i] = nsd_per_sample(one_pred, one_truth, tolerance=tolerance, spacing=sample_spacing,
                                                      classes=classes, empty=empty).values[0]
            except AuditInputError:
                raise
            except ValueError as exc:
                raise AuditInputError(f"{source}: row {i}, id {ids[i]!r}: {exc}") from None
            counters["empty_truth_samples"] += int(not np.any(truth))
            shapes.append("x".join(map(str, truth.shape)))
            spacings.append(",".join(f"{s:g}" for s in sample_spacing))
            del truth, pred, one_truth, one_pred
            if progress is not None:
                progress(i + 1, n, "reading masks")

    samples = pd.DataFrame({"sample_id": ids})
    for column in (truth_column, prediction_column, image_column):
        if column is not None:
            samples[column] = frame[column].to_numpy()
    for attribute in attribute_list:
        samples[attribute] = frame[attribute].to_numpy()
    for metric, v in values.items():
        samples[metric] = v
    if shapes:
        samples["shape"] = shapes
        samples["spacing"] = spacings

    # -- per-group metrics -----------------------------------------------------------------------
    results: dict[str, dict[str, SegmentationGroupResult]] = {}
    group_labels: dict[str, np.ndarray] = {}
    skipped: list[str] = []
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", GroupMetricWarning)
        for attribute in attribute_list:
            features = frame[[attribute]]
            by_metric = {}
            for metric in audited:
                try:
                    by_metric[metric] = segmentation_group_metrics_from_values(
                        values[metric], sensitive_features=features, metric=metric, n_boot=n_boot,
                        n_permutations=n_permutations, ci=ci, min_group_size=min_group_size, missing=missing,
                        random_state=random_state)
                except ValueError as exc:
                    skipped.append(f"{attribute} / {metric}: skipped — {exc}")
            if not by_metric:
                continue
            results[attribute] = by_metric
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                encoded = encode_groups(features, missing=missing, require_two=False)
            names = np.array([str(g) for g in encoded.names] + [None], dtype=object)
            group_labels[attribute] = names[np.where(encoded.codes >= 0, encoded.codes, len(encoded.names))]
            if progress is not None:
                progress(n, n, f"groups of {attribute}")
    if not results:
        raise AuditInputError("no attribute could be audited: " + "; ".join(skipped))
    messages = list(dict.fromkeys([str(w.message) for w in caught] + skipped))

    # -- best and worst case per group, re-read as 2D slices ---------------------------------------
    cases: list[SegmentationCase] = []
    dice_values = values["dice"]
    for attribute, labels in group_labels.items():
        for group in results[attribute]["dice"].groups:
            members = np.flatnonzero((labels == str(group)) & np.isfinite(dice_values))
            if members.size == 0:
                continue
            order = members[np.argsort(dice_values[members], kind="stable")]
            picks = [("worst", int(order[0]))] + ([("best", int(order[-1]))] if order.size > 1 else [])
            for kind, i in picks:
                truth = pred = image = None
                where = "no masks given (per-sample Dice column)"
                if has_masks:
                    record = frame.loc[i, [truth_column, prediction_column]].to_dict()
                    full_truth, full_pred, _ = reader.pair(record, i, ids[i], str(truth_column), str(prediction_column))
                    full_image = None
                    if image_column is not None:
                        try:
                            full_image = reader.read(reader.path(frame.at[i, image_column], i, ids[i], image_column), i, ids[i],
                                                     image_column, mask=False)
                        except AuditInputError as exc:
                            messages.append(f"overlay of {ids[i]!r} without its image: {exc}")
                        if full_image is not None and full_image.shape[: full_truth.ndim] != full_truth.shape:
                            full_image = None
                    truth, pred, image, where = _middle_slice(full_truth, full_pred, full_image)
                cases.append(SegmentationCase(attribute, str(group), kind, str(ids[i]), i, float(dice_values[i]),
                                              truth, pred, image, where))

    if dice_column is None:
        n_undefined = int(np.isnan(dice_values).sum())
        if counters["empty_truth_samples"]:
            messages.append(f"{counters['empty_truth_samples']} samples have an empty ground-truth mask")
        if n_undefined:
            messages.append(f"dice: {n_undefined} samples have both masks empty (Dice undefined, empty={empty!r})")
    settings = {
        "source": source,
        "task": "segmentation",
        "root": str(root.resolve()),
        "n_samples": int(n),
        "id_column": id_column,
        "truth_column": truth_column,
        "prediction_column": prediction_column,
        "dice_column": dice_column,
        "image_column": image_column,
        "attributes": attribute_list,
        "binning": [r.describe() for r in rules],
        "metrics": audited,
        "classes": None if classes is None else [int(c) for c in classes],
        "mask_values": mask_values if not isinstance(mask_values, Mapping) else {str(k): int(v) for k, v in mask_values.items()},
        "empty": empty,
        "hd95": "MONAI max of directed 95th percentiles; one empty mask = image diagonal (physical units)",
        "nsd_tolerance": float(tolerance),
        "spacing": "NIfTI header (RAS), else 1 per axis" if spacing is None else np.atleast_1d(spacing).astype(float).tolist(),
        "counts": counters,
        "n_boot": n_boot,
        "n_permutations": n_permutations,
        "ci": ci,
        "bootstrap": "percentile, stratified by group",
        "gap_test": ("each group vs all audited samples (difference of the mean), bootstrap percentile p-values "
                     "adjusted over the attribute's groups by single-step min-P; every disparity's p-value is the "
                     "omnibus test" + ("; p_permutation: each disparity's own permutation test" if n_permutations else "")),
        "min_group_size": min_group_size,
        "missing_attribute_values": missing,
        "random_state": random_state,
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "provenance": provenance(),
    }
    return SegmentationAuditReport(settings=settings, results=results, samples=samples, group_labels=group_labels,
                                   cases=cases, warnings=list(dict.fromkeys(messages)))


# -- the built-in example --------------------------------------------------------------------------------
EXAMPLE_PRESET = "seg-derm-contrast"


def segmentation_example_table(folder: str | Path, *, n: int = 400, seed: int = 0, image_size: int = 64) -> pd.DataFrame:
    """A synthetic skin-lesion cohort written to ``folder`` as PNGs, with a known bias.

    ``create_dataset("synthetic-segmentation", preset="seg-derm-contrast")``: lesion/skin contrast
    is 35% lower on skin types IV–VI. The "model" is the generator's threshold segmenter, which
    sees only the visible lesion, so its masks are too small on dark skin: Dice is lower for
    ``skin_tone`` IV–VI (the built-in bias); ``sex`` is an unbiased control. Returns the table
    (paths relative to ``folder``): ``image_id, image_path, mask_path, pred_path, skin_tone, sex``.
    """
    from PIL import Image

    from medequity.data import create_dataset
    from medequity.data.synthetic_segmentation import threshold_segment

    folder = Path(folder)
    for sub in ("images", "masks", "predictions"):
        (folder / sub).mkdir(parents=True, exist_ok=True)
    dataset = create_dataset("synthetic-segmentation", preset=EXAMPLE_PRESET, n=n, seed=seed, image_size=image_size)
    predictions = threshold_segment(dataset)
    assert dataset.images is not None and dataset.masks is not None
    table = dataset.table
    rows = []
    for i in range(len(table)):
        sample_id = str(table.at[i, "sample_id"])
        names = {"image_path": f"images/{sample_id}.png", "mask_path": f"masks/{sample_id}.png",
                 "pred_path": f"predictions/{sample_id}.png"}
        Image.fromarray(np.asarray(dataset.images[i], dtype=np.uint8)).save(folder / names["image_path"])
        Image.fromarray((np.asarray(dataset.masks[i]) > 0).astype(np.uint8) * 255).save(folder / names["mask_path"])
        Image.fromarray((np.asarray(predictions[i]) > 0).astype(np.uint8) * 255).save(folder / names["pred_path"])
        rows.append({"image_id": sample_id, **names, "skin_tone": str(table.at[i, "group:skin_tone"]),
                     "sex": str(table.at[i, "sex"])})
    out = pd.DataFrame(rows)
    out.to_csv(folder / "segmentation.csv", index=False)
    return out


__all__ = ["SegmentationAuditReport", "SegmentationCase", "audit_segmentation", "segmentation_example_table",
           "SEGMENTATION_AUDIT_METRICS", "EXAMPLE_PRESET"]
