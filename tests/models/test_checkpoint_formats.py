"""Official checkpoint layouts: nested prefixes (C2L, MoCo), key maps, allowed unused/missing keys,
DINO's teacher entry, OpenAI's TorchScript archives (refused; converted once) and the QuickGELU trap."""

from __future__ import annotations

import warnings

import open_clip
import pytest
import torch
from safetensors.torch import load_file

from medequity.models import CheckpointError, create_backbone
from medequity.models.checkpoint import convert_openai_checkpoint, match_keys, read_state_dict

VIT = dict(input_size=32, depth=2, embed_dim=32, num_heads=2, patch_size=8)
IMAGES = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(3))


@pytest.fixture(scope="module")
def source():
    torch.manual_seed(1)
    return create_backbone("vit_tiny_patch16_224", **VIT)


def features(backbone) -> torch.Tensor:
    with torch.no_grad():
        return backbone.module.eval()(IMAGES)


def weights(backbone) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in backbone.module.state_dict().items()}


def test_nested_prefixes_in_either_order_are_stripped(tmp_path, source):
    # C2L: {"model": {"encoder.module.<key>"}}; MoCo-CXR: {"state_dict": {"module.encoder_q.<key>", encoder_k, queue}}.
    c2l = {"model": {f"encoder.module.{k}": v for k, v in weights(source).items()}, "epoch": 200}
    moco = {"state_dict": {**{f"module.encoder_q.{k}": v for k, v in weights(source).items()},
                           **{f"module.encoder_k.{k}": torch.zeros_like(v) for k, v in weights(source).items()},
                           "module.queue": torch.randn(8, 4), "module.queue_ptr": torch.zeros(1)}}
    torch.save(c2l, tmp_path / "c2l.pth")
    torch.save(moco, tmp_path / "moco.pth.tar")
    loaded = create_backbone("vit_tiny_patch16_224", checkpoint=tmp_path / "c2l.pth", allow_unexpected=(), **VIT)
    torch.testing.assert_close(features(loaded), features(source), rtol=0, atol=0)
    loaded = create_backbone("vit_tiny_patch16_224", checkpoint=tmp_path / "moco.pth.tar",
                             allow_unexpected=["encoder_k.*", "queue*"], **VIT)
    torch.testing.assert_close(features(loaded), features(source), rtol=0, atol=0)  # query, not key encoder
    assert loaded.config["unexpected_keys"] and all(k.startswith(("encoder_k.", "queue")) for k in loaded.config["unexpected_keys"])
    with pytest.raises(CheckpointError, match=r"weights the model does not use.*encoder_k\."):
        create_backbone("vit_tiny_patch16_224", checkpoint=tmp_path / "moco.pth.tar", allow_unexpected=["queue*"], **VIT)


def test_key_map_by_prefix_and_by_regex(tmp_path, source):
    renamed = {k.replace("blocks.", "layers.").replace(".attn.", ".attention."): v for k, v in weights(source).items()}
    torch.save({"net": {f"vit.{k}": v for k, v in renamed.items()}}, tmp_path / "renamed.pt")
    with pytest.raises(CheckpointError, match=r"lacks \d+ weights.*blocks\.0\."):
        create_backbone("vit_tiny_patch16_224", checkpoint=tmp_path / "renamed.pt", **VIT)
    key_map = {"vit.": "", r"re:^layers\.(\d+)\.attention\.": r"blocks.\1.attn.", "re:^layers\\.": "blocks."}
    loaded = create_backbone("vit_tiny_patch16_224", checkpoint=tmp_path / "renamed.pt", key_map=key_map, **VIT)
    torch.testing.assert_close(features(loaded), features(source), rtol=0, atol=0)
    assert loaded.config["key_map"] == key_map


def test_match_keys_strips_only_prefixes_that_help_and_never_merges_keys():
    model = ["conv1.weight", "fc.weight"]
    assert match_keys(["module.encoder_q.conv1.weight", "module.encoder_k.conv1.weight"], model) == {
        "module.encoder_q.conv1.weight": "conv1.weight", "module.encoder_k.conv1.weight": "encoder_k.conv1.weight"}
    # A model whose own keys start with "encoder." keeps them: stripping would lose matches.
    assert match_keys(["encoder.layer.0.w"], ["encoder.layer.0.w"]) == {"encoder.layer.0.w": "encoder.layer.0.w"}
    with pytest.raises(CheckpointError, match="same name"):
        match_keys(["a.x", "b.x"], ["x"], key_map={"a.": "", "b.": ""})


