"""FairDi: the distillation KL (eq. 3), own-group teachers, frozen backbone, the three stages, Table 3."""

from __future__ import annotations

import copy
import json
import math
import warnings

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F
from sklearn.metrics import roc_auc_score

from medequity.methods import create_method
from medequity.methods.fairdi import HeadView, distillation_kl, student_loss_terms
from medequity.methods.fis import fis_weights
from medequity.models import create_backbone
from medequity.models.classifier import Classifier
from medequity.training.trainer import TrainConfig, Trainer


def two_class_kl(p_logits_2: torch.Tensor, q_logits_2: torch.Tensor) -> torch.Tensor:
    """KL(P‖Q) of two 2-class softmaxes given their (B, 2) logits, directly: Σ_k p_k log(p_k/q_k)."""
    p, q = torch.softmax(p_logits_2, dim=1), torch.softmax(q_logits_2, dim=1)
    return (p * (p.log() - q.log())).sum(dim=1)


def pair(z: torch.Tensor, tau: float = 1.0) -> torch.Tensor:
    """[0, z/τ]: the 2-class logits of a one-logit head."""
    return torch.stack([torch.zeros_like(z), z / tau], dim=1)


# --- the KL of eq. 3 ----------------------------------------------------------------------------------


def test_kl_matches_hand_computation():
    zs, zt, tau = 1.0, 2.0, 1.5
    p = 1 / (1 + math.exp(-zs))  # student, τ = 1 (eq. 3 as printed)
    q = 1 / (1 + math.exp(-zt / tau))  # teacher softened by τ
    expected = p * math.log(p / q) + (1 - p) * math.log((1 - p) / (1 - q))
    student, teacher = torch.tensor([zs], dtype=torch.float64), torch.tensor([[zt]], dtype=torch.float64)
    got = distillation_kl(student, teacher, torch.tensor([0]), tau=tau, form="eq3")
    assert float(got) == pytest.approx(expected, rel=1e-6)
    ps = 1 / (1 + math.exp(-zs / tau))  # Hinton: both softened, KL(teacher ‖ student)
    expected_hinton = q * math.log(q / ps) + (1 - q) * math.log((1 - q) / (1 - ps))
    got = distillation_kl(student, teacher, torch.tensor([0]), tau=tau, form="hinton")
    assert float(got) == pytest.approx(expected_hinton, rel=1e-6)


def test_kl_matches_direct_two_class_softmax():
    gen = torch.Generator().manual_seed(0)
    student = torch.randn(64, generator=gen, dtype=torch.float64) * 4
    teachers = torch.randn(64, 3, generator=gen, dtype=torch.float64) * 4
    groups = torch.randint(0, 3, (64,), generator=gen)
    own = teachers[torch.arange(64), groups]
    tau = 1.5
    eq3 = distillation_kl(student, teachers, groups, tau=tau, form="eq3")
    torch.testing.assert_close(eq3, two_class_kl(pair(student), pair(own, tau)))
    hinton = distillation_kl(student, teachers, groups, tau=tau, form="hinton")
    torch.testing.assert_close(hinton, two_class_kl(pair(own, tau), pair(student, tau)))
    # and torch's own KLDivLoss convention for Hinton distillation (input = log student, target = teacher)
    torch_kl = F.kl_div(F.log_softmax(pair(student, tau), 1), F.softmax(pair(own, tau), 1), reduction="none").sum(1)
    torch.testing.assert_close(hinton, torch_kl)
    assert bool((eq3 >= 0).all()) and bool((hinton >= 0).all())


def test_kl_is_zero_when_student_matches_its_teacher():
    teachers = torch.tensor([[3.0, -1.0], [0.5, 2.0], [-4.0, 0.2]])
    groups = torch.tensor([0, 1, 1])
    own = teachers[torch.arange(3), groups]
    tau = 1.5
    # eq. 3: the student (τ = 1) matches the teacher softened by τ when z_s = z_t / τ
    zero = distillation_kl(own / tau, teachers, groups, tau=tau, form="eq3")
    torch.testing.assert_close(zero, torch.zeros(3), atol=1e-7, rtol=0)
    zero = distillation_kl(own, teachers, groups, tau=tau, form="hinton")
    torch.testing.assert_close(zero, torch.zeros(3), atol=1e-7, rtol=0)
    assert bool((distillation_kl(own, teachers, groups, tau=tau, form="eq3") > 1e-4).all())


