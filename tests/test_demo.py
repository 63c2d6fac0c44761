"""`medequity demo`: the classification benchmark, then the segmentation one, a report for each.

The packaged specs take minutes (benchmarks/demo_wall_time.py measures them); here the command runs
on shrunken copies of them, and the packaged segmentation spec is checked as data."""

from __future__ import annotations

import warnings
from importlib import resources

import pytest
import yaml
from typer.testing import CliRunner

import medequity.cli as cli
from medequity.bench import load_results, load_spec
from medequity.data import create_dataset
from medequity.data.synthetic_segmentation import SEG_PRESETS

SPECS = resources.files("medequity.bench") / "specs"


def _shrunk_specs(tmp_path) -> tuple[tuple[str, str], ...]:
    """The demo's two specs with tiny data, models and training (same structure otherwise)."""
    classification = yaml.safe_load((SPECS / "demo.yaml").read_text())
    classification["datasets"][0]["options"].update(n=160)
    classification["models"] = [{"name": "small_cnn"}]  # random weights: no pre-training
    classification["usages"] = [{"name": "lp", "train": {"epochs": 1}}]
    classification["methods"] = ["erm"]
    classification["evaluation"] = {**classification["evaluation"], "n_boot": 20}
    segmentation = yaml.safe_load((SPECS / "seg-demo.yaml").read_text())
    segmentation["datasets"][0]["options"].update(n=24, image_size=32)
    segmentation["models"] = [{"name": "sam_tiny", "options": {"image_size": 32}}]
    segmentation["usages"] = [{"name": "seg_zs", "grid": {"prompt": ["bbox"]}}, {"name": "seg_decoder"}]
    segmentation["methods"] = ["erm"]
    segmentation["train"] = {**segmentation["train"], "epochs": 1}
    segmentation["evaluation"] = {**segmentation["evaluation"], "n_boot": 20}
    paths = []
    for name, raw in (("classification.yaml", classification), ("segmentation.yaml", segmentation)):
        raw["cache_dir"] = str(tmp_path / "cache")
        path = tmp_path / name
        path.write_text(yaml.safe_dump(raw))
        paths.append(str(path))
    (_, first), (_, second) = cli.DEMO_SPECS
    return (paths[0], first), (paths[1], second)


def test_demo_runs_both_benchmarks_and_writes_and_names_both_reports(tmp_path, monkeypatch):
    specs = _shrunk_specs(tmp_path)
    monkeypatch.setattr(cli, "DEMO_SPECS", specs)
    out = tmp_path / "demo"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        result = CliRunner().invoke(cli.app, ["demo", "--out", str(out)], terminal_width=400)
    assert result.exit_code == 0, result.output + repr(result.exception)
    classification, segmentation = out / "report.html", out / "segmentation" / "report.html"
    assert classification.is_file() and segmentation.is_file()
    assert load_results(out).task == "classification" and load_results(out / "segmentation").task == "segmentation"
    for (spec, _), folder in zip(specs, (out, out / "segmentation"), strict=True):  # every run of each spec, in its folder
        assert len(load_results(folder).runs) == len(load_spec(spec).cells)
    assert len(load_spec(specs[1][0]).cells) == 2  # segmentation: zero-shot and decoder fine-tuning
    text = " ".join(result.output.split())
    for spec, _ in specs:  # the intro describes both benchmarks, in their specs' own words
        description = " ".join(yaml.safe_load(open(spec).read())["description"].split())
        assert description in text
    reports = text[text.index("reports:"):]
    assert str(classification.resolve()) in reports and str(segmentation.resolve()) in reports


def test_the_packaged_segmentation_demo_prompts_four_ways_and_trains_three_methods():
    bench = load_spec(SPECS / "seg-demo.yaml")
    settings = sorted((cell.labels["usage"], cell.labels["method"]) for cell in bench.cells)
    assert settings == sorted([(f"seg_zs:{p}", "erm") for p in ("bbox", "center", "rand", "rands")]
                              + [("seg_decoder", m) for m in ("erm", "resampling", "febs")])
    cell = bench.cells[0]
    checkpoint = cell.spec.model_options["checkpoint"]
    assert checkpoint.startswith("synthetic:")
    # the tiny SAM is pre-trained on lesions of the benchmark's shapes, without its bias
    pretraining = SEG_PRESETS.create(checkpoint.removeprefix("synthetic:"))
    options = cell.spec.dataset_options
    assert {k: options[k] for k in ("elongation", "irregularity")} == {k: pretraining[k] for k in ("elongation", "irregularity")}
    data = create_dataset("synthetic-segmentation", **{**options, "n": 200})
    dark = data.table["group:skin_tone"] == "IV-VI"
    assert 0.1 < dark.mean() < 0.3  # under-represented
    oracle = data.table.groupby(dark).oracle_dice.mean()
    assert oracle[True] < oracle[False] - 0.1  # a segmentation difficulty on dark skin, by construction
    assert pytest.approx(0.45) == data.table.loc[dark, "contrast_factor"].iloc[0]
