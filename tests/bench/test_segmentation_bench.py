"""Segmentation benchmarks: a `task: segmentation` spec (segmenters × prompt types × attributes × seeds),
run through `medequity bench run` on the packaged seg-zero-shot spec, read back with a Dice leaderboard and
reported with per-group Dice per prompt type and critical-difference diagrams on Dice."""

from __future__ import annotations

import copy
import json
import re
from importlib import resources

import numpy as np
import pandas as pd
import pytest
import yaml
from typer.testing import CliRunner

from medequity.bench import SpecError, leaderboard, load_results, load_spec
from medequity.bench.report import build_bench_context, leaderboard_frame, render_bench_html
from medequity.cli.bench import bench_app

pytestmark = pytest.mark.filterwarnings("ignore::medequity.metrics._validation.GroupMetricWarning",
                                        "ignore::UserWarning")

DEMO = resources.files("medequity.bench") / "specs" / "seg-zero-shot.yaml"
PROMPTS = ["bbox", "center", "rand", "rands"]
SEG = {
    "task": "segmentation",
    "datasets": [{"name": "synthetic-segmentation", "options": {"preset": "seg-derm-contrast", "n": 60, "image_size": 48}}],
    "models": ["sam_tiny"],
    "usages": [{"name": "seg_zs", "grid": {"prompt": PROMPTS}}],
    "attributes": ["skin_tone"],
    "seeds": [0],
}


def seg(**changes) -> dict:
    return {**copy.deepcopy(SEG), **changes}


# --- the spec -------------------------------------------------------------------------------------------
def test_a_segmentation_spec_expands_prompt_types_into_settings_not_rival_hyper_parameters():
    bench = load_spec(seg(seeds=[0, 1]))
    assert bench.task == "segmentation" and len(bench.cells) == 8
    assert {c.spec.task for c in bench.cells} == {"segmentation"}
    assert {c.spec.method for c in bench.cells} == {"erm"}  # the default: nothing is trained
    # Each prompt type is its own usage label, so validation selection never drops one of them.
    assert [c.labels["usage"] for c in bench.cells[:4]] == [f"seg_zs:{p}" for p in PROMPTS]
    assert [c.spec.usage_params for c in bench.cells[:4]] == [{"prompt": p} for p in PROMPTS]
    assert len({c.run_id for c in bench.cells}) == 8
    # No prompt given: the usage's default prompt names the setting.
    assert [c.labels["usage"] for c in load_spec(seg(usages=["seg_zs"])).cells] == ["seg_zs:center"]


def test_the_demo_spec_is_valid_and_tiny():
    bench = load_spec(DEMO)
    assert bench.task == "segmentation" and {c.model for c in bench.cells} == {"sam_tiny"}
    assert sorted({c.labels["usage"] for c in bench.cells}) == [f"seg_zs:{p}" for p in PROMPTS]
    assert len(bench.cells) == 8


@pytest.mark.parametrize(("changes", "message"), [
    ({"models": ["small_cnn"]}, r"unknown segmenter 'small_cnn' \(a classification backbone.*sam_tiny"),
    ({"models": ["sam_huge"]}, r"unknown segmenter 'sam_huge'; registered segmenters: \[.*'medsam'"),
    ({"models": []}, r"'models' is missing or empty; it lists the segmenters"),
    ({"usages": ["lp"]}, r"usage 'lp' is a classification usage but the spec's task is 'segmentation'.*seg_zs"),
    ({"methods": ["groupdro"]}, r"method 'groupdro' has no run in this spec: usage 'seg_zs' trains nothing.*\['erm'\]"),
    ({"evaluation": {"threshold": 0.5}}, r"evaluation.threshold does not apply to segmentation.*logit > 0"),
    ({"task": "detection"}, r"'task' must be one of \['classification', 'segmentation'\]"),
    ({"usages": [{"name": "seg_zs", "grid": {"prompts": ["bbox"]}}]}, r"usage 'seg_zs' has no parameter\(s\) \['prompts'\]"),
])
def test_bad_segmentation_specs_name_what_is_wrong(changes, message):
    with pytest.raises(SpecError, match=message):
        load_spec(seg(**changes))


