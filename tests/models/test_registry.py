"""The backbone registry and factory: name resolution, families registered from outside, lazy
families, what the factory refuses, and the import structure of medequity.models."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file
from torch import nn

import medequity.models
from medequity.models import BACKBONES, Backbone, create_backbone, register_backbone, resolve_backbone_name

MODELS_DIR = Path(medequity.models.__file__).parent


class TinyNet(nn.Module):
    def __init__(self, width: int):
        super().__init__()
        self.proj = nn.Linear(3, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x.mean(dim=(2, 3)))


@pytest.fixture
def tiny_family():
    """A family registered the way a new family module does it, removed afterwards."""

    @register_backbone("tinyfam", family=True)
    def tiny(*, model_name: str, input_size: int = 8, **_):
        width = {"w4": 4, "w6": 6}[model_name]
        return Backbone(f"tinyfam:{model_name}", TinyNet(width), width, input_size=input_size, config={"tinyfam": model_name})

    @register_backbone("tiny_single")
    def single(*, width: int = 5, **_):
        return Backbone("tiny_single", TinyNet(width), width, input_size=8)

    yield
    BACKBONES.unregister("tinyfam")
    BACKBONES.unregister("tiny_single")


def test_a_family_registered_elsewhere_is_created_by_name_and_loads_weights(tiny_family, tmp_path):
    assert "tinyfam" in BACKBONES and BACKBONES.is_family("tinyfam")
    backbone = create_backbone("tinyfam:w6", input_size=16)
    assert (backbone.name, backbone.feature_dim, backbone.input_size) == ("tinyfam:w6", 6, 16)
    assert backbone(torch.randn(2, 3, 16, 16)).shape == (2, 6)
    assert create_backbone("tiny_single", width=3).feature_dim == 3

    save_file({k: v.clone() for k, v in backbone.module.state_dict().items()}, str(tmp_path / "w.safetensors"))
    loaded = create_backbone("tinyfam:w6", checkpoint=tmp_path / "w.safetensors")
    torch.testing.assert_close(loaded.module.proj.weight, backbone.module.proj.weight, rtol=0, atol=0)
    assert loaded.config["checkpoint"] == str(tmp_path / "w.safetensors")


def test_unregister_removes_a_family(tiny_family):
    BACKBONES.unregister("tinyfam")
    with pytest.raises(KeyError, match="unknown backbone 'tinyfam:w4'"):
        create_backbone("tinyfam:w4")


def test_names_resolve_to_registered_entries_families_or_timm():
    assert resolve_backbone_name("small_cnn") == ("small_cnn", {})
    assert resolve_backbone_name("timm:resnet18") == ("timm", {"model_name": "resnet18"})
    assert resolve_backbone_name("resnet18") == ("timm", {"model_name": "resnet18"})
    assert resolve_backbone_name("open_clip:local-dir:/x/y") == ("open_clip", {"model_name": "local-dir:/x/y"})
    with pytest.raises(KeyError, match="families"):
        resolve_backbone_name("nofamily:model")
    with pytest.raises(KeyError, match="is a family"):
        resolve_backbone_name("open_clip")
    with pytest.raises(KeyError, match="unknown backbone 'no_such_model'.*timm models like it"):
        create_backbone("no_such_model")


def test_the_factory_refuses_synthetic_checkpoints_and_cache_dir():
    with pytest.raises(ValueError, match=r"must be resolved by medequity\.experiment.*synthetic_checkpoint"):
        create_backbone("small_cnn", checkpoint="synthetic:xray")
    with pytest.raises(TypeError, match="no cache_dir"):
        create_backbone("small_cnn", cache_dir="somewhere")


def test_lazy_entries_are_imported_on_first_use(tmp_path, monkeypatch):
    (tmp_path / "lazy_tiny_family.py").write_text(
        "from medequity.models.registry import Backbone, register_backbone\n"
        "from torch import nn\n"
        "@register_backbone('lazyfam', family=True)\n"
        "def lazy(*, model_name, **_):\n"
        "    return Backbone('lazyfam:' + model_name, nn.Identity(), 3)\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    BACKBONES.register_lazy("lazyfam", "lazy_tiny_family", family=True)
    try:
        assert "lazyfam" in BACKBONES and "lazy_tiny_family" not in sys.modules
        assert create_backbone("lazyfam:x").name == "lazyfam:x"
        assert "lazy_tiny_family" in sys.modules
    finally:
        BACKBONES.unregister("lazyfam")
        sys.modules.pop("lazy_tiny_family", None)


def test_importing_models_does_not_import_open_clip():
    code = "import sys, medequity.models; assert 'open_clip' not in sys.modules and 'medequity.models.clip' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)


def _imports(path: Path) -> set[str]:
    """Every module a file imports, at module level or inside functions."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)  # from pkg import submodule
    return names


def test_models_imports_no_upper_layer_and_has_no_cycles():
    modules = {f"medequity.models.{p.stem}": p for p in MODELS_DIR.glob("*.py") if p.stem != "__init__"}
    graph = {name: {m for m in _imports(path) if m in modules} for name, path in modules.items()}
    upper = ("training", "methods", "usages", "experiment", "bench", "cli")
    for path in MODELS_DIR.glob("*.py"):
        bad = sorted(m for m in _imports(path) if m.split(".")[:2] in [["medequity", u] for u in upper])
        assert not bad, f"{path.name} imports {bad}"
    assert graph["medequity.models.registry"] == set()  # the registry imports no family (nor anything of models)
    for family in ("small_cnn", "timm_backbones", "clip"):
        assert graph[f"medequity.models.{family}"] <= {"medequity.models.registry", "medequity.models.checkpoint"}

    def visit(node: str, stack: list[str]) -> None:
        assert node not in stack, f"import cycle: {' -> '.join([*stack, node])}"
        for child in graph[node]:
            visit(child, [*stack, node])

    for name in graph:
        visit(name, [])
