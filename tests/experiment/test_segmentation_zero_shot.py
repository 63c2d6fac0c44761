"""Zero-shot prompted segmentation through the experiment layer: a tiny SAM, prompts from the
ground truth, the encoder run once per image (embeddings cached), Dice at the original size."""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest
import torch

from medequity.experiment import ExperimentSpec, prepare, run_experiment


def seg_spec(tmp_path, **changes) -> ExperimentSpec:
    base = {"dataset": "synthetic-segmentation", "dataset_options": {"preset": "seg-derm-lesion", "n": 60, "image_size": 48},
            "attribute": "skin_tone", "task": "segmentation", "model": "sam_tiny", "usage": "seg_zs",
            "usage_params": {"prompt": "bbox"}, "n_boot": 20, "n_permutations": 20, "cache_dir": str(tmp_path)}
    return ExperimentSpec(**{**base, **changes})


def run(spec):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return run_experiment(spec)


def test_zero_shot_run_tables_one_row_per_sample_and_class_and_measures_groups(tmp_path):
    result = run(seg_spec(tmp_path))
    rows = result.predictions
    assert set(rows.split) == {"val", "test"}
    assert {"sample_id", "class", "prompt", "dice", "iou", "skipped", "group:skin_tone"} <= set(rows.columns)
    scored = rows[~rows.skipped]
    assert scored.dice.between(0, 1).all() and (scored.iou <= scored.dice + 1e-12).all()  # IoU ≤ Dice always
    np.testing.assert_allclose(scored.iou, scored.dice / (2 - scored.dice), atol=1e-9)  # same mask: IoU = D / (2 − D)
    groups = result.metrics[(result.metrics.attribute == "skin_tone") & (result.metrics.metric == "dice")]
    test = scored[scored.split == "test"].groupby("sample_id").agg(dice=("dice", "mean"), group=("group:skin_tone", "first"))
    expected = test.groupby("group").dice.mean()
    got = groups.set_index("group").value.drop("overall")
    pd.testing.assert_series_equal(got.sort_index(), expected.sort_index(), check_names=False)
    gap = result.summaries.query("attribute == 'skin_tone' and metric == 'dice' and summary == 'gap'")
    assert len(gap) == 1 and np.isfinite(gap.p_value.iloc[0])
    assert result.threshold["rule"] == "logit > 0" and result.threshold["profile"]["name"] == "sam"


def test_the_image_encoder_runs_once_per_image_for_every_prompt_type(tmp_path):
    spec = seg_spec(tmp_path)
    prepared = prepare(spec)
    n_images = len(prepared.data["val"]) + len(prepared.data["test"])
    first = run(prepared.with_spec(usage_params={"prompt": "bbox"}))
    assert first.model.encoded == n_images
    for kind in ("center", "rand", "rands"):
        again = run(prepared.with_spec(usage_params={"prompt": kind}))
        assert again.model.encoded == 0  # decoded from the cached embeddings
        assert (again.predictions.prompt == kind).all()
        # one model decodes another prompt type from the same embeddings: the same rows as its own run
        test = first.data["test"]
        rows = pd.DataFrame(list(first.model.segment(test, seed=spec.seed, prompt=kind)))
        own = again.predictions[again.predictions.split == "test"].reset_index(drop=True)
        np.testing.assert_allclose(rows.dice.to_numpy(), own.dice.to_numpy())
    assert first.model.encoded == n_images


def test_prompts_and_masks_do_not_depend_on_the_split_order(tmp_path):
    spec = seg_spec(tmp_path, usage_params={"prompt": "rands"})
    prepared = prepare(spec)
    result = run(prepared)
    test = prepared.data["test"]
    reversed_rows = np.arange(len(test))[::-1]
    model = result.model
    again = pd.DataFrame(list(model.segment(test.subset(reversed_rows), seed=spec.seed)))
    original = result.predictions[result.predictions.split == "test"]
    merged = again.merge(original, on=["sample_id", "class"], suffixes=("", "_first"), validate="one_to_one")
    assert len(merged) == len(again) == len(original)
    np.testing.assert_allclose(merged.dice, merged.dice_first)


def test_a_non_promptable_or_unknown_prompt_is_a_clear_error(tmp_path):
    with pytest.raises(ValueError, match="prompt must be one of"):
        run(seg_spec(tmp_path, usage_params={"prompt": "scribble"}))