def test_each_sample_is_distilled_from_its_own_groups_teacher():
    gen = torch.Generator().manual_seed(1)
    groups = torch.tensor([0, 1, 2, 0, 2, 1, 1, 0])
    student = torch.randn(8, generator=gen)
    y = (torch.rand(8, generator=gen) < 0.5).float()
    teachers = torch.randn(8, 3, generator=gen, requires_grad=True)
    terms = student_loss_terms(student, teachers, y, groups, lam=0.95, tau=1.5, c=0.5)
    # Jacobian of every sample's loss w.r.t. every teacher logit: non-zero only at (i, a_i)
    jacobian = torch.stack([torch.autograd.grad(terms["per_sample"][i], teachers, retain_graph=True)[0] for i in range(8)])
    for i in range(8):
        for g in range(3):
            nonzero = bool(jacobian[i, :, :].abs().sum() > 0) and bool(jacobian[i, i, g] != 0)
            assert nonzero == (g == int(groups[i])), (i, g)
        assert float(jacobian[i].abs().sum() - jacobian[i, i, groups[i]].abs()) == 0.0
    # changing teacher g's output changes exactly group g's losses
    base = terms["per_sample"].detach()
    for g in range(3):
        moved = teachers.detach().clone()
        moved[:, g] += 2.0
        changed = student_loss_terms(student, moved, y, groups, lam=0.95, tau=1.5, c=0.5)["per_sample"]
        np.testing.assert_array_equal((changed != base).numpy(), (groups == g).numpy())


def test_unknown_group_conventions():
    teachers = torch.tensor([[2.0, -2.0], [1.0, 3.0]])
    groups = torch.tensor([-1, 1])
    student = torch.tensor([0.3, -0.2])
    tau = 1.5
    mixed = distillation_kl(student, teachers, groups, tau=tau, unknown_group="mean_teacher")
    q1 = torch.sigmoid(teachers[0] / tau).mean()  # the teachers' mixture
    p1 = torch.sigmoid(student[0])
    expected = p1 * torch.log(p1 / q1) + (1 - p1) * torch.log((1 - p1) / (1 - q1))
    assert float(mixed[0]) == pytest.approx(float(expected), rel=1e-5)
    ce_only = distillation_kl(student, teachers, groups, tau=tau, unknown_group="ce_only")
    assert float(ce_only[0]) == 0.0 and float(ce_only[1]) == pytest.approx(float(mixed[1]))


def test_student_loss_combines_kl_and_fis_weighted_ce():
    gen = torch.Generator().manual_seed(2)
    student = torch.randn(10, generator=gen)
    teachers = torch.randn(10, 2, generator=gen)
    groups = torch.tensor([0, 1] * 5)
    y = torch.tensor([0.0, 1.0] * 3 + [1.0, 1.0, 0.0, 0.0])
    lam, tau = 0.95, 1.5
    kd = distillation_kl(student, teachers, groups, tau=tau)
    ce = F.binary_cross_entropy_with_logits(student, y, reduction="none")
    w = fis_weights(ce, groups, 0.5).float()
    literal = student_loss_terms(student, teachers, y, groups, lam=lam, tau=tau, c=0.5, normalize=False)["per_sample"]
    torch.testing.assert_close(literal, lam * tau**2 * kd + (1 - lam) * w * ce)  # eq. 3 as printed
    normalized = student_loss_terms(student, teachers, y, groups, lam=lam, tau=tau, c=0.5)["per_sample"]
    # normalize=True: the CE term's batch mean is FIS's weighted mean Σ w ℓ / Σ w
    assert float(normalized.mean()) == pytest.approx(float(lam * tau**2 * kd.mean() + (1 - lam) * (w * ce).sum() / w.sum()), rel=1e-5)
    only_kd = student_loss_terms(student, teachers, y, groups, lam=1.0, tau=tau)["per_sample"]
    torch.testing.assert_close(only_kd, tau**2 * kd)


