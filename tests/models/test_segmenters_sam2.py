"""SAM 2 segmenters (models/segmenters/sam2.py): a tiny SAM 2 config written here, built through
hydra without network, checked against sam2's own SAM2ImagePredictor; checkpoints in sam2's
``{"model": state_dict}`` layout; the shipped configs composed as sam2 composes them."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from medequity.models import SEGMENTERS, create_segmenter

pytest.importorskip("sam2")
pytestmark = pytest.mark.filterwarnings("ignore::FutureWarning")  # torch.jit.script inside sam2

TINY_YAML = """\
# @package _global_
model:
  _target_: sam2.modeling.sam2_base.SAM2Base
  image_encoder:
    _target_: sam2.modeling.backbones.image_encoder.ImageEncoder
    scalp: 1
    trunk:
      _target_: sam2.modeling.backbones.hieradet.Hiera
      embed_dim: 8
      num_heads: 1
      stages: [1, 1, 2, 1]
      global_att_blocks: [3]
      window_pos_embed_bkg_spatial_size: [2, 2]
      window_spec: [4, 4, 4, 2]
    neck:
      _target_: sam2.modeling.backbones.image_encoder.FpnNeck
      position_encoding:
        _target_: sam2.modeling.position_encoding.PositionEmbeddingSine
        num_pos_feats: 32
        normalize: true
        scale: null
        temperature: 10000
      d_model: 32
      backbone_channel_list: [64, 32, 16, 8]
      fpn_top_down_levels: [2, 3]
      fpn_interp_model: nearest
  memory_attention:
    _target_: sam2.modeling.memory_attention.MemoryAttention
    d_model: 32
    pos_enc_at_input: true
    layer:
      _target_: sam2.modeling.memory_attention.MemoryAttentionLayer
      activation: relu
      dim_feedforward: 32
      dropout: 0.1
      pos_enc_at_attn: false
      self_attention:
        _target_: sam2.modeling.sam.transformer.RoPEAttention
        rope_theta: 10000.0
        feat_sizes: [4, 4]
        embedding_dim: 32
        num_heads: 1
        downsample_rate: 1
        dropout: 0.1
      d_model: 32
      pos_enc_at_cross_attn_keys: true
      pos_enc_at_cross_attn_queries: false
      cross_attention:
        _target_: sam2.modeling.sam.transformer.RoPEAttention
        rope_theta: 10000.0
        feat_sizes: [4, 4]
        rope_k_repeat: True
        embedding_dim: 32
        num_heads: 1
        downsample_rate: 1
        dropout: 0.1
        kv_in_dim: 16
    num_layers: 1
  memory_encoder:
    _target_: sam2.modeling.memory_encoder.MemoryEncoder
    out_dim: 16
    position_encoding:
      _target_: sam2.modeling.position_encoding.PositionEmbeddingSine
      num_pos_feats: 16
      normalize: true
      scale: null
      temperature: 10000
    mask_downsampler:
      _target_: sam2.modeling.memory_encoder.MaskDownSampler
      kernel_size: 3
      stride: 2
      padding: 1
      embed_dim: 32
    fuser:
      _target_: sam2.modeling.memory_encoder.Fuser
      layer:
        _target_: sam2.modeling.memory_encoder.CXBlock
        dim: 32
        kernel_size: 7
        padding: 3
        layer_scale_init_value: 1e-6
        use_dwconv: True
      num_layers: 1
    in_dim: 32
  num_maskmem: 2
  image_size: 64
  sigmoid_scale_for_mem_enc: 20.0
  sigmoid_bias_for_mem_enc: -10.0
  use_mask_input_as_output_without_sam: true
  directly_add_no_mem_embed: true
  no_obj_embed_spatial: true
  use_high_res_features_in_sam: true
  multimask_output_in_sam: true
  iou_prediction_use_sigmoid: True
  use_obj_ptrs_in_encoder: true
  add_tpos_enc_to_obj_ptrs: true
  proj_tpos_enc_in_obj_ptrs: true
  use_signed_tpos_enc_to_obj_ptrs: true
  only_obj_ptrs_in_the_past_for_eval: true
  pred_obj_scores: true
  pred_obj_scores_mlp: true
  fixed_no_obj_ptr: true
  multimask_output_for_tracking: true
  use_multimask_token_for_obj_ptr: true
  multimask_min_pt_num: 0
  multimask_max_pt_num: 1
  use_mlp_for_obj_ptr_proj: true
  compile_image_encoder: False
