"""Groups as a reader expects them (numeric bin order, "Unknown" is no group, small groups flagged on
positives and negatives) and real-valued scores (ranks valid, calibration only for probabilities)."""

import json

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import roc_auc_score

from medequity.audit import audit


def _ece(y, p, n_bins=10):
    """ECE with equal-width bins (Guo et al. 2017), written out by hand."""
    y, p = np.asarray(y, float), np.asarray(p, float)
    index = np.minimum((p * n_bins).astype(int), n_bins - 1)
    return sum(np.mean(index == b) * abs(y[index == b].mean() - p[index == b].mean())
               for b in range(n_bins) if np.any(index == b))


def _table(n=600, seed=0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n)
    logit = (y - 0.5) * 2.5 + rng.normal(0, 1.2, n)
    race = rng.choice(["White", "Black", "Asian", "Unknown", "Declines to state", "Patient Refused", ""], n,
                      p=[0.4, 0.2, 0.2, 0.05, 0.05, 0.05, 0.05])
    return pd.DataFrame({"label": y, "logit": logit, "score": 1 / (1 + np.exp(-logit)), "race": race,
                         "age": rng.uniform(20, 95, n), "sex": rng.choice(["F", "M"], n)})


def test_age_bins_are_listed_in_numeric_order_in_tables_and_json():
    report = audit(_table(), score="score", attributes=["sex"], bins=["age=40,60,80"], intersections=[("sex", "age")],
                   n_boot=0, n_permutations=0)
    order = ["<40", "40-<60", "60-<80", ">=80"]
    assert list(report.tasks["positive"].results["age"].groups) == order
    groups = report.groups_frame()
    listed = groups[(groups.attribute == "age") & (groups.metric == "auc") & (groups.group != "overall")].group
    assert list(listed) == order
    crossed = json.loads(report.to_json())["tasks"]["positive"]["attributes"]["sex & age"]["groups"]
    assert crossed == [f"{s} & {a}" for s in ("F", "M") for a in order]


def test_unknown_like_values_are_missing_and_counted_by_default():
    table = _table()
    report = audit(table, score="score", attributes=["race"], n_boot=0, n_permutations=0)
    result = report.tasks["positive"].results["race"]
    assert result.groups == ("Asian", "Black", "White")
    expected = table.race.value_counts()[["Unknown", "Declines to state", "Patient Refused", ""]].to_dict()
    assert report.settings["excluded_unknown"] == {"race": expected}
    assert result.n_excluded_missing == sum(expected.values())
    assert any(w.startswith(f"race: {sum(expected.values())} rows valued 'Unknown'") and "--keep-unknown" in w
               for w in report.warnings)
    kept = audit(table, score="score", attributes=["race"], keep_unknown=True, n_boot=0, n_permutations=0)
    # CSV would read "" as missing anyway; in a DataFrame it is kept as text when asked to.
    assert set(kept.tasks["positive"].results["race"].groups) == {"", "Asian", "Black", "White", "Unknown",
                                                                  "Declines to state", "Patient Refused"}
    assert kept.settings["excluded_unknown"] == {}


def test_small_group_flag_counts_positives_and_negatives():
    """500 samples but 14 positives: flagged, and the warning says positives are short."""
    rng = np.random.default_rng(1)
    y = np.r_[np.ones(14, int), np.zeros(486, int), rng.integers(0, 2, 500)]
    site = np.r_[["A"] * 500, ["B"] * 500]
    table = pd.DataFrame({"label": y, "score": np.clip(0.3 + 0.4 * y + rng.normal(0, 0.2, 1000), 0, 1), "site": site})
    report = audit(table, attributes=["site"], n_boot=0, n_permutations=0, min_group_size=30)
    counts = report.tasks["positive"].results["site"].counts
    assert bool(counts.loc["A", "small"]) and not bool(counts.loc["B", "small"])
    groups = report.groups_frame()
    assert set(groups[groups.small_group].group) == {"A"}
    assert any("'A' (14 positives)" in w for w in report.warnings)


def test_logits_give_auc_and_thresholds_and_skip_calibration_with_a_reason():
    table = _table()
    report = audit(table, score="logit", attributes=["sex"], n_boot=0, n_permutations=0)
    result = report.tasks["positive"].results["sex"]
    assert "ece" not in result.metrics and "bce" not in result.metrics
    for g, group in enumerate(result.groups):
        rows = table.sex == group
        assert result.values["auc"][g + 1] == pytest.approx(roc_auc_score(table.label[rows], table.logit[rows]), abs=1e-12)
        # default threshold on real-valued scores: 0 (the margin's boundary), predicted positive if score > 0
        assert result.values["selection_rate"][g + 1] == pytest.approx(np.mean(table.logit[rows] > 0), abs=1e-12)
    assert report.tasks["positive"].threshold["value"] == 0.0
    assert report.settings["metrics_skipped"] == {"ece": "scores are not probabilities", "bce": "scores are not probabilities"}
    assert any(w.startswith("calibration metrics ece, bce skipped") and "--scores logit" in w for w in report.warnings)


def test_scores_logit_applies_a_sigmoid_and_gives_calibration():
    table = _table()
    report = audit(table, score="logit", score_type="logit", attributes=["sex"], n_boot=0, n_permutations=0)
    result = report.tasks["positive"].results["sex"]
    probability = 1 / (1 + np.exp(-table.logit))
    for g, group in enumerate(result.groups):
        rows = table.sex == group
        assert result.values["ece"][g + 1] == pytest.approx(_ece(table.label[rows], probability[rows]), abs=1e-12)
    assert report.settings["score_type"] == "logits (a sigmoid was applied)"
    same = audit(table, score="score", attributes=["sex"], n_boot=0, n_permutations=0).tasks["positive"].results["sex"]
    for metric in ("auc", "tpr", "fpr", "ece"):
        np.testing.assert_allclose(result.values[metric], same.values[metric], atol=1e-12)


def test_threshold_scale_follows_the_scores():
    """Margins take any finite threshold (score > t); probabilities and sigmoid-ed logits need [0, 1]."""
    from medequity.audit import AuditInputError

    table = _table()
    report = audit(table, score="logit", attributes=["sex"], threshold="1.5", metrics=["selection_rate"], n_boot=0,
                   n_permutations=0)
    result = report.tasks["positive"].results["sex"]
    for g, group in enumerate(result.groups):
        assert result.values["selection_rate"][g + 1] == pytest.approx(np.mean(table.logit[table.sex == group] > 1.5))
    with pytest.raises(AuditInputError, match=r"--threshold 1.5: the scores are probabilities \(after the sigmoid"):
        audit(table, score="logit", score_type="logit", attributes=["sex"], threshold="1.5")


def test_unknown_category_of_a_categorical_column_is_missing_and_unused_ones_not_counted():
    table = _table()
    table["race"] = pd.Categorical(table.race, categories=[*sorted(set(table.race)), "Not reported"])
    report = audit(table, score="score", attributes=["race"], n_boot=0, n_permutations=0)
    assert "Not reported" not in report.settings["excluded_unknown"]["race"]  # no row has it
    assert report.tasks["positive"].results["race"].groups == ("Asian", "Black", "White")