# --- the three stages ------------------------------------------------------------------------------------


class RecordingTrainer(Trainer):
    """The real trainer, recording what each stage was given and the backbone after step 0."""

    def __init__(self, backbone):
        super().__init__()
        self.backbone = backbone
        self.calls = []
        self.backbone_after_step0 = None

    def fit(self, model, method, train, val, config, *, stage=""):
        result = super().fit(model, method, train, val, config, stage=stage)
        self.calls.append({"stage": stage, "model": model, "method": method, "train": train, "val": val, "config": config})
        if stage == "step0":
            self.backbone_after_step0 = copy.deepcopy(self.backbone.state_dict())
        return result


def image_split(make_split, n, seed, n_groups=3, unknown=0):
    rng = np.random.default_rng(seed)
    y = np.arange(n) % 2
    groups = np.arange(n) % n_groups
    groups[:unknown] = -1
    x = rng.normal(size=(n, 3, 16, 16)).astype(np.float32)
    x[:, 0] += (2 * y[:, None, None] - 1) * (1 + groups[:, None, None].clip(0))  # signal strength varies by group
    names = tuple(f"g{g}" for g in range(n_groups))
    return make_split(x, y, groups, group_names=names)


def test_stages_teachers_frozen_backbone_and_student(make_split):
    torch.manual_seed(0)
    train = image_split(make_split, 96, 0, unknown=6)
    val = image_split(make_split, 48, 1)
    backbone = create_backbone("small_cnn", input_size=16, width=4, feature_dim=8).module
    model = Classifier(backbone, 8)
    method = create_method("fairdi")
    trainer = RecordingTrainer(backbone)
    config = TrainConfig(epochs=2, batch_size=32, device="cpu", lr=123.0, optimizer="adamw")
    result = method.fit(model, train, val, config, trainer)

    # three stages through the trainer, one teacher per group, with the paper's per-stage settings
    assert [c["stage"] for c in trainer.calls] == ["step0", "teacher-0", "teacher-1", "teacher-2", "student"]
    assert set(result.stages) == {"step0", "teacher-0", "teacher-1", "teacher-2", "student"}
    step0 = trainer.calls[0]
    assert step0["method"].name == "fis" and step0["method"].params["c"] == 0.5 and step0["method"].params["cutmix"]
    assert (step0["config"].optimizer, step0["config"].lr, step0["config"].weight_decay) == ("adam", 1e-4, 1e-4)
    assert (step0["config"].scheduler, step0["config"].step_size, step0["config"].gamma) == ("step", 10, 0.1)
    assert step0["config"].selection == "worst_group_auc" and step0["config"].patience == 5
    assert all(c["config"].epochs == 2 for c in trainer.calls)  # user's epochs: every stage

    # teacher g: a fresh head on features, trained on group g only, FIS c = 0, SGD momentum 0.9
    features = {}
    with torch.no_grad():
        backbone.eval()
        for name, split in (("train", train), ("val", val)):
            features[name] = backbone(split.items.x).numpy()
    # heads train on the step-0 features standardised with the training set's mean and std
    mean, std = features["train"].mean(0), features["train"].std(0)
    std = np.where(std > 1e-8, std, 1.0)
    standardised = {name: (f - mean) / std for name, f in features.items()}
    for g in range(3):
        call = trainer.calls[1 + g]
        rows = np.flatnonzero(train.groups == g)
        assert np.all(call["train"].groups == g) and len(call["train"]) == rows.size
        assert np.all(call["val"].groups == g) and len(call["val"]) == int((val.groups == g).sum())
        seen = np.stack([call["train"].items[i]["x"].numpy() for i in range(len(call["train"]))])
        np.testing.assert_allclose(seen, standardised["train"][rows], rtol=1e-4, atol=1e-4)  # frozen step-0 features
        assert call["method"].name == "fis" and call["method"].params["c"] == 0.0 and not call["method"].params["cutmix"]
        assert (call["config"].optimizer, call["config"].momentum, call["config"].selection) == ("sgd", 0.9, "auc")
        # the stored teacher reads raw features and computes what the trained head computed on standardised ones
        with torch.no_grad():
            stored = method.extra["teachers"].heads[g](torch.as_tensor(features["val"])).squeeze(-1)
            trained = call["model"](torch.as_tensor(standardised["val"]))
        torch.testing.assert_close(stored, trained, rtol=1e-4, atol=1e-4)
        # the logged validation AUC is the teacher's AUC on its own group's validation samples
        val_rows = np.flatnonzero(val.groups == g)
        with torch.no_grad():
            scores = method.extra["teachers"].heads[g](torch.as_tensor(features["val"][val_rows])).squeeze(-1).numpy()
        assert method.log["teacher_val_auc"][g]["val_auc"] == pytest.approx(roc_auc_score(val.labels[val_rows], scores))

    # backbone frozen in steps 1–2: weights identical to the end of step 0, no gradient
    for key, value in backbone.state_dict().items():
        torch.testing.assert_close(value, trainer.backbone_after_step0[key], rtol=0, atol=0)
    assert not any(p.requires_grad for p in backbone.parameters())

    # the student: all training samples (unknown group included), its head is the final model's head
    student = trainer.calls[-1]
    assert len(student["train"]) == len(train) and (student["config"].optimizer, student["config"].selection) == ("sgd", "worst_group_auc")
    with torch.no_grad():
        final = model(val.items.x)
        trained = student["model"](torch.as_tensor(standardised["val"]))
    torch.testing.assert_close(final, trained, rtol=1e-4, atol=1e-4)
    x = val.items.x[:10]
    torch.testing.assert_close(method.logits(model, x), HeadView(method.variant_heads(model)["student"]).logits(model, x))
    assert list(result.history["stage"].unique()) == ["step0", "teacher-0", "teacher-1", "teacher-2", "student"]
    assert result.best_epoch == result.stages["student"].best_epoch
    assert method.log["n_unknown_train"] == [6]


