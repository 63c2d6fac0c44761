"""SAM / MedSAM segmenters (models/segmenters/sam.py): the encode-once / decode-per-prompt contract
against segment_anything's own SamPredictor on a tiny random SAM, checkpoints in the official key
layout, the full-size architectures' key sets, and the preprocessing profile of each family."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from medequity.models import SEGMENTERS, create_segmenter
from medequity.models.checkpoint import CheckpointError
from medequity.models.segmenter import MEDSAM_PROFILE, SAM_PROFILE

pytest.importorskip("segment_anything")
from segment_anything import SamPredictor, sam_model_registry  # noqa: E402

SAM_NAMES = ("sam_vit_b", "sam_vit_l", "sam_vit_h", "medsam", "sam_tiny")


@pytest.fixture
def tiny():
    torch.manual_seed(0)
    return create_segmenter("sam_tiny")


def _image(h: int, w: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, size=(h, w, 3), dtype=np.uint8)


def test_names_registered():
    assert set(SAM_NAMES) <= set(SEGMENTERS.names())


def test_tiny_shapes_and_multimask(tiny):
    assert tiny.promptable and tiny.profile.input_size == 64
    embedding = tiny.encode(torch.randn(2, 3, 64, 64))
    assert embedding.shape == (2, 32, 8, 8)
    points = torch.tensor([[[10.0, 12.0], [40.0, 30.0]]] * 5)
    logits, iou = tiny.decode(embedding[0], points=points, point_labels=torch.tensor([[1, 0]] * 5))
    assert logits.shape == (5, 3, 32, 32) and iou.shape == (5, 3)  # low-res = 4 x (64 / 8)
    logits, iou = tiny.decode(embedding[1], boxes=torch.tensor([[3.0, 4.0, 50.0, 40.0]] * 2), multimask=False)
    assert logits.shape == (2, 1, 32, 32) and iou.shape == (2, 1)
    assert tiny.config["low_res_size"] == 32 and tiny.config["mask_threshold"] == 0.0
    with pytest.raises(ValueError, match="needs point and/or box"):
        tiny.decode(embedding[0])
    with pytest.raises(ValueError, match="preprocessed"):
        tiny.encode(torch.randn(1, 3, 32, 32))


def test_prompts_decode_together_as_alone(tiny):
    """P prompts of one image in one decoder call give what each gives alone (nothing re-encoded)."""
    embedding = tiny.encode(torch.randn(1, 3, 64, 64))[0]
    points = torch.rand(4, 1, 2) * 63
    boxes = torch.tensor([[0.0, 0.0, 20.0, 20.0], [5.0, 9.0, 60.0, 33.0], [10.0, 10.0, 11.0, 12.0], [0.0, 0.0, 63.0, 63.0]])
    together, iou = tiny.decode(embedding, points=points, point_labels=torch.ones(4, 1), boxes=boxes)
    for p in range(4):
        alone, iou_alone = tiny.decode(embedding, points=points[p:p + 1], point_labels=torch.ones(1, 1), boxes=boxes[p:p + 1])
        torch.testing.assert_close(together[p:p + 1], alone, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(iou[p:p + 1], iou_alone, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("multimask", [True, False])
def test_matches_sam_predictor_end_to_end(tiny, multimask):
    """An image whose longest side is the input size: our profile + encode + decode + upscale equal
    SamPredictor.set_image + predict (same low-res logits, IoUs and original-size logits)."""
    image = _image(64, 48)
    predictor = SamPredictor(tiny.module)
    predictor.set_image(image)
    x, geometry = tiny.profile.prepare(image)
    assert geometry.resized_hw == tuple(predictor.input_size) and geometry.original_hw == tuple(predictor.original_size)
    embedding = tiny.encode(x[None])
    torch.testing.assert_close(embedding, predictor.features, atol=1e-4, rtol=1e-4)

    point_coords, point_labels = np.array([[10.0, 20.0], [30.0, 50.0]]), np.array([1, 0])
    box = np.array([4.0, 6.0, 40.0, 58.0])
    for kwargs in ({"point_coords": point_coords, "point_labels": point_labels}, {"box": box},
                   {"point_coords": point_coords, "point_labels": point_labels, "box": box}):
        masks, iou_ref, low_ref = predictor.predict(multimask_output=multimask, return_logits=True, **kwargs)
        logits, iou = tiny.decode(
            embedding[0],
            points=torch.tensor(point_coords[None]) if "point_coords" in kwargs else None,
            point_labels=torch.tensor(point_labels[None]) if "point_coords" in kwargs else None,
            boxes=torch.tensor(box[None]) if "box" in kwargs else None,
            multimask=multimask,
        )
        assert logits.shape[1] == (3 if multimask else 1)
        np.testing.assert_allclose(logits[0].numpy(), low_ref, atol=1e-4, rtol=1e-4)
        np.testing.assert_allclose(iou[0].numpy(), iou_ref, atol=1e-5, rtol=1e-5)
        upscaled = tiny.upscale(logits, geometry)[0]
        assert upscaled.shape[-2:] == (64, 48)
        np.testing.assert_allclose(upscaled.numpy(), masks, atol=1e-4, rtol=1e-4)
        np.testing.assert_array_equal(upscaled.numpy() > 0, masks > tiny.module.mask_threshold)


def test_matches_predict_torch_for_input_coordinate_prompts(tiny):
    """A resized image: decoding the predictor's embedding with P prompts in input coordinates
    gives predict_torch's batched low-res logits."""
    predictor = SamPredictor(tiny.module)
    predictor.set_image(_image(100, 80, seed=1))
    points = torch.tensor([[[5.0, 7.0]], [[30.0, 40.0]], [[50.0, 12.0]]])
    labels = torch.ones(3, 1, dtype=torch.int)
    boxes = torch.tensor([[0.0, 0.0, 30.0, 30.0], [10.0, 20.0, 50.0, 60.0], [40.0, 2.0, 51.0, 40.0]])
    with torch.no_grad():
        _, iou_ref, low_ref = predictor.predict_torch(points, labels, boxes, multimask_output=True)
    logits, iou = tiny.decode(predictor.features[0], points=points, point_labels=labels, boxes=boxes)
    torch.testing.assert_close(logits, low_ref, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(iou, iou_ref, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("layout", ["pth", "nested_pth", "safetensors"])
def test_checkpoint_in_official_layout_loads(tmp_path, layout):
    torch.manual_seed(1)
    state = {k: torch.randn_like(v) for k, v in create_segmenter("sam_tiny").module.state_dict().items()}
    assert "image_encoder.blocks.0.attn.qkv.weight" in state and "mask_decoder.iou_token.weight" in state
    path = tmp_path / ("sam.safetensors" if layout == "safetensors" else "sam.pth")
    if layout == "safetensors":
        save_file({k: v.contiguous() for k, v in state.items()}, str(path))
    else:
        torch.save({"model": state} if layout == "nested_pth" else state, path)
    segmenter = create_segmenter("sam_tiny", checkpoint=path)
    for key, value in segmenter.module.state_dict().items():
        torch.testing.assert_close(value, state[key], msg=key)
    assert segmenter.config["checkpoint"] == str(path) and segmenter.config["unexpected_keys"] == []
    with pytest.raises(CheckpointError, match="does not fit"):
        create_segmenter("sam_tiny", embed_dim=48, num_heads=2, checkpoint=path)


def test_vit_b_key_set_equals_official():
    """Built once for real, without weights (nothing is downloaded): ViT-B's state dict has
    segment_anything's keys and shapes; MedSAM has the same keys."""
    ours = create_segmenter("sam_vit_b").module.state_dict()
    with torch.device("meta"):
        official = sam_model_registry["vit_b"](checkpoint=None).state_dict()
        medsam = create_segmenter("medsam").module.state_dict()
    assert set(ours) == set(official) == set(medsam)
    assert len(ours) == 314
    assert {k: tuple(v.shape) for k, v in ours.items()} == {k: tuple(v.shape) for k, v in official.items()}
    assert tuple(ours["image_encoder.blocks.0.attn.qkv.weight"].shape) == (2304, 768)
    assert tuple(ours["image_encoder.pos_embed"].shape) == (1, 64, 64, 768)
    assert tuple(ours["image_encoder.blocks.2.attn.rel_pos_h"].shape) == (127, 64)  # global block: 2 * 64 - 1
    for key in ("prompt_encoder.point_embeddings.0.weight", "prompt_encoder.pe_layer.positional_encoding_gaussian_matrix",
                "mask_decoder.transformer.layers.0.self_attn.q_proj.weight", "mask_decoder.iou_prediction_head.layers.2.weight",
                "mask_decoder.output_hypernetworks_mlps.3.layers.0.weight", "image_encoder.neck.3.weight"):
        assert key in ours
    assert not any("pixel_mean" in k for k in ours)  # a buffer, not in the checkpoint


@pytest.mark.parametrize(("name", "official_name", "count"), [("sam_vit_l", "vit_l", 482), ("sam_vit_h", "vit_h", 594)])
def test_large_key_sets_equal_official_on_meta(name, official_name, count):
    """ViT-L/H key sets and shapes, built on the meta device (no memory, milliseconds)."""
    with torch.device("meta"):
        ours = create_segmenter(name).module.state_dict()
        official = sam_model_registry[official_name](checkpoint=None).state_dict()
    assert {k: tuple(v.shape) for k, v in ours.items()} == {k: tuple(v.shape) for k, v in official.items()}
    assert len(ours) == count


def test_profiles_recorded():
    with torch.device("meta"):
        sam, medsam = create_segmenter("sam_vit_b"), create_segmenter("medsam")
    assert sam.profile == SAM_PROFILE and sam.config["profile"] == SAM_PROFILE.to_dict()
    assert medsam.profile == MEDSAM_PROFILE and medsam.config["profile"] == MEDSAM_PROFILE.to_dict()
    assert medsam.config["profile"]["minmax"] and medsam.config["profile"]["mean"] is None
    assert sam.config["profile"]["mean"] == (123.675, 116.28, 103.53) and sam.config["profile"]["channels"] == "RGB"
    tiny_medsam = create_segmenter("medsam", **_tiny_options())
    assert tiny_medsam.profile.minmax and tiny_medsam.profile.input_size == 64
    x, _ = tiny_medsam.profile.prepare(_image(64, 64))
    assert float(x.min()) == 0.0 and float(x.max()) == 1.0


def _tiny_options():
    from medequity.models.segmenters.sam import TINY

    return dict(TINY)


def test_unknown_option_is_refused():
    with pytest.raises(TypeError, match="unknown options"):
        create_segmenter("sam_tiny", widht=3)
