"""CLIP zero-shot and CLIP-Adapt on a tiny random CLIP, against a direct computation."""

from __future__ import annotations

import warnings

import numpy as np
import open_clip
import pytest
import torch
import torch.nn.functional as F

from medequity.models import create_backbone
from medequity.training.data import ArrayItems, SplitData
from medequity.usages import UsageContext, create_usage


def tiny_clip():
    torch.manual_seed(0)
    return create_backbone("open_clip:medequity-tiny")


def reference_probability(module, images, negative_prompts, positive_prompts, scale):
    """P(positive) computed the textbook way: open_clip tokenizer, per-prompt unit norms, softmax."""
    tokenizer = open_clip.SimpleTokenizer(context_length=16)
    with torch.no_grad():
        module.eval()
        prototypes = []
        for prompts in (negative_prompts, positive_prompts):
            text = F.normalize(module.encode_text(tokenizer(prompts)), dim=-1).mean(0)
            prototypes.append(text / text.norm())
        image = F.normalize(module.encode_image(images), dim=-1)
        return torch.softmax(scale * image @ torch.stack(prototypes).T, dim=-1)[:, 1]


def test_zero_shot_probability_is_the_softmax_over_class_prototypes():
    backbone = tiny_clip()
    usage = create_usage("clip_zs", class_names=["no effusion", "effusion"], templates=["a photo of {}.", "there is {}."])
    model, _ = usage.build(backbone, {}, UsageContext())
    images = torch.randn(5, 3, 32, 32)
    expected = reference_probability(backbone.module, images, ["a photo of no effusion.", "there is no effusion."],
                                     ["a photo of effusion.", "there is effusion."], scale=1 / 0.07)
    model.eval()
    with torch.no_grad():
        got = torch.sigmoid(model(images))
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-5)
    assert usage.prompts[1] == ["a photo of effusion.", "there is effusion."]
    assert model.trainable_summary["trainable"] == 0


def test_zero_shot_explicit_prompts_and_fixed_logit_scale():
    backbone = tiny_clip()
    model, _ = create_usage("clip_zs", prompts={"negative": "There is no pneumonia.", "positive": ["There is pneumonia."]},
                            logit_scale=100.0).build(backbone, {}, UsageContext())
    images = torch.randn(3, 3, 32, 32)
    expected = reference_probability(backbone.module, images, ["There is no pneumonia."], ["There is pneumonia."], scale=100.0)
    with torch.no_grad():
        torch.testing.assert_close(torch.sigmoid(model.eval()(images)), expected, rtol=1e-4, atol=1e-5)


def test_clip_usages_refuse_a_vision_only_backbone():
    with pytest.raises(ValueError, match="no text tower"):
        create_usage("clip_zs").build(create_backbone("small_cnn", input_size=32), {}, UsageContext())


def split_of(images: torch.Tensor, labels: np.ndarray) -> SplitData:
    import pandas as pd

    groups = np.zeros(len(labels), dtype=np.int64)
    table = pd.DataFrame({"sample_id": [str(i) for i in range(len(labels))]})
    return SplitData(ArrayItems(images, labels, groups), labels, groups, ("all",), table, fingerprint=f"test-{len(labels)}")


def test_clip_adapt_starts_at_zero_shot_and_trains_only_the_prototypes(tmp_path):
    backbone = tiny_clip()
    images = torch.randn(12, 3, 32, 32)
    data = {"train": split_of(images, np.array([0, 1] * 6, dtype=np.float32))}
    context = UsageContext(cache_dir=tmp_path)
    zero_shot, _ = create_usage("clip_zs").build(backbone, data, context)
    adapt, adapt_data = create_usage("clip_adapt").build(backbone, data, context)
    features = adapt_data["train"].items.x
    assert features.shape == (12, 16)  # cached image embeddings, not images
    with torch.no_grad():
        torch.testing.assert_close(adapt.eval()(features), zero_shot.eval()(images), rtol=1e-4, atol=1e-5)
    assert {n for n, p in adapt.named_parameters() if p.requires_grad} == {"head.prototypes"}
    assert adapt.trainable_summary["trainable"] == 2 * 16

    encoder_before = {n: p.clone() for n, p in backbone.module.named_parameters()}
    optimizer = torch.optim.AdamW([adapt.head.prototypes], lr=0.1)
    labels = torch.as_tensor(data["train"].labels)
    for _ in range(5):
        optimizer.zero_grad()
        F.binary_cross_entropy_with_logits(adapt.train()(features), labels).backward()
        optimizer.step()
    assert not torch.allclose(adapt.head.prototypes, zero_shot.head.prototypes)
    assert all(torch.equal(p, encoder_before[n]) for n, p in backbone.module.named_parameters())


def run(usage: str, epochs: int):
    from medequity.experiment import ExperimentSpec, run_experiment

    spec = ExperimentSpec(dataset_options={"preset": "cxr-sex-prevalence", "n": 200, "image_size": 32}, attribute="sex",
                          model="open_clip:medequity-tiny", transform={"name": "2d", "resize": 32, "crop": None},
                          usage=usage, train={"epochs": epochs, "batch_size": 64}, n_boot=5, n_permutations=5,
                          eval_attributes=["sex"])
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*fewer than 30 samples")  # tiny test groups
        return run_experiment(spec)


def test_zero_shot_runs_through_the_pipeline_without_training():
    # clip_zs is evaluation-only: the pipeline trains it for 0 epochs whatever the train config says.
    result = run("clip_zs", epochs=3)
    assert result.best_epoch == -1 and result.history.empty
    scores = result.predictions["score"].to_numpy()
    assert np.all(np.isfinite(scores)) and scores.std() > 0


def test_training_an_evaluation_only_model_is_refused_by_the_trainer():
    from medequity.methods import create_method
    from medequity.models import create_backbone
    from medequity.training.trainer import TrainConfig, build_optimizer
    from medequity.usages import UsageContext, create_usage

    backbone = create_backbone("open_clip:medequity-tiny")
    model, _ = create_usage("clip_zs").build(backbone, {}, UsageContext())
    with pytest.raises(ValueError, match="epochs=0"):
        build_optimizer(create_method("erm").parameters(model), TrainConfig(epochs=1))