def test_volumes_are_segmented_slice_wise_and_scored_per_volume(tmp_path):
    """A 2D model on 3D volumes: each slice where the class is present is prompted, the slices are
    stacked back, and Dice is the Dice of the whole volume (not a mean over slices)."""
    from medequity.metrics.segmentation import dice_per_sample

    spec = seg_spec(tmp_path, dataset_options={"preset": "seg-organ-3d", "n": 30, "image_size": 32}, attribute="sex",
                    eval_attributes=["sex"], usage_params={"prompt": "center", "center_mode": "interior"})
    result = run(spec)
    rows = result.predictions[~result.predictions.skipped]
    assert (rows.prompted_slices > 1).all()
    model, test = result.model, result.data["test"]
    item = test.items[0]
    cls = int(rows[rows.sample_id == item["sample_id"]]["class"].iloc[0])
    stacked, extra = model._volume(item["image"], item["mask"], cls, item["sample_id"], spec.seed, "center")
    assert stacked.shape == item["mask"].shape
    expected = dice_per_sample(stacked[None].astype(int), (item["mask"] == cls)[None].astype(int), classes=[1]).values[0]
    got = rows[(rows.sample_id == item["sample_id"]) & (rows["class"] == cls)].dice.iloc[0]
    assert got == pytest.approx(expected)
    slice_dice = [dice_per_sample(stacked[z][None].astype(int), (item["mask"][z] == cls)[None].astype(int), classes=[1]).values[0]
                  for z in range(len(stacked)) if (item["mask"][z] == cls).any()]
    assert extra["prompted_slices"] == len(slice_dice)
    assert result.threshold["slices"] == "positive"


def test_a_saved_segmentation_run_has_its_tables_and_no_copy_of_untrained_weights(tmp_path):
    import json

    from medequity.experiment import save_run

    result = run(seg_spec(tmp_path / "cache"))
    paths = save_run(result, tmp_path / "run")
    assert {"predictions", "history", "run", "metrics", "summaries", "settings"} <= set(paths) and "model" not in paths
    evaluation = json.loads(paths["settings"].read_text())
    assert "n_skipped_empty_classes" in evaluation["skin_tone"]
    record = json.loads((tmp_path / "run" / "run.json").read_text())
    assert record["spec"]["task"] == "segmentation" and record["threshold"]["prompt"] == "bbox"
    saved = pd.read_parquet(tmp_path / "run" / "predictions.parquet")
    pd.testing.assert_frame_equal(saved, result.predictions.reset_index(drop=True), check_dtype=False)


def test_fundus_rim_and_cup_get_the_cup_to_disc_ratio_error(tmp_path):
    from medequity.metrics.segmentation import vertical_cup_to_disc_ratio

    result = run(seg_spec(tmp_path, dataset_options={"preset": "seg-fundus-rimcup", "n": 60, "image_size": 48},
                          attribute="race", eval_attributes=["race"]))
    rows = result.predictions[~result.predictions.skipped]
    assert set(rows["class"]) == {1, 2} and rows.cdr_error.between(0, 1).all()
    # one value per sample, on each of its class rows
    assert (rows.groupby("sample_id").cdr_error.nunique() == 1).all()
    cdr = result.metrics.query("attribute == 'race' and metric == 'cdr_error'")
    assert "overall" in set(cdr.group)
    truth = result.data["test"].items[0]["mask"]
    assert 0 <= vertical_cup_to_disc_ratio(truth[None])[0] <= 1


def test_mean_pooled_encoder_embeddings_feed_the_representation_probe(tmp_path):
    from medequity.metrics import attribute_probe_auc

    result = run(seg_spec(tmp_path))
    test = result.data["test"]
    features = result.model.features(test)
    assert features.shape == (len(test), result.model.segmenter.encode(torch.zeros(1, 3, 64, 64)).shape[1])
    np.testing.assert_allclose(features[0], np.asarray(result.model.embeddings(test)[0]).mean(axis=(1, 2)), rtol=1e-6)
    known = test.groups >= 0
    auc = attribute_probe_auc(features[known], np.asarray(test.group_names)[test.groups[known]], cv=3)
    assert 0 <= auc <= 1


TINY_VISTA = {"encoder_embed_dim": 8, "blocks_down": (1, 1, 1, 1, 1), "roi_size": 32}