"""
TINY_FEAT_SIZES = [(16, 16), (8, 8), (4, 4)]  # strides 4, 8, 16 at 64 px (SAM2ImagePredictor assumes 1024 px)


@pytest.fixture
def tiny_config(tmp_path):
    path = tmp_path / "sam2_tiny.yaml"
    path.write_text(TINY_YAML)
    return path


@pytest.fixture
def tiny(tiny_config):
    torch.manual_seed(0)
    return create_segmenter("sam2", config=tiny_config)


def _predictor(segmenter):
    from sam2.sam2_image_predictor import SAM2ImagePredictor

    predictor = SAM2ImagePredictor(segmenter.module)
    predictor._bb_feat_sizes = TINY_FEAT_SIZES
    return predictor


def test_names_registered():
    assert {"sam2", "medsam2", "sam2_hiera_tiny", "sam2.1_hiera_tiny", "sam2.1_hiera_large"} <= set(SEGMENTERS.names())


def test_tiny_shapes_layout_and_profile(tiny, tiny_config):
    assert tiny.promptable and tiny.config["config_file"] == str(tiny_config.resolve())
    assert tiny.profile.to_dict() == tiny.config["profile"]
    assert tiny.profile.input_size == 64 and not tiny.profile.pad and not tiny.profile.minmax
    assert tiny.config["embedding_layout"] == {"image_embed": 32, "high_res_s4_unshuffled_by_4": 64, "high_res_s8_unshuffled_by_2": 32}
    embedding = tiny.encode(torch.randn(2, 3, 64, 64))
    assert embedding.shape == (2, 128, 4, 4)  # 4 d channels at stride 16
    logits, iou = tiny.decode(embedding[0], points=torch.rand(3, 2, 2) * 63, point_labels=torch.ones(3, 2))
    assert logits.shape == (3, 3, 16, 16) and iou.shape == (3, 3)
    logits, iou = tiny.decode(embedding[1], boxes=torch.tensor([[1.0, 2.0, 30.0, 40.0]]), multimask=False)
    assert logits.shape == (1, 1, 16, 16) and iou.shape == (1, 1)
    with pytest.raises(ValueError, match="channels"):
        tiny.decode(embedding[0, :32], boxes=torch.tensor([[1.0, 2.0, 30.0, 40.0]]))


@pytest.mark.parametrize("multimask", [True, False])
def test_matches_sam2_image_predictor(tiny, multimask):
    """Profile + encode + decode + upscale equal SAM2ImagePredictor.set_image + predict."""
    image = np.random.default_rng(0).integers(0, 256, size=(64, 64, 3), dtype=np.uint8)
    predictor = _predictor(tiny)
    predictor.set_image(image)
    x, geometry = tiny.profile.prepare(image)
    embedding = tiny.encode(x[None])
    torch.testing.assert_close(embedding[0, :32], predictor._features["image_embed"][0], atol=1e-5, rtol=1e-5)
    point_coords, point_labels, box = np.array([[10.0, 20.0], [40.0, 12.0]]), np.array([1, 0]), np.array([3.0, 4.0, 50.0, 60.0])
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
        np.testing.assert_allclose(logits[0].numpy(), low_ref, atol=1e-5, rtol=1e-5)
        np.testing.assert_allclose(iou[0].numpy(), iou_ref, atol=1e-5, rtol=1e-5)
        np.testing.assert_allclose(tiny.upscale(logits, geometry)[0].numpy(), masks, atol=1e-4, rtol=1e-4)


def test_batched_prompts_match_predictor_and_decode_alone(tiny):
    predictor = _predictor(tiny)
    predictor.set_image(np.random.default_rng(1).integers(0, 256, size=(64, 64, 3), dtype=np.uint8))
    points = torch.tensor([[[5.0, 7.0]], [[30.0, 40.0]], [[50.0, 12.0]]])
    labels = torch.ones(3, 1, dtype=torch.int)
    boxes = torch.tensor([[0.0, 0.0, 30.0, 30.0], [10.0, 20.0, 50.0, 60.0], [40.0, 2.0, 51.0, 40.0]])
    with torch.no_grad():
        _, iou_ref, low_ref = predictor._predict(points, labels, boxes, multimask_output=True, return_logits=True)
    features = predictor._features  # packed as encode packs them
    embedding = torch.cat([features["image_embed"], F.pixel_unshuffle(features["high_res_feats"][0], 4),
                           F.pixel_unshuffle(features["high_res_feats"][1], 2)], dim=1)[0]
    logits, iou = tiny.decode(embedding, points=points, point_labels=labels, boxes=boxes)
    torch.testing.assert_close(logits, low_ref, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(iou, iou_ref, atol=1e-5, rtol=1e-5)
    for p in range(3):
        alone, iou_alone = tiny.decode(embedding, points=points[p:p + 1], point_labels=labels[p:p + 1], boxes=boxes[p:p + 1])
        torch.testing.assert_close(alone, logits[p:p + 1], atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(iou_alone, iou[p:p + 1], atol=1e-5, rtol=1e-5)


def test_checkpoint_in_sam2_layout_loads(tiny, tiny_config, tmp_path):
    """Random weights saved as sam2 checkpoints are ({"model": state_dict}) load through
    create_segmenter, and sam2's own strict loader reads the same file to the same weights."""
    from sam2.build_sam import _load_checkpoint

    torch.manual_seed(2)
    state = {k: torch.randn_like(v) for k, v in tiny.module.state_dict().items()}
    path = tmp_path / "medsam2_tiny.pt"
    torch.save({"model": state}, path)
    segmenter = create_segmenter("medsam2", config=tiny_config, checkpoint=path)
    assert segmenter.name == "medsam2" and segmenter.config["checkpoint"] == str(path)
    assert segmenter.config["unexpected_keys"] == []
    _load_checkpoint(tiny.module, str(path))
    for key, value in segmenter.module.state_dict().items():
        torch.testing.assert_close(value, state[key], msg=key)
        torch.testing.assert_close(value, tiny.module.state_dict()[key], msg=key)


