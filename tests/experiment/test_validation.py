"""An experiment spec is checked before any work: impossible training settings, unknown dataset
options and unknown method parameters fail at once, with one message naming the field and the fix."""

from __future__ import annotations

import importlib
import time

import pytest
from typer.testing import CliRunner

from medequity.cli import app
from medequity.experiment import ExperimentSpec, prepare
from medequity.experiment.spec import SpecError
from medequity.experiment.validation import check_train_settings, validate_spec

DATA = {"preset": "cxr-sex-prevalence", "n": 120, "image_size": 32}


def spec(**changes) -> ExperimentSpec:
    return ExperimentSpec(**{"dataset_options": dict(DATA), "model_options": {"input_size": 32, "width": 4},
                             "train": {"epochs": 1}, **changes})


@pytest.mark.parametrize(("changes", "message"), [
    ({"train": {"epochs": -2}}, r"train\.epochs must be an integer >= 1 .*got -2"),
    ({"train": {"epochs": 0}}, r"train\.epochs must be an integer >= 1 .*clip_zs.*got 0"),
    ({"train": {"epochs": 2.5}}, r"train\.epochs must be an integer"),
    ({"train": {"batch_size": 0}}, r"train\.batch_size must be an integer >= 1; got 0"),
    ({"train": {"batch_size": 32.0}}, r"train\.batch_size must be an integer; got 32\.0"),
    ({"train": {"lr": -1}}, r"train\.lr must be a number > 0; got -1"),
    ({"train": {"lr": 0}}, r"train\.lr must be a number > 0; got 0"),
    ({"train": {"lr": "fast"}}, r"train\.lr must be a number > 0; got 'fast'"),
    ({"train": {"lr": float("nan")}}, r"train\.lr must be a number > 0; got nan"),
    ({"train": {"patience": -1}}, r"train\.patience must be an integer >= 0 .* or null"),
    ({"train": {"epoch": 3}}, r"unknown key\(s\) \['epoch'\] in train; valid keys: \[.*'epochs'"),
    ({"train": {"selection": "best"}}, r"train: selection must be one of"),
    ({"seed": "0"}, r"seed must be an integer; got '0'"),
    ({"n_boot": -5}, r"n_boot must be an integer >= 0; got -5"),
    ({"dataset_options": {**DATA, "nn": 100}}, r"dataset 'synthetic'.*unknown synthetic config key 'nn'; valid keys: .*\bn\b"),
    ({"dataset": "nih_cxr14", "dataset_options": {"view": "PA"}},
     r"dataset 'nih_cxr14' has no option\(s\) \['view'\]; valid options: \[.*'views'"),
    ({"dataset": "no_such_data"}, r"unknown dataset 'no_such_data'; known: \[.*'synthetic'"),
    ({"method": "groupdro", "method_params": {"eta": 0.1}},
     r"method 'groupdro' has no parameter\(s\) \['eta'\] \(in method_params\); valid: \['adjustment', 'missing_attribute', 'step_size'\]"),
    ({"method": "groupdro", "method_params": {"unknown": "drop"}}, r"'unknown' is now called 'missing_attribute'"),
    ({"usage": "lora", "usage_params": {"rank": 4}}, r"usage 'lora' has no parameter\(s\) \['rank'\].*valid: \[.*'r'"),
    ({"task": "detection"}, r"task 'detection' is unknown; valid: \[.*'classification'"),
])
def test_bad_settings_are_named_with_what_is_valid(changes, message):
    with pytest.raises(SpecError, match=message):
        validate_spec(spec(**changes))


def test_good_settings_pass_and_evaluation_only_usages_may_say_zero_epochs():
    good = spec(train={"epochs": 3, "batch_size": 16, "lr": 1e-3, "patience": None, "weight_decay": 0},
                method="groupdro", method_params={"step_size": 0.1, "missing_attribute": "drop"})
    assert validate_spec(good) is good
    check_train_settings({"epochs": 0}, trains=False)  # clip_zs trains nothing: 0 is what it means
    with pytest.raises(SpecError, match=r"train\.epochs must be an integer >= 0; got -1"):
        check_train_settings({"epochs": -1}, trains=False)
    # a hyper-parameter grid over every dataset option the real loaders name passes as well
    validate_spec(spec(dataset="nih_cxr14", dataset_options={"views": ["PA"], "one_per_patient": True}))


def test_prepare_refuses_a_bad_spec_before_pre_training_starts(monkeypatch, tmp_path):
    prepare_module = importlib.import_module("medequity.experiment.prepare")

    def pretraining(*args, **kwargs):
        raise AssertionError("pre-training started for a spec that cannot run")

    monkeypatch.setattr(prepare_module, "synthetic_checkpoint", pretraining)
    bad = spec(model_options={"checkpoint": "synthetic:cxr"}, train={"epochs": -2}, cache_dir=str(tmp_path))
    with pytest.raises(SpecError, match="train.epochs"):
        prepare(bad)


def test_train_command_fails_fast_with_the_message(tmp_path):
    """The README's groupdro command with a parameter the method does not have: one line, no
    traceback, before 33 s of pre-training."""
    start = time.perf_counter()
    result = CliRunner().invoke(app, ["train", "--checkpoint", "synthetic:cxr", "--method", "groupdro", "--param", "eta=0.1",
                                      "--out", str(tmp_path / "run"), "--cache-dir", str(tmp_path / "cache")])
    assert result.exit_code == 2, result.output
    output = " ".join(result.output.split())
    assert "has no parameter(s) ['eta']" in output and "'step_size'" in output and "Traceback" not in output
    result = CliRunner().invoke(app, ["train", "--checkpoint", "synthetic:cxr", "--epochs", "-2",
                                      "--out", str(tmp_path / "run"), "--cache-dir", str(tmp_path / "cache")])
    assert result.exit_code == 2 and "train.epochs must be an integer >= 1" in " ".join(result.output.split())
    assert "training" not in result.output  # refused before the progress bar, let alone pre-training
    assert not (tmp_path / "cache").exists()  # nothing was pre-trained
    assert time.perf_counter() - start < 10
