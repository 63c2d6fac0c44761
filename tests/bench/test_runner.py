"""Running a tiny benchmark: the results layout, reading it back, resume, failures, the CLI."""

from __future__ import annotations

import json
from pathlib import Path

import duckdb
import pandas as pd
import pytest
import yaml
from typer.testing import CliRunner

from medequity.bench import leaderboard, load_results, load_spec, run_benchmark
from medequity.bench import runner as runner_module
from medequity.cli.bench import bench_app
from medequity.data.splits import membership_hash

# The tiny test sets have small groups; the warning is expected and tested in tests/metrics.
pytestmark = pytest.mark.filterwarnings("ignore::medequity.metrics._validation.GroupMetricWarning")

TABLES = ("metrics", "summaries", "predictions", "history", "representation")


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    """lp and ft; ERM and GroupDRO with two step sizes: 6 runs, 2 of them hyper-parameter rivals per usage."""
    from tests.bench.conftest import TINY

    spec = {**TINY, "usages": ["lp", "ft"],
            "methods": ["erm", {"name": "groupdro", "grid": {"step_size": [0.01, 1.0]}}]}
    out = tmp_path_factory.mktemp("bench") / "out"
    spec_path = out.parent / "spec.yaml"
    spec_path.write_text(yaml.safe_dump(spec))
    seen = []
    results = run_benchmark(spec_path, out, progress=lambda done, total, what: seen.append((done, total, what)))
    return spec_path, out, results, seen


def test_every_run_is_written_in_the_documented_layout(finished):
    spec_path, out, results, _ = finished
    assert (out / "spec.yaml").read_text() == spec_path.read_text()
    cells = load_spec(spec_path).cells
    assert sorted(p.name for p in (out / "runs").iterdir()) == sorted(c.run_id for c in cells)
    assert not list(out.rglob("*.tmp"))  # atomic writes leave no temporary files behind
    for cell in cells:
        folder = out / "runs" / cell.run_id
        assert sorted(p.name for p in folder.iterdir()) == sorted([*(f"{t}.parquet" for t in TABLES), "run.json"])
        record = json.loads((folder / "run.json").read_text())
        assert record["status"] == "done" and record["run_id"] == cell.run_id
        assert record["spec"] == cell.spec.to_dict()
        assert record["threshold"]["rule"] == "best_f1" and 0 <= record["threshold"]["value"] <= 1
        history = pd.read_parquet(folder / "history.parquet")
        chosen = history[history.epoch == record["best_epoch"]].iloc[-1]
        assert record["validation"]["val_auc"] == pytest.approx(chosen["val_auc"])
        assert record["validation"]["val_auc_group"] == pytest.approx(
            {"female": chosen["val_auc_group0"], "male": chosen["val_auc_group1"]})
        provenance = record["provenance"]
        assert provenance["seed"] == 0 and provenance["versions"]["torch"] and "git_revision" in provenance
        predictions = pd.read_parquet(folder / "predictions.parquet")
        for split in ("val", "test"):
            assert provenance["split_hash"][split] == membership_hash(predictions.loc[predictions.split == split, "sample_id"])
        assert len(set(provenance["split_hash"].values())) == 3  # train, val and test are different samples
        # Representation fairness of the test set: a probe AUC per attribute, a 2-D picture of every test sample.
        representation = pd.read_parquet(folder / "representation.parquet")
        test = predictions[predictions.split == "test"]
        assert list(representation.columns[:3]) == ["sample_id", "x", "y"]
        assert set(representation.sample_id) == set(test.sample_id) and representation[["x", "y"]].notna().all(axis=None)
        assert {"group:sex", "group:age", "group:race"} <= set(representation.columns)
        assert set(record["representation"]["probe_auc"]) == {"sex", "age", "race"}
        assert all(0 <= v <= 1 for v in record["representation"]["probe_auc"].values())


