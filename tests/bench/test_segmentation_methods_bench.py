"""Segmentation benchmarks that train: `task: segmentation` specs with seg_decoder / seg_ft × the
segmentation methods (FEBS's two forms as a grid), selected on validation Dice, run through
`medequity bench run` (2D decoder fine-tuning of sam_tiny; a 3D MONAI UNet) and reported with
leaderboards, method CD diagrams, Dice–gap Pareto plots, per-sample Dice distributions, paired
effects against ERM and the overlay gallery each run stores."""

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
from medequity.bench.gallery import gallery_arrays, pick_cases
from medequity.bench.report import build_bench_context, render_bench_html
from medequity.bench.selection import mark_selected
from medequity.cli.bench import bench_app

pytestmark = pytest.mark.filterwarnings("ignore::medequity.metrics._validation.GroupMetricWarning",
                                        "ignore::UserWarning")

SEG_METHODS = resources.files("medequity.bench") / "specs" / "seg-methods.yaml"
DERM = {"name": "synthetic-segmentation", "label": "derm", "options": {"preset": "seg-derm-contrast", "n": 40, "image_size": 32}}
TRAINED = {
    "name": "tiny-trained",
    "task": "segmentation",
    "datasets": [DERM],
    "models": ["sam_tiny"],
    "usages": ["seg_zs", "seg_decoder"],
    "methods": ["erm", "groupdro", {"name": "febs", "grid": {"mode": ["paper", "coded"]}}],
    "attributes": ["skin_tone"],
    "seeds": [0, 1],
    "train": {"epochs": 1, "batch_size": 8},
    "evaluation": {"n_boot": 10, "probe": False},
}
# roi_size at the volumes' own size (8 × 16 × 16): MONAI's default 96³ ROI costs seconds per batch on a CPU
UNET_3D = {"spatial_dims": 3, "channels": [4, 8], "strides": [2], "num_res_units": 0, "out_channels": 2, "roi_size": [8, 16, 16]}
ORGAN_3D = {"preset": "seg-organ-3d-scale", "n": 40, "image_size": 16}  # the smallest n whose test split has both sexes


def spec(**changes) -> dict:
    return {**copy.deepcopy(TRAINED), **changes}


# --- the spec ------------------------------------------------------------------------------------------
def test_trained_usages_take_every_method_and_seg_zs_keeps_only_erm():
    bench = load_spec(spec())
    cells = [(c.labels["usage"], c.spec.method, json.dumps(c.spec.method_params), c.spec.seed) for c in bench.cells]
    expected = [(usage, method, params, seed)
                for usage, method, params in [("seg_zs:center", "erm", "{}"), ("seg_decoder", "erm", "{}"),
                                              ("seg_decoder", "groupdro", "{}"),
                                              ("seg_decoder", "febs", '{"mode": "paper"}'),
                                              ("seg_decoder", "febs", '{"mode": "coded"}')]
                for seed in (0, 1)]
    assert sorted(cells) == sorted(expected)
    # FEBS's two forms are one method with a grid: validation picks one per seed; the budget differs, and says so
    assert {c.labels["method"] for c in bench.cells} == {"erm", "groupdro", "febs"}
    assert any("unequal tuning budget" in w and "febs: 2" in w for w in bench.warnings)


def test_segmenters_meet_only_the_usages_that_can_train_them():
    bench = load_spec(spec(models=["sam_tiny", {"name": "monai_unet", "options": {"spatial_dims": 2}}],
                           usages=["seg_decoder", "seg_ft"], methods=["erm"], seeds=[0]))
    assert sorted((c.model, c.spec.usage) for c in bench.cells) == [("monai_unet", "seg_ft"), ("sam_tiny", "seg_decoder")]


