"""``save_run``'s audit report reuses the run's own test evaluation: same numbers, no second bootstrap."""

from __future__ import annotations

import json
import warnings

import pytest

from medequity.audit import audit
from medequity.data import GROUP_PREFIX
from medequity.metrics.thresholds import Threshold


def _run(tmp_path, method="erm", **spec):
    from medequity.experiment import ExperimentSpec, run_experiment

    options = dict(dataset="synthetic", dataset_options={"preset": "derm-unbiased", "n": 240, "image_size": 32},
                   attribute="sex", model="small_cnn", model_options={"input_size": 32}, usage="lp", method=method,
                   train={"epochs": 1, "batch_size": 32, "device": "cpu", "lr": 1e-3},
                   n_boot=40, n_permutations=30, seed=3, cache_dir=str(tmp_path / "cache"))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tiny groups warn that their metrics are unreliable
        return run_experiment(ExperimentSpec(**{**options, **spec}))


@pytest.fixture(scope="module")
def erm_run(tmp_path_factory):
    # eval_attributes: the run evaluates one attribute, the report covers every one (the others are computed)
    return _run(tmp_path_factory.mktemp("save_run"), eval_attributes=["sex"])


def _direct_audit(result, n_boot):
    """The audit save_run writes, called directly on the run's test predictions (the reference)."""
    test = result.predictions[result.predictions.split == "test"]
    test = test.rename(columns=lambda c: c.removeprefix(GROUP_PREFIX))
    attributes = [c.removeprefix(GROUP_PREFIX) for c in result.predictions.columns if c.startswith(GROUP_PREFIX)]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        # the run's own threshold with its rule and record (best_f1 on validation: score >= t)
        return audit(test, label="label", score="score", attributes=attributes, threshold=Threshold.from_dict(result.threshold),
                     n_boot=n_boot, n_permutations=result.spec.n_permutations, random_state=result.spec.seed,
                     shared_bootstrap=False)  # each attribute on its own replicates, as the run evaluated them


def _comparable(report: dict) -> dict:
    settings = {k: v for k, v in report["settings"].items() if k not in ("created", "provenance", "source")}
    return {**report, "settings": settings}


def _save(result, out, **kwargs):
    from medequity.experiment import save_run

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return save_run(result, out, **kwargs)


def test_save_run_report_equals_a_direct_audit(erm_run, tmp_path):
    paths = _save(erm_run, tmp_path / "run")
    saved = json.loads(paths["report_json"].read_text())
    direct = _direct_audit(erm_run, erm_run.spec.n_boot)
    assert _comparable(saved) == _comparable(json.loads(direct.to_json()))
    attributes = saved["tasks"]["positive"]["attributes"]
    assert set(attributes) == {"sex", "age", "skin_tone"}
    values = attributes["sex"]["values"]
    assert any(row["ci_low"] is not None for row in values)  # the CIs are compared, not only NaNs
    assert paths["report_groups"].read_text() == direct.groups_frame().to_csv(index=False)
    assert paths["report_gaps"].read_text() == direct.gaps_frame().to_csv(index=False)


def test_save_run_does_not_bootstrap_the_evaluated_attributes_again(erm_run, tmp_path, monkeypatch):
    import medequity.audit.core as core

    evaluated = []
    original = core.group_metrics_shared

    def counting(*args, **kwargs):
        evaluated.extend(frame.columns[0] for frame in kwargs["sensitive_features"])
        return original(*args, **kwargs)

    monkeypatch.setattr(core, "group_metrics_shared", counting)
    _save(erm_run, tmp_path / "run")
    assert "sex" in erm_run.group_results and sorted(evaluated) == ["age", "skin_tone"]  # only what the run did not evaluate

    evaluated.clear()  # another bootstrap size is another request: every attribute is computed, with it
    paths = _save(erm_run, tmp_path / "other", n_boot=25)
    assert sorted(evaluated) == ["age", "sex", "skin_tone"]
    saved = json.loads(paths["report_json"].read_text())
    assert _comparable(saved) == _comparable(json.loads(_direct_audit(erm_run, 25).to_json()))


def test_post_processing_decisions_are_what_the_report_audits(tmp_path, monkeypatch):
    """ThresholdOptimizer decides per group: the report's threshold metrics are those of its own
    decisions (the ``pred`` column), not of one threshold on its scores, and the run's results
    (which evaluated the same decisions) serve the report without a second bootstrap."""
    import numpy as np
    import pandas as pd

    import medequity.audit.core as core

    result = _run(tmp_path, method="threshold_optimizer")
    test = result.predictions[result.predictions.split == "test"]
    assert not np.array_equal(test["pred"].to_numpy(), (test["score"].to_numpy() >= result.threshold["value"]).astype(int))
    calls = []
    original = core.group_metrics_shared
    monkeypatch.setattr(core, "group_metrics_shared", lambda *a, **k: calls.append(1) or original(*a, **k))
    paths = _save(result, tmp_path / "run")
    assert calls == []  # every attribute was evaluated by the run
    groups = pd.read_csv(paths["report_groups"])
    sex = groups[(groups.attribute == "sex") & (groups.metric == "tpr")].set_index("group")["value"]
    for group, rows in test.groupby("group:sex"):
        positives = rows[rows.label == 1]
        assert sex[group] == pytest.approx(positives["pred"].mean())  # TPR of the method's own decisions
    saved = json.loads(paths["report_json"].read_text())
    assert "post-processed decisions" in saved["settings"]["decisions"]


def test_audit_refuses_precomputed_results_of_other_settings(erm_run):
    test = erm_run.predictions[erm_run.predictions.split == "test"].rename(columns=lambda c: c.removeprefix(GROUP_PREFIX))
    with pytest.raises(ValueError, match="n_boot=40"):
        audit(test, label="label", score="score", attributes=["sex"], n_boot=10, n_permutations=0,
              random_state=erm_run.spec.seed, precomputed=erm_run.group_results)