def test_results_read_back_with_identifiers_and_one_selected_setting_per_cell(finished):
    _, out, results, _ = finished
    again = load_results(out)
    runs = again.runs
    assert len(runs) == 6 and runs.run_id.is_unique
    assert sorted(runs.groupby(["usage", "method"]).size().items()) == [
        (("ft", "erm"), 1), (("ft", "groupdro"), 2), (("lp", "erm"), 1), (("lp", "groupdro"), 2)]
    assert set(runs.selection_rule) == {"worst_group"} and again.selection["rule"] == "worst_group"
    assert runs.groupby(["usage", "method"]).selected.sum().eq(1).all()
    for _, rivals in runs[runs.method == "groupdro"].groupby("usage"):
        # worst_group: the rival with the higher worst validation group AUC (first in hparams order on a tie)
        rivals = rivals.sort_values("hparams")
        worst = [min(json.loads(v).values()) for v in rivals.val_group_aucs]
        assert rivals.selected.tolist() == [worst[0] >= worst[1], worst[0] < worst[1]]
    assert again.warnings and "erm: 1" in again.warnings[0]  # unequal tuning budget recorded with the results
    for table in (again.metrics, again.summaries):
        assert {"run_id", "dataset", "model", "usage", "method", "train_attribute", "seed", "hparams", "selected"} <= set(table.columns)
        assert set(table.run_id) == set(runs.run_id)
    row = runs.iloc[0]
    own = pd.read_parquet(out / "runs" / row.run_id / "summaries.parquet")
    assert len(again.summaries[again.summaries.run_id == row.run_id]) == len(own)


def test_results_parquet_is_queryable_with_duckdb(finished):
    _, out, results, _ = finished
    rows = duckdb.sql(f"""
        select usage, method, count(distinct run_id) as runs, count(distinct hparams) as settings
        from '{out / "results.parquet"}'
        where selected and attribute = 'sex' and metric = 'auc' and summary = 'gap'
        group by usage, method order by usage, method""").fetchall()
    assert rows == [("ft", "erm", 1, 1), ("ft", "groupdro", 1, 1), ("lp", "erm", 1, 1), ("lp", "groupdro", 1, 1)]
    everything = duckdb.sql(f"select * from '{out / 'results.parquet'}'").df()
    assert len(everything) == len(results.summaries) and set(everything.run_id) == set(results.runs.run_id)


def test_leaderboard_and_progress(finished):
    _, out, results, seen = finished
    board = leaderboard(results)
    assert len(board) == 4 and set(board.usage) == {"lp", "ft"}
    for _, block in board.groupby("usage"):
        assert block.worst_group_auc.is_monotonic_decreasing
    selected_erm = results.runs[  # noqa: F841 - read by the query string below (@selected_erm)
        (results.runs.method == "erm") & (results.runs.usage == "lp")].run_id.item()
    gap = results.summaries.query("run_id == @selected_erm and attribute == 'sex' and metric == 'auc' and summary == 'gap'")
    erm = board[(board.method == "erm") & (board.usage == "lp")].iloc[0]
    assert (erm.auc_gap, erm.gap_ci_low, erm.gap_ci_high) == tuple(gap[["value", "ci_low", "ci_high"]].iloc[0])
    finished_counts = [done for done, total, what in seen if what.endswith(" done")]
    assert finished_counts == [1, 2, 3, 4, 5, 6] and all(total == 6 for _, total, _ in seen)
    assert any("epoch 1/1" in what for _, _, what in seen)  # per-epoch progress of the running run


def test_cli_reruns_nothing_on_a_finished_folder_and_prints_the_leaderboard(finished, monkeypatch):
    spec_path, out, _, _ = finished
    before = {p: p.stat().st_mtime_ns for p in (out / "runs").rglob("run.json")}
    monkeypatch.setattr(runner_module, "execute_cell", lambda *a, **k: pytest.fail("a finished run ran again"))
    for args in (["run", str(spec_path), "--out", str(out)], [str(spec_path), "--out", str(out)]):  # long and short form
        result = CliRunner().invoke(bench_app, args, env={"COLUMNS": "200"})
        assert result.exit_code == 0, result.output
        assert "6 runs" in result.output and "worst-group AUC" in result.output and "groupdro" in result.output
        assert "unequal tuning budget" in result.output
    assert {p: p.stat().st_mtime_ns for p in (out / "runs").rglob("run.json")} == before