@pytest.mark.parametrize(("changes", "message"), [
    ({"usages": ["seg_zs"]}, r"method 'groupdro' has no run in this spec: usage 'seg_zs' trains nothing.*seg_decoder, "
                             r"seg_lora and seg_ft"),
    ({"usages": ["seg_ft"], "methods": ["erm"]}, r"usage 'seg_ft' trains MONAI networks \['monai_unet', 'swin_unetr'\]; "
                                                 r"'sam_tiny' is not one"),
    ({"models": ["monai_unet"], "usages": ["seg_decoder"], "methods": ["erm"]},
     r"usage 'seg_decoder' adapts a SAM-family segmenter; 'monai_unet' is a MONAI network \(use seg_ft\)"),
    ({"models": ["monai_unet"], "usages": ["seg_zs"], "methods": ["erm"]}, r"'monai_unet' is a MONAI network without prompts"),
    ({"methods": ["erm", "cfair"]}, r"method 'cfair' cannot run on segmentation: it trains classification models; "
                                    r"segmentation methods: \[.*'febs'.*'seg_thresholds'\]"),
    ({"methods": [{"name": "febs", "grid": {"mode": ["paper"], "gamma_": [1]}}]}, r"method 'febs' has no parameter\(s\) "
                                                                                  r"\['gamma_'\]"),
])
def test_combinations_that_cannot_run_name_themselves(changes, message):
    with pytest.raises(SpecError, match=message):
        load_spec(spec(**changes))


def test_a_classification_spec_refuses_a_segmentation_only_method(tiny_spec):
    with pytest.raises(SpecError, match=r"method 'febs' cannot run on classification: it trains segmentation models"):
        load_spec({**tiny_spec, "methods": ["erm", "febs"]})


def test_the_packaged_methods_spec_is_valid():
    bench = load_spec(SEG_METHODS)
    assert bench.task == "segmentation" and {c.spec.usage for c in bench.cells} == {"seg_decoder"}
    assert {c.spec.method for c in bench.cells} == {"erm", "resampling", "febs", "groupdro"}
    assert {c.spec.method_params.get("mode") for c in bench.cells if c.spec.method == "febs"} == {"paper", "coded"}
    assert {c.spec.dataset_options["preset"] for c in bench.cells} == {"seg-derm-contrast"}


# --- selection on validation Dice -------------------------------------------------------------------------
def _candidates(dices: list[dict]) -> pd.DataFrame:
    base = {"dataset": "d", "model": "sam_tiny", "usage": "seg_decoder", "method": "febs", "train_attribute": "skin_tone",
            "seed": 0, "val_auc": np.nan, "val_group_aucs": "{}"}
    return pd.DataFrame([{**base, "hparams": f"h{i}", "val_dice": float(np.mean(list(d.values()))),
                          "val_group_dices": json.dumps(d)} for i, d in enumerate(dices)])


@pytest.mark.parametrize(("rule", "expected"), [
    ("overall", 0),      # mean 0.80 beats 0.775 and 0.70
    ("worst_group", 1),  # worst groups 0.70 / 0.75 / 0.68
    ("pareto", 1),       # h2 is dominated by h1 (0.72 < 0.80, 0.68 < 0.75); of h0 and h1, h1's worst group is best
    ("dto", 0),          # each group over its best, distance to (1, 1): h0 0.067, h1 0.111 (checked below)
])
def test_fair_selection_rules_work_on_per_group_validation_dice(rule, expected):
    dices = [{"I-III": 0.90, "IV-VI": 0.70}, {"I-III": 0.80, "IV-VI": 0.75}, {"I-III": 0.72, "IV-VI": 0.68}]
    runs = _candidates(dices)
    if rule == "dto":  # by hand: each group over its best, distance to (1, 1)
        distance = [np.hypot(d["I-III"] / 0.90 - 1, d["IV-VI"] / 0.75 - 1) for d in dices]
        assert distance[:2] == pytest.approx([0.2 / 3, 0.1 / 0.9]) and int(np.argmin(distance)) == expected
    selected = mark_selected(runs, rule, score="val_dice", group_scores="val_group_dices")
    assert selected.tolist() == [i == expected for i in range(3)]