def test_allowed_missing_keys_and_dino_teacher_entry(tmp_path, source):
    state = weights(source)
    del state["norm.weight"], state["norm.bias"]
    torch.save({"student": {}, "teacher": {f"backbone.{k}": v for k, v in state.items()}}, tmp_path / "dino.pth")
    with pytest.raises(CheckpointError, match=r"lacks 2 weights.*norm\.(weight|bias)"):
        create_backbone("vit_tiny_patch16_224", checkpoint=tmp_path / "dino.pth", **VIT)
    loaded = create_backbone("vit_tiny_patch16_224", checkpoint=tmp_path / "dino.pth", allow_missing=["norm.*"], **VIT)
    assert torch.equal(loaded.module.blocks[1].mlp.fc2.weight, source.module.blocks[1].mlp.fc2.weight)


# A tiny OpenAI-layout CLIP: widths of 64 so open_clip's OpenAI builder (64-wide heads) can rebuild it.
TINY_OPENAI = {"embed_dim": 16, "quick_gelu": True,
               "vision_cfg": {"image_size": 32, "layers": 2, "width": 64, "head_width": 64, "patch_size": 8},
               "text_cfg": {"context_length": 16, "vocab_size": 49408, "width": 64, "heads": 1, "layers": 2}}


def torchscript_clip(path, seed: int = 0):
    """An archive like OpenAI's ViT-B-16.pt: a TorchScript CLIP (QuickGELU) holding OpenAI's key names."""
    torch.manual_seed(seed)
    model = open_clip.CLIP(**TINY_OPENAI).eval()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        archive = torch.jit.trace(model, (IMAGES[:1], torch.zeros(1, 16, dtype=torch.long)), check_trace=False, strict=False)
    torch.jit.save(archive, str(path))
    return model


def test_torchscript_archive_is_refused_and_converted_once(tmp_path):
    reference = torchscript_clip(tmp_path / "ViT-B-16.pt")
    with pytest.raises(CheckpointError, match=r"TorchScript archive.*medequity models convert-openai SRC DST"):
        read_state_dict(tmp_path / "ViT-B-16.pt")
    with pytest.raises(CheckpointError, match="not one of OpenAI's published CLIP files"):
        convert_openai_checkpoint(tmp_path / "ViT-B-16.pt", tmp_path / "clip.safetensors")
    info = convert_openai_checkpoint(tmp_path / "ViT-B-16.pt", tmp_path / "clip.safetensors", trust=True)
    assert info["model"] is None and info["n_tensors"] == len(load_file(str(tmp_path / "clip.safetensors")))

    loaded = create_backbone("clip-vit-b16", checkpoint=tmp_path / "clip.safetensors", arch=TINY_OPENAI)
    # Independent reference: the architecture open_clip's OpenAI builder infers from the state dict
    # (it casts to float16 as OpenAI's files are; the float32 weights are put back for an exact comparison).
    rebuilt = open_clip.model.build_model_from_openai_state_dict(
        {k: v.clone() for k, v in reference.state_dict().items()}, cast_dtype=None).float().eval()
    rebuilt.load_state_dict(reference.state_dict())
    with torch.no_grad():
        torch.testing.assert_close(loaded.module.eval()(IMAGES), rebuilt.encode_image(IMAGES), rtol=1e-5, atol=1e-5)
        tokens = loaded.module.tokenizer(["pleural effusion", "no finding"])
        torch.testing.assert_close(loaded.module.encode_text(tokens), rebuilt.encode_text(tokens), rtol=1e-5, atol=1e-5)


def test_quickgelu_trap_the_plain_gelu_architecture_loads_silently_and_is_wrong(tmp_path):
    reference = torchscript_clip(tmp_path / "clip.pt", seed=1)
    convert_openai_checkpoint(tmp_path / "clip.pt", tmp_path / "clip.safetensors", trust=True)
    plain = {**TINY_OPENAI, "quick_gelu": False}
    wrong = create_backbone("open_clip:plain", model_cfg=plain, checkpoint=tmp_path / "clip.safetensors")  # no error
    right = create_backbone("clip-vit-b16", arch=TINY_OPENAI, checkpoint=tmp_path / "clip.safetensors")
    with torch.no_grad():
        want = reference.encode_image(IMAGES)
        torch.testing.assert_close(right.module.eval()(IMAGES), want, rtol=1e-5, atol=1e-5)
        assert (wrong.module.eval()(IMAGES) - want).abs().max() > 1e-3
    with pytest.raises(ValueError, match="quick_gelu=True"):
        create_backbone("clip-vit-b16", arch={"quick_gelu": False})
