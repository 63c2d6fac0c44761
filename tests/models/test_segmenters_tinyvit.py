"""MobileSAM / TinySAM (models/segmenters/tiny_vit_sam.py): a tiny TinyViT configuration through the
encode / decode contract, random weights in the official key layout written to a file and loaded by
create_segmenter, and the full-size "vit_t" key set against the official names.

Where the official names come from: ``ChaoningZhang/MobileSAM`` ``mobile_sam/modeling/tiny_vit_sam.py``
(``Conv2d_BN`` = ``c`` + ``bn``; ``PatchEmbed.seq``; ``ConvLayer``/``BasicLayer`` with ``blocks`` and
``downsample``; ``MBConv.conv1-3``; ``PatchMerging.conv1-3``; ``TinyViTBlock.attn`` (``norm``, ``qkv``,
``proj``, ``attention_biases``; the bias index table is non-persistent), ``.mlp`` (``norm``, ``fc1``,
``fc2``), ``.local_conv``; ``norm_head``, ``head``, ``neck``) and ``mobile_sam/build_sam.py``
(``build_sam_vit_t`` sizes). :func:`official_vit_t_encoder_keys` re-derives the names from those
definitions independently of the module under test: 302 image-encoder keys; with segment-anything's
prompt encoder (17) and mask decoder (120), 439 in all.
"""

from __future__ import annotations

import pytest
import torch

from medequity.models import SEGMENTERS, create_segmenter
from medequity.models.checkpoint import CheckpointError
from medequity.models.segmenter import SAM_PROFILE

pytest.importorskip("segment_anything")

NAMES = ("mobile_sam", "tinysam")
# 64-px input → 16×16 patch grid → stages at 16, 8, 4, 4 (the last merging keeps the resolution);
# windows 3/4 exercise both the padded-window and the whole-grid attention paths.
TINY = dict(img_size=64, embed_dims=(8, 16, 24, 32), depths=(1, 1, 2, 1), num_heads=(1, 2, 3, 4),
            window_sizes=(3, 3, 4, 3), num_classes=10, out_chans=32, decoder_heads=2, decoder_mlp_dim=64,
            iou_head_hidden_dim=32)


def conv_bn(prefix: str) -> list[str]:
    return [f"{prefix}.c.weight"] + [f"{prefix}.bn.{n}" for n in ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")]


def official_vit_t_encoder_keys(depths=(2, 2, 6, 2)) -> set[str]:
    keys = conv_bn("patch_embed.seq.0") + conv_bn("patch_embed.seq.2")
    for i, depth in enumerate(depths):
        for m in range(depth):
            block = f"layers.{i}.blocks.{m}"
            if i == 0:
                keys += conv_bn(f"{block}.conv1") + conv_bn(f"{block}.conv2") + conv_bn(f"{block}.conv3")
            else:
                keys += [f"{block}.attn.attention_biases"]
                keys += [f"{block}.{part}.{p}" for part in ("attn.norm", "attn.qkv", "attn.proj", "mlp.norm", "mlp.fc1", "mlp.fc2")
                         for p in ("weight", "bias")]
                keys += conv_bn(f"{block}.local_conv")
        if i < len(depths) - 1:
            keys += conv_bn(f"layers.{i}.downsample.conv1") + conv_bn(f"layers.{i}.downsample.conv2")
            keys += conv_bn(f"layers.{i}.downsample.conv3")
    keys += ["norm_head.weight", "norm_head.bias", "head.weight", "head.bias"]
    keys += ["neck.0.weight", "neck.1.weight", "neck.1.bias", "neck.2.weight", "neck.3.weight", "neck.3.bias"]
    return {f"image_encoder.{k}" for k in keys}


# Shapes implied by build_sam_vit_t (embed 64/128/160/320, heads 2/4/5/10, windows 7/7/14/7, MBConv
# expansion 4, attention ratio 1 so qkv = 3·dim, biases = heads × window², ImageNet head 1000).
OFFICIAL_SHAPES = {
    "patch_embed.seq.0.c.weight": (32, 3, 3, 3),
    "patch_embed.seq.2.c.weight": (64, 32, 3, 3),
    "layers.0.blocks.1.conv1.c.weight": (256, 64, 1, 1),
    "layers.0.blocks.1.conv2.c.weight": (256, 1, 3, 3),
    "layers.0.blocks.1.conv3.c.weight": (64, 256, 1, 1),
    "layers.0.downsample.conv1.c.weight": (128, 64, 1, 1),
    "layers.0.downsample.conv2.c.weight": (128, 1, 3, 3),
    "layers.1.blocks.0.attn.qkv.weight": (384, 128),
    "layers.1.blocks.0.attn.attention_biases": (4, 49),
    "layers.2.blocks.5.attn.attention_biases": (5, 196),
    "layers.2.blocks.5.mlp.fc1.weight": (640, 160),
    "layers.2.blocks.5.local_conv.c.weight": (160, 1, 3, 3),
    "layers.2.downsample.conv1.c.weight": (320, 160, 1, 1),
    "layers.2.downsample.conv3.c.weight": (320, 320, 1, 1),
    "layers.3.blocks.1.attn.attention_biases": (10, 49),
    "layers.3.blocks.1.attn.proj.weight": (320, 320),
    "head.weight": (1000, 320),
    "neck.0.weight": (256, 320, 1, 1),
    "neck.2.weight": (256, 256, 3, 3),
}


def random_official_state(segmenter, seed: int) -> dict[str, torch.Tensor]:
    """Random weights for every key (BatchNorm variances positive), as an official file would hold."""
    g = torch.Generator().manual_seed(seed)
    state = {}
    for key, value in segmenter.module.state_dict().items():
        if not value.is_floating_point():
            state[key] = value.clone()
        elif key.endswith("running_var"):
            state[key] = torch.rand(value.shape, generator=g) + 0.5
        else:
            state[key] = torch.randn(value.shape, generator=g) * 0.1
    return state


@pytest.fixture(scope="module")
def images():
    return torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(3))


