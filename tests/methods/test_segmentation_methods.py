"""The segmentation forms of GroupDRO, InD, FIS, FairDi (fairdi_seg) and per-group logit thresholds
(seg_thresholds): each against an independent computation, and every one end to end through
run_experiment in 2D (seg_decoder on sam_tiny) and 3D (seg_ft on a MONAI UNet)."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from medequity.data import create_dataset
from medequity.experiment import ExperimentSpec, prepare, run_experiment
from medequity.methods import create_method
from medequity.methods._segmentation import decoder_path, encode, is_segmentation
from medequity.methods.fairdi_segmentation import pixel_distillation_kl, teacher_log_probs
from medequity.methods.fis import fis_weights
from medequity.methods.seg_thresholds import shifted
from medequity.models.segmenter import create_segmenter
from medequity.training.data import make_segmentation_split
from medequity.training.segmentation import hard_dice_per_sample, segmentation_per_sample_loss
from medequity.training.trainer import TrainConfig
from medequity.usages import UsageContext, create_usage

METHODS = ("groupdro", "ind", "fis", "fairdi_seg", "seg_thresholds")


# --- tiny models and data -----------------------------------------------------------------------


def unet_2d(n=8):
    """A 2D MONAI UNet trained by seg_ft on tiny lesion images, and its training view."""
    torch.manual_seed(0)
    dataset = create_dataset("synthetic-segmentation", preset="seg-derm-lesion", n=n, image_size=24)
    names = tuple(sorted(dataset.groups("skin_tone").dropna().astype(str).unique()))
    segmenter = create_segmenter("monai_unet", spatial_dims=2, channels=[4, 8], strides=[2], num_res_units=0,
                                 out_channels=2, roi_size=16)
    model, views = create_usage("seg_ft").build(segmenter, {"train": make_segmentation_split(dataset, "skin_tone", names)},
                                                UsageContext())
    return model, views["train"]


def batch_of(view, rows=None):
    rows = range(len(view)) if rows is None else rows
    items = [view.items[i] for i in rows]
    return {"x": torch.stack([i["x"] for i in items]), "y": torch.stack([i["y"] for i in items]),
            "group": torch.stack([i["group"] for i in items])}


# --- end to end, 2D and 3D ------------------------------------------------------------------------


def spec_2d(cache) -> ExperimentSpec:
    return ExperimentSpec(
        dataset="synthetic-segmentation", attribute="skin_tone", task="segmentation", model="sam_tiny", usage="seg_decoder",
        dataset_options={"preset": "seg-derm-lesion", "n": 40, "image_size": 32,
                         "split_fractions": {"train": 0.5, "val": 0.25, "test": 0.25}},
        n_boot=0, n_permutations=0, eval_attributes=["skin_tone"], cache_dir=str(cache),
        train={"epochs": 2, "batch_size": 8, "lr": 1e-3, "device": "cpu"})


def spec_3d() -> ExperimentSpec:
    return ExperimentSpec(
        dataset="synthetic-segmentation", attribute="sex", task="segmentation", model="monai_unet", usage="seg_ft",
        dataset_options={"preset": "seg-organ-3d", "n": 24, "volume_shape": [8, 16, 16],
                         "split_fractions": {"train": 0.5, "val": 0.25, "test": 0.25}},
        model_options={"spatial_dims": 3, "channels": [4, 8], "strides": [2], "num_res_units": 0, "out_channels": 2,
                       "roi_size": [8, 16, 16]},
        n_boot=0, n_permutations=0, eval_attributes=["sex"], train={"epochs": 2, "batch_size": 4, "lr": 1e-2, "device": "cpu"})


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    return {"2d": prepare(spec_2d(tmp_path_factory.mktemp("cache"))), "3d": prepare(spec_3d())}


@pytest.mark.parametrize("dims", ["2d", "3d"])
@pytest.mark.parametrize("method", METHODS)
def test_every_segmentation_method_trains_and_segments_end_to_end(prepared, method, dims):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tiny groups warn that their metrics are unreliable
        result = run_experiment(prepared[dims].with_spec(method=method))
    history = result.history
    assert len(history) >= 2 and np.isfinite(history.train_loss).all() and "val_worst_group_dice" in history
    scored = result.predictions[~result.predictions.skipped]
    assert len(scored) and scored.dice.between(0, 1).all()
    test = scored[scored.split == "test"].groupby("sample_id").dice.mean()
    overall = result.metrics.query("metric == 'dice' and group == 'overall'").value.iloc[0]
    assert overall == pytest.approx(float(test.mean()))
    log, names = result.method_log, list(prepared[dims].group_names)
    if method == "groupdro":  # the DRO groups of a segmentation split are the attribute's values
        assert log["groups"] == names and len(log["q"]) == len(history)
    if method == "fairdi_seg":
        assert [s["stage"] for s in log["stages"]] == ["step0", *(f"teacher-{g}" for g in range(len(names))), "student"]
        assert set(history.stage) == {"step0", "teacher-0", "teacher-1", "student"}
    if method == "seg_thresholds":
        assert [row["group"] for row in log["offsets"]] == names
        for row in log["val_dice"]:  # the chosen offsets never lower a group's validation Dice
            assert row["after"] >= row["before"] - 1e-9


# --- GroupDRO ---------------------------------------------------------------------------------------


def test_groupdro_on_masks_uses_attribute_groups_and_the_per_sample_segmentation_loss():
    model, view = unet_2d()
    assert is_segmentation(view)
    method = create_method("groupdro", step_size=0.5, adjustment=1.0)
    method.setup(model, view, TrainConfig())
    groups = np.asarray(view.groups)
    assert method.group_names == list(view.group_names)
    assert method.counts.tolist() == [float((groups == g).sum()) for g in range(view.n_groups)]
    batch = batch_of(view)
    model.train()
    loss = method.loss(model, batch).detach()
    # by hand: mean segmentation loss per group, + C/sqrt(n_g), q ∝ (1/G)·exp(η·ℓ̃_g), loss = Σ q_g ℓ̃_g
    with torch.no_grad():
        per_sample = segmentation_per_sample_loss(model(batch["x"]), batch["y"])
    adjusted = np.array([float(per_sample[torch.as_tensor(groups == g)].mean()) + 1.0 / math.sqrt((groups == g).sum())
                         for g in range(view.n_groups)])
    q = np.exp(0.5 * adjusted) / np.exp(0.5 * adjusted).sum()
    np.testing.assert_allclose(method.q.numpy(), q, rtol=1e-5)
    assert float(loss) == pytest.approx(float((q * adjusted).sum()), rel=1e-5)


# --- InD ----------------------------------------------------------------------------------------------


def test_ind_gives_each_group_its_own_decoder_and_routes_by_group_at_inference():
    model, view = unet_2d()
    method = create_method("ind")
    method.setup(model, view, TrainConfig())
    path = decoder_path(model)
    assert path == "network.model.2"  # the UNet's top up-sampling block
    decoders = method.extra["decoders"]
    assert len(decoders) == view.n_groups
    own = {id(p) for p in model.get_submodule(path).parameters()}
    assert not own & {id(p) for p in method.parameters(model)}  # the model's own decoder is not trained
    batch = batch_of(view)
    groups = batch["group"]
    # a group-0 sample's loss reaches decoder 0 only
    rows = torch.nonzero(groups == 0).flatten()[:1]
    method.loss(model, {k: v[rows] for k, v in batch.items()}).backward()
    assert all(p.grad is not None and float(p.grad.abs().sum()) > 0 for p in decoders[0].parameters())
    assert all(p.grad is None or float(p.grad.abs().sum()) == 0 for p in decoders[1].parameters())
    with torch.no_grad():
        features = encode(model, batch["x"], path)
        logits = method.logits(model, batch["x"], groups)
        for i, g in enumerate(groups.tolist()):
            torch.testing.assert_close(logits[i], decoders[g](features[i:i + 1])[0])
        unknown = method.logits(model, batch["x"][:1], torch.tensor([-1]))
        mean = torch.stack([d(features[:1]) for d in decoders]).mean(0)
        torch.testing.assert_close(unknown, mean)
        summed = create_method("ind", inference="sum")
        summed.extra["decoders"], summed.decoder = decoders, path
        torch.testing.assert_close(summed.logits(model, batch["x"]), sum(d(features) for d in decoders))
    # the features are what the model's decoder reads: decoder(features) is the model's output
    with torch.no_grad():
        torch.testing.assert_close(model.get_submodule(path)(features), model(batch["x"]))


# --- FIS ----------------------------------------------------------------------------------------------


def test_fis_weights_the_per_sample_segmentation_loss_and_refuses_cutmix_on_masks():
    model, view = unet_2d()
    batch = batch_of(view)
    method = create_method("fis", c=0.5)
    loss = method.loss(model, batch).detach()
    per_sample = segmentation_per_sample_loss(model(batch["x"]), batch["y"]).detach()
    weights = fis_weights(per_sample, batch["group"], 0.5).float()
    assert float(loss) == pytest.approx(float((weights * per_sample).sum() / weights.sum()), rel=1e-5)
    with pytest.raises(ValueError, match="cannot mix segmentation masks: set cutmix to false"):
        create_method("fis", cutmix=True).setup(model, view, TrainConfig())


# --- FairDi for segmentation ----------------------------------------------------------------------------


def test_pixel_distillation_kl_is_the_mean_over_pixels_of_the_class_kl():
    torch.manual_seed(0)
    student, teacher = torch.randn(3, 4, 5, 6), torch.randn(3, 4, 5, 6)
    target = torch.log_softmax(teacher / 1.5, dim=1)
    # F.kl_div(input=log s, target=log t, log_target) = Σ t (log t − log s) = KL(t ‖ s)
    eq3 = F.kl_div(target, torch.log_softmax(student, 1), log_target=True, reduction="none").sum(1).mean((1, 2))
    torch.testing.assert_close(pixel_distillation_kl(student, target, tau=1.5, form="eq3"), eq3)
    hinton = F.kl_div(torch.log_softmax(student / 1.5, 1), target, log_target=True, reduction="none").sum(1).mean((1, 2))
    torch.testing.assert_close(pixel_distillation_kl(student, target, tau=1.5, form="hinton"), hinton)
    assert float(pixel_distillation_kl(teacher / 1.5, target).abs().max()) < 1e-5  # equal distributions: 0


def test_each_sample_is_distilled_from_its_own_groups_teacher_and_unknown_from_the_mixture():
    torch.manual_seed(1)
    teachers = torch.randn(2, 3, 2, 4, 4)  # (G, B, K, H, W)
    groups = torch.tensor([1, 0, -1])
    target, has = teacher_log_probs(teachers, groups, 2.0, "mean_teacher")
    torch.testing.assert_close(target[0], torch.log_softmax(teachers[1, 0] / 2.0, 0))
    torch.testing.assert_close(target[1], torch.log_softmax(teachers[0, 1] / 2.0, 0))
    mixture = (torch.softmax(teachers[0, 2] / 2.0, 0) + torch.softmax(teachers[1, 2] / 2.0, 0)) / 2
    torch.testing.assert_close(target[2].exp(), mixture)
    assert has.tolist() == [True, True, True]
    assert teacher_log_probs(teachers, groups, 2.0, "ce_only")[1].tolist() == [True, True, False]


def test_fairdi_seg_student_replaces_the_models_decoder_and_teachers_fit_their_group():
    model, view = unet_2d(n=16)
    rows = np.arange(len(view))
    train, val = view.subset(rows[:10]), view.subset(rows[10:])
    train.extra["task"] = val.extra["task"] = "segmentation"
    from medequity.training.trainer import Trainer

    method = create_method("fairdi_seg", lam=0.5)
    result = method.fit(model, train, val, TrainConfig(epochs=2, batch_size=4, lr=1e-2, device="cpu",
                                                       selection="dice"), Trainer())
    teachers = method.extra["teachers"]
    assert len(teachers) == view.n_groups and not any(p.requires_grad for p in teachers.parameters())
    assert {"step0", "student"} <= set(result.stages)
    student = model.get_submodule(decoder_path(model))
    # the student is none of the teachers (it was distilled from both) and the model now uses it
    assert any(not torch.equal(a, b) for t in teachers for a, b in zip(student.parameters(), t.parameters()))
    with pytest.raises(ValueError, match="for classification use fairdi"):
        from medequity.training.data import ArrayItems, SplitData

        labels, groups = np.array([0, 1]), np.array([0, 1])
        split = SplitData(ArrayItems(np.zeros((2, 3), np.float32), labels, groups), labels, groups, ("a", "b"),
                          view.table.iloc[:2], "x")
        create_method("fairdi_seg").fit(model, split, split, TrainConfig(epochs=1), Trainer())


# --- per-group logit thresholds ---------------------------------------------------------------------------


def disc_logits(radius_truth: float, margin_radius: float, n: int = 4, size: int = 24):
    """Masks of a disc of ``radius_truth``; logits whose foreground margin crosses 0 at
    ``margin_radius`` (margin = margin_radius − distance to the centre)."""
    yy, xx = torch.meshgrid(torch.arange(size).float(), torch.arange(size).float(), indexing="ij")
    distance = ((yy - size / 2) ** 2 + (xx - size / 2) ** 2).sqrt()
    mask = (distance <= radius_truth).long().expand(n, -1, -1).clone()
    margin = (margin_radius - distance).expand(n, -1, -1)
    return torch.stack([torch.zeros_like(margin), margin], dim=1), mask


def test_thresholds_move_only_the_group_whose_objects_are_predicted_too_small():
    good_z, good_y = disc_logits(5.9, 5.9)  # group 0: the argmax is already the truth
    small_z, small_y = disc_logits(7.9, 4.9)  # group 1: the argmax predicts a disc 3 px too small
    method = create_method("seg_thresholds", max_offset=4.0, steps=9, min_samples=2)
    method.group_names = ("g0", "g1")
    table = method.fit_offsets(torch.cat([good_z, small_z]), torch.cat([good_y, small_y]), np.array([0] * 4 + [1] * 4))
    assert table[0].tolist() == [0.0, 0.0]  # a flat optimum at 0 stays at 0
    assert table[1, 1] == pytest.approx(3.0)  # margin + 3 crosses 0 at radius 7.9, the truth
    assert table[2].tolist() == [0.0, 0.0]  # unknown group: plain argmax
    before = float(hard_dice_per_sample(small_z, small_y).mean())
    after = float(hard_dice_per_sample(shifted(small_z, table[1].expand(4, -1)), small_y).mean())
    assert before < 0.8 and after == pytest.approx(1.0)


def test_offsets_commute_with_bilinear_resizing_so_the_original_size_argmax_uses_them():
    torch.manual_seed(0)
    logits, offsets = torch.randn(2, 3, 8, 8), torch.tensor([[0.0, 1.5, -2.0], [0.0, -0.5, 0.7]])
    up = F.interpolate(shifted(logits, offsets), size=(19, 23), mode="bilinear", align_corners=False)
    torch.testing.assert_close(up, shifted(F.interpolate(logits, size=(19, 23), mode="bilinear", align_corners=False), offsets))


def test_trained_segmenters_segment_through_the_methods_inference_path():
    model, view = unet_2d(n=4)
    plain = list(model.segment(view))

    def everything_foreground(net, x, groups):
        logits = net(x)
        return logits + torch.tensor([0.0, 1e4]).view(1, 2, 1, 1)

    forced = list(model.segment(view, inference=everything_foreground))
    sizes = [int(np.asarray(view.extra["source"].items[r["index"]]["mask"]).size) for r in forced]
    assert [r["pred_area"] for r in forced] == sizes != [r["pred_area"] for r in plain]


def test_seg_thresholds_refuses_classification():
    from medequity.training.data import ArrayItems, SplitData

    labels, groups = np.array([0, 1]), np.array([0, 1])
    split = SplitData(ArrayItems(np.zeros((2, 3), np.float32), labels, groups), labels, groups, ("a", "b"), None, "x")
    with pytest.raises(ValueError, match="for classification use threshold_optimizer"):
        create_method("seg_thresholds").setup(torch.nn.Linear(3, 1), split, TrainConfig())
