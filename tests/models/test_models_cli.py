"""``medequity models list|check|convert-openai`` on tiny files in the official layouts."""

from __future__ import annotations

import torch
from typer.testing import CliRunner

from medequity.cli import app
from medequity.models import create_backbone
from medequity.models.zoo import ZOO

runner = CliRunner()


def test_models_list_names_every_zoo_model_with_its_file_and_licence():
    result = runner.invoke(app, ["models", "list"], env={"COLUMNS": "400"})
    assert result.exit_code == 0, result.output
    for name, entry in ZOO.items():
        assert name in result.output and entry.licence.split(" ")[0] in result.output
    assert "QuickGELU" in result.output and "convert-openai" in result.output


def test_models_check_loads_a_moco_cxr_file_and_reports_keys_and_features(tmp_path):
    weights = create_backbone("moco-cxr").module.state_dict()
    state = {**{f"module.encoder_q.{k}": v for k, v in weights.items()},
             **{f"module.encoder_k.{k}": v for k, v in weights.items()}, "module.queue": torch.randn(128, 16)}
    torch.save({"state_dict": state, "epoch": 1}, tmp_path / "moco.pth.tar")
    result = runner.invoke(app, ["models", "check", "moco-cxr", str(tmp_path / "moco.pth.tar")], env={"COLUMNS": "300"})
    assert result.exit_code == 0, result.output
    assert "11.18 M parameters" in result.output and "shape (2, 512)" in result.output and "finite: True" in result.output
    assert "encoder_k." in result.output and "zero-shot: no text tower" in result.output

    torch.save({"state_dict": {"module.encoder_q.conv1.weight": weights["conv1.weight"]}}, tmp_path / "partial.pth")
    result = runner.invoke(app, ["models", "check", "moco-cxr", str(tmp_path / "partial.pth")], env={"COLUMNS": "300"})
    assert result.exit_code == 2 and "lacks" in result.output and "bn1.weight" in result.output
    result = runner.invoke(app, ["models", "check", "no-such-model", str(tmp_path / "partial.pth")])
    assert result.exit_code == 2 and "not a zoo model" in result.output


def test_convert_openai_refuses_unpublished_archives_and_plain_files(tmp_path):
    archive = torch.jit.script(torch.nn.Linear(2, 2))
    torch.jit.save(archive, str(tmp_path / "ViT-B-16.pt"))
    result = runner.invoke(app, ["models", "convert-openai", str(tmp_path / "ViT-B-16.pt"), str(tmp_path / "out.safetensors")],
                           env={"COLUMNS": "300"})
    assert result.exit_code == 2 and "not one of OpenAI's published CLIP files" in result.output
    result = runner.invoke(app, ["models", "convert-openai", str(tmp_path / "ViT-B-16.pt"), str(tmp_path / "out.safetensors"),
                                 "--trust"], env={"COLUMNS": "300"})
    assert result.exit_code == 0 and "2 tensors" in result.output and (tmp_path / "out.safetensors").is_file()
    torch.save({"w": torch.zeros(1)}, tmp_path / "plain.pt")
    result = runner.invoke(app, ["models", "convert-openai", str(tmp_path / "plain.pt"), str(tmp_path / "x.safetensors")])
    assert result.exit_code == 2 and "not a TorchScript archive" in result.output
