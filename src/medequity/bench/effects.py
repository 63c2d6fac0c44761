"""Each method's effect against ERM, paired on the same test samples (the benchmark report's verdicts).

A leaderboard shows every method's values with their own intervals; whether a method *changed*
anything is a question about a difference, and two overlapping intervals do not answer it. Every
selected run is compared with the ERM run of the same setting (dataset, model, usage, training
attribute, seed) on the test samples both scored, with a paired bootstrap — the same resampled
samples for both models (:func:`medequity.metrics.compare.paired_bootstrap`, METRICS.md
"Uncertainty and significance"; stratified by group and label for classification, by group for
segmentation). Three differences, method − ERM: the utility (overall AUC / mean Dice), the gap
between groups (max − min) and the worst group.

A method *reduces the bias* when its gap difference is below 0 with 95% confidence (the interval
lies below 0); it does so *at an acceptable cost* when its utility falls by at most the stated
tolerance (:data:`UTILITY_TOLERANCE`). A gap closed by losing more utility than that is levelling
down, not mitigation: it gets no star on the leaderboard (:mod:`medequity.bench.report`).

With several seeds the per-seed differences are averaged and their interval is a t-interval over
seeds (clipped to the range a difference can take); with one seed it is the paired bootstrap's.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd

from medequity.bench.store import Results
from medequity.metrics.bootstrap import percentile_interval, two_sided_p_value

REFERENCE = "erm"
UTILITY_TOLERANCE = 0.02  # AUC or Dice points a method may lose while closing a gap (ours; stated in the report)
SETTING = ("dataset", "model", "usage", "train_attribute", "seed")
EFFECTS = ("utility", "gap", "worst")  # method − ERM
# Classification only, on each run's own decisions (its ``pred`` column: post-processing methods
# such as ThresholdOptimizer change decisions, not scores, so the AUC effects cannot see them):
# the equal-opportunity gap (max − min TPR over groups) and the accuracy it costs.
DECISION_EFFECTS = ("tpr_gap", "accuracy")
GROUP_PREFIX = "group:"


def _test_predictions(out: Path, run_id: str) -> pd.DataFrame | None:
    path = out / "runs" / run_id / "predictions.parquet"
    if not path.exists():
        return None
    frame = pd.read_parquet(path)
    return frame[frame["split"] == "test"]


def _classification_pair(method: pd.DataFrame, erm: pd.DataFrame, attribute: str, n_boot: int, seed: int) -> dict:
    from medequity.metrics.compare import paired_bootstrap

    column = GROUP_PREFIX + attribute
    a = method[["sample_id", "label", "score", column]]
    b = erm[["sample_id", "score"]]
    joined = a.merge(b, on="sample_id", suffixes=("_m", "_e"), validate="one_to_one").dropna(subset=[column])
    out = {}
    for name, summary in (("utility", "overall"), ("gap", "gap"), ("worst", "worst")):
        result = paired_bootstrap(joined["label"].to_numpy(np.int64), joined["score_m"].to_numpy(np.float64),
                                  joined["score_e"].to_numpy(np.float64), sensitive_features=joined[column].astype(str),
                                  metric="auc", summary=summary, n_boot=n_boot, random_state=seed)
        out.update({name: result.difference, f"{name}_ci_low": result.ci_low, f"{name}_ci_high": result.ci_high,
                    f"{name}_p": result.p_value})
    return out


def _decision_summaries(y: np.ndarray, pred: np.ndarray, codes: np.ndarray, n_groups: int,
                        weights: np.ndarray) -> np.ndarray:
    """(B, 2): TPR gap (max − min over groups with positives) and accuracy, per weight row."""
    positive = y == 1
    tprs = []
    for g in range(n_groups):
        members = positive & (codes == g)
        if members.any():
            tprs.append(weights[:, members] @ pred[members] / weights[:, members].sum(axis=1))
    tpr = np.stack(tprs, axis=1)
    accuracy = weights @ (pred == y).astype(np.float64) / weights.sum(axis=1)
    return np.column_stack([tpr.max(axis=1) - tpr.min(axis=1), accuracy])


def _decision_pair(method: pd.DataFrame, erm: pd.DataFrame, attribute: str, n_boot: int, seed: int) -> dict:
    """Paired bootstrap (stratified by group and label, as the runs' own) of the TPR gap and the
    accuracy of the two runs' decisions, method − ERM."""
    column = GROUP_PREFIX + attribute
    if "pred" not in method.columns or "pred" not in erm.columns:
        return {}
    joined = method[["sample_id", "label", "pred", column]].merge(
        erm[["sample_id", "pred"]], on="sample_id", suffixes=("_m", "_e"), validate="one_to_one").dropna(subset=[column])
    y = joined["label"].to_numpy(np.int64)
    codes, groups = pd.factorize(joined[column].astype(str), sort=True)
    weights = _stratified_weights(codes * 2 + y, n_boot, seed)
    a, b = joined["pred_m"].to_numpy(np.float64), joined["pred_e"].to_numpy(np.float64)
    ones = np.ones((1, len(joined)))
    point = _decision_summaries(y, a, codes, len(groups), ones)[0] - _decision_summaries(y, b, codes, len(groups), ones)[0]
    replicates = (_decision_summaries(y, a, codes, len(groups), weights)
                  - _decision_summaries(y, b, codes, len(groups), weights))
    return _effect_columns(DECISION_EFFECTS, point, replicates)


def _stratified_weights(strata: np.ndarray, n_boot: int, seed: int) -> np.ndarray:
    """(n_boot, n) bootstrap counts: each stratum's samples resampled within it (its size fixed)."""
    rng = np.random.default_rng(seed)
    weights = np.zeros((n_boot, len(strata)))
    for stratum in np.unique(strata):
        members = np.flatnonzero(strata == stratum)
        draws = rng.integers(0, len(members), size=(n_boot, len(members)))
        np.add.at(weights, (np.arange(n_boot)[:, None], members[draws]), 1.0)
    return weights


def _effect_columns(names: tuple[str, ...], point: np.ndarray, replicates: np.ndarray) -> dict:
    """``name``, ``name_ci_low``, ``name_ci_high`` (95% percentile interval) and ``name_p`` per effect."""
    out = {}
    for k, name in enumerate(names):
        low, high = percentile_interval(replicates[:, k])
        out.update({name: float(point[k]), f"{name}_ci_low": float(low), f"{name}_ci_high": float(high),
                    f"{name}_p": two_sided_p_value(replicates[:, k])})
    return out


def _per_sample_dice(frame: pd.DataFrame, column: str) -> pd.DataFrame:
    scored = frame[~frame["skipped"].astype(bool)]
    return scored.groupby("sample_id", sort=True).agg(dice=("dice", "mean"), group=(column, "first")).dropna()


def _dice_summaries(values: np.ndarray, codes: np.ndarray, n_groups: int, weights: np.ndarray) -> np.ndarray:
    """(B, 3): overall mean Dice, gap (max − min of group means) and worst group mean, per weight row."""
    total = weights @ values / weights.sum(axis=1)
    means = np.stack([(weights[:, codes == g] @ values[codes == g]) / weights[:, codes == g].sum(axis=1)
                      for g in range(n_groups)], axis=1)
    return np.column_stack([total, means.max(axis=1) - means.min(axis=1), means.min(axis=1)])


def _segmentation_pair(method: pd.DataFrame, erm: pd.DataFrame, attribute: str, n_boot: int, seed: int) -> dict:
    """Paired bootstrap of mean Dice, Dice gap and worst-group Dice: samples resampled within each
    group (the group sizes stay those of the test set, as the runs' own bootstrap)."""
    column = GROUP_PREFIX + attribute
    joined = _per_sample_dice(method, column).join(_per_sample_dice(erm, column)["dice"].rename("dice_e"), how="inner")
    codes, groups = pd.factorize(joined["group"].astype(str), sort=True)
    weights = _stratified_weights(codes, n_boot, seed)
    a, b = joined["dice"].to_numpy(np.float64), joined["dice_e"].to_numpy(np.float64)
    ones = np.ones((1, len(joined)))
    point = _dice_summaries(a, codes, len(groups), ones)[0] - _dice_summaries(b, codes, len(groups), ones)[0]
    replicates = _dice_summaries(a, codes, len(groups), weights) - _dice_summaries(b, codes, len(groups), weights)
    return _effect_columns(EFFECTS, point, replicates)


def paired_effects(out: str | Path, results: Results, *, n_boot: int = 200, reference: str = REFERENCE) -> pd.DataFrame:
    """One row per selected non-reference run that has a reference run in its setting: the run's
    identifiers and, for each of :data:`EFFECTS`, the difference method − reference with its 95%
    paired-bootstrap interval (``<name>_ci_low``, ``<name>_ci_high``) and p-value (``<name>_p``)."""
    out = Path(out)
    names = EFFECTS if results.task == "segmentation" else EFFECTS + DECISION_EFFECTS
    columns = [*SETTING, "method", *[f"{n}{s}" for n in names for s in ("", "_ci_low", "_ci_high", "_p")]]
    runs = results.runs
    if runs.empty:
        return pd.DataFrame(columns=columns)
    runs = runs[runs.selected]
    pair = _segmentation_pair if results.task == "segmentation" else _classification_pair
    rows = []
    for key, group in runs.groupby(list(SETTING), sort=False):
        references = group[group.method == reference]
        if references.empty:
            continue
        erm = _test_predictions(out, references.run_id.iloc[0])
        if erm is None:
            continue
        setting = dict(zip(SETTING, key))
        for run in group[group.method != reference].itertuples(index=False):
            method = _test_predictions(out, run.run_id)
            if method is None:
                continue
            effects = pair(method, erm, str(run.train_attribute), n_boot, int(run.seed))
            if results.task != "segmentation":
                effects.update(_decision_pair(method, erm, str(run.train_attribute), n_boot, int(run.seed)))
            rows.append({**setting, "method": run.method, **effects})
    return pd.DataFrame(rows, columns=columns)


def aggregate_effects(effects: pd.DataFrame) -> pd.DataFrame:
    """Means over seeds per (dataset, model, usage, attribute, method): one seed keeps its paired
    bootstrap interval and p; several get a 95% t-interval over seeds, and ``<name>_n_significant``
    counts the seeds whose own interval excluded 0."""
    keys = [k for k in SETTING if k != "seed"] + ["method"]
    rows = []
    for key, group in effects.groupby(keys, sort=False):
        row = {**dict(zip(keys, key)), "n_seeds": len(group)}
        for name in [n for n in EFFECTS + DECISION_EFFECTS if n in group.columns]:
            values = group[name].to_numpy(np.float64)
            row[name] = float(np.nanmean(values)) if np.isfinite(values).any() else math.nan
            if len(group) == 1:
                row[f"{name}_ci_low"], row[f"{name}_ci_high"] = float(group[f"{name}_ci_low"].iloc[0]), float(
                    group[f"{name}_ci_high"].iloc[0])
                row[f"{name}_p"] = float(group[f"{name}_p"].iloc[0])
            else:
                from scipy import stats

                finite = values[np.isfinite(values)]
                half = (stats.t.ppf(0.975, len(finite) - 1) * np.std(finite, ddof=1) / math.sqrt(len(finite))
                        if len(finite) > 1 else math.nan)
                # a difference of two values in [0, 1] lies in [-1, 1]
                row[f"{name}_ci_low"], row[f"{name}_ci_high"] = max(row[name] - half, -1.0), min(row[name] + half, 1.0)
                row[f"{name}_p"] = math.nan  # seeds share one test set: their p-values are not independent tests
            excluded = (group[f"{name}_ci_high"] < 0) | (group[f"{name}_ci_low"] > 0)
            row[f"{name}_n_significant"] = int(excluded.sum())
        rows.append(row)
    return pd.DataFrame(rows)


def verdict(row, *, tolerance: float = UTILITY_TOLERANCE, utility_label: str = "AUC") -> tuple[str, str]:
    """(kind, sentence) for one aggregated row: ``"mitigates"`` (gap interval below 0, utility lost
    ≤ tolerance), ``"levels down"`` (gap interval below 0, more utility lost), ``"widens"`` (gap
    interval above 0) or ``"no change"``."""
    def interval(name: str) -> str:
        return f"{row[name]:+.3f} [{row[f'{name}_ci_low']:+.3f}, {row[f'{name}_ci_high']:+.3f}]"

    cost = f"{utility_label} {interval('utility')}"
    if row["gap_ci_high"] < 0:
        if row["utility"] >= -tolerance:
            return "mitigates", (f"reduces the gap by {-row['gap']:.3f} ({interval('gap')}) at a cost of {cost}, "
                                 f"within the {tolerance:g} tolerance")
        return "levels down", (f"reduces the gap by {-row['gap']:.3f} ({interval('gap')}) but loses {cost}, more "
                               f"than the {tolerance:g} tolerance: the gap closes by losing {utility_label}")
    if row["gap_ci_low"] > 0:
        return "widens", f"widens the gap by {row['gap']:.3f} ({interval('gap')}); {cost}"
    return "no change", f"no significant change of the gap ({interval('gap')}); {cost}"


def decision_verdict(row) -> str | None:
    """The effect on decisions (classification): the TPR gap (equal opportunity) and the accuracy
    it costs, method − ERM; None when the row has no decision effects or the TPR gap did not change
    significantly."""
    if not np.isfinite(row.get("tpr_gap_ci_high", math.nan)):
        return None

    def interval(name: str) -> str:
        return f"{row[name]:+.3f} [{row[f'{name}_ci_low']:+.3f}, {row[f'{name}_ci_high']:+.3f}]"

    if row["tpr_gap_ci_high"] < 0:
        return f"close the TPR gap by {-row['tpr_gap']:.3f} ({interval('tpr_gap')}) at an accuracy change of {interval('accuracy')}"
    if row["tpr_gap_ci_low"] > 0:
        return f"widen the TPR gap by {row['tpr_gap']:.3f} ({interval('tpr_gap')}); accuracy {interval('accuracy')}"
    return None


__all__ = ["paired_effects", "aggregate_effects", "verdict", "decision_verdict", "UTILITY_TOLERANCE", "REFERENCE"]
