"""The README's "benchmark two foundation models from their files" spec runs through `medequity bench
run` as written: the README's own YAML block, with its two checkpoint paths pointed at tiny
random-weight files this test writes in each model's official layout (DINOv2's plain state dict,
BiomedCLIP's Hugging Face folder with its tokenizer), each model given its tiny ``arch``, and the
run shrunk through documented options only (dataset ``n``, ``epochs``, ``evaluation``)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from test_zoo import TINY, official_file, randomise  # this folder's zoo test: tiny configs, published layouts
from typer.testing import CliRunner

from medequity.models import create_backbone
from medequity.models.zoo.base import merge

README = Path(__file__).resolve().parents[2] / "README.md"
# The zoo test's tiny configs, BiomedCLIP's tiny timm tower at 112 pixels (160 there).
TINY_112 = {name: merge(TINY[name], {"arch": merge(TINY[name]["arch"], {"vision_cfg": {"image_size": 112}})})
           if name == "biomedclip" else TINY[name] for name in TINY}

pytestmark = pytest.mark.filterwarnings("ignore::medequity.metrics._validation.GroupMetricWarning")  # tiny groups


def readme_fm_spec() -> dict:
    """The YAML block of the README's "Foundation models from their official files" section."""
    section = README.read_text(encoding="utf-8").split("## Foundation models from their official files", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```yaml\n(.*?)```", section, flags=re.S)
    assert len(blocks) == 1, "the section shows one bench spec"
    return yaml.safe_load(blocks[0])


def test_the_readme_two_model_spec_runs_through_bench_run(tmp_path):
    from medequity.bench import load_results
    from medequity.cli import app

    spec = readme_fm_spec()
    models = spec["models"]
    assert len(models) == 2 and all(m["options"]["checkpoint"].startswith("~/weights/") for m in models)
    for model in models:  # the user's files -> tiny files in the same published layout
        name = model["name"]
        folder = tmp_path / "weights" / name
        folder.mkdir(parents=True)
        tiny = TINY_112[name]
        path = official_file(name, randomise(create_backbone(name, **tiny).module, seed=1), folder)
        model["options"] = {key: str(path) if str(value).startswith("~/weights/") else value
                            for key, value in model["options"].items()} | tiny
    spec["datasets"][0]["options"]["n"] = 160
    spec["datasets"][0]["transform"] = {"name": "2d", "resize": 112, "crop": None}  # 112 px: DINOv2 patches 14, the tiny ViT 16
    for usage in spec["usages"]:
        usage["train"] = {**usage.get("train", {}), "epochs": 1}
    spec["evaluation"] = {"n_boot": 5, "probe": False}
    (tmp_path / "fm.yaml").write_text(yaml.safe_dump(spec))

    runner = CliRunner()
    result = runner.invoke(app, ["bench", "run", str(tmp_path / "fm.yaml"), "--out", str(tmp_path / "results")])
    assert result.exit_code == 0, result.output
    results = load_results(tmp_path / "results")
    assert results.failed.empty, results.failed.to_dict("records")
    n_cells = len(models) * len(spec["usages"]) * len(spec["methods"])
    assert len(results.runs) == n_cells and set(results.runs.model) == {m["name"] for m in models}
    for run_id in results.runs.run_id:
        predictions = pd.read_parquet(tmp_path / "results" / "runs" / run_id / "predictions.parquet")
        assert np.all((predictions.score >= 0) & (predictions.score <= 1)) and predictions.score.std() > 0
        record = json.loads((tmp_path / "results" / "runs" / run_id / "run.json").read_text())
        assert "usage_record" in record  # what the usage recorded (zero-shot prompts; None for these usages)
    report = runner.invoke(app, ["bench", "report", str(tmp_path / "results")])
    assert report.exit_code == 0, report.output
