import json

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import roc_auc_score

from medequity.audit import audit
from medequity.audit.example import simulated_cohort


@pytest.fixture(scope="module")
def demo_report():
    predictions, metadata = simulated_cohort(n=3000, seed=1)
    report = audit(predictions, metadata=metadata, attributes=["sex", "age", "race", "site"], bins=["age=>60"],
                   intersections=[("sex", "age")], n_boot=200, n_permutations=200, random_state=0)
    return report, predictions.merge(metadata, on="sample_id")


def test_group_auc_matches_sklearn(demo_report):
    report, joined = demo_report
    result = report.tasks["positive"].results["race"]
    for g, name in enumerate(result.groups):
        rows = joined.race == name
        assert result.values["auc"][g + 1] == pytest.approx(roc_auc_score(joined.label[rows], joined.score[rows]), abs=1e-12)


def test_known_biases_are_found(demo_report):
    report, _ = demo_report
    results = report.tasks["positive"].results
    gaps = report.gaps_frame().set_index(["attribute", "metric", "summary"])
    # sex: weaker signal in women -> AUC gap, significant
    assert gaps.loc[("sex", "auc", "gap"), "p_value"] < 0.01
    assert (results["sex"].values["auc"][1 + results["sex"].groups.index("F")]
            < results["sex"].values["auc"][1 + results["sex"].groups.index("M")])
    # race: under-scoring of Black patients -> under-diagnosis (higher FNR), significant
    race = results["race"]
    fnr = dict(zip(race.groups, race.values["fnr"][1:]))
    assert max(fnr, key=fnr.get) == "Black"
    assert gaps.loc[("race", "fnr", "gap"), "p_value"] < 0.01
    # age: prevalence difference only -> DP gap significant, ADF near 0 and below race's ADF
    assert gaps.loc[("age", "selection_rate", "gap"), "p_value"] < 0.01
    adf = report.tasks["positive"].adf
    assert adf["age"]["value"] < 0.002 < adf["race"]["ci_low"]
    # site: no bias -> AUC gap not significant
    assert gaps.loc[("site", "auc", "gap"), "p_value"] > 0.05


def test_missing_values_are_counted_not_grouped(demo_report):
    report, joined = demo_report
    result = report.tasks["positive"].results["sex"]
    assert set(result.groups) == {"F", "M"}
    assert result.n_excluded_missing == int(joined.sex.isna().sum()) > 0
    assert any("missing 'sex'" in w for w in report.warnings)


def test_intersection_groups(demo_report):
    report, _ = demo_report
    assert set(report.tasks["positive"].results["sex & age"].groups) == {"F & <=60", "F & >60", "M & <=60", "M & >60"}


def test_save_writes_valid_json_and_csv_without_temp_files(demo_report, tmp_path, monkeypatch):
    report, _ = demo_report
    paths = report.save(tmp_path)
    data = json.loads(paths["json"].read_text())  # strict JSON: NaN would fail with allow_nan=False
    assert data["settings"]["threshold_setting"] == "0.5"
    assert data["tasks"]["positive"]["threshold"] == {"value": 0.5, "rule": "fixed", "fitted_on": "none", "operator": ">"}
    assert data["settings"]["provenance"]["versions"]["numpy"] == np.__version__
    groups = pd.read_csv(paths["groups"])
    assert {"task", "attribute", "group", "metric", "value", "ci_low", "ci_high", "n", "n_pos", "n_neg"} <= set(groups.columns)
    assert not list(tmp_path.glob(".*.tmp"))


def test_threshold_fitted_on_validation_is_recorded():
    predictions, metadata = simulated_cohort(n=800, seed=2)
    validation, _ = simulated_cohort(n=800, seed=3)
    validation = validation.merge(metadata[["sample_id", "sex"]], on="sample_id")
    report = audit(predictions.merge(metadata, on="sample_id"), attributes=["sex"], threshold="best_f1",
                   validation=validation, n_boot=0, n_permutations=0)
    threshold = report.tasks["positive"].threshold
    assert threshold["rule"] == "best_f1" and threshold["fitted_on"] == "validation set"
    from medequity.metrics import best_f1_threshold

    assert threshold["value"] == pytest.approx(best_f1_threshold(validation.label, validation.score))


def test_group_with_one_class_is_nan_not_crash():
    frame = pd.DataFrame({"label": [0, 1] * 50 + [0] * 10, "score": np.linspace(0, 1, 110),
                          "site": ["a", "b"] * 50 + ["c"] * 10})
    report = audit(frame, attributes=["site"], n_boot=50, n_permutations=50, min_group_size=5)
    result = report.tasks["positive"].results["site"]
    assert np.isnan(result.values["auc"][1 + result.groups.index("c")])
    assert np.isnan(result.summary("auc", "gap"))
    assert any("undefined" in w and "'c'" in w for w in report.warnings)


def test_explicit_predictions_with_scores_give_the_decisions_and_scores_give_auc():
    """A model's own hard decisions (e.g. per-group thresholds) are audited as given; AUC still
    comes from the scores. Reference: scikit-learn on the same arrays."""
    import numpy as np
    import pandas as pd
    from sklearn.metrics import recall_score, roc_auc_score

    from medequity.audit import audit

    rng = np.random.default_rng(4)
    n = 600
    sex = rng.choice(["F", "M"], n)
    y = rng.integers(0, 2, n)
    score = np.clip(0.5 + (y - 0.5) * 0.4 + rng.normal(0, 0.25, n), 0, 1)
    decision = (score >= np.where(sex == "F", 0.3, 0.7)).astype(int)  # per-group thresholds
    table = pd.DataFrame({"label": y, "score": score, "decision": decision, "sex": sex})
    report = audit(table, label="label", score="score", prediction="decision", attributes=["sex"], n_boot=0,
                   n_permutations=0)
    groups = report.groups_frame()
    for g in ("F", "M"):
        rows = groups[(groups.group == g) & (groups.attribute == "sex")].set_index("metric")["value"]
        assert rows["tpr"] == pytest.approx(recall_score(y[sex == g], decision[sex == g]))
        assert rows["auc"] == pytest.approx(roc_auc_score(y[sex == g], score[sex == g]))
