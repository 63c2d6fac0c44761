"""GroupDRO: online group weights on training batches, adjustment C/sqrt(n_g), objective != ERM."""

import math

import numpy as np
import pytest
import torch

from medequity.methods import create_method
from medequity.models.classifier import Classifier
from medequity.training.trainer import TrainConfig, Trainer


def setup_method(method, make_split, labels, groups, group_names=("g0", "g1")):
    split = make_split(np.zeros((len(labels), 2)), labels, groups, group_names)
    model = Classifier(None, 2)
    method.setup(model, split, TrainConfig(epochs=1))
    return model, split


def batch(x, y, g):
    return {"x": torch.as_tensor(x, dtype=torch.float32), "y": torch.as_tensor(y, dtype=torch.float32),
            "group": torch.as_tensor(g, dtype=torch.int64)}


def test_defaults_follow_papers():
    method = create_method("groupdro")
    assert method.params["adjustment"] == 1.0  # FairMedFM D.1.3
    assert method.params["step_size"] == 0.01  # Sagawa et al.
    with pytest.raises(ValueError, match="no parameter"):
        create_method("groupdro", eta=0.1)


def test_hand_computed_update(make_split):
    labels = np.array([0, 1, 0, 1, 0, 1, 0, 1])
    groups = np.array([0, 0, 0, 0, 1, 1, 1, 1])
    method = create_method("groupdro", step_size=0.5, adjustment=2.0)
    setup_method(method, make_split, labels, groups)
    assert method.group_names == ["g0|y=0", "g0|y=1", "g1|y=0", "g1|y=1"]
    per_sample = torch.tensor([0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 2.0])
    index = method.group_index(torch.as_tensor(groups), torch.as_tensor(labels, dtype=torch.float32))
    loss = method.robust_loss(per_sample, index, update=True)
    group_loss = np.array([(0.1 + 0.3) / 2, (0.2 + 0.4) / 2, (0.5 + 0.7) / 2, (0.6 + 2.0) / 2]) + 2.0 / math.sqrt(2)
    q = 0.25 * np.exp(0.5 * group_loss)
    q /= q.sum()
    np.testing.assert_allclose(method.q.numpy(), q, rtol=1e-6)
    assert float(loss) == pytest.approx(float(q @ group_loss), rel=1e-6)
    assert int(np.argmax(method.q.numpy())) == 3  # the highest-loss group gains most


def test_weights_rise_on_worst_group_during_training(make_split):
    # the (group 1, y=1) cell carries no signal in x, so it keeps the highest loss whatever the model does
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    n = 400
    groups = (rng.random(n) < 0.5).astype(int)
    labels = (rng.random(n) < 0.5).astype(int)
    x = rng.normal(size=(n, 2)).astype(np.float32) * 0.3
    x[:, 0] += np.where((groups == 1) & (labels == 1), 0.0, 2 * labels - 1)
    train = make_split(x, labels, groups)
    method = create_method("groupdro", step_size=0.1)
    Trainer().fit(Classifier(None, 2), method, train, train, TrainConfig(epochs=5, batch_size=50, device="cpu", lr=1e-2, patience=None))
    q = np.array(method.log["q"])
    assert q.shape == (5, 4)
    worst = method.group_names.index("g1|y=1")
    assert q[-1, worst] > 0.25 and int(np.argmax(q[-1])) == worst
    assert q[-1, worst] > q[0, worst] > 0.25


def test_objective_differs_from_erm(make_split):
    labels = np.array([0, 1, 0, 1, 1, 1])
    groups = np.array([0, 0, 0, 0, 1, 1])
    method = create_method("groupdro", adjustment=0.0, step_size=1.0)
    model, _ = setup_method(method, make_split, labels, groups)
    b = batch(np.random.default_rng(1).normal(size=(6, 2)), labels, groups)
    model.train()
    dro = method.loss(model, b)
    erm = create_method("erm").loss(model, b)
    assert dro.item() != pytest.approx(erm.item(), rel=1e-3)
    g_dro = torch.autograd.grad(dro, model.head.weight)[0]
    g_erm = torch.autograd.grad(erm, model.head.weight)[0]
    assert not torch.allclose(g_dro, g_erm, rtol=1e-3, atol=1e-6)


def test_weights_update_on_training_batches_only(make_split):
    labels = np.array([0, 1, 0, 1])
    groups = np.array([0, 0, 1, 1])
    method = create_method("groupdro", step_size=1.0)
    model, _ = setup_method(method, make_split, labels, groups)
    b = batch(np.ones((4, 2)), labels, groups)
    before = method.q.clone()
    model.eval()
    method.loss(model, b)  # e.g. a validation loss
    assert torch.equal(method.q, before)
    model.train()
    method.loss(model, b)
    assert not torch.equal(method.q, before)


def test_absent_group_not_updated_and_adjustment_uses_train_counts(make_split):
    labels = np.array([0] * 9 + [1])
    groups = np.array([0] * 5 + [1] * 5)
    method = create_method("groupdro", step_size=1.0, adjustment=1.0)
    model, _ = setup_method(method, make_split, labels, groups)
    assert method.log["group_counts"] == [5, 0, 4, 1]
    per_sample = torch.tensor([1.0, 1.0])  # only group 0|y=0 and 1|y=0 in this batch
    index = torch.tensor([0, 2])
    method.robust_loss(per_sample, index, update=True)
    q = method.q.numpy()
    assert q[1] == pytest.approx(q[3])  # both absent: same factor 1
    assert q[2] > q[0]  # same batch loss, but the smaller group (n=4) gets the larger adjustment 1/2 > 1/sqrt(5)


def test_unknown_group_is_own_cell_or_dropped(make_split):
    labels = np.array([0, 1, 0, 1, 1])
    groups = np.array([0, 0, 1, 1, -1])
    method = create_method("groupdro")
    setup_method(method, make_split, labels, groups)
    assert method.group_names[-2:] == ["unknown|y=0", "unknown|y=1"]
    assert method.log["group_counts"] == [1, 1, 1, 1, 0, 1]
    dropped = create_method("groupdro", missing_attribute="drop")
    setup_method(dropped, make_split, labels, groups)
    assert len(dropped.group_names) == 4
    assert int(dropped.group_index(torch.tensor([-1]), torch.tensor([1.0]))) == -1


def test_the_old_parameter_name_is_refused_with_the_new_one():
    with pytest.raises(ValueError, match=r"'unknown' is now called 'missing_attribute'.*missing_attribute='drop'"):
        create_method("groupdro", unknown="drop")
    with pytest.raises(ValueError, match="missing_attribute='group'"):  # the old default value, translated
        create_method("groupdro", unknown="cell")
    with pytest.raises(ValueError, match="'group'.*or 'drop'"):
        create_method("groupdro", missing_attribute="cell")


def test_end_to_end(run_tiny_experiment, assert_finite_run):
    result = run_tiny_experiment("groupdro")
    assert_finite_run(result)
    q = np.array(result.method_log["q"])
    assert q.shape[0] == len(result.history) and np.allclose(q.sum(axis=1), 1.0)
