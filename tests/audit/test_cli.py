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
