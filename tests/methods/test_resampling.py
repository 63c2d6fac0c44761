"""Resampling: (group, label) cells equally likely per batch; unknown groups handled explicitly."""

import numpy as np
import pytest
import torch

from medequity.methods import create_method
from medequity.methods.resampling import balanced_weights

CELLS = {(0, 0): 900, (0, 1): 50, (1, 0): 40, (1, 1): 10}  # 90% / 5% / 4% / 1%


def imbalanced(unknown=0):
    groups, labels = [], []
    for (g, y), n in CELLS.items():
        groups += [g] * n
        labels += [y] * n
    groups += [-1] * unknown
    labels += [0] * unknown
    return np.array(labels), np.array(groups)


def draw(method, split, n_batches=200, batch_size=128, seed=0):
    generator = torch.Generator().manual_seed(seed)
    loader = torch.utils.data.DataLoader(split.items, batch_size=batch_size, sampler=method.sampler(split, generator))
    groups, labels = [], []
    for i, batch in enumerate(loader):
        groups.append(batch["group"].numpy())
        labels.append(batch["y"].numpy().astype(int))
        if i + 1 >= n_batches:
            break
    return np.concatenate(labels), np.concatenate(groups), loader


def test_batches_balanced_within_binomial_error(make_split):
    labels, groups = imbalanced()
    split = make_split(np.zeros((len(labels), 2)), labels, groups)
    method = create_method("resampling", num_samples=128 * 200)
    y, g, _ = draw(method, split)
    m = len(y)
    sigma = np.sqrt(0.25 * 0.75 / m)
    for (cg, cy) in CELLS:
        share = np.mean((g == cg) & (y == cy))
        assert abs(share - 0.25) < 4 * sigma, (cg, cy, share)
    # and every single batch is roughly balanced (the rarest cell, 1% of the data, appears ~32 times)
    per_batch = ((g == 1) & (y == 1)).reshape(-1, 128).mean(axis=1)
    assert per_batch.mean() == pytest.approx(0.25, abs=4 * sigma)
    assert per_batch.min() > 0.1


def test_erm_shuffle_would_not_be_balanced(make_split):
    labels, groups = imbalanced()
    assert np.mean((groups == 1) & (labels == 1)) == pytest.approx(0.01)  # what plain shuffling gives


def test_weights_sum_to_one_and_cells_equal():
    labels, groups = imbalanced()
    w = balanced_weights(labels, groups)
    assert w.sum() == pytest.approx(1.0)
    for (g, y) in CELLS:
        assert w[(groups == g) & (labels == y)].sum() == pytest.approx(0.25)


def test_unknown_natural_keeps_its_share(make_split):
    labels, groups = imbalanced(unknown=250)  # 250 of 1250 = 20% unknown
    w = balanced_weights(labels, groups, "natural")
    assert w[groups == -1].sum() == pytest.approx(0.2)
    for (g, y) in CELLS:
        assert w[(groups == g) & (labels == y)].sum() == pytest.approx(0.2)
    split = make_split(np.zeros((len(labels), 2)), labels, groups)
    y, g, _ = draw(create_method("resampling", num_samples=128 * 100), split, n_batches=100)
    sigma = np.sqrt(0.2 * 0.8 / len(g))
    assert abs(np.mean(g == -1) - 0.2) < 4 * sigma


def test_unknown_drop_and_cell():
    labels, groups = imbalanced(unknown=250)
    w = balanced_weights(labels, groups, "drop")
    assert w[groups == -1].sum() == 0 and w.sum() == pytest.approx(1.0)
    w = balanced_weights(labels, groups, "group")
    assert w[groups == -1].sum() == pytest.approx(1 / 5)  # (unknown, 0) is a fifth cell; (unknown, 1) is empty
    with pytest.raises(ValueError):
        balanced_weights(np.array([0, 1]), np.array([-1, -1]), "drop")


def test_seeded_by_trainer_generator(make_split):
    labels, groups = imbalanced()
    split = make_split(np.zeros((len(labels), 2)), labels, groups)
    first = list(create_method("resampling").sampler(split, torch.Generator().manual_seed(3)))
    second = list(create_method("resampling").sampler(split, torch.Generator().manual_seed(3)))
    other = list(create_method("resampling").sampler(split, torch.Generator().manual_seed(4)))
    assert first == second and first != other and len(first) == len(labels)


def test_parameters_validated():
    with pytest.raises(ValueError, match="no parameter"):
        create_method("resampling", gamma=1)
    with pytest.raises(ValueError, match="missing_attribute"):
        create_method("resampling", missing_attribute="ignore")


def test_old_parameter_name_refused_with_the_new_one():
    with pytest.raises(ValueError, match=r"'unknown' is now called 'missing_attribute'.*missing_attribute='drop'"):
        create_method("resampling", unknown="drop")
    with pytest.raises(ValueError, match="missing_attribute='group'"):  # the old value 'cell', translated
        create_method("resampling", unknown="cell")
    labels, groups = imbalanced(unknown=250)
    by_keyword = create_method("resampling", missing_attribute="group")
    assert by_keyword.params["missing_attribute"] == "group"
    np.testing.assert_allclose(balanced_weights(labels, groups, missing_attribute="group"),
                               balanced_weights(labels, groups, "group"))


def test_end_to_end(run_tiny_experiment, assert_finite_run):
    result = run_tiny_experiment("resampling")
    assert_finite_run(result)
    assert sum(cell["share"] for cell in result.method_log["cells"]) == pytest.approx(1.0)


def test_spec_validation_names_the_new_name():
    from medequity.experiment import ExperimentSpec
    from medequity.experiment.spec import SpecError
    from medequity.experiment.validation import validate_spec

    spec = ExperimentSpec(dataset_options={"preset": "cxr-sex-prevalence", "n": 120, "image_size": 32},
                          model_options={"input_size": 32}, train={"epochs": 1}, method="resampling",
                          method_params={"unknown": "cell"})
    with pytest.raises(SpecError, match=r"\['unknown'\].*'unknown' is now called 'missing_attribute'.*valid: "
                                        r"\['missing_attribute', 'num_samples'\]"):
        validate_spec(spec)