def test_a_classification_spec_cannot_list_a_segmentation_usage(tiny_spec):
    with pytest.raises(SpecError, match=r"usage 'seg_zs' is a segmentation usage.*set task: segmentation"):
        load_spec({**tiny_spec, "usages": ["seg_zs"]})
    # classification cells keep their labels (no task-specific usage label) and run ids
    cell = load_spec(tiny_spec).cells[0]
    assert cell.labels["usage"] == "lp" and cell.spec.task == "classification"


# --- running the demo through the CLI ---------------------------------------------------------------------
@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    """`medequity bench run seg-zero-shot.yaml` (fewer resamples and samples, a random-weight tiny SAM instead of
    the pre-trained one, to stay fast; the README's command runs the spec as packaged): 8 zero-shot runs."""
    root = tmp_path_factory.mktemp("segbench")
    raw = yaml.safe_load(DEMO.read_text())
    raw["evaluation"] = {**raw["evaluation"], "n_boot": 20, "n_permutations": 20}
    raw["models"] = ["sam_tiny"]
    raw["datasets"][0]["options"]["n"] = 60
    raw["cache_dir"] = str(root / "cache")
    spec_path = root / "seg-zero-shot.yaml"
    spec_path.write_text(yaml.safe_dump(raw))
    out = root / "out"
    result = CliRunner().invoke(bench_app, ["run", str(spec_path), "--out", str(out)])
    assert result.exit_code == 0, result.output + repr(result.exception)
    return out, result.output


def test_every_prompt_type_is_run_kept_and_recorded(demo):
    out, _ = demo
    results = load_results(out)
    assert results.task == "segmentation" and results.failed.empty
    runs = results.runs
    assert len(runs) == 8 and runs.selected.all()  # prompt types are settings: every run is kept
    assert sorted(set(runs.usage)) == [f"seg_zs:{p}" for p in PROMPTS] and (runs.task == "segmentation").all()
    for run in runs.itertuples():
        record = json.loads((out / "runs" / run.run_id / "run.json").read_text())
        assert record["threshold"]["rule"] == "logit > 0" and record["spec"]["usage_params"]["prompt"] in PROMPTS
        # validation Dice per group: what a hyper-parameter grid of seg_zs would be selected on
        validation = record["validation"]
        assert set(validation["val_dice_group"]) == {"I-III", "IV-VI"}
        assert validation["val_worst_group_dice"] == pytest.approx(min(validation["val_dice_group"].values()))
        # the representation probe is adapted: the segmenter's image-encoder embeddings, pooled
        representation = record["representation"]
        assert "image-encoder embeddings" in representation["features"] and "skin_tone" in representation["probe_auc"]
        frame = pd.read_parquet(out / "runs" / run.run_id / "representation.parquet")
        assert list(frame.columns[:3]) == ["sample_id", "x", "y"] and "group:skin_tone" in frame.columns
        predictions = pd.read_parquet(out / "runs" / run.run_id / "predictions.parquet")
        assert set(frame.sample_id) == set(predictions.loc[predictions.split == "test", "sample_id"])


def test_the_leaderboard_shows_dice_worst_group_gap_and_es_dice_per_prompt_type(demo):
    out, output = demo
    results = load_results(out)
    board = leaderboard(results)
    assert list(board.columns) == ["dataset", "usage", "train_attribute", "model", "method", "n_seeds", "dice",
                                   "worst_group_dice", "dice_gap", "gap_ci_low", "gap_ci_high", "es_dice"]
    assert len(board) == 4 and (board.n_seeds == 2).all()
    # the numbers are the runs' own test summaries on the attribute, averaged over the seeds
    summaries = results.summaries[(results.summaries.attribute == "skin_tone") & (results.summaries.metric == "dice")]
    metrics = results.metrics[(results.metrics.attribute == "skin_tone") & (results.metrics.metric == "dice")
                              & (results.metrics.group == "overall")]
    for row in board.itertuples():
        mine = summaries[summaries.usage == row.usage]
        assert row.worst_group_dice == pytest.approx(mine[mine.summary == "worst"].value.mean())
        assert row.dice_gap == pytest.approx(mine[mine.summary == "gap"].value.mean())
        assert row.es_dice == pytest.approx(mine[mine.summary == "es_sum_abs_dev"].value.mean())
        assert row.dice == pytest.approx(metrics[metrics.usage == row.usage].value.mean())
        assert row.gap_ci_low <= row.dice_gap <= row.gap_ci_high
    # the terminal shows one Dice table per prompt type
    for prompt in PROMPTS:
        assert f"seg_zs:{prompt}" in output
    assert "ES-Dice" in output and "AUC" not in output
    frame = leaderboard_frame(results)
    pd.testing.assert_frame_equal(frame[list(board.columns)], board)
    assert {"dice_gap_p", "iou", "iou_gap", "es_dice_ci_low"} <= set(frame.columns)


