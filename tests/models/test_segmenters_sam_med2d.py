"""SAM-Med2D / FT-SAM (models/segmenters/sam_med2d.py): a tiny ViT through the encode / decode
contract, random weights in the official ``{"model": state_dict}`` layout loaded by create_segmenter,
the adapter-free encoder equal to segment-anything's ViT on the same weights, the 256-px
no-padding profile with SAM's mean/std, and the full-size key sets against the official names.

Where the official names come from: ``OpenGVLab/SAM-Med2D`` ``segment_anything/build_sam.py``
(ViT-B: 768 wide, 12 blocks, 12 heads, global attention in 2/5/8/11, window 14, patch 16, 256 px,
``adapter_train``) and the SAM-Med2D image encoder as vendored in ``FairMedFM/FairMedFM``
``models/sam_builder/build_sammed2d.py`` (``Block.Adapter = Adapter_Layer(dim)`` with ``norm``,
``channel.0``/``channel.2`` (Linear 768→192→768, no bias) and ``spatial.0``/``spatial.2`` (3×3 conv,
4×4 transposed conv, no bias)); everything else is segment-anything's ``ImageEncoderViT`` at 256 px,
which the tests build for comparison. 177 encoder keys without adapters, 249 with; 386 in all for
SAM-Med2D with the prompt encoder (17) and mask decoder (120).
"""

from __future__ import annotations

from functools import partial

import numpy as np
import pytest
import torch

from medequity.models import SEGMENTERS, create_segmenter
from medequity.models.checkpoint import CheckpointError
from medequity.models.segmenter import SAM_PIXEL_MEAN, SAM_PIXEL_STD
from medequity.models.segmenters.sam_med2d import SAM_MED2D_PROFILE

pytest.importorskip("segment_anything")
from segment_anything.modeling import ImageEncoderViT  # noqa: E402

NAMES = ("sam_med2d", "ft_sam")
# 64 px / patch 16 → a 4×4 grid (even, as the adapter's stride-2 branch needs); window 3 pads it to 6.
TINY = dict(img_size=64, embed_dim=32, depth=2, num_heads=2, global_attn_indexes=(1,), window_size=3, out_chans=32,
            decoder_heads=2, decoder_mlp_dim=64, iou_head_hidden_dim=32)
ADAPTER_PARTS = {"Adapter.norm.weight": (768,), "Adapter.norm.bias": (768,), "Adapter.channel.0.weight": (192, 768),
                 "Adapter.channel.2.weight": (768, 192), "Adapter.spatial.0.weight": (768, 768, 3, 3),
                 "Adapter.spatial.2.weight": (768, 768, 4, 4)}


def sam_vit(img_size: int, embed_dim: int, depth: int, num_heads: int, global_attn_indexes, window_size: int, out_chans: int):
    """segment-anything's own ViT image encoder, configured as SAM-Med2D's build_sam does."""
    return ImageEncoderViT(img_size=img_size, patch_size=16, embed_dim=embed_dim, depth=depth, num_heads=num_heads, mlp_ratio=4,
                           out_chans=out_chans, qkv_bias=True, norm_layer=partial(torch.nn.LayerNorm, eps=1e-6), use_rel_pos=True,
                           global_attn_indexes=tuple(global_attn_indexes), window_size=window_size)


def random_state(segmenter, seed: int) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {k: (torch.randn(v.shape, generator=g) * 0.1 if v.is_floating_point() else v.clone())
            for k, v in segmenter.module.state_dict().items()}


@pytest.fixture(scope="module")
def images():
    return torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(5))


def test_names_registered():
    assert set(NAMES) <= set(SEGMENTERS.names())


def test_profile_is_256_square_resize_with_sams_mean_and_std():
    assert SAM_MED2D_PROFILE.name == "sam_med2d" and SAM_MED2D_PROFILE.input_size == 256
    assert not SAM_MED2D_PROFILE.pad and not SAM_MED2D_PROFILE.minmax
    assert SAM_MED2D_PROFILE.mean == SAM_PIXEL_MEAN and SAM_MED2D_PROFILE.std == SAM_PIXEL_STD
    image = np.full((300, 500, 3), (123.675, 116.28, 103.53), dtype=np.float32)
    x, geometry = SAM_MED2D_PROFILE.prepare(image)
    assert x.shape == (3, 256, 256) and geometry.resized_hw == (256, 256)  # both sides, no padding
    assert torch.allclose(x, torch.zeros_like(x), atol=1e-4)  # the mean maps to 0