def test_cli_short_form_works_when_mounted_under_the_main_app(finished, monkeypatch):
    import typer

    spec_path, out, _, _ = finished
    main = typer.Typer()
    main.add_typer(bench_app, name="bench")
    monkeypatch.setattr(runner_module, "execute_cell", lambda *a, **k: pytest.fail("a finished run ran again"))
    result = CliRunner().invoke(main, ["bench", str(spec_path), "--out", str(out)], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    assert "ES-AUC" in result.output


def test_cli_bad_spec_and_report_command(tmp_path, monkeypatch, tiny_spec):
    import sys
    import types

    tiny_spec["methods"] = ["erm", "magic"]
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump(tiny_spec))
    result = CliRunner().invoke(bench_app, ["run", str(bad), "--out", str(tmp_path / "o")])
    assert result.exit_code == 2 and "unknown method 'magic'" in result.output
    assert not (tmp_path / "o").exists()  # nothing written for a spec that cannot run

    result = CliRunner().invoke(bench_app, ["report", str(tmp_path)])
    assert result.exit_code == 2 and "no runs/ folder" in result.output
    calls = []
    fake = types.ModuleType("medequity.bench.report")
    fake.write_bench_report = lambda out_dir: calls.append(out_dir) or Path(out_dir) / "report.html"
    monkeypatch.setitem(sys.modules, "medequity.bench.report", fake)
    (tmp_path / "runs").mkdir()
    result = CliRunner().invoke(bench_app, ["report", str(tmp_path)])
    assert result.exit_code == 0 and calls == [tmp_path] and "report.html" in result.output


def test_a_stopped_benchmark_resumes_running_each_cell_exactly_once(tmp_path, monkeypatch, tiny_spec):
    tiny_spec["methods"] = [{"name": "groupdro", "grid": {"step_size": [0.01, 0.1, 1.0]}}]
    cells = load_spec(tiny_spec).cells
    out = tmp_path / "out"
    real = runner_module.execute_cell
    executed = []

    def stop_at_the_second_run(cell, *args, **kwargs):
        if len(executed) == 1:
            raise KeyboardInterrupt  # the user presses Ctrl-C (or the machine dies) during the second run
        executed.append(cell.run_id)
        return real(cell, *args, **kwargs)

    monkeypatch.setattr(runner_module, "execute_cell", stop_at_the_second_run)
    with pytest.raises(KeyboardInterrupt):
        run_benchmark(tiny_spec, out)
    assert [p.parent.name for p in (out / "runs").glob("*/run.json")] == [cells[0].run_id]
    assert load_results(out).runs.run_id.tolist() == [cells[0].run_id]  # results.parquet matches what finished
    # The machine died while the second run was being written: a folder with tables but no run.json.
    half = out / "runs" / cells[1].run_id
    half.mkdir()
    (half / "metrics.parquet").write_bytes(b"half a parquet file")

    def count(cell, *args, **kwargs):
        executed.append(cell.run_id)
        return real(cell, *args, **kwargs)

    monkeypatch.setattr(runner_module, "execute_cell", count)
    results = run_benchmark(tiny_spec, out)
    assert sorted(executed) == sorted(c.run_id for c in cells)  # every cell exactly once over both attempts
    assert sorted(results.runs.run_id) == sorted(c.run_id for c in cells)
    assert len(pd.read_parquet(half / "metrics.parquet")) > 0  # the half-written file was replaced
    assert duckdb.sql(f"select count(distinct run_id) from '{out / 'results.parquet'}'").fetchall() == [(3,)]
    run_benchmark(tiny_spec, out)  # a third call has nothing left to do
    assert len(executed) == 3


def test_a_failing_run_is_recorded_and_the_others_go_on(tmp_path, tiny_spec):
    tiny_spec["attributes"] = ["no_such_attribute", "sex"]
    out = tmp_path / "out"
    results = run_benchmark(tiny_spec, out)
    assert results.runs.train_attribute.tolist() == ["sex"]
    assert results.failed.train_attribute.tolist() == ["no_such_attribute"]
    assert "has no attribute 'no_such_attribute'" in results.failed.error.item()
    error = json.loads((out / "runs" / results.failed.run_id.item() / "error.json").read_text())
    assert error["status"] == "failed" and "Traceback" in error["traceback"] and "ValueError" in error["traceback"]
    assert not (out / "runs" / results.failed.run_id.item() / "run.json").exists()  # so a rerun retries it
