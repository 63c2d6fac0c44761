"""Loading local checkpoints: timm .pth (plain, nested, prefixed), safetensors, HF folders, open_clip;
misfits raise CheckpointError naming keys; pickled code is never executed."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import save_file

from medequity.models import CheckpointError, create_backbone
from medequity.models.clip import TINY_CLIP_CONFIG

VIT = dict(input_size=32, depth=2, embed_dim=32, num_heads=2, patch_size=8)
IMAGES = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(1))


def vit(seed: int, **overrides):
    torch.manual_seed(seed)
    return create_backbone("vit_tiny_patch16_224", **{**VIT, **overrides})


def features(backbone) -> torch.Tensor:
    with torch.no_grad():
        return backbone.module.eval()(IMAGES)


@pytest.fixture(scope="module")
def source():
    return vit(seed=1)


def state(backbone) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in backbone.module.state_dict().items()}


@pytest.mark.parametrize("wrap", ["plain", "nested", "module_prefix", "nested_and_prefixed"])
def test_timm_pth_checkpoints_reproduce_the_source_features(tmp_path, source, wrap):
    weights = state(source)
    if "prefix" in wrap:
        weights = {f"module.{k}": v for k, v in weights.items()}
    payload = {"state_dict": weights, "epoch": 3} if "nested" in wrap else weights
    path = tmp_path / "weights.pth"
    torch.save(payload, path)
    loaded = create_backbone("vit_tiny_patch16_224", checkpoint=path, **VIT)
    assert not torch.allclose(features(vit(seed=2)), features(source))  # a fresh init differs...
    torch.testing.assert_close(features(loaded), features(source), rtol=0, atol=0)  # ...the loaded one does not


def test_safetensors_file_and_hf_folder(tmp_path, source):
    save_file(state(source), str(tmp_path / "vit.safetensors"))
    folder = tmp_path / "hf"
    folder.mkdir()
    save_file(state(source), str(folder / "model.safetensors"))
    (folder / "config.json").write_text(json.dumps({"architecture": "vit_tiny_patch16_224"}))
    for checkpoint in (tmp_path / "vit.safetensors", folder):
        loaded = create_backbone("vit_tiny_patch16_224", checkpoint=checkpoint, **VIT)
        torch.testing.assert_close(features(loaded), features(source), rtol=0, atol=0)
        assert loaded.config["checkpoint"] == str(checkpoint)


def test_a_checkpoint_of_another_shape_names_the_misfit_keys(tmp_path):
    path = tmp_path / "wide.pth"
    torch.save(state(vit(seed=0, embed_dim=48)), path)
    with pytest.raises(CheckpointError, match=r"does not fit the model.*cls_token: checkpoint \(1, 1, 48\) vs model \(1, 1, 32\)"):
        create_backbone("vit_tiny_patch16_224", checkpoint=path, **VIT)


def test_a_checkpoint_lacking_weights_names_them(tmp_path, source):
    weights = state(source)
    del weights["blocks.1.mlp.fc2.weight"]
    path = tmp_path / "partial.safetensors"
    save_file(weights, str(path))
    with pytest.raises(CheckpointError, match=r"lacks 1 weights.*blocks\.1\.mlp\.fc2\.weight"):
        create_backbone("vit_tiny_patch16_224", checkpoint=path, **VIT)


class Payload:
    """Unpickling this calls ``open(marker, "w")``: a file appears if the pickle's code runs."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_pickled_code_is_refused_and_never_runs(tmp_path, source):
    marker = tmp_path / "payload_ran"
    path = tmp_path / "evil.pth"
    torch.save({"state_dict": {**state(source), "evil": Payload(marker)}}, path)
    with pytest.raises(CheckpointError, match="cannot read checkpoint"):
        create_backbone("vit_tiny_patch16_224", checkpoint=path, **VIT)
    assert not marker.exists()

    # Control: the same kind of file loaded unsafely does run its payload (harmless here: it opens a file).
    control = tmp_path / "control.pth"
    control_marker = tmp_path / "control_ran"
    torch.save({"evil": Payload(control_marker)}, control)
    torch.load(control, weights_only=False)["evil"].close()
    assert control_marker.exists()


def tiny_clip(seed: int):
    torch.manual_seed(seed)
    return create_backbone("open_clip:medequity-tiny")


def clip_outputs(backbone):
    module = backbone.module.eval()
    tokens = backbone.module.tokenizer(["there is effusion.", "no effusion."])
    with torch.no_grad():
        return module(IMAGES), module.encode_text(tokens)


@pytest.mark.parametrize("fmt", ["pt", "open_clip_folder"])
def test_open_clip_checkpoints_restore_image_and_text_towers(tmp_path, fmt):
    source = tiny_clip(seed=1)
    weights = {k: v.clone() for k, v in source.module.state_dict().items()}
    if fmt == "pt":
        path = tmp_path / "clip.pt"
        torch.save({"epoch": 10, "state_dict": {f"module.{k}": v for k, v in weights.items()}}, path)  # open_clip training format
        loaded = create_backbone("open_clip:medequity-tiny", checkpoint=path)
    else:
        path = tmp_path / "clip_folder"
        path.mkdir()
        save_file(weights, str(path / "open_clip_model.safetensors"))
        (path / "open_clip_config.json").write_text(
            json.dumps({"model_cfg": TINY_CLIP_CONFIG, "preprocess_cfg": {"mean": [0.5] * 3, "std": [0.5] * 3}}))
        loaded = create_backbone(f"open_clip:local-dir:{path}")
        assert loaded.mean == (0.5, 0.5, 0.5)
    fresh_image, fresh_text = clip_outputs(tiny_clip(seed=2))
    image, text = clip_outputs(loaded)
    want_image, want_text = clip_outputs(source)
    assert not torch.allclose(fresh_image, want_image) and not torch.allclose(fresh_text, want_text)
    torch.testing.assert_close(image, want_image, rtol=0, atol=0)
    torch.testing.assert_close(text, want_text, rtol=0, atol=0)


def test_an_open_clip_checkpoint_of_another_model_is_refused(tmp_path):
    path = tmp_path / "vit.pth"
    torch.save(state(vit(seed=0)), path)
    with pytest.raises(CheckpointError, match=r"lacks \d+ weights.*visual\."):
        create_backbone("open_clip:medequity-tiny", checkpoint=path)