@pytest.mark.parametrize("name", NAMES)
def test_official_layout_file_loads_strictly_and_runs_the_contract(tmp_path, images, name):
    state = random_state(create_segmenter(name, **TINY), seed=1)
    path = tmp_path / f"{name}.pth"
    torch.save({"model": state, "epoch": 3}, path)  # SAM-Med2D's files nest the weights under "model"
    seg = create_segmenter(name, checkpoint=path, **TINY)
    loaded = seg.module.state_dict()
    assert set(loaded) == set(state) and all(torch.equal(loaded[k], state[k]) for k in state)
    assert seg.config["unexpected_keys"] == []
    assert seg.config["adapter"] is (name == "sam_med2d")
    assert any(".Adapter." in k for k in state) is (name == "sam_med2d")
    assert seg.profile.input_size == 64 and not seg.profile.pad and seg.profile.name == "sam_med2d"

    embedding = seg.encode(images)
    assert embedding.shape == (2, 32, 4, 4) and torch.isfinite(embedding).all()
    assert torch.allclose(seg.encode(images[:1]), embedding[:1], atol=1e-5)
    points = torch.tensor([[[10.0, 12.0]], [[40.0, 30.0]], [[63.0, 0.0]]])
    logits, iou = seg.decode(embedding[0], points=points)
    assert logits.shape == (3, 3, 16, 16) and iou.shape == (3, 3)  # low-res = 4 × (64 / 16)
    logits, iou = seg.decode(embedding[1], boxes=torch.tensor([[3.0, 4.0, 50.0, 40.0]]), multimask=False)
    assert logits.shape == (1, 1, 16, 16) and iou.shape == (1, 1)
    assert seg.config["low_res_size"] == 16 and seg.config["mask_threshold"] == 0.0
    with pytest.raises(ValueError, match="preprocessed"):
        seg.encode(torch.randn(1, 3, 32, 32))


def test_adapter_free_encoder_equals_segment_anythings_vit(images):
    """FT-SAM's encoder is SAM's ViT: on the same weights it gives segment-anything's output exactly
    (rel-pos attention, padded windows, global blocks, neck)."""
    torch.manual_seed(0)
    enc_cfg = {k: v for k, v in TINY.items() if not k.startswith(("decoder", "iou"))}
    reference = sam_vit(**enc_cfg).eval()
    weights = {k: torch.randn_like(v) * 0.2 for k, v in reference.state_dict().items()}
    reference.load_state_dict(weights)
    ours = create_segmenter("ft_sam", **TINY)
    ours.module.image_encoder.load_state_dict(weights, strict=True)
    with torch.no_grad():
        assert torch.allclose(ours.encode(images), reference(images), atol=1e-5)


def test_adapters_change_the_embedding(tmp_path, images):
    state = random_state(create_segmenter("sam_med2d", **TINY), seed=2)
    with_adapters = create_segmenter("sam_med2d", **TINY)
    with_adapters.module.load_state_dict(state)
    without = create_segmenter("ft_sam", **TINY)
    result = without.module.load_state_dict(state, strict=False)
    assert result.missing_keys == [] and all(".Adapter." in k for k in result.unexpected_keys)
    assert not torch.allclose(with_adapters.encode(images), without.encode(images))


def test_checkpoint_of_the_other_variant_is_caught(tmp_path):
    """A FT-SAM file into SAM-Med2D lacks the adapters: an error, never random adapters. A SAM-Med2D
    file into FT-SAM loads with its adapter keys reported as unexpected."""
    ft_state = random_state(create_segmenter("ft_sam", **TINY), seed=3)
    torch.save({"model": ft_state}, tmp_path / "ft.pth")
    with pytest.raises(CheckpointError, match="lacks 12 weights"):  # 6 adapter keys × 2 blocks
        create_segmenter("sam_med2d", checkpoint=tmp_path / "ft.pth", **TINY)
    assert create_segmenter("sam_med2d", checkpoint=tmp_path / "ft.pth", adapter=False, **TINY).config["adapter"] is False
    med_state = random_state(create_segmenter("sam_med2d", **TINY), seed=4)
    torch.save({"model": med_state}, tmp_path / "med.pth")
    seg = create_segmenter("ft_sam", checkpoint=tmp_path / "med.pth", **TINY)
    assert seg.config["unexpected_keys"] and all(".Adapter." in k for k in seg.config["unexpected_keys"])


def test_unknown_option_and_odd_adapter_grid_are_refused():
    with pytest.raises(TypeError, match="unknown options"):
        create_segmenter("sam_med2d", image_size=64)
    with pytest.raises(ValueError, match="even token grid"):
        create_segmenter("sam_med2d", **{**TINY, "img_size": 48})


@pytest.mark.parametrize("name", NAMES)
def test_full_size_keys_match_the_official_names(name):
    with torch.device("meta"):  # architectures without allocating weights
        seg = create_segmenter(name)
        reference = sam_vit(256, 768, 12, 12, (2, 5, 8, 11), 14, 256)
        embedding = seg.encode(torch.empty(1, 3, 256, 256))
    assert seg.profile == SAM_MED2D_PROFILE and seg.config["encoder"] == "vit_b"
    ours = {k.removeprefix("image_encoder."): tuple(v.shape) for k, v in seg.module.state_dict().items()
            if k.startswith("image_encoder.")}
    expected = {k: tuple(v.shape) for k, v in reference.state_dict().items()}
    if name == "sam_med2d":
        expected.update({f"blocks.{i}.{part}": shape for i in range(12) for part, shape in ADAPTER_PARTS.items()})
    assert ours == expected and len(ours) == (249 if name == "sam_med2d" else 177)
    assert ours["pos_embed"] == (1, 16, 16, 768)
    assert ours["blocks.2.attn.rel_pos_h"] == (31, 64) and ours["blocks.0.attn.rel_pos_h"] == (27, 64)
    state = seg.module.state_dict()
    assert sum(k.startswith("prompt_encoder.") for k in state) == 17
    assert sum(k.startswith("mask_decoder.") for k in state) == 120
    assert tuple(embedding.shape) == (1, 256, 16, 16) and seg.config["low_res_size"] == 64
