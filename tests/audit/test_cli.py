import json

from typer.testing import CliRunner

from medequity.audit.example import simulated_cohort
from medequity.cli import app

runner = CliRunner()


def test_audit_command_writes_report(tmp_path):
    predictions, metadata = simulated_cohort(n=600, seed=0)
    predictions.to_csv(tmp_path / "preds.csv", index=False)
    metadata.to_parquet(tmp_path / "meta.parquet")
    out = tmp_path / "out"
    result = runner.invoke(app, ["audit", str(tmp_path / "preds.csv"), "--metadata", str(tmp_path / "meta.parquet"),
                                 "-a", "sex", "-a", "age", "--bin", "age=>60", "--n-boot", "50",
                                 "--n-permutations", "50", "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert {p.name for p in out.iterdir()} >= {"report.json", "groups.csv", "gaps.csv", "report.html"}
    report = json.loads((out / "report.json").read_text())
    assert report["settings"]["binning"] == ["age split at >60"]
    assert "Fairness audit" in result.output


def test_audit_command_column_typo_exits_with_message(tmp_path):
    predictions, metadata = simulated_cohort(n=100, seed=0)
    predictions.merge(metadata, on="sample_id").to_csv(tmp_path / "preds.csv", index=False)
    result = runner.invoke(app, ["audit", str(tmp_path / "preds.csv"), "-a", "gender", "--out", str(tmp_path / "o")])
    assert result.exit_code == 2
    assert "'gender'" in result.output and "available columns" in result.output


def test_per_attribute_bootstrap_flag_resamples_each_attribute_on_its_own(tmp_path):
    """Default: one shared set of replicates (the report says so); --per-attribute-bootstrap gives each
    attribute its own group x label resampling; point values are the same either way."""
    predictions, metadata = simulated_cohort(n=600, seed=0)
    predictions.merge(metadata, on="sample_id").to_csv(tmp_path / "preds.csv", index=False)
    reports = {}
    for name, extra in (("shared", []), ("own", ["--per-attribute-bootstrap"])):
        result = runner.invoke(app, ["audit", str(tmp_path / "preds.csv"), "-a", "sex", "-a", "age", "--bin", "age=>60",
                                     "--n-boot", "50", "--out", str(tmp_path / name), *extra])
        assert result.exit_code == 0, result.output
        reports[name] = json.loads((tmp_path / name / "report.json").read_text())
    assert "one set of replicates for every attribute" in reports["shared"]["settings"]["bootstrap"]
    assert reports["own"]["settings"]["bootstrap"] == "percentile, stratified by group x label"
    import pandas as pd

    shared, own = (pd.read_csv(tmp_path / name / "groups.csv") for name in ("shared", "own"))
    assert shared["value"].round(12).tolist() == own["value"].round(12).tolist()
