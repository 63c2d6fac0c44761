"""The seed methods are first-class bench entries: FairDi, Fair Diagnosis and FAAP as methods,
a FairTune mask (from ``medequity fairtune search``'s best.json) as a usage, in one spec."""

from __future__ import annotations

import pandas as pd
import pytest
import yaml

from medequity.bench import load_results, run_benchmark
from medequity.bench.report import run_table
from medequity.metrics import adf as medequity_adf

pytestmark = pytest.mark.filterwarnings("ignore::medequity.metrics._validation.GroupMetricWarning")


def test_fairdi_fair_diagnosis_faap_and_a_fairtune_mask_run_in_one_benchmark(tmp_path):
    from tests.bench.conftest import TINY

    spec = {**TINY, "usages": ["ft", {"name": "mask", "params": {"mask": "0011"}}],
            "methods": ["erm", "fairdi", {"name": "fair_diagnosis", "params": {"adversarial_epochs": 1}},
                        {"name": "faap", "params": {"adversarial_epochs": 1}}],
            "evaluation": {"n_boot": 0, "n_permutations": 0, "embedding": "pca"}}
    spec_path = tmp_path / "spec.yaml"
    spec_path.write_text(yaml.safe_dump(spec))
    run_benchmark(spec_path, tmp_path / "out")
    results = load_results(tmp_path / "out")
    runs = results.runs
    assert len(runs) == 8 and results.failed.empty, results.failed
    assert set(runs.method) == {"erm", "fairdi", "fair_diagnosis", "faap"} and set(runs.usage) == {"ft", "mask"}
    metrics, summaries = results.metrics, results.summaries
    auc = metrics[(metrics.metric == "auc") & (metrics.group == "overall")]
    assert auc.run_id.nunique() == 8 and auc.value.between(0, 1).all()
    # Fair Diagnosis' causal metric is reported for every run, equal to metrics.adf on its decisions
    adf = summaries[(summaries.metric == "adf") & (summaries.attribute == "sex")].set_index("run_id")
    assert len(adf) == 8 and (adf.value >= 0).all()
    for run_id in adf.index[:2]:
        test = pd.read_parquet(tmp_path / "out" / "runs" / run_id / "predictions.parquet").query("split == 'test'")
        expected = medequity_adf(test.label.to_numpy(), test.pred.to_numpy(), sensitive_features=test["group:sex"].to_numpy())
        assert adf.loc[run_id, "value"] == pytest.approx(expected)
    assert "adf" in run_table(results).columns  # the bench report's ADF column is filled
