"""A benchmark whose runs need a ``synthetic:`` checkpoint trains it once, before the runs, and says
so epoch by epoch (a cold cache used to mean a minute or more without a line of output, inside the
first run — or in every worker at once with ``--jobs``)."""

from __future__ import annotations

import copy

import medequity.bench.runner as runner
from medequity.bench import load_spec, run_benchmark
from medequity.experiment.pretrain import synthetic_checkpoint


def test_a_cold_pretraining_reports_each_epoch_and_a_warm_one_nothing(tmp_path):
    lines: list[str] = []
    options = {"input_size": 32, "width": 4}
    path = synthetic_checkpoint("small_cnn", "synthetic:cxr", cache_dir=tmp_path, n=200, epochs=2,
                                backbone_options=options, progress=lines.append)
    assert path.is_file()
    assert lines == ["pre-training small_cnn on cxr-unbiased (first use; cached after)",
                     "pre-training small_cnn on cxr-unbiased: epoch 1/2", "pre-training small_cnn on cxr-unbiased: epoch 2/2"]
    lines.clear()
    assert synthetic_checkpoint("small_cnn", "synthetic:cxr", cache_dir=tmp_path, n=200, epochs=2, backbone_options=options,
                                progress=lines.append) == path and lines == []


def test_the_runner_pretrains_each_checkpoint_once_before_the_runs_and_reports_it(tmp_path, tiny_spec, monkeypatch):
    calls, reports = [], []
    resolve = runner.resolve_checkpoint

    def recorded(spec, progress=None):
        calls.append(spec.model_options["checkpoint"])
        progress(f"pre-training {spec.model}")
        return resolve(spec.replace(model_options={k: v for k, v in spec.model_options.items() if k != "checkpoint"}))

    monkeypatch.setattr(runner, "resolve_checkpoint", recorded)
    raw = copy.deepcopy(tiny_spec)
    raw["models"] = [{"name": "small_cnn", "options": {"input_size": 32, "width": 4, "checkpoint": "synthetic:cxr"}},
                     {"name": "small_cnn", "label": "random", "options": {"input_size": 32, "width": 4}}]
    raw["methods"] = ["erm", "resampling"]
    raw["cache_dir"] = str(tmp_path / "cache")
    bench = load_spec(raw)
    assert len(bench.cells) == 4

    def fake_execute(cell, evaluation, on_epoch=None):  # the runs themselves are not the point here
        reports.append(("run", cell.run_id))
        return {"status": "failed", "error": "skipped", "traceback": ""}

    monkeypatch.setattr(runner, "execute_cell", fake_execute)
    run_benchmark(bench, tmp_path / "out", progress=lambda done, total, what: reports.append(("progress", what)))
    assert calls == ["synthetic:cxr"]  # one checkpoint for the two runs that need it; none for the random model
    first_run = reports.index(next(r for r in reports if r[0] == "run"))
    assert ("progress", "pre-training small_cnn") in reports[:first_run]
