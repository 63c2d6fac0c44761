"""A benchmark spec is small plain data: YAML aliases cannot expand it to gigabytes, and settings
that cannot run (no seeds, impossible training values, unknown options) fail at validation."""

from __future__ import annotations

import time
import tracemalloc

import pytest
import yaml

from medequity.bench import SpecError, load_spec
from medequity.utils.safe_yaml import YamlError, expanded_size, load_yaml


def laughs(levels: int = 9, width: int = 9) -> str:
    """The "billion laughs": each level lists ``width`` aliases of the level below."""
    lines = ["l0: &l0 [" + ", ".join(["x"] * width) + "]"]
    lines += [f"l{i}: &l{i} [" + ", ".join([f"*l{i - 1}"] * width) + "]" for i in range(1, levels)]
    return "\n".join(lines) + "\n"


def test_nested_aliases_fail_fast_with_a_clear_error(tmp_path):
    text = "name: boom\n" + laughs()
    assert len(text.encode()) < 600  # 9**9 ≈ 387 million values once expanded
    path = tmp_path / "spec.yaml"
    path.write_text(text)
    tracemalloc.start()
    start = time.perf_counter()
    with pytest.raises(SpecError, match=r"spec file .*spec\.yaml' expands to more than 100,000 values through its aliases"):
        load_spec(path)
    seconds = time.perf_counter() - start
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert seconds < 1 and peak < 20 * 2**20  # bounded: no expansion happened


def test_the_expanded_size_counts_every_alias_reference():
    node = yaml.compose(laughs(levels=3, width=4))
    # document mapping (1) + 3 keys + l0 (1 + 4) + l1 (1 + 4·5) + l2 (1 + 4·21)
    assert expanded_size(node) == 1 + 3 + 5 + 21 + 85
    with pytest.raises(YamlError, match="more than 100 values"):
        expanded_size(node, limit=100)


def test_ordinary_yaml_reads_as_safe_load_does():
    text = "base: &b {epochs: 1, lr: 0.01}\nlp:\n  <<: *b\n  lr: 0.1\nlist: [*b, *b]\nempty:\n"
    assert load_yaml(text) == yaml.safe_load(text)
    assert load_yaml("") is None


@pytest.mark.parametrize(("text", "message"), [
    ("a: &a [1, *a]\n", r"recursive alias .* line 1"),
    ("a: !!python/object/apply:os.system [echo hi]\n", r"not valid YAML data: could not determine a constructor"),
    ("[" * 3000 + "]" * 3000, r"nested too deeply"),
    ("a: [1, 2\n", r"not valid YAML data"),
])
def test_hostile_yaml_is_refused_with_the_source_named(text, message):
    with pytest.raises(YamlError, match=rf"the file x\.yaml .*{message}|the file x\.yaml is {message}"):
        load_yaml(text, source="the file x.yaml")


def test_a_cli_option_value_is_bounded_too(capsys):
    import typer

    from medequity.cli.common import parse_options

    assert parse_options(["n=400", "split_fractions=[0.5, 0.25, 0.25]"]) == {"n": 400, "split_fractions": [0.5, 0.25, 0.25]}
    with pytest.raises(typer.Exit):
        parse_options(["shortcut={" + laughs().replace("\n", ", ") + "}"])
    assert "the value of option 'shortcut' expands to more than 100,000 values" in " ".join(capsys.readouterr().out.split())


@pytest.mark.parametrize(("change", "message"), [
    ({"seeds": []}, r"'seeds' must be a list of integers, at least one"),
    ({"attributes": []}, r"'attributes' is empty"),
    ({"train": {"epochs": 0}}, r"train\.epochs must be an integer >= 1"),
    ({"train": {"epochs": 1, "batch_size": 0}}, r"train\.batch_size must be an integer >= 1; got 0"),
    ({"usages": [{"name": "lp", "train": {"lr": -1}}]}, r"train \(with usage 'lp''s train\)\.lr must be a number > 0; got -1"),
    ({"datasets": [{"name": "synthetic", "options": {"preset": "cxr-sex-prevalence", "nn": 3}}]},
     r"dataset 'synthetic'.*unknown synthetic config key 'nn'"),
    ({"methods": [{"name": "groupdro", "params": {"unknown": "drop"}}]},
     r"method 'groupdro' has no parameter\(s\) \['unknown'\] \(in params\); 'unknown' is now called 'missing_attribute'"),
])
def test_settings_that_cannot_run_fail_at_spec_validation(tiny_spec, change, message):
    tiny_spec.update(change)
    with pytest.raises(SpecError, match=message):
        load_spec(tiny_spec)


def test_an_evaluation_only_usage_may_train_zero_epochs(tiny_spec):
    tiny_spec.update({"models": ["open_clip:medequity-tiny"], "usages": ["clip_zs"], "train": {"epochs": 0}})
    assert len(load_spec(tiny_spec).cells) == 1
