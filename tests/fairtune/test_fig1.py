"""FairTune Fig. 1 on a CNN that overfits: full fine-tuning fits every group of the training set
(train AUC gap ~0) while the test gap is not ~0; and the "groups" space over small_cnn.

small_cnn (``synthetic:fundus`` pre-training, cached after first use) fully fine-tuned at LR 1e-2
for 15 epochs on ~300 32-pixel ``fundus-race-difficulty`` images. Measured (final epoch, seeds
0/1/2): train gap 0.000 for all, test gap 0.137 / 0.087 / 0.096 (benchmarks/validate_fairtune.py
--part fig1 runs all three seeds; this test runs seed 0, ~11 s alone on one thread).
"""

from __future__ import annotations

import numpy as np
import torch

from medequity.fairtune import Objective, SearchSetup
from medequity.fairtune.search import ScoringTrainer
from medequity.fairtune.space import search_space
from medequity.models import create_backbone
from medequity.pipeline import ExperimentSpec

TRAIN_GAP_MAX = 0.02
MARGIN = 0.05


def overfit_spec(seed: int = 0) -> ExperimentSpec:
    return ExperimentSpec(
        dataset="synthetic", dataset_options={"preset": "fundus-race-difficulty", "n": 1000, "seed": seed, "image_size": 32,
                                              "split_fractions": {"train": 0.3, "val": 0.2, "test": 0.5}},
        attribute="race", model="small_cnn", model_options={"input_size": 32, "checkpoint": "synthetic:fundus"},
        usage="ft", seed=seed, eval_attributes=["race"], n_boot=0, n_permutations=0,
        train={"epochs": 15, "batch_size": 32, "patience": None, "device": "cpu"})


def group_auc_gap(split, scores) -> tuple[list[float], float]:
    from medequity.training.trainer import validation_summary

    summary = validation_summary(split.labels, scores, split.groups, split.n_groups)
    aucs = [float(summary[f"auc_group{g}"]) for g in range(split.n_groups)]
    return aucs, max(aucs) - min(aucs)


def test_small_cnn_groups_space_has_one_bit_per_conv_block():
    backbone = create_backbone("small_cnn")
    space = search_space("groups", backbone)
    assert space.n_bits == 4
    assert space.searched == ("features.0-3", "features.4-7", "features.8-11", "features.12-14")
    # Each group holds exactly its block's conv and BatchNorm parameters; together, all of the backbone's.
    names = [name for name, _ in backbone.module.named_parameters()]
    covered = {name for prefixes in backbone.module_groups().values() for name in names if name.startswith(tuple(prefixes))}
    assert covered == set(names)
    for i, prefixes in enumerate(backbone.module_groups().values()):
        assert prefixes == [f"features.{4 * i}.", f"features.{4 * i + 1}."]
        assert isinstance(backbone.module.features[4 * i], torch.nn.Conv2d)
        assert isinstance(backbone.module.features[4 * i + 1], torch.nn.BatchNorm2d)


def test_full_ft_fits_every_training_group_but_not_test_fig1():
    from medequity.methods import create_method
    from medequity.training.trainer import seed_everything
    from medequity.usages import UsageContext, create_usage

    spec = overfit_spec(0)
    setup = SearchSetup(spec, Objective.parse("val_worst_group_auc"), subsample=None, splits=("train", "val", "test"))
    config = setup.config(1e-2)
    seed_everything(spec.seed)
    backbone = create_backbone(spec.model, cache_dir=spec.cache_dir, **spec.model_options)
    model, data = create_usage("ft").build(backbone, dict(setup.data), UsageContext(device="cpu"))
    final = {}

    class LastEpoch(ScoringTrainer):  # the trainer restores the best-validation checkpoint: keep the final epoch's scores
        def predict(self, model, method, split, config):
            scores = super().predict(model, method, split, config)
            if split is data["val"]:
                final.update({s: ScoringTrainer.predict(self, model, method, data[s], config) for s in ("train", "test")})
            return scores

    create_method(spec.method, **spec.method_params).fit(model, data["train"], data["val"], config, LastEpoch())
    train_aucs, train_gap = group_auc_gap(data["train"], final["train"])
    test_aucs, test_gap = group_auc_gap(data["test"], final["test"])
    assert np.all(np.isfinite(train_aucs + test_aucs))
    assert min(train_aucs) > 0.98, train_aucs  # the training set is fitted for every group
    assert train_gap < TRAIN_GAP_MAX, (train_aucs, test_aucs)
    assert test_gap > train_gap + MARGIN, (train_aucs, test_aucs)
