"""Spec expansion, validation errors and run ids (no training)."""

from __future__ import annotations

import hashlib
import json

import pytest
import yaml

from medequity.bench.spec import SpecError, load_spec, run_id
from medequity.experiment import ExperimentSpec


def grid_spec(tiny_spec):
    tiny_spec.update({
        "usages": ["lp", "ft"],
        "methods": ["erm", {"name": "groupdro", "params": {"adjustment": 0.5}, "grid": {"step_size": [0.01, 0.1, 1.0]}},
                    {"name": "resampling", "grid": {"missing_attribute": ["natural", "drop"]}}],
        "attributes": ["sex", "age"],
        "seeds": [0, 1],
        "train": {"epochs": 2, "lr": 0.001},
        "evaluation": {"threshold": "youden", "n_boot": 7, "n_permutations": 5, "attributes": ["sex"]},
        "split": {"seed": 3},
        "cache_dir": "/tmp/somewhere",
    })
    return tiny_spec


def test_grid_expands_into_one_experiment_per_cell(tiny_spec):
    bench = load_spec(grid_spec(tiny_spec))
    # 2 usages × (1 + 3 + 2 method settings) × 2 attributes × 2 seeds
    assert len(bench.cells) == 2 * 6 * 2 * 2
    assert len({cell.run_id for cell in bench.cells}) == len(bench.cells)
    groupdro = [c.spec for c in bench.cells if c.spec.method == "groupdro"]
    assert sorted({s.method_params["step_size"] for s in groupdro}) == [0.01, 0.1, 1.0]
    assert all(s.method_params["adjustment"] == 0.5 for s in groupdro)  # fixed params join every grid point
    spec = bench.cells[0].spec
    assert isinstance(spec, ExperimentSpec)
    assert (spec.dataset, spec.dataset_options, spec.model) == ("synthetic", {"preset": "cxr-sex-prevalence", "n": 300}, "small_cnn")
    assert spec.model_options == {"input_size": 32, "width": 8}
    assert spec.train == {"epochs": 2, "lr": 0.001}
    assert (spec.threshold, spec.n_boot, spec.n_permutations, spec.eval_attributes) == ("youden", 7, 5, ["sex"])
    assert (spec.split_seed, spec.cache_dir) == (3, "/tmp/somewhere")
    assert {(c.spec.attribute, c.spec.seed) for c in bench.cells} == {("sex", 0), ("sex", 1), ("age", 0), ("age", 1)}
    assert bench.selection.rule == "worst_group"  # the default rule


def test_unequal_tuning_budget_is_warned_and_equal_budget_is_not(tiny_spec):
    unequal = load_spec(grid_spec(tiny_spec))
    assert len(unequal.warnings) == 1
    assert "erm: 1" in unequal.warnings[0] and "groupdro: 3" in unequal.warnings[0] and "resampling: 2" in unequal.warnings[0]
    tiny_spec["methods"] = [{"name": "groupdro", "grid": {"step_size": [0.01, 0.1]}},
                            {"name": "resampling", "grid": {"missing_attribute": ["natural", "drop"]}}]
    assert load_spec(tiny_spec).warnings == []


def test_a_spec_file_is_read_with_safe_load_and_kept_verbatim(tmp_path, tiny_spec):
    path = tmp_path / "spec.yaml"
    text = "# my benchmark\n" + yaml.safe_dump(tiny_spec)
    path.write_text(text)
    bench = load_spec(path)
    assert bench.to_yaml() == text and len(bench.cells) == 1
    path.write_text("!!python/object/apply:os.system ['echo pwned']\n")
    with pytest.raises(SpecError, match="not valid YAML"):
        load_spec(path)
    with pytest.raises(SpecError, match="does not exist"):
        load_spec(tmp_path / "missing.yaml")