# --- the gallery's choice of cases ------------------------------------------------------------------------
def test_gallery_cases_are_best_median_and_worst_per_group_by_mean_dice_over_classes():
    rows = []
    for sid, group, dices in [("a", "x", [0.9, 0.7]), ("b", "x", [0.2]), ("c", "x", [0.5]), ("d", "x", [0.5]),
                              ("e", "y", [0.3]), ("f", "y", [0.6])]:
        rows += [{"split": "test", "sample_id": sid, "dice": d, "skipped": False, "group:tone": group} for d in dices]
    rows.append({"split": "test", "sample_id": "b", "dice": np.nan, "skipped": True, "group:tone": "x"})  # empty class
    rows.append({"split": "val", "sample_id": "v", "dice": 1.0, "skipped": False, "group:tone": "x"})
    cases = pick_cases(pd.DataFrame(rows), "tone")
    # x sorted by Dice (ties by id): a 0.8, c 0.5, d 0.5, b 0.2 -> median is position 2 (d); y: f, e (two samples: each once)
    assert cases[["group", "case", "sample_id"]].values.tolist() == [
        ["x", "best", "a"], ["x", "median", "d"], ["x", "worst", "b"], ["y", "best", "f"], ["y", "median", "e"]]
    assert cases.dice.tolist() == pytest.approx([0.8, 0.5, 0.2, 0.6, 0.3])


# --- a 2D benchmark through the CLI -------------------------------------------------------------------------
def _run(root, raw: dict) -> tuple:
    raw = {**raw, "cache_dir": str(root / "cache")}
    path = root / f"{raw['name']}.yaml"
    path.write_text(yaml.safe_dump(raw))
    out = root / raw["name"]
    result = CliRunner().invoke(bench_app, ["run", str(path), "--out", str(out)])
    assert result.exit_code == 0, result.output + repr(result.exception)
    return out, result.output, path


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """10 runs: sam_tiny zero-shot and decoder fine-tuning with ERM, GroupDRO, FEBS (paper / coded), 2 seeds."""
    return _run(tmp_path_factory.mktemp("segmethods"), TRAINED)


def test_every_run_finishes_and_febs_keeps_the_mode_with_the_better_worst_group(trained):
    out, output, _ = trained
    results = load_results(out)
    assert results.failed.empty and len(results.runs) == 10 and (results.runs.task == "segmentation").all()
    runs = results.runs
    for seed in (0, 1):
        febs = runs[(runs.method == "febs") & (runs.seed == seed)]
        assert len(febs) == 2 and febs.selected.sum() == 1
        chosen = febs[febs.selected].iloc[0]
        assert chosen.val_worst_group_dice == pytest.approx(febs.val_worst_group_dice.max())
    assert runs[runs.method != "febs"].selected.all()
    board = leaderboard(results)
    assert sorted(map(tuple, board[["usage", "method"]].values.tolist())) == [
        ("seg_decoder", "erm"), ("seg_decoder", "febs"), ("seg_decoder", "groupdro"), ("seg_zs:center", "erm")]
    assert (board.n_seeds == 2).all()
    flat = " ".join(output.split())  # the terminal wraps long table titles
    assert "(zero-shot; prompt type center)" in flat and "chosen on validation by worst_group" in flat


def test_each_run_stores_its_gallery_and_the_stored_masks_give_the_runs_dice(trained):
    out, _, _ = trained
    results = load_results(out)
    for run in results.runs.itertuples():
        gallery = pd.read_parquet(out / "runs" / run.run_id / "gallery.parquet")
        predictions = pd.read_parquet(out / "runs" / run.run_id / "predictions.parquet")
        test = predictions[(predictions.split == "test") & ~predictions.skipped.astype(bool)]
        per_sample = test.groupby("sample_id").dice.mean()
        groups = set(test["group:skin_tone"].astype(str))
        assert set(gallery.group) == groups and len(gallery) <= 3 * len(groups)
        for row in gallery.to_dict("records"):
            image, truth, pred = gallery_arrays(row)
            assert image.shape == (32, 32, 3) and truth.shape == pred.shape == (32, 32) and row["slice"] == -1
            t, p = truth == 1, pred == 1  # one foreground class (the lesion)
            dice = 2 * (t & p).sum() / (t.sum() + p.sum()) if (t.sum() + p.sum()) else 1.0
            assert dice == pytest.approx(per_sample[row["sample_id"]], abs=1e-6) == pytest.approx(row["dice"], abs=1e-6)
        best = gallery[gallery.case == "best"].set_index("group").dice
        worst = gallery[gallery.case == "worst"].set_index("group").dice
        for group in best.index.intersection(worst.index):
            assert best[group] >= worst[group]


