"""``medequity train``: one model, one method, saved with its predictions and fairness report."""

from __future__ import annotations

import json

import pandas as pd
import pytest
from typer.testing import CliRunner

from medequity.cli import app

pytestmark = pytest.mark.filterwarnings("ignore::medequity.metrics._validation.GroupMetricWarning")

DATA = ["--option", "preset=cxr-sex-prevalence", "--option", "n=300", "--option", "image_size=32",
        "--model-option", "input_size=32", "--model-option", "width=8"]


def test_train_saves_model_predictions_and_a_report_of_the_methods_own_decisions(tmp_path):
    out = tmp_path / "run"
    larger_val = ["--option", "n=800", "--option", "split_fractions=[0.5, 0.25, 0.25]"]
    result = CliRunner().invoke(app, ["train", *DATA, *larger_val, "--attribute", "sex&age", "--usage", "lp", "--method",
                                      "threshold_optimizer", "--epochs", "2", "--n-boot", "20", "--out", str(out),
                                      "--cache-dir", str(tmp_path / "cache")])
    assert result.exit_code == 0, result.output
    for name in ("model.safetensors", "predictions.parquet", "history.parquet", "run.json", "report.html",
                 "report.json", "groups.csv", "gaps.csv"):
        assert (out / name).stat().st_size > 0, name
    run = json.loads((out / "run.json").read_text())
    assert run["spec"]["attribute"] == "sex & age" and run["spec"]["model_options"] == {"input_size": 32, "width": 8}
    predictions = pd.read_parquet(out / "predictions.parquet")
    assert {"group:sex & age", "group:sex", "group:age"} <= set(predictions.columns)
    report = json.loads((out / "report.json").read_text())
    assert "post-processed decisions" in report["settings"]["decisions"]
    groups = pd.read_csv(out / "groups.csv")
    assert "female & >60" in set(groups[groups.attribute == "sex & age"].group)  # the intersection is audited


def test_train_rejects_an_unknown_method_and_names_the_known_ones(tmp_path):
    result = CliRunner().invoke(app, ["train", *DATA, "--method", "magic", "--out", str(tmp_path)])
    assert result.exit_code == 2
    assert "unknown method 'magic'" in result.output and "fair_diagnosis" in result.output


def test_train_names_the_group_a_post_processor_cannot_fit(tmp_path):
    """300 patients, 4 intersections: a validation group with one class is named, with the fix."""
    result = CliRunner().invoke(app, ["train", *DATA, "--attribute", "sex&age", "--usage", "lp", "--method",
                                      "threshold_optimizer", "--epochs", "1", "--n-boot", "0", "--out", str(tmp_path),
                                      "--cache-dir", str(tmp_path / "cache")])
    assert result.exit_code == 2
    output = " ".join(result.output.split())
    assert "needs both classes in every group of the validation split" in output and "& " in output


def test_train_progress_counts_every_stage_of_a_multi_stage_method(tmp_path):
    """fair_diagnosis trains a classifier, pre-trains its mask (jsd) and then runs the adversarial
    stage: the piped progress lines count all three stages' epochs against one total."""
    result = CliRunner().invoke(app, ["train", *DATA, "--usage", "lp", "--method", "fair_diagnosis", "--epochs", "1",
                                      "--param", "jsd_pretrain_epochs=1", "--param", "adversarial_epochs=2",
                                      "--n-boot", "10", "--out", str(tmp_path / "run"),
                                      "--cache-dir", str(tmp_path / "cache")])
    assert result.exit_code == 0, result.output
    lines = [line for line in result.output.splitlines() if line.startswith("[") and " epoch " in line]
    assert lines and lines[-1].endswith("4/4") and "adversarial epoch 2" in lines[-1], lines  # 1 + 1 + 2 epochs