def test_stage_config_precedence():
    user = TrainConfig(epochs=7, batch_size=16, seed=3, lr=0.5, optimizer="adamw", scheduler="cosine", patience=None)
    method = create_method("fairdi", student_epochs=2, teacher_lr=0.05)
    step0 = method.stage_config(user, "step0")
    assert (step0.epochs, step0.batch_size, step0.seed, step0.lr, step0.optimizer, step0.scheduler, step0.patience) == \
        (7, 16, 3, 1e-4, "adam", "step", 5)
    assert method.stage_config(user, "teacher").lr == 0.05 and method.stage_config(user, "teacher").epochs == 7
    assert method.stage_config(user, "student").epochs == 2
    with pytest.raises(ValueError, match="kd_form"):
        create_method("fairdi", kd_form="reverse")
    with pytest.raises(ValueError, match="lam"):
        create_method("fairdi", lam=1.5)


def test_end_to_end_run_experiment(run_tiny_experiment, assert_finite_run):
    result = run_tiny_experiment("fairdi", usage="ft", epochs=1)
    assert_finite_run(result)
    assert set(result.history["stage"]) == {"step0", "teacher-0", "teacher-1", "student"}
    assert [t["group"] for t in result.method_log["teacher_val_auc"]] == ["female", "male"]
    json.dumps(result.method_log)  # run.json can store it


# --- the Table 3 ablation --------------------------------------------------------------------------------


def test_auc_summary_formulas():
    from medequity.fairdi.ablation import auc_summary

    rng = np.random.default_rng(0)
    y = np.arange(200) % 2
    groups = np.repeat([0, 1], 100)
    scores = np.clip(0.5 + 0.3 * (2 * y - 1) * (1 + groups) * rng.random(200), 0, 1)
    row = auc_summary(y, scores, groups, ("a", "b"))
    overall, a, b = roc_auc_score(y, scores), roc_auc_score(y[:100], scores[:100]), roc_auc_score(y[100:], scores[100:])
    assert row["overall_auc"] == pytest.approx(overall) and row["auc:a"] == pytest.approx(a) and row["auc:b"] == pytest.approx(b)
    assert row["auc_gap"] == pytest.approx(abs(a - b)) and row["worst_group_auc"] == pytest.approx(min(a, b))
    assert row["es_auc"] == pytest.approx(overall / (1 + (abs(overall - a) + abs(overall - b)) / 2))  # eq. 4
    assert row["mean_psd"] == pytest.approx(np.std([a, b]) / overall)  # eq. 5
    assert row["max_psd"] == pytest.approx(abs(a - b) / overall)  # eq. 6