@pytest.mark.parametrize("shipped", ["configs/sam2.1/sam2.1_hiera_t.yaml", "configs/sam2/sam2_hiera_l.yaml"])
def test_shipped_configs_compose_as_sam2_does(shipped):
    """Our hydra composition from the file's folder gives build_sam2's config (same model built),
    and sam2's own global hydra still works afterwards."""
    from hydra import compose
    from omegaconf import OmegaConf

    from medequity.models.segmenters.sam2 import POSTPROCESSING, compose_config

    ours = compose_config(shipped, POSTPROCESSING)
    theirs = compose(config_name=shipped, overrides=list(POSTPROCESSING))
    OmegaConf.resolve(theirs)
    assert OmegaConf.to_container(ours.model) == OmegaConf.to_container(theirs.model)


def test_full_size_sam2_1_tiny_builds_without_weights():
    """Hiera-T SAM 2.1 from the shipped config, nothing downloaded (~1.3 s on one CPU thread)."""
    segmenter = create_segmenter("sam2.1_hiera_tiny")
    keys = segmenter.module.state_dict()
    assert len(keys) == 471
    for key in ("image_encoder.trunk.patch_embed.proj.weight", "image_encoder.neck.convs.0.conv.weight",
                "sam_mask_decoder.conv_s0.weight", "sam_prompt_encoder.point_embeddings.0.weight",
                "memory_encoder.out_proj.weight", "maskmem_tpos_enc", "no_mem_embed"):
        assert key in keys
    assert segmenter.profile.input_size == 1024 and segmenter.config["embedding_layout"]["image_embed"] == 256


def test_config_required_and_resolved():
    with pytest.raises(ValueError, match="needs config"):
        create_segmenter("medsam2")
    with pytest.raises(FileNotFoundError, match="neither a file"):
        create_segmenter("sam2", config="no/such/medsam2.yaml")