@pytest.mark.parametrize(("change", "message"), [
    ({"method": ["erm"]}, r"unknown key\(s\) \['method'\] in spec; valid keys: \['name', 'description', 'datasets'"),
    ({"methods": ["erm", "magic"]}, r"unknown method 'magic'; known: \[.*'erm'.*'groupdro'"),
    ({"usages": ["lp", "lora9"]}, r"unknown usage 'lora9'; known: \[.*'ft'.*'lp'"),
    ({"datasets": ["nowhere"]}, r"unknown dataset 'nowhere'; known: \[.*'synthetic'"),
    ({"models": ["no_such_net_xyz"]}, r"unknown model 'no_such_net_xyz'; registered: \[.*'small_cnn'"),
    ({"methods": [{"name": "groupdro", "grid": {"eta": [1, 2]}}]}, r"groupdro' has no parameter\(s\) \['eta'\].*valid: \['adjustment'"),
    ({"methods": [{"name": "erm", "grdi": {}}]},
     r"unknown key\(s\) \['grdi'\] in methods\[0\] \(erm\); valid keys: \['name', 'params', 'grid'\]"),
    ({"train": {"epoch": 1}}, r"unknown key\(s\) \['epoch'\] in train; valid keys: \[.*'epochs'"),
    ({"train": {"optimizer": "lion"}}, r"train: optimizer must be adamw, adam or sgd"),
    ({"evaluation": {"nboot": 3}}, r"unknown key\(s\) \['nboot'\] in evaluation; valid keys: \['threshold', 'n_boot'"),
    ({"selection": "best"}, r"selection rule 'best' is unknown; valid: \['overall', 'worst_group', 'pareto', 'dto', 'constrained'\]"),
    ({"selection": "constrained"}, r"'constrained' needs max_gap"),
    ({"seeds": [0, "one"]}, r"'seeds' must be a list of integers"),
    ({"methods": []}, r"'methods' is missing or empty"),
    ({"datasets": ["synthetic", "synthetic"]}, r"\['synthetic'\] listed more than once; give each entry its own 'label'"),
])
def test_bad_specs_name_the_problem_and_the_valid_choices(tiny_spec, change, message):
    tiny_spec.update(change)
    with pytest.raises(SpecError, match=message):
        load_spec(tiny_spec)


def test_run_id_is_a_hash_of_the_canonical_spec_and_stable(tiny_spec):
    cells = load_spec(tiny_spec).cells
    spec = cells[0].spec
    data = spec.to_dict()
    del data["cache_dir"]  # where features are cached does not change what a run computes
    expected = hashlib.sha256(json.dumps(data, sort_keys=True, separators=(",", ":")).encode()).hexdigest()[:12]
    assert run_id(spec) == expected == cells[0].run_id
    # The same cell written with keys in another order, or another cache folder: the same id.
    reordered = ExperimentSpec(**dict(reversed(list(spec.to_dict().items()))))
    reordered.dataset_options = {"n": 300, "preset": "cxr-sex-prevalence"}
    reordered.cache_dir = "/elsewhere"
    assert run_id(reordered) == run_id(spec)
    for change in ({"seed": 1}, {"method_params": {"x": 1}}, {"train": {"epochs": 2}}, {"n_boot": 21}):
        assert run_id(ExperimentSpec(**{**spec.to_dict(), **change})) != run_id(spec)
    assert load_spec(tiny_spec).cells[0].run_id == cells[0].run_id  # reloading maps to the same id


def test_datasets_and_models_may_be_listed_twice_under_labels_and_keep_their_own_attributes(tiny_spec):
    tiny_spec["datasets"] = [
        {"name": "synthetic", "label": "cxr-prevalence", "options": {"preset": "cxr-sex-prevalence", "n": 300}},
        {"name": "synthetic", "label": "derm", "options": {"preset": "derm-skin-tone-shortcut", "n": 300}, "attributes": ["age"]},
    ]
    tiny_spec["models"] = [{"name": "small_cnn", "label": "cnn8", "options": {"width": 8}},
                           {"name": "small_cnn", "label": "cnn16", "options": {"width": 16}}]
    tiny_spec["attributes"] = ["sex", "age"]
    cells = load_spec(tiny_spec).cells
    assert sorted({(c.dataset, c.model, c.spec.attribute) for c in cells}) == sorted(
        [(d, m, a) for d, a in [("cxr-prevalence", "sex"), ("cxr-prevalence", "age"), ("derm", "age")] for m in ("cnn8", "cnn16")])
    assert {c.labels["model"]: c.spec.model_options["width"] for c in cells} == {"cnn8": 8, "cnn16": 16}
    assert all(c.labels["hparams"] == '{"method":{},"usage":{}}' for c in cells)


def test_a_usage_may_override_train_settings(tiny_spec):
    raw = dict(tiny_spec, usages=[{"name": "lp", "train": {"lr": 0.01, "epochs": 7}}, "ft"],
               train={"epochs": 2, "lr": 0.001})
    cells = load_spec(raw).cells
    by_usage = {c.spec.usage: c.spec.train for c in cells}
    assert by_usage["lp"] == {"epochs": 7, "lr": 0.01}
    assert by_usage["ft"] == {"epochs": 2, "lr": 0.001}
    with pytest.raises(SpecError, match="lrr"):
        load_spec(dict(tiny_spec, usages=[{"name": "lp", "train": {"lrr": 1}}]))
