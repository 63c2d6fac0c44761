"""Multi-label predictions (one label and one score column per finding): one task per finding in
one run, paired by name or explicitly; per-task values checked against scikit-learn."""

import json

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import recall_score, roc_auc_score
from typer.testing import CliRunner

from medequity.audit import AuditInputError, audit, load_audit_data
from medequity.cli import app

FINDINGS = ("Cardiomegaly", "Edema", "Effusion")


def _cxr(n=400, seed=0) -> pd.DataFrame:
    """Three findings in three spellings of the pairing rule; Edema's scores are weaker for women."""
    rng = np.random.default_rng(seed)
    sex = rng.choice(["F", "M"], n)
    table = pd.DataFrame({"image_id": [f"img{i}" for i in range(n)], "sex": sex,
                          "race": rng.choice(["White", "Black", "Asian", "Unknown"], n)})
    spellings = {"Cardiomegaly": ("Cardiomegaly", "score_Cardiomegaly"), "Edema": ("Edema_label", "Edema_score"),
                 "Effusion": ("label_Effusion", "prob_Effusion")}
    for finding, (label_col, score_col) in spellings.items():
        y = rng.integers(0, 2, n)
        signal = np.where((finding == "Edema") & (sex == "F"), 0.1, 0.4)
        table[label_col] = y
        table[score_col] = np.clip(0.5 + (y - 0.5) * signal + rng.normal(0, 0.2, n), 0, 1)
    return table


def test_findings_are_paired_by_the_naming_rule_and_named_by_finding():
    table = _cxr()
    data = load_audit_data(table, attributes=["sex"])
    assert data.labels == {"Cardiomegaly": "Cardiomegaly", "Edema": "Edema_label", "Effusion": "label_Effusion"}
    assert data.scores == {"Cardiomegaly": "score_Cardiomegaly", "Edema": "Edema_score", "Effusion": "prob_Effusion"}
    assert data.classes == dict.fromkeys(FINDINGS, 1)


def test_every_finding_is_audited_in_one_run_against_sklearn():
    table = _cxr()
    report = audit(table, attributes=["sex"], n_boot=0, n_permutations=0)
    assert list(report.tasks) == list(FINDINGS)
    for finding, (label_col, score_col) in {"Cardiomegaly": ("Cardiomegaly", "score_Cardiomegaly"),
                                            "Edema": ("Edema_label", "Edema_score"),
                                            "Effusion": ("label_Effusion", "prob_Effusion")}.items():
        task = report.tasks[finding]
        assert (task.label_column, task.score_column) == (label_col, score_col)
        assert task.n_positive == int(table[label_col].sum())
        result = task.results["sex"]
        for g, group in enumerate(result.groups):
            rows = table.sex == group
            y, s = table.loc[rows, label_col], table.loc[rows, score_col]
            assert result.values["auc"][g + 1] == pytest.approx(roc_auc_score(y, s), abs=1e-12)
            assert result.values["tpr"][g + 1] == pytest.approx(recall_score(y, s > 0.5), abs=1e-12)
    # The built-in deficit (Edema in women) shows in Edema's task only.
    auc_gap = {f: report.tasks[f].results["sex"].summary("auc", "gap") for f in FINDINGS}
    assert max(auc_gap, key=auc_gap.get) == "Edema"
    data = json.loads(report.to_json())
    assert data["tasks"]["Edema"]["label_column"] == "Edema_label"
    assert data["settings"]["labels"] == {"Cardiomegaly": "Cardiomegaly", "Edema": "Edema_label", "Effusion": "label_Effusion"}


def test_explicit_pairs_and_repeated_labels():
    table = _cxr().rename(columns={"score_Cardiomegaly": "cardio_out"})
    report = audit(table, pairs=["Cardiomegaly=cardio_out", "Edema_label=Edema_score"], attributes=["sex"],
                   n_boot=0, n_permutations=0)
    assert list(report.tasks) == ["Cardiomegaly", "Edema"]
    assert report.tasks["Cardiomegaly"].score_column == "cardio_out"
    # repeated --label: scores by the rule, or one --score per label in the same order
    data = load_audit_data(table, label=["Edema_label", "label_Effusion"], attributes=["sex"])
    assert data.scores == {"Edema": "Edema_score", "Effusion": "prob_Effusion"}
    data = load_audit_data(table, label=["Cardiomegaly", "Edema_label"], score=["cardio_out", "Edema_score"],
                           attributes=["sex"])
    assert data.scores == {"Cardiomegaly": "cardio_out", "Edema": "Edema_score"}


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"label": ["Edema_label", "Edema_label"]}, "given twice"),
    ({"label": ["Cardiomegaly", "Edema_label"]}, r"no score column for label 'Cardiomegaly'.*--task Cardiomegaly=SCORE"),
    ({"label": ["Edema_label", "label_Effusion"], "score": ["Edema_score"]}, "2 --label columns but 1 --score"),
    ({"pairs": ["Edema_label=Edema_score", "Edema_label=prob_Effusion"]}, "paired twice"),
    ({"pairs": ["Edema_label"]}, "must name a label and a score column"),
    ({"pairs": ["Edema_label=Edema_score"], "prediction": "sex"}, "--prediction"),
    ({"pairs": ["Edema_label=nope"]}, "'nope'.*available columns"),
])
def test_multi_label_mistakes_are_named(kwargs, message):
    table = _cxr().rename(columns={"score_Cardiomegaly": "cardio_out"})
    with pytest.raises(AuditInputError, match=message):
        load_audit_data(table, attributes=["sex"], **kwargs)


def test_validation_table_fits_each_findings_threshold_there():
    table, validation = _cxr(seed=0), _cxr(seed=1)
    report = audit(table, attributes=["sex"], threshold="best_f1", validation=validation, n_boot=0, n_permutations=0)
    from medequity.metrics import best_f1_threshold

    for finding, (label_col, score_col) in {"Edema": ("Edema_label", "Edema_score"),
                                            "Effusion": ("label_Effusion", "prob_Effusion")}.items():
        threshold = report.tasks[finding].threshold
        assert threshold["fitted_on"] == "validation set"
        assert threshold["value"] == pytest.approx(best_f1_threshold(validation[label_col], validation[score_col]))


def test_cli_task_pairs_and_detected_findings(tmp_path):
    table = _cxr(n=300)
    table.to_csv(tmp_path / "cxr.csv", index=False)
    runner = CliRunner()
    result = runner.invoke(app, ["audit", str(tmp_path / "cxr.csv"), "-a", "sex", "--task", "Edema_label=Edema_score",
                                 "--task", "label_Effusion=prob_Effusion", "--n-boot", "0", "--n-permutations", "0",
                                 "--no-html", "--out", str(tmp_path / "pairs")])
    assert result.exit_code == 0, result.output
    assert set(pd.read_csv(tmp_path / "pairs" / "groups.csv").task) == {"Edema", "Effusion"}
    result = runner.invoke(app, ["audit", str(tmp_path / "cxr.csv"), "-a", "sex", "--n-boot", "0", "--n-permutations",
                                 "0", "--no-html", "--out", str(tmp_path / "all")])
    assert result.exit_code == 0, result.output
    assert set(pd.read_csv(tmp_path / "all" / "groups.csv").task) == set(FINDINGS)