def test_names_registered():
    assert set(NAMES) <= set(SEGMENTERS.names())


@pytest.mark.parametrize("name", NAMES)
def test_official_layout_file_loads_strictly_and_runs_the_contract(tmp_path, images, name):
    state = random_official_state(create_segmenter(name, **TINY), seed=1)
    path = tmp_path / f"{name}.pth"
    torch.save(state, path)  # MobileSAM / TinySAM release a plain state dict
    seg = create_segmenter(name, checkpoint=path, **TINY)
    loaded = seg.module.state_dict()
    assert set(loaded) == set(state) and all(torch.equal(loaded[k], state[k]) for k in state)
    assert seg.config["unexpected_keys"] == [] and seg.config["checkpoint"] == str(path)
    assert seg.promptable and seg.profile.input_size == 64 and seg.profile.pad and seg.profile.mean == SAM_PROFILE.mean

    embedding = seg.encode(images)
    assert embedding.shape == (2, 32, 4, 4) and torch.isfinite(embedding).all()
    assert torch.allclose(seg.encode(images[1:]), embedding[1:], atol=1e-5)  # eval mode: no batch coupling

    points = torch.tensor([[[10.0, 12.0], [40.0, 30.0]]] * 3)
    logits, iou = seg.decode(embedding[0], points=points, point_labels=torch.tensor([[1, 0]] * 3))
    assert logits.shape == (3, 3, 16, 16) and iou.shape == (3, 3)  # low-res = 4 × (64 / 16)
    logits, iou = seg.decode(embedding[1], boxes=torch.tensor([[3.0, 4.0, 50.0, 40.0]] * 2), multimask=False)
    assert logits.shape == (2, 1, 16, 16) and iou.shape == (2, 1)
    logits, iou = seg.decode(embedding[1], points=points[:2], boxes=torch.tensor([[3.0, 4.0, 50.0, 40.0]] * 2))
    assert logits.shape == (2, 3, 16, 16)
    assert seg.config["low_res_size"] == 16 and seg.config["mask_threshold"] == 0.0

    with pytest.raises(ValueError, match="preprocessed"):
        seg.encode(torch.randn(1, 3, 32, 32))
    with pytest.raises(ValueError, match="point prompts but"):
        seg.decode(embedding[0], points=points, boxes=torch.zeros(2, 4))


def test_a_missing_weight_fails_the_load(tmp_path):
    state = random_official_state(create_segmenter("mobile_sam", **TINY), seed=2)
    del state["image_encoder.layers.2.blocks.1.attn.attention_biases"]
    torch.save(state, tmp_path / "broken.pth")
    with pytest.raises(CheckpointError, match="lacks 1 weights"):
        create_segmenter("mobile_sam", checkpoint=tmp_path / "broken.pth", **TINY)


def test_tinysam_single_mask_is_the_best_multimask_token(tmp_path, images):
    """TinySAM's decoder only ever outputs tokens 1-3; multimask=False picks the best of them by IoU,
    while MobileSAM (SAM's decoder) returns token 0."""
    state = random_official_state(create_segmenter("tinysam", **TINY), seed=4)
    torch.save(state, tmp_path / "w.pth")
    tiny_sam = create_segmenter("tinysam", checkpoint=tmp_path / "w.pth", **TINY)
    mobile = create_segmenter("mobile_sam", checkpoint=tmp_path / "w.pth", **TINY)
    embedding = tiny_sam.encode(images)[0]
    points = torch.tensor([[[5.0, 6.0]], [[30.0, 33.0]], [[60.0, 2.0]]])
    multi, multi_iou = tiny_sam.decode(embedding, points=points)
    single, single_iou = tiny_sam.decode(embedding, points=points, multimask=False)
    best = multi_iou.argmax(1)
    assert torch.equal(single[:, 0], multi[torch.arange(3), best]) and torch.equal(single_iou[:, 0], multi_iou.max(1).values)
    assert tiny_sam.config["multimask_only"] and not mobile.config["multimask_only"]
    m_multi, _ = mobile.decode(embedding, points=points)
    assert torch.equal(m_multi, multi)  # same weights, same multimask outputs
    m_single, _ = mobile.decode(embedding, points=points, multimask=False)
    assert m_single.shape == (3, 1, 16, 16)


