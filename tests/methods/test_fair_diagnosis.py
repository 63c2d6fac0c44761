"""Fair Diagnosis (and FAAP, which shares its machinery): the mask bound, the frozen classifier,
the label-conditioned discriminator, and that each term of eqs. 9–12 moves what it should."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from medequity.methods import create_method
from medequity.models.classifier import Classifier
from medequity.training.trainer import TrainConfig, Trainer


def _feature_model(dim: int = 8) -> Classifier:
    """A deployed classifier on features with a BatchNorm (its running stats must not move either)."""
    torch.manual_seed(0)
    backbone = nn.Sequential(nn.Linear(dim, 16), nn.BatchNorm1d(16), nn.ReLU())
    return Classifier(backbone, 16)


def _trained_setup(make_split, tiny_features, name="fair_diagnosis", n=256, **params):
    """A classifier trained by the method's stage 1 (ERM) on features where S is decodable, and the
    method built for stage 2 (no adversarial epochs yet)."""
    x, y, s = tiny_features(n=n, seed=0)
    train = make_split(x, y, s)
    model = _feature_model(x.shape[1])
    method = create_method(name, adversarial_epochs=0, **params)
    config = TrainConfig(epochs=5, batch_size=64, lr=1e-2, device="cpu", patience=None)
    method.fit(model, train, train, config, Trainer())
    batch = {"x": torch.as_tensor(x), "y": torch.as_tensor(y, dtype=torch.float32), "group": torch.as_tensor(s)}
    return model, method, batch


def _randomise_generator(method, scale: float = 5.0, seed: int = 0) -> None:
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in method.extra["generator"].parameters():
            p.copy_(scale * torch.randn(p.shape, generator=generator))


def test_mask_is_bounded_by_eta_and_clipped_to_the_data_range(make_split):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(32, 3, 16, 16)).astype(np.float32)
    train = make_split(x, rng.integers(0, 2, 32), rng.integers(0, 2, 32))
    model = Classifier(nn.Sequential(nn.Conv2d(3, 4, 3), nn.AdaptiveAvgPool2d(1), nn.Flatten()), 4)
    method = create_method("fair_diagnosis", eta=0.2)
    method.build(model, train)
    xt = torch.as_tensor(x)
    assert torch.equal(method.perturb(xt), xt)  # the generator starts at the identity mask
    _randomise_generator(method)  # saturate tanh: the bound must still hold
    delta = method.perturb(xt) - xt
    assert delta.abs().max() <= 0.2 + 1e-6
    assert delta.abs().max() > 0.15  # the bound is reached, not trivially satisfied
    low = xt.amin(dim=(0, 2, 3), keepdim=True)
    high = xt.amax(dim=(0, 2, 3), keepdim=True)
    pushed = method.perturb(xt)
    assert torch.all(pushed >= low - 1e-6) and torch.all(pushed <= high + 1e-6)
    # Inference applies the mask before the frozen model.
    torch.testing.assert_close(method.logits(model, xt), model(pushed))


def test_stage_two_leaves_the_deployed_classifier_untouched(make_split, tiny_features):
    x, y, s = tiny_features(n=192, seed=1)
    train = make_split(x, y, s)
    model = _feature_model(x.shape[1])
    before = copy.deepcopy(model.state_dict())  # includes BatchNorm running statistics
    method = create_method("fair_diagnosis", pretrained_classifier=True, adversarial_epochs=2, lr_generator=1e-2)
    config = TrainConfig(epochs=1, batch_size=64, device="cpu")
    method.fit(model, train, train, config, Trainer())
    for key, value in model.state_dict().items():
        torch.testing.assert_close(value, before[key], rtol=0, atol=0, msg=key)
    assert all(not p.requires_grad for p in model.parameters())
    moved = sum(float(p.detach().abs().sum()) for p in method.extra["generator"].net[-1].parameters())
    assert moved > 0  # while the generator did train
    assert len(method.log["d_acc"]) == 2 and all(0 <= a <= 1 for a in method.log["d_acc"])
    assert len(method.log["d_loss"]) == 2 and np.all(np.isfinite(method.log["g_loss"]))


def test_stage_one_trains_the_classifier_when_not_pretrained(make_split, tiny_features):
    x, y, s = tiny_features(n=192, seed=2)
    train = make_split(x, y, s)
    model = _feature_model(x.shape[1])
    head_before = model.head.weight.detach().clone()
    method = create_method("fair_diagnosis", adversarial_epochs=1)
    fit = method.fit(model, train, train, TrainConfig(epochs=2, batch_size=64, device="cpu"), Trainer())
    assert not torch.equal(model.head.weight, head_before)
    assert set(fit.history["stage"]) == {"classifier", "adversarial"}
    assert "classifier" in fit.stages


def test_stages_run_through_the_trainer_with_the_adversarial_history(make_split, tiny_features):
    x, y, s = tiny_features(n=128, seed=3)
    train = make_split(x, y, s)
    model = _feature_model(x.shape[1])
    method = create_method("fair_diagnosis", pretrained_classifier=True, adversarial_epochs=3,
                           jsd_pretrain_epochs=2, lr_generator=2e-3)
    rows = []
    fit = method.fit(model, train, train, TrainConfig(epochs=1, batch_size=64, device="cpu", patience=0),
                     Trainer(progress=rows.append))
    assert list(fit.history["stage"]) == ["jsd", "jsd", "adversarial", "adversarial", "adversarial"]
    jsd, adversarial = fit.history[fit.history.stage == "jsd"], fit.history[fit.history.stage == "adversarial"]
    assert list(jsd["jsd"]) == method.log["jsd"] and list(jsd["train_loss"]) == [-v for v in method.log["jsd"]]
    # one row per adversarial epoch (no early stopping), train_loss = g_loss, d_acc column, g's lr
    assert list(adversarial["train_loss"]) == method.log["g_loss"] and list(adversarial["d_acc"]) == method.log["d_acc"]
    assert list(adversarial["val_auc"]) == method.log["val_auc"] and set(adversarial["lr"]) == {2e-3}
    # the last generator is kept and reported on the user's selection criterion
    assert fit.best_epoch == 2 and fit.selection == "worst_group_auc"
    assert fit.best_value == adversarial["val_worst_group_auc"].iloc[-1]
    assert [row["best_epoch"] for row in rows if row["stage"] == "adversarial"] == [0, 1, 2]
    assert set(fit.stages) == {"jsd"}


def test_discriminator_is_conditioned_on_y_and_faap_is_not(make_split, tiny_features):
    x, y, s = tiny_features(n=64)
    train = make_split(x, y, s)
    model = _feature_model(x.shape[1]).eval()
    xt = torch.as_tensor(x)
    zeros, ones = torch.zeros(len(x)), torch.ones(len(x))
    fd = create_method("fair_diagnosis")
    fd.build(model, train)
    with torch.no_grad():
        assert not torch.allclose(fd.sensitive_logits(model, xt, zeros), fd.sensitive_logits(model, xt, ones))
    faap = create_method("faap")
    faap.build(model, train)
    with torch.no_grad():
        torch.testing.assert_close(faap.sensitive_logits(model, xt, zeros), faap.sensitive_logits(model, xt, ones))


def test_discriminator_handles_several_groups_and_skips_unknown(make_split, tiny_features):
    x, y, s = tiny_features(n=90, n_groups=3)
    s[:10] = -1
    train = make_split(x, y, s, group_names=("a", "b", "c"))
    model = _feature_model(x.shape[1]).eval()
    method = create_method("fair_diagnosis")
    method.build(model, train)
    xt, yt, st = torch.as_tensor(x), torch.as_tensor(y, dtype=torch.float32), torch.as_tensor(s)
    assert method.sensitive_logits(model, xt, yt).shape == (90, 3)
    loss, _, n_known = method.discriminator_loss(model, xt, yt, st)
    assert n_known == 80
    known = st >= 0
    expected = F.cross_entropy(method.sensitive_logits(model, xt[known], yt[known]), st[known])
    torch.testing.assert_close(loss, expected)
    loss, correct, n_known = method.discriminator_loss(model, xt, yt, torch.full_like(st, -1))
    assert n_known == 0 and correct == 0 and float(loss) == 0.0


def _one_generator_step(method, model, batch, loss_of_terms, lr=1e-2):
    optimizer = torch.optim.Adam(method.extra["generator"].parameters(), lr=lr)
    terms = method.generator_terms(model, batch["x"], batch["y"], batch["group"])
    optimizer.zero_grad()
    loss_of_terms(terms).backward()
    optimizer.step()


def _train_discriminator(method, model, batch, steps=150):
    optimizer = torch.optim.Adam(method.extra["discriminator"].parameters(), lr=1e-2)
    for _ in range(steps):
        loss, _, _ = method.discriminator_loss(model, method.perturb(batch["x"]).detach(), batch["y"], batch["group"])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()


def test_discriminator_step_learns_s(make_split, tiny_features):
    model, method, batch = _trained_setup(make_split, tiny_features)
    before, _, _ = method.discriminator_loss(model, batch["x"], batch["y"], batch["group"])
    _train_discriminator(method, model, batch, steps=50)
    after, correct, n = method.discriminator_loss(model, batch["x"], batch["y"], batch["group"])
    assert after.item() < before.item() and correct / n > 0.75  # S is decodable from the features


def test_each_generator_term_moves_what_it_should(make_split, tiny_features):
    model, method, batch = _trained_setup(make_split, tiny_features)
    _train_discriminator(method, model, batch)
    _randomise_generator(method, scale=0.3)  # a mask that hurts the classifier a bit, so utility can improve
    start = copy.deepcopy(method.extra["generator"].state_dict())

    def measure():
        with torch.no_grad():
            terms = method.generator_terms(model, batch["x"], batch["y"], batch["group"])
        return {k: float(v) for k, v in terms.items() if k != "x_tilde"}

    base = measure()
    # −α·H(Ŝ): one step on the entropy term raises d_Y's output entropy.
    _one_generator_step(method, model, batch, lambda t: -t["entropy"])
    assert measure()["entropy"] > base["entropy"]
    # −β·I(Ŷ;Y) ≈ β·BCE: one step on the utility term lowers the frozen classifier's CE on x̃.
    method.extra["generator"].load_state_dict(start)
    _one_generator_step(method, model, batch, lambda t: t["utility"])
    assert measure()["utility"] < base["utility"]
    # I(Ŝ;S) ≈ −CE: one step on the fooling term raises d_Y's cross-entropy.
    method.extra["generator"].load_state_dict(start)
    _one_generator_step(method, model, batch, lambda t: -t["fool"])
    assert measure()["fool"] > base["fool"]
    # The full eq. 10 combines them with α and β.
    terms = method.generator_terms(model, batch["x"], batch["y"], batch["group"])
    method.params.update(alpha=2.0, beta=3.0)
    expected = -terms["fool"] - 2.0 * terms["entropy"] + 3.0 * terms["utility"]
    torch.testing.assert_close(method.generator_loss(terms), expected)


def test_jsd_pretraining_raises_the_mi_bound(make_split, tiny_features):
    x, y, s = tiny_features(n=128)
    train = make_split(x, y, s)
    model = _feature_model(x.shape[1])
    method = create_method("fair_diagnosis", pretrained_classifier=True, adversarial_epochs=0,
                           jsd_pretrain_epochs=6, lr_generator=3e-3)
    method.fit(model, train, train, TrainConfig(epochs=1, batch_size=32, device="cpu"), Trainer())
    jsd = method.log["jsd"]
    assert len(jsd) == 6 and jsd[-1] > jsd[0]
    assert jsd[-1] <= 0.0  # in eq. 5's form both terms are ≤ 0 (−softplus(·)), so the bound is too


@pytest.mark.parametrize("name", ["fair_diagnosis", "faap"])
def test_end_to_end_run_gives_finite_causal_and_group_metrics(run_tiny_experiment, assert_finite_run, name):
    from sklearn.metrics import roc_auc_score

    from medequity.metrics import adf, demographic_parity_difference, equal_opportunity_difference

    result = run_tiny_experiment(name, usage="ft", epochs=1, method_params={"adversarial_epochs": 1},
                                 model_options={"input_size": 32}, eval_attributes=["sex"])
    assert_finite_run(result)
    test = result.predictions[result.predictions.split == "test"]
    y, pred, groups = test["label"].to_numpy(), test["pred"].to_numpy(), test["group:sex"].to_numpy()
    values = [adf(y, pred, sensitive_features=groups), demographic_parity_difference(y, pred, sensitive_features=groups),
              equal_opportunity_difference(y, pred, sensitive_features=groups), float(np.mean(pred == y)),
              roc_auc_score(y, test["score"])]
    assert np.all(np.isfinite(values))
    assert len(result.method_log["d_acc"]) == 1
    assert result.method.name == name
