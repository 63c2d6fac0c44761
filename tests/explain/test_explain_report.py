"""The Fair Diagnosis explanation report written by ``save_run``: Grad-CAM of Ŷ and Ŝ, overlap scores."""

from __future__ import annotations

import json
import math
import re
import warnings

import numpy as np
import pytest

from medequity.fair_diagnosis.explanations import select_balanced, write_fair_diagnosis_explanations


def _spec(tmp_path, usage="ft"):
    from medequity.experiment import ExperimentSpec

    return ExperimentSpec(dataset="synthetic", dataset_options={"preset": "cxr-sex-shortcut", "n": 200, "image_size": 32},
                          attribute="sex", model="small_cnn", model_options={"input_size": 32}, usage=usage,
                          method="fair_diagnosis", method_params={"adversarial_epochs": 1},
                          train={"epochs": 1, "batch_size": 32, "device": "cpu", "lr": 1e-3},
                          n_boot=0, n_permutations=0, eval_attributes=["sex"], cache_dir=str(tmp_path / "cache"))


@pytest.fixture(scope="module")
def saved_run(tmp_path_factory):
    from medequity.experiment import run_experiment, save_run

    tmp_path = tmp_path_factory.mktemp("fd_explain")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tiny groups warn that their metrics are unreliable
        result = run_experiment(_spec(tmp_path))
        paths = save_run(result, tmp_path / "run")
    return result, paths


def test_save_run_writes_a_self_contained_explanation_report(saved_run):
    result, paths = saved_run
    for key in ("explanations_html", "explanations_json", "explanations_png"):
        assert key in paths and paths[key].is_file() and paths[key].stat().st_size > 0
    assert paths["explanations_png"].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    html = paths["explanations_html"].read_text(encoding="utf-8")
    assert "http://" not in html and "https://" not in html
    assert re.search(r'<img[^>]+src="data:image/png;base64,', html)
    assert not re.search(r'src="(?!data:)', html)  # every image is inline
    record = json.loads(paths["explanations_json"].read_text())
    mean = record["mean"]
    assert mean["iou"] is not None and f"{mean['iou']:.3f}" in html
    if mean["pearson"] is not None:
        assert f"{mean['pearson']:.3f}" in html
    # The per-epoch log of the method (discriminator accuracy, losses) travels with the scores.
    assert len(record["method_log"]["d_acc"]) == 1 and 0 <= record["method_log"]["d_acc"][0] <= 1
    assert "d_loss" in record["method_log"] and "g_loss" in record["method_log"]
    assert "d_acc" in html


def test_overlap_scores_are_in_range_and_images_balanced(saved_run):
    result, paths = saved_run
    record = json.loads(paths["explanations_json"].read_text())
    images = record["images"]
    assert 1 <= len(images) <= 8 and record["n_images"] == len(images)
    for row in images:
        assert 0 <= row["iou"] <= 1 and 0 <= row["iou_y_shift"] <= 1
        assert row["pearson"] is None or -1 - 1e-9 <= row["pearson"] <= 1 + 1e-9
    assert math.isclose(record["mean"]["iou"], float(np.mean([r["iou"] for r in images])), rel_tol=1e-9)
    assert 0 <= record["mean"]["iou"] <= 1
    # Balanced: every (group, label) cell present in the test split is represented.
    cells = {(r["group"], r["label"]) for r in images}
    assert len({r["group"] for r in images}) == 2 and len(cells) >= 3
    # The test split images are the run's: their ids are test sample ids.
    test_ids = set(result.predictions.loc[result.predictions.split == "test", "sample_id"])
    assert {r["sample_id"] for r in images} <= test_ids


def test_write_function_is_seeded_and_returns_the_html(saved_run, tmp_path):
    result, paths = saved_run
    html = write_fair_diagnosis_explanations(result, tmp_path / "again", n_images=4)
    assert html == tmp_path / "again" / "explanations.html" and html.is_file()
    first = json.loads((tmp_path / "again" / "explanations.json").read_text())
    write_fair_diagnosis_explanations(result, tmp_path / "twice", n_images=4)
    second = json.loads((tmp_path / "twice" / "explanations.json").read_text())
    assert [r["sample_id"] for r in first["images"]] == [r["sample_id"] for r in second["images"]]
    assert len(first["images"]) == 4


def test_explanations_use_the_runs_test_split_and_rebuild_it_only_when_absent(saved_run, tmp_path, monkeypatch):
    from dataclasses import replace

    import medequity.fair_diagnosis.explanations as explanations

    result, _ = saved_run
    rebuilt = []
    original = explanations.rebuild_split_data
    monkeypatch.setattr(explanations, "rebuild_split_data", lambda spec: rebuilt.append(spec) or original(spec))
    write_fair_diagnosis_explanations(result, tmp_path / "kept", n_images=4)
    assert rebuilt == []  # the split run_experiment built and evaluated on
    write_fair_diagnosis_explanations(replace(result, data={}), tmp_path / "rebuilt", n_images=4)
    assert len(rebuilt) == 1
    kept, again = (json.loads((tmp_path / name / "explanations.json").read_text()) for name in ("kept", "rebuilt"))
    assert kept["images"] == again["images"]  # the rebuilt split is the same split


def test_select_balanced_round_robins_over_cells():
    labels = np.array([0] * 10 + [1] * 2 + [0] * 3 + [1] * 5)
    groups = np.array([0] * 12 + [1] * 8)
    groups[0] = -1  # unknown groups are never picked
    chosen = select_balanced(labels, groups, 8, seed=1)
    assert len(chosen) == 8 and 0 not in chosen
    cells = [(groups[i], labels[i]) for i in chosen]
    assert all(cells.count(c) == 2 for c in {(0, 0), (0, 1), (1, 0), (1, 1)})
    np.testing.assert_array_equal(chosen, select_balanced(labels, groups, 8, seed=1))
    assert len(select_balanced(labels, groups, 100)) == 19


def test_feature_inputs_give_none(tmp_path, caplog):
    from medequity.experiment import run_experiment

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        result = run_experiment(_spec(tmp_path, usage="lp"))
    with caplog.at_level("WARNING"):
        assert write_fair_diagnosis_explanations(result, tmp_path / "out") is None
    assert "image inputs" in caplog.text
    assert not (tmp_path / "out" / "explanations.html").exists()