def test_the_report_shows_dice_leaderboards_group_plots_and_critical_difference_diagrams(demo):
    out, _ = demo
    context = build_bench_context(out)
    assert context["task"] == "segmentation" and context["metric_label"] == "Dice"
    assert [b["usage"] for b in context["leaderboards"]] == [f"seg_zs:{p}" for p in PROMPTS]
    board = context["leaderboards"][0]
    assert [c["label"] for c in board["columns"]][:4] == ["Dice", "Worst-group Dice", "Dice gap", "ES-Dice"]
    assert board["several_models"] and not board["show_method"]  # segmenters are the rows; "erm" is noise
    # prompt types ranked across the two seeds (Friedman / Nemenyi) on each Dice quantity
    prompt_ranks = [r for r in context["ranks"] if r["competitor"] == "prompt types"]
    assert [r["name"] for r in prompt_ranks] == ["dice", "worst_group_dice", "dice_gap", "es_dice"]
    assert all(r["uri"] and "N = 2 settings, k = 4 prompt types" in r["friedman"] for r in prompt_ranks)
    assert {r["method"] for r in prompt_ranks[0]["ranks"]} == {f"seg_zs:{p}" for p in PROMPTS}
    # one segmenter: one note, not four empty diagrams
    segmenter_ranks = [r for r in context["ranks"] if r["competitor"] == "segmenters"]
    assert len(segmenter_ranks) == 1 and "1 segmenter(s)" in segmenter_ranks[0]["note"]
    assert len(context["group_auc"]) == 1 and len(context["pareto"]) == 1 and len(context["probes"]) == 1
    assert context["embedding"] is not None
    page = render_bench_html(out)
    text = re.sub(r"data:image/[^\"]+", "", page)
    assert "Per-group Dice per prompt type" in text and "ES-Dice" in text and "Segmenter" in text
    assert "logit &gt; 0" in text and "Per-group AUC" not in text
    assert np.all([uri.startswith("data:image/png;base64,") for uri in re.findall(r'src="([^"]+)"', page)])


def test_bench_report_command_writes_the_segmentation_page(demo):
    out, _ = demo
    result = CliRunner().invoke(bench_app, ["report", str(out)])
    assert result.exit_code == 0, result.output
    assert "Dice" in (out / "report.html").read_text()


def test_a_segmentation_grid_is_selected_on_validation_dice_per_prompt_type():
    from medequity.bench.selection import mark_selected

    base = {"dataset": "d", "model": "sam_tiny", "method": "erm", "train_attribute": "skin_tone", "seed": 0,
            "val_auc": np.nan, "val_group_aucs": "{}"}
    runs = pd.DataFrame([
        {**base, "usage": "seg_zs:bbox", "hparams": "jitter0", "val_dice": 0.9, "val_group_dices": json.dumps({"a": 0.95, "b": 0.6})},
        {**base, "usage": "seg_zs:bbox", "hparams": "jitter2", "val_dice": 0.8, "val_group_dices": json.dumps({"a": 0.8, "b": 0.75})},
        {**base, "usage": "seg_zs:center", "hparams": "jitter0", "val_dice": 0.5, "val_group_dices": json.dumps({"a": 0.5, "b": 0.5})},
    ])
    selected = mark_selected(runs, "worst_group", score="val_dice", group_scores="val_group_dices")
    assert selected.tolist() == [False, True, True]  # the better worst group wins; each prompt type keeps one