def test_unknown_option_is_refused():
    with pytest.raises(TypeError, match="unknown options"):
        create_segmenter("mobile_sam", image_size=64)


@pytest.mark.parametrize("name", NAMES)
def test_full_size_vit_t_keys_match_the_official_names(name):
    with torch.device("meta"):  # the architecture without allocating or initialising weights
        seg = create_segmenter(name)
        embedding = seg.encode(torch.empty(1, 3, 1024, 1024))  # shapes only (meta tensors)
    assert seg.profile == SAM_PROFILE and seg.config["encoder"] == "tiny_vit_5m"
    state = seg.module.state_dict()
    encoder = {k for k in state if k.startswith("image_encoder.")}
    assert encoder == official_vit_t_encoder_keys() and len(encoder) == 302
    for key, shape in OFFICIAL_SHAPES.items():
        assert tuple(state[f"image_encoder.{key}"].shape) == shape, key
    assert sum(k.startswith("prompt_encoder.") for k in state) == 17
    assert sum(k.startswith("mask_decoder.") for k in state) == 120
    assert len(state) == 439
    assert tuple(embedding.shape) == (1, 256, 64, 64)  # 1024 / 16, 256 channels
    assert seg.config["low_res_size"] == 256


def test_full_size_prompt_encoder_and_decoder_are_sams():
    """MobileSAM/TinySAM keep SAM's prompt encoder and mask decoder (256 channels, 1024 input): the
    same keys and shapes as segment-anything's own ViT-B build."""
    from segment_anything import sam_model_registry

    with torch.device("meta"):
        ours = create_segmenter("mobile_sam").module.state_dict()
        sam = sam_model_registry["vit_b"]().state_dict()
    for prefix in ("prompt_encoder.", "mask_decoder."):
        a = {k: tuple(v.shape) for k, v in ours.items() if k.startswith(prefix)}
        b = {k: tuple(v.shape) for k, v in sam.items() if k.startswith(prefix)}
        assert a == b, prefix


@pytest.mark.parametrize("resolution,window", [((5, 5), 3), ((4, 4), 4)])
def test_tinyvit_parts_compute_what_timms_tinyvit_computes(resolution, window):
    """timm ports Microsoft's TinyViT (which MobileSAM adapted); its parts differ from the official
    names only in ``conv`` for ``c``. On the same random weights our block (padded and whole-grid
    windows), MBConv and patch merging give timm's outputs."""
    tiny_vit = pytest.importorskip("timm.models.tiny_vit")
    from medequity.models.segmenters.tiny_vit_sam import MBConv, PatchMerging, TinyViTBlock

    g = torch.Generator().manual_seed(7)

    def copy_random(ours: torch.nn.Module, theirs: torch.nn.Module) -> None:
        state = {}
        for key, value in ours.state_dict().items():
            if not value.is_floating_point():
                state[key] = value
            elif key.endswith("running_var"):
                state[key] = torch.rand(value.shape, generator=g) + 0.5
            else:
                state[key] = torch.randn(value.shape, generator=g) * 0.3
        ours.load_state_dict(state)
        theirs.load_state_dict({k.replace(".c.", ".conv."): v for k, v in state.items()})
        ours.eval(), theirs.eval()

    h, w = resolution
    block, timm_block = TinyViTBlock(16, resolution, 2, window, 4.0, 3), tiny_vit.TinyVitBlock(16, 2, window_size=window)
    copy_random(block, timm_block)
    x = torch.randn(2, h, w, 16, generator=g)
    with torch.no_grad():
        assert torch.allclose(block(x.reshape(2, h * w, 16)), timm_block(x).reshape(2, h * w, 16), atol=1e-5)

    mbconv, timm_mbconv = MBConv(8, 4.0), tiny_vit.MBConv(8, 8, 4.0, torch.nn.GELU, 0.0)
    copy_random(mbconv, timm_mbconv)
    merge, timm_merge = PatchMerging((h, w), 8, 16, stride=2), tiny_vit.PatchMerging(8, 16, torch.nn.GELU)
    copy_random(merge, timm_merge)
    image = torch.randn(2, 8, h, w, generator=g)
    with torch.no_grad():
        assert torch.allclose(mbconv(image), timm_mbconv(image), atol=1e-5)
        assert torch.allclose(merge(image), timm_merge(image).flatten(2).transpose(1, 2), atol=1e-5)