def test_ablation_cli_table(tmp_path):
    from typer.testing import CliRunner

    from medequity.cli.fairdi import fairdi_app

    out = tmp_path / "ablation"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        result = CliRunner().invoke(fairdi_app, [
            "ablation", "--option", "preset=fundus-race-difficulty", "--option", "n=240", "--option", "image_size=32",
            "--attribute", "race", "--model", "small_cnn", "--model-option", "input_size=32", "--epochs", "1",
            "--batch-size", "32", "--device", "cpu", "--cache-dir", str(tmp_path / "cache"), "--out", str(out)])
    assert result.exit_code == 0, result.output + repr(result.exception)
    frame = pd.read_csv(out / "ablation.csv")
    assert list(frame["model"]) == ["ERM", "ERM + CutMix", "FIS", "FIS + CutMix (Step 0)", "FairDi-Teacher (White - Step 1)",
                                    "FairDi-Teacher (non-White - Step 1)", "FairDi-Student (Step 2)"]
    assert list(frame.columns) == ["model", "stage", "overall_auc", "auc:White", "auc:non-White", "worst_group_auc",
                                   "auc_gap", "es_auc", "mean_psd", "max_psd", "n_test"]
    assert np.isfinite(frame.drop(columns=["model", "stage"]).to_numpy(dtype=float)).all()
    record = json.loads((out / "ablation.json").read_text())
    assert [r["model"] for r in record["rows"]] == list(frame["model"])
    assert record["spec"]["attribute"] == "race" and "teacher_val_auc" in record["fairdi_log"]
    assert "FairDi-Student" in result.output


def test_group_without_training_samples_falls_back_to_the_step0_head(make_split):
    torch.manual_seed(0)
    train = image_split(make_split, 60, 0)
    train.groups[train.groups == 2] = 0  # group g2 has validation samples but no training sample
    train.items.groups[:] = torch.as_tensor(train.groups)
    val = image_split(make_split, 30, 1)
    backbone = create_backbone("small_cnn", input_size=16, width=4, feature_dim=8).module
    model = Classifier(backbone, 8)
    method = create_method("fairdi")
    result = method.fit(model, train, val, TrainConfig(epochs=1, batch_size=32, device="cpu"), Trainer())
    assert "teacher-2" not in result.stages and method.log["teacher_fallback"] == ["g2"]
    x = val.items.x[:8]
    with torch.no_grad():
        step0 = HeadView(method.variant_heads(model)["step0"]).logits(model, x)
        teacher = HeadView(method.variant_heads(model)["teacher:g2"]).logits(model, x)
    torch.testing.assert_close(teacher, step0, rtol=1e-4, atol=1e-5)


def test_intersectional_attribute_gives_one_teacher_per_intersection(run_tiny_experiment):
    """FairDi works for intersections: ``attribute="sex&age"`` → 4 groups → 4 teachers, and the
    test metrics are reported for the intersection (FairTune App. A's age × sex)."""
    result = run_tiny_experiment("fairdi", usage="ft", epochs=1, attribute="sex&age", eval_attributes=["sex&age", "sex"])
    teachers = [t["group"] for t in result.method_log["teacher_val_auc"]]
    assert teachers == ["female & <=60", "female & >60", "male & <=60", "male & >60"]
    assert set(result.history["stage"]) == {"step0", "student", *(f"teacher-{g}" for g in range(4))}
    test = result.predictions[result.predictions.split == "test"]
    expected = (test["group:sex"].astype(str) + " & " + test["group:age"].astype(str)).to_numpy()
    np.testing.assert_array_equal(test["group:sex & age"].astype(str).to_numpy(), expected)
    groups = set(result.metrics[result.metrics.attribute == "sex & age"].group)
    assert set(teachers) <= groups
