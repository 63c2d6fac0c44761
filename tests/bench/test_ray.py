"""Runs on a (local) Ray cluster land in the same layout. Slowest test: conftest runs it last."""

from __future__ import annotations

import json

import pytest

from medequity.bench import load_results, load_spec, run_benchmark

pytestmark = pytest.mark.filterwarnings("ignore::medequity.metrics._validation.GroupMetricWarning",
                                        "ignore::DeprecationWarning", "ignore::FutureWarning")


def test_two_runs_on_a_local_ray_cluster(tmp_path, tiny_spec):
    ray = pytest.importorskip("ray")
    try:
        ray.init(num_cpus=1, include_dashboard=False, log_to_driver=False)
    except Exception as exc:  # a sandbox without the sockets/shared memory Ray needs
        message = f"Ray cannot start here: {type(exc).__name__}: {exc}"
        print(message)
        pytest.skip(message)
    try:
        tiny_spec["methods"] = [{"name": "groupdro", "grid": {"step_size": [0.01, 1.0]}}]
        # run_benchmark uses the Ray this test started (and leaves it running for the test to stop).
        results = run_benchmark(tiny_spec, tmp_path / "out", ray_address="local")
        assert ray.is_initialized()
    finally:
        ray.shutdown()
    cells = load_spec(tiny_spec).cells
    assert sorted(results.runs.run_id) == sorted(c.run_id for c in cells) and results.failed.empty
    assert results.runs.selected.sum() == 1
    for cell in cells:
        record = json.loads((tmp_path / "out" / "runs" / cell.run_id / "run.json").read_text())
        assert record["status"] == "done" and record["spec"] == cell.spec.to_dict()
    assert len(load_results(tmp_path / "out").summaries) == len(results.summaries) > 0
