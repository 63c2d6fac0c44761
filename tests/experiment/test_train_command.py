"""``medequity train`` ends with its test metrics: the headline metric per group with its CI and
the gap / worst group / equity-scaled summary, the same numbers as the saved report."""

from __future__ import annotations

import pandas as pd
import pytest
from typer.testing import CliRunner

from medequity.cli import app

pytestmark = pytest.mark.filterwarnings("ignore::medequity.metrics._validation.GroupMetricWarning")


def test_train_prints_the_test_metrics_it_saved(tmp_path, monkeypatch):
    monkeypatch.setenv("COLUMNS", "200")
    out = tmp_path / "run"
    result = CliRunner().invoke(app, ["train", "--option", "preset=cxr-sex-prevalence", "--option", "n=300",
                                      "--option", "image_size=32", "--model-option", "input_size=32", "--model-option",
                                      "width=4", "--usage", "lp", "--epochs", "2", "--n-boot", "20", "--out", str(out),
                                      "--cache-dir", str(tmp_path / "cache")])
    assert result.exit_code == 0, result.output
    output = result.output
    assert "test metrics by sex" in output
    groups = pd.read_csv(out / "groups.csv")
    auc = groups[(groups.attribute == "sex") & (groups.metric == "auc")].set_index("group")
    for group in ("overall", "female", "male"):
        row = auc.loc[group]
        line = next(line for line in output.splitlines() if f" {group} " in line)
        assert f"{row.value:.3f} [{row.ci_low:.3f}, {row.ci_high:.3f}]" in line and f" {int(row.n)} " in line
    gaps = pd.read_csv(out / "gaps.csv")
    gap = gaps[(gaps.attribute == "sex") & (gaps.metric == "auc") & (gaps.summary == "gap")].iloc[0]
    es = gaps[(gaps.attribute == "sex") & (gaps.metric == "auc") & (gaps.summary == "es_std")].iloc[0]
    summary = next(line for line in output.splitlines() if line.startswith("auc gap"))
    assert summary.startswith(f"auc gap {gap.value:.3f} [{gap.ci_low:.3f}, {gap.ci_high:.3f}] (p = {gap.p_value:.3g})")
    assert f"es_auc {es.value:.3f}" in summary
