"""The foundation-model zoo: each entry loads random weights written in its official file's key
layout and format, and its features equal those of an independently built reference module holding
the same weights; full-size architectures (meta device, no weights) have the official key names."""

from __future__ import annotations

import fnmatch
import json

import pytest
import torch
from safetensors.torch import save_file
from torch import nn

from medequity.models import BACKBONES, CheckpointError, create_backbone
from medequity.models.checkpoint import plan_load
from medequity.models.zoo import ZOO

BERT = {"vocab_size": 64, "hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2, "intermediate_size": 64,
        "max_position_embeddings": 32, "pad_token_id": 0}
VOCAB = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "there", "is", "no", "effusion", "pleural", "a", "finding", "."]
TINY = {
    "dinov2-vitb14": {"arch": {"img_size": 28, "embed_dim": 32, "depth": 2, "num_heads": 2}},
    "rad-dino": {"arch": {"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2, "image_size": 28}},
    "medmae": {"arch": {"img_size": 32, "patch_size": 8, "embed_dim": 32, "depth": 2, "num_heads": 2}},
    "lvm-med": {"arch": {"img_size": 64, "patch_size": 8, "embed_dim": 32, "depth": 2, "num_heads": 2, "window_size": 4,
                         "global_attn_indexes": [1], "out_chans": 16}},
    "c2l": {}, "moco-cxr": {},
    "pubmedclip": {"arch": {"embed_dim": 16, "vision_cfg": {"image_size": 32, "layers": 2, "width": 32, "head_width": 16,
                                                            "patch_size": 8},
                            "text_cfg": {"context_length": 16, "width": 32, "heads": 2, "layers": 2}}},
    "biomedclip": {"arch": {"embed_dim": 16, "vision_cfg": {"timm_model_name": "test_vit", "image_size": 160},
                            "text_cfg": {"context_length": 16}, "bert": BERT}},
    "medclip": {"arch": {"embed_dim": 16, "context_length": 16, "bert": BERT,
                         "swin": {"image_size": 32, "patch_size": 4, "embed_dim": 16, "depths": [1, 1], "num_heads": [1, 2],
                                  "window_size": 4}}},
    "blip": {"arch": {"image_text_hidden_size": 16,
                      "vision_config": {"image_size": 32, "patch_size": 8, "hidden_size": 32, "intermediate_size": 64,
                                        "num_hidden_layers": 2, "num_attention_heads": 2},
                      "text_config": {**{k: v for k, v in BERT.items() if k != "pad_token_id"}, "encoder_hidden_size": 32,
                                      "pad_token_id": 0, "bos_token_id": 2, "sep_token_id": 3}}},
}
SIZES = {"c2l": 64, "moco-cxr": 64, "biomedclip": 160, "dinov2-vitb14": 28, "rad-dino": 28, "lvm-med": 64}


def randomise(module: nn.Module, seed: int) -> dict[str, torch.Tensor]:
    """Random weights (not the init) in the module's own names, so a loader that drops any is caught."""
    gen = torch.Generator().manual_seed(seed)
    out = {k: (torch.randn(v.shape, generator=gen) * 0.1 if v.is_floating_point() else v.clone())
           for k, v in module.state_dict().items()}
    return {k: v.abs() + 0.5 if k.endswith("running_var") else v for k, v in out.items()}  # variances stay positive


def images(size: int) -> torch.Tensor:
    return torch.randn(2, 3, size, size, generator=torch.Generator().manual_seed(0))


def write_tokenizer(folder):
    folder.mkdir(exist_ok=True)
    (folder / "vocab.txt").write_text("\n".join(VOCAB) + "\n", encoding="utf-8")
    (folder / "tokenizer_config.json").write_text(json.dumps({"tokenizer_class": "BertTokenizer", "do_lower_case": True}))


RAD_DINO_NAMES = {".attention.q_proj.": ".attention.attention.query.", ".attention.k_proj.": ".attention.attention.key.",
                  ".attention.v_proj.": ".attention.attention.value.", ".attention.o_proj.": ".attention.output.dense."}


def rad_dino_published_name(key: str) -> str:
    """The name microsoft/rad-dino's file has (saved with transformers 4) for a transformers 5 key."""
    for new, old in RAD_DINO_NAMES.items():
        key = key.replace(new, old)
    return key


MEDCLIP_SWIN_NAMES = {"attention.q_proj.": "attention.self.query.", "attention.k_proj.": "attention.self.key.",
                      "attention.v_proj.": "attention.self.value.", "attention.o_proj.": "attention.output.dense.",
                      "mlp.fc1.": "intermediate.dense.", "mlp.fc2.": "output.dense.",
                      "attention.relative_position_bias.relative_position_bias_table":
                          "attention.self.relative_position_bias_table"}


def medclip_published_name(key: str) -> str:
    """The name MedCLIP's pytorch_model.bin has (saved with transformers 4) for a transformers 5 Swin key."""
    if not key.startswith("vision_model.model.encoder.layers."):
        return key
    for new, old in MEDCLIP_SWIN_NAMES.items():
        key = key.replace(new, old)
    return key


# Per entry: (official layout of the weights, written to disk) and (reference features from the same weights).
def official_file(name, weights, tmp_path):
    extra = {"x": torch.zeros(1)}
    if name == "dinov2-vitb14":
        torch.save({**weights, "mask_token": torch.zeros(1, 32)}, tmp_path / "dinov2_vitb14_pretrain.pth")
        return tmp_path / "dinov2_vitb14_pretrain.pth"
    if name == "rad-dino":
        folder = tmp_path / "rad-dino"
        folder.mkdir()
        published = {rad_dino_published_name(k): v for k, v in weights.items()}
        save_file(published, str(folder / "model.safetensors"))
        (folder / "config.json").write_text(json.dumps({"model_type": "dinov2", **TINY[name]["arch"]}))
        return folder
    if name == "medmae":
        decoder = {"mask_token": torch.zeros(1, 1, 16), "decoder_embed.weight": torch.zeros(16, 32), **{"decoder_pred.bias": extra["x"]}}
        torch.save({"model": {**weights, **decoder}, "epoch": 799}, tmp_path / "vit-b_CXR_0.5M_mae.pth")
        return tmp_path / "vit-b_CXR_0.5M_mae.pth"
    if name == "lvm-med":
        torch.save(weights, tmp_path / "lvmmed_vit.pth")
        return tmp_path / "lvmmed_vit.pth"
    if name == "c2l":
        head = {"encoder.module.fc.weight": torch.randn(128, 512), "encoder.module.fc.bias": torch.randn(128)}
        torch.save({"model": {**{f"encoder.module.{k}": v for k, v in weights.items()}, **head}, "epoch": 240},
                   tmp_path / "res18_C2L.pth")
        return tmp_path / "res18_C2L.pth"
    if name == "moco-cxr":
        q = {f"module.encoder_q.{k}": v for k, v in weights.items()}
        k = {f"module.encoder_k.{k}": torch.zeros_like(v) for k, v in weights.items()}
        fc = {"module.encoder_q.fc.weight": torch.randn(128, 512), "module.encoder_q.fc.bias": torch.randn(128)}
        torch.save({"state_dict": {**q, **k, **fc, "module.queue": torch.randn(128, 64), "module.queue_ptr": torch.zeros(1)},
                    "arch": "resnet18", "epoch": 20}, tmp_path / "r8w-00001.pth.tar")
        return tmp_path / "r8w-00001.pth.tar"
    if name == "pubmedclip":
        torch.save({"state_dict": weights, "epoch": 50}, tmp_path / "PubMedCLIP_ViT32.pth")
        return tmp_path / "PubMedCLIP_ViT32.pth"
    if name in ("biomedclip", "medclip", "blip"):
        folder = tmp_path / name
        write_tokenizer(folder)
        file = {"biomedclip": "open_clip_pytorch_model.bin", "medclip": "pytorch_model.bin", "blip": "model.safetensors"}[name]
        if name == "medclip":
            weights = {medclip_published_name(k): v for k, v in weights.items()}
        if file.endswith(".safetensors"):
            save_file(weights, str(folder / file))
        else:
            torch.save(weights, folder / file)
        return folder
    raise AssertionError(name)


def reference_features(name, weights, x, tmp_path):
    """The same weights in a module built independently of the zoo (the library's own class)."""
    arch = TINY.get(name, {}).get("arch", {})
    with torch.no_grad():
        if name == "dinov2-vitb14":
            import timm

            ref = timm.create_model("vit_base_patch14_dinov2", pretrained=False, num_classes=0, **arch).eval()
            ref.load_state_dict(weights)
            tokens = ref.forward_features(x)
            return torch.cat([tokens[:, 0], tokens[:, 1:].mean(1)], -1)  # DINOv2 linear eval: [CLS, mean patch]
        if name == "rad-dino":
            from transformers import Dinov2Config, Dinov2Model

            ref = Dinov2Model(Dinov2Config(**arch)).eval()
            ref.load_state_dict(weights)
            return ref(pixel_values=x).pooler_output
        if name == "medmae":
            import timm

            ref = timm.create_model("vit_base_patch16_224", pretrained=False, num_classes=0, **arch).eval()
            ref.load_state_dict(weights)
            return ref(x)
        if name == "lvm-med":
            from functools import partial

            from segment_anything.modeling.image_encoder import ImageEncoderViT

            ref = ImageEncoderViT(mlp_ratio=4, norm_layer=partial(nn.LayerNorm, eps=1e-6), use_abs_pos=False, use_rel_pos=True,
                                  **{**arch, "global_attn_indexes": tuple(arch["global_attn_indexes"])}).eval()
            ref.load_state_dict(weights)
            h = ref.patch_embed(x)
            for block in ref.blocks:
                h = block(h)
            return h.mean(dim=(1, 2))
        if name in ("c2l", "moco-cxr"):
            import torchvision

            ref = torchvision.models.resnet18(weights=None).eval()
            ref.load_state_dict({**weights, "fc.weight": torch.zeros(1000, 512), "fc.bias": torch.zeros(1000)})
            ref.fc = nn.Identity()  # the representation before the contrastive projection
            return ref(x)
        if name == "pubmedclip":
            import open_clip

            ref = open_clip.CLIP(**{**open_clip.get_model_config("ViT-B-32-quickgelu"), **arch,
                                    "vision_cfg": arch["vision_cfg"], "text_cfg": {**arch["text_cfg"], "vocab_size": 49408}}).eval()
            ref.load_state_dict(weights)
            return ref.encode_image(x)
        if name == "biomedclip":
            import open_clip

            bert = tmp_path / "bert-config"
            bert.mkdir()
            (bert / "config.json").write_text(json.dumps({"model_type": "bert", **BERT}))
            text_cfg = {"hf_model_name": str(bert), "hf_model_pretrained": False, "hf_proj_type": "mlp",
                        "hf_pooler_type": "cls_last_hidden_state_pooler", "context_length": 16}
            vision_cfg = {"timm_model_name": "test_vit", "timm_model_pretrained": False, "timm_pool": "", "timm_proj": "linear",
                          "image_size": 160}
            ref = open_clip.CustomTextCLIP(16, vision_cfg, text_cfg).eval()
            ref.load_state_dict(weights)
            return ref.encode_image(x)
        if name == "medclip":
            from transformers import SwinConfig, SwinModel

            swin = SwinModel(SwinConfig(**arch["swin"])).eval()
            swin.load_state_dict({k.removeprefix("vision_model.model."): v for k, v in weights.items()
                                  if k.startswith("vision_model.model.")})
            return swin(pixel_values=x).pooler_output @ weights["vision_model.projection_head.weight"].T
        if name == "blip":
            from transformers import BlipConfig, BlipForImageTextRetrieval

            ref = BlipForImageTextRetrieval(BlipConfig(**arch)).eval()
            ref.load_state_dict(weights)
            return nn.functional.linear(ref.vision_model(pixel_values=x)[0][:, 0], ref.vision_proj.weight, ref.vision_proj.bias)
    raise AssertionError(name)


@pytest.mark.parametrize("name", sorted(TINY))
def test_official_layout_loads_and_gives_the_reference_features(name, tmp_path):
    fresh = create_backbone(name, **TINY[name])
    weights = randomise(fresh.module, seed=7)
    path = official_file(name, weights, tmp_path)
    loaded = create_backbone(name, checkpoint=path, **TINY[name])
    x = images(SIZES.get(name, loaded.input_size))
    with torch.no_grad():
        got = loaded.module.eval()(x)
        assert not torch.allclose(fresh.module.eval()(x), got)  # random init differs...
    want = reference_features(name, weights, x, tmp_path)
    assert got.shape == (2, loaded.feature_dim)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)  # ...the loaded model equals the reference


@pytest.mark.parametrize("name", ["biomedclip", "medclip", "blip"])
def test_text_towers_tokenize_from_a_local_folder(name, tmp_path):
    from medequity.models.clip import clip_bundle

    with pytest.raises(ValueError, match="tokenizer=<folder>"):
        clip_bundle(create_backbone(name, **TINY[name]))
    fresh = create_backbone(name, **TINY[name])
    path = official_file(name, randomise(fresh.module, seed=3), tmp_path)  # the folder holds vocab.txt
    bundle = clip_bundle(create_backbone(name, checkpoint=path, **TINY[name]))
    text = bundle.encode_text(["there is pleural effusion.", "no finding."])
    assert text.shape == (2, 16) and not torch.allclose(text[0], text[1])
    torch.testing.assert_close(text.norm(dim=-1), torch.ones(2))
    assert all(not p.requires_grad for n, p in bundle.model.named_parameters() if not bundle.model.is_image_parameter(n))


def test_moco_and_c2l_features_are_not_the_projection_heads(tmp_path):
    """FairMedFM's traps: MoCo-CXR's fc (random after its loader skipped it), C2L's L2-normalised fc."""
    for name in ("moco-cxr", "c2l"):
        weights = randomise(create_backbone(name).module, seed=1)
        backbone = create_backbone(name, checkpoint=official_file(name, weights, tmp_path))
        with torch.no_grad():
            f = backbone.module.eval()(images(64))
        assert f.shape == (2, 512) and not torch.allclose(f.norm(dim=-1), torch.ones(2))
    with pytest.raises(CheckpointError, match=r"moco-cxr: .*lacks \d+ weights.*Expected: MoCo-CXR"):
        create_backbone("moco-cxr", checkpoint=official_file("c2l", {"conv9.weight": torch.zeros(1)}, tmp_path))


# Full size, no weights: hand-copied key names of each published file must be (after the entry's
# prefix rules) keys of the model, and the published layout must load without fatal misfits.
OFFICIAL_KEYS = {
    "dinov2-vitb14": ["cls_token", "pos_embed", "mask_token", "blocks.11.ls2.gamma", "blocks.0.attn.qkv.weight", "norm.bias"],
    "rad-dino": ["embeddings.position_embeddings", "encoder.layer.11.layer_scale2.lambda1",
                 "encoder.layer.0.attention.attention.query.weight", "layernorm.weight"],
    "medmae": ["cls_token", "pos_embed", "blocks.11.mlp.fc2.weight", "norm.weight", "mask_token", "decoder_pred.weight"],
    "lvm-med": ["patch_embed.proj.weight", "blocks.2.attn.rel_pos_h", "blocks.0.mlp.lin1.weight", "neck.0.weight"],
    "c2l": ["encoder.module.conv1.weight", "encoder.module.layer4.1.bn2.running_var", "encoder.module.fc.weight"],
    "moco-cxr": ["module.encoder_q.conv1.weight", "module.encoder_q.layer4.1.bn2.weight", "module.encoder_q.fc.weight",
                 "module.encoder_k.conv1.weight", "module.queue"],
    "clip-vit-b16": ["visual.proj", "visual.class_embedding", "visual.transformer.resblocks.11.attn.in_proj_weight",
                     "text_projection", "token_embedding.weight", "logit_scale"],
    "pubmedclip": ["visual.conv1.weight", "visual.ln_post.weight", "transformer.resblocks.11.mlp.c_proj.weight"],
    "biomedclip": ["visual.trunk.cls_token", "visual.head.proj.weight", "text.proj.0.weight", "text.proj.2.weight",
                   "text.transformer.embeddings.word_embeddings.weight", "text.transformer.encoder.layer.11.output.dense.weight"],
    "medclip": ["vision_model.model.embeddings.patch_embeddings.projection.weight", "vision_model.projection_head.weight",
                "vision_model.model.encoder.layers.2.blocks.5.attention.self.query.weight",
                "vision_model.model.encoder.layers.2.blocks.5.attention.self.relative_position_bias_table",
                "vision_model.model.encoder.layers.3.blocks.1.intermediate.dense.weight",
                "vision_model.model.encoder.layers.3.blocks.1.output.dense.bias",
                "text_model.model.encoder.layer.11.attention.self.query.weight", "text_model.projection_head.weight", "logit_scale"],
    "blip": ["vision_model.embeddings.class_embedding", "vision_proj.weight", "text_proj.weight", "itm_head.weight",
             "text_encoder.encoder.layer.11.crossattention.self.query.weight"],
}
FEATURE_DIMS = {"dinov2-vitb14": 1536, "rad-dino": 768, "medmae": 768, "lvm-med": 768, "c2l": 512, "moco-cxr": 512,
                "clip-vit-b16": 512, "pubmedclip": 512, "biomedclip": 512, "medclip": 512, "blip": 256}


@pytest.mark.parametrize("name", sorted(OFFICIAL_KEYS))
def test_full_size_architecture_has_the_official_keys(name):
    with torch.device("meta"):
        backbone = create_backbone(name)
    model_keys = list(backbone.module.state_dict())
    entry = ZOO[name]
    published = {
        "c2l": [f"encoder.module.{k}" for k in model_keys],
        "moco-cxr": [f"module.encoder_q.{k}" for k in model_keys] + [f"module.encoder_k.{k}" for k in model_keys],
    }.get(name, model_keys)
    if name == "rad-dino":  # published with transformers 4's attention names
        published = [rad_dino_published_name(k) for k in model_keys]
    if name == "medclip":  # likewise its Swin image tower
        published = [medclip_published_name(k) for k in model_keys]
    report = plan_load(published + OFFICIAL_KEYS[name], model_keys, key_map=dict(entry.key_map),
                       allow_unexpected=entry.allow_unexpected)
    assert report.missing == () and report.n_loaded == len(model_keys)
    for key in OFFICIAL_KEYS[name]:  # each published key lands on a model key, or is one the entry declares unused
        target = report.renamed.get(key, key)
        assert target in model_keys or any(fnmatch.fnmatchcase(target, p) for p in entry.allow_unexpected), key
    assert backbone.feature_dim == FEATURE_DIMS[name] == entry.feature_dim


def test_every_zoo_entry_is_a_registered_backbone_with_a_licence_and_preprocessing():
    assert sorted(ZOO) == sorted(OFFICIAL_KEYS)
    for name, entry in ZOO.items():
        assert name in BACKBONES and entry.licence and entry.expected_file and entry.feature_layer
        assert len(entry.mean) == len(entry.std) == 3
    assert {n for n, e in ZOO.items() if e.zero_shot} == {"clip-vit-b16", "pubmedclip", "biomedclip", "medclip", "blip"}
    with torch.device("meta"):
        rad_dino = create_backbone("rad-dino")
    assert rad_dino.transform_config() == {"name": "2d", "resize": 518, "crop": 518,
                                                              "mean": [0.5307] * 3, "std": [0.2583] * 3}