def test_a_second_run_resumes_without_training_again(trained):
    out, _, path = trained
    stamps = {p: p.stat().st_mtime_ns for p in (out / "runs").glob("*/run.json")}
    result = CliRunner().invoke(bench_app, ["run", str(path), "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert "10 of 10 runs already done" in result.output
    assert {p: p.stat().st_mtime_ns for p in (out / "runs").glob("*/run.json")} == stamps


def test_the_report_has_every_segmentation_section(trained):
    out, _, _ = trained
    context = build_bench_context(out)
    boards = {b["usage"]: b for b in context["leaderboards"]}
    assert set(boards) == {"seg_zs:center", "seg_decoder"}
    labels = [c["label"] for c in boards["seg_decoder"]["columns"]]
    for label in ("Dice", "IoU", "HD95", "Worst-group Dice", "Dice gap", "Dice STD", "Dice skewness", "DSC_ES", "ES-Dice"):
        assert label in labels
    assert boards["seg_decoder"]["show_method"] and [r["method"] for r in boards["seg_decoder"]["rows"]] == [
        "erm", "groupdro", "febs"]
    # methods ranked across the two seeds (Friedman / Nemenyi); usages compared on their ERM runs only
    method_ranks = [r for r in context["ranks"] if r["competitor"] == "methods"]
    assert [r["name"] for r in method_ranks] == ["dice", "worst_group_dice", "dice_gap", "es_dice"]
    assert all(r["uri"] and "N = 2 settings, k = 3 methods" in r["friedman"] for r in method_ranks)
    assert {r["competitor"] for r in context["ranks"]} == {"methods", "usages", "segmenters"}
    # paired effects of GroupDRO and FEBS against ERM on the decoder, and none for zero-shot
    effects = {(e["usage"], r["method"]) for e in context["effects"] for r in e["rows"]}
    assert effects == {("seg_decoder", "groupdro"), ("seg_decoder", "febs")}
    assert all("t-interval" in e["interval"] for e in context["effects"])  # two seeds
    titles = [f["title"] for f in context["pareto"]]
    assert titles == ["derm · sam_tiny · trained for skin_tone — methods", "derm · skin_tone"]
    assert len(context["distributions"]) == 1 and len(context["group_auc"]) == 1
    assert len(context["gallery"]) == 4  # the first seed's selected runs: zero-shot, ERM, GroupDRO, FEBS
    page = render_bench_html(out)
    text = re.sub(r"data:image/[^\"]+", "", page)
    for anchor in ('id="leaderboard"', 'id="effects"', 'id="ranks"', 'id="pareto"', 'id="groups"', 'id="distributions"',
                   'id="gallery"'):
        assert anchor in text
    assert "DSC_ES" in text and "HD95" in text and "argmax over the C + 1 output channels" in text
    assert "(promptable segmenters, zero-shot)" not in text


# --- a 3D benchmark -------------------------------------------------------------------------------------------
def test_a_3d_unet_trains_through_the_bench_and_its_gallery_shows_the_largest_slice(tmp_path):
    raw = {"name": "tiny-3d", "task": "segmentation",
           "datasets": [{"name": "synthetic-segmentation", "label": "organ3d", "options": ORGAN_3D}],
           "models": [{"name": "monai_unet", "options": UNET_3D}], "usages": ["seg_ft"], "methods": ["erm", "febs"],
           "attributes": ["sex"], "seeds": [0], "train": {"epochs": 1, "batch_size": 4},
           "evaluation": {"n_boot": 10, "probe": False}}
    out, _, _ = _run(tmp_path, raw)
    results = load_results(out)
    assert results.failed.empty and sorted(results.runs.method) == ["erm", "febs"]
    from medequity.data import create_dataset

    volumes = create_dataset("synthetic-segmentation", **ORGAN_3D)
    ids = volumes.table.sample_id.astype(str).tolist()
    for run in results.runs.itertuples():
        gallery = pd.read_parquet(out / "runs" / run.run_id / "gallery.parquet")
        assert len(gallery) and set(gallery.group) == {"female", "male"}
        for row in gallery.to_dict("records"):
            truth = np.asarray(volumes.load_mask(ids.index(row["sample_id"])))
            assert row["slice"] == int((truth > 0).reshape(len(truth), -1).sum(axis=1).argmax())
            _, stored, _ = gallery_arrays(row)
            np.testing.assert_array_equal(stored, truth[row["slice"]])
    assert len(build_bench_context(out)["gallery"]) == 2