def test_a_native_3d_model_segments_each_volume_in_one_go(tmp_path):
    """VISTA3D (natively 3D, point-promptable): one prompt from the whole 3D class mask, decoded on
    the whole volume, one row per (volume, class), Dice of the whole volume; boxes are refused."""
    pytest.importorskip("monai")
    from medequity.data.prompts import make_prompts
    from medequity.metrics.segmentation import dice_per_sample
    from medequity.usages.seg_zero_shot import PromptedSegmenter, SegmentZeroShot

    torch.manual_seed(0)
    spec = seg_spec(tmp_path, dataset_options={"preset": "seg-organ-3d", "n": 30, "image_size": 32}, attribute="sex",
                    eval_attributes=["sex"], model="vista3d", model_options=TINY_VISTA,
                    usage_params={"prompt": "center", "center_mode": "interior"}, n_boot=5, n_permutations=5)
    result = run(spec)
    rows = result.predictions
    scored = rows[~rows.skipped]
    assert not rows.duplicated(["split", "sample_id", "class"]).any() and len(scored) > 0
    assert np.isfinite(scored.dice).all() and scored.dice.between(0, 1).all()
    assert (scored.slices == "native_3d").all() and (scored.window == "whole").all() and scored.predicted_iou.isna().all()
    assert result.threshold["slices"] == "native_3d" and result.threshold["segmenter"] == "vista3d"
    model, test = result.model, result.data["test"]
    assert model.encoded == len(result.data["val"]) + len(test)  # each volume encoded once, all its classes decoded
    item = test.items[0]
    cls = int(scored[scored.sample_id == item["sample_id"]]["class"].iloc[0])
    pred, _ = model._native_volume(item["image"], item["mask"], cls, item["sample_id"], spec.seed, "center", {})
    assert pred.shape == item["mask"].shape
    expected = dice_per_sample(pred[None].astype(int), (item["mask"] == cls)[None].astype(int), classes=[1]).values[0]
    row = scored[(scored.split == "test") & (scored.sample_id == item["sample_id"]) & (scored["class"] == cls)]
    assert row.dice.iloc[0] == pytest.approx(expected) and row.pred_area.iloc[0] == pred.sum()
    # the prompt's (x, y, z) point is given to VISTA3D as (z, y, x) = the volume's (D, H, W) indices
    prompt = make_prompts(item["mask"], "center", seed=spec.seed, sample_id=item["sample_id"], classes=[cls],
                          mode="interior")[cls]
    x, y, z = prompt.points[0]
    assert item["mask"][z, y, x] == cls
    refused = r"natively 3D point-promptable model: it supports the point prompts \('center', 'rand', 'rands'\).*'bbox'"
    with pytest.raises(ValueError, match=refused):
        PromptedSegmenter(model.segmenter, {**SegmentZeroShot.defaults, "prompt": "bbox"})
    with pytest.raises(ValueError, match=refused):
        next(model.segment(test, seed=spec.seed, prompt="bbox"))


def test_the_rate_of_center_prompts_inside_the_mask_is_reported_per_group(tmp_path):
    result = run(seg_spec(tmp_path, dataset_options={"preset": "seg-fundus-rimcup", "n": 200, "image_size": 48},
                          attribute="race", eval_attributes=["race"], usage_params={"prompt": "center"}))
    rates = result.group_results["race"].extra_settings["prompt_inside_rate"]
    test = result.predictions[(result.predictions.split == "test") & ~result.predictions.skipped]
    assert rates["overall"]["rate"] == pytest.approx(test.prompt_inside.astype(float).mean())
    for group, part in test.groupby("group:race"):
        assert rates[str(group)]["rate"] == pytest.approx(part.prompt_inside.astype(float).mean())
        assert rates[str(group)]["n"] == len(part)
    # the rim is a ring: the centre of its box lands in the cup, the cup's centre inside the cup
    by_class = test.groupby("class").prompt_inside.mean()
    assert by_class[1] < 0.2 and by_class[2] == 1.0


def test_a_native_3d_model_larger_than_its_window_is_segmented_around_its_points(tmp_path):
    """A volume larger than VISTA3D's roi goes through MONAI's point-based window inferer: windows of
    roi_size centred on the prompt points; voxels no window covers are background."""
    pytest.importorskip("monai")
    from medequity.data.prompts import make_prompts

    torch.manual_seed(0)
    spec = seg_spec(tmp_path, dataset_options={"preset": "seg-organ-3d", "n": 40, "image_size": 48}, attribute="sex",
                    eval_attributes=["sex"], model="vista3d", model_options=TINY_VISTA,
                    usage_params={"prompt": "center", "center_mode": "interior"}, n_boot=5)
    result = run(spec)
    scored = result.predictions[~result.predictions.skipped]
    assert len(scored) and (scored.window == "point_windows").all()
    assert np.isfinite(scored.dice).all() and scored.dice.between(0, 1).all()
    item = result.data["test"].items[0]
    cls = int(scored[scored.sample_id == item["sample_id"]]["class"].iloc[0])
    pred, info = result.model._native_volume(item["image"], item["mask"], cls, item["sample_id"], spec.seed, "center", {})
    assert info["window"] == "point_windows" and pred.shape == item["mask"].shape
    point = make_prompts(item["mask"], "center", seed=spec.seed, sample_id=item["sample_id"], classes=[cls],
                         mode="interior")[cls].points[0]
    zyx = np.asarray(point)[::-1]  # (x, y, z) -> the volume's (D, H, W) indices
    covered = np.zeros(pred.shape, dtype=bool)
    roi = TINY_VISTA["roi_size"]
    lo = [max(0, int(c) - roi) for c in zyx]
    covered[lo[0]: int(zyx[0]) + roi + 1, lo[1]: int(zyx[1]) + roi + 1, lo[2]: int(zyx[2]) + roi + 1] = True
    assert not pred[~covered].any()  # nothing is predicted where no window around the point reached
