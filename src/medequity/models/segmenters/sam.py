"""SAM (segment-anything ViT-B/L/H) and MedSAM, built from segment_anything's modeling classes.

Registered names:

* ``sam_vit_b``, ``sam_vit_l``, ``sam_vit_h`` — the official architectures (1024-px input, patch 16,
  prompt width 256), :data:`SAM_PROFILE` (RGB, SAM's mean/std on the 0–255 scale, longest side
  resized and padded);
* ``medsam`` — the ViT-B architecture and key names with :data:`MEDSAM_PROFILE` (per-image
  min–max to [0, 1], no mean/std: MedSAM was trained that way);
* ``sam_tiny`` — the same code at test size (64 px, patch 8, width 32, depth 2, prompt width 32):
  builds and decodes in milliseconds.

Every factory takes the architecture options ``image_size``, ``patch_size``, ``embed_dim``,
``depth``, ``num_heads``, ``global_attn_indexes``, ``window_size``, ``prompt_embed_dim``,
``mlp_dim`` (decoder transformer), ``decoder_heads``, ``iou_head_hidden_dim``, ``mask_in_chans``
(defaults: the official ones for the name). The state dict carries the official key names
(``image_encoder.blocks.0.attn.qkv.weight``, ``prompt_encoder.…``, ``mask_decoder.…``), so an
official ``sam_vit_b_01ec64.pth`` / ``medsam_vit_b.pth`` loads through ``create_segmenter(...,
checkpoint=path)``. The ``pixel_mean``/``pixel_std`` buffers of ``Sam`` are unused here (the
profile normalises); they are not in the official files' state dict either (non-persistent).

``encode`` runs the image encoder on preprocessed inputs; ``decode`` decodes ``P`` prompts of one
image in one mask-decoder call (``points`` ``(P, N, 2)`` model-input ``(x, y)`` pixels, labels
``(P, N)`` 1 foreground / 0 background, ``boxes`` ``(P, 4)`` ``(x0, y0, x1, y1)``), exactly as
``SamPredictor.predict_torch``: low-resolution logits ``(P, K, 4·S/patch, 4·S/patch)`` (256×256 at
1024 px), ``K = 3`` with ``multimask`` else 1, and predicted IoUs ``(P, K)``. A pixel is foreground
where its upscaled logit is > 0 (``Sam.mask_threshold = 0.0``; FairMedFM's 0.5 was a defect).
"""

from __future__ import annotations

from dataclasses import replace
from functools import partial
from typing import Any

import torch

from medequity.models.segmenter import MEDSAM_PROFILE, SAM_PROFILE, PreprocessProfile, Segmenter, register_segmenter

OFFICIAL = {  # segment_anything.build_sam: encoder width, depth, heads, global-attention blocks
    "vit_b": {"embed_dim": 768, "depth": 12, "num_heads": 12, "global_attn_indexes": (2, 5, 8, 11)},
    "vit_l": {"embed_dim": 1024, "depth": 24, "num_heads": 16, "global_attn_indexes": (5, 11, 17, 23)},
    "vit_h": {"embed_dim": 1280, "depth": 32, "num_heads": 16, "global_attn_indexes": (7, 15, 23, 31)},
}
COMMON = {"image_size": 1024, "patch_size": 16, "window_size": 14, "prompt_embed_dim": 256, "mlp_dim": 2048,
          "decoder_heads": 8, "iou_head_hidden_dim": 256, "mask_in_chans": 16}
TINY = {"image_size": 64, "patch_size": 8, "embed_dim": 32, "depth": 2, "num_heads": 2, "global_attn_indexes": (1,),
        "window_size": 4, "prompt_embed_dim": 32, "mlp_dim": 64, "decoder_heads": 2, "iou_head_hidden_dim": 32,
        "mask_in_chans": 4}


def build_sam_module(*, image_size: int, patch_size: int, embed_dim: int, depth: int, num_heads: int,
                     global_attn_indexes: tuple[int, ...], window_size: int, prompt_embed_dim: int, mlp_dim: int,
                     decoder_heads: int, iou_head_hidden_dim: int, mask_in_chans: int) -> torch.nn.Module:
    """segment_anything's ``_build_sam`` with every size an argument (no checkpoint, eval mode)."""
    from segment_anything.modeling import ImageEncoderViT, MaskDecoder, PromptEncoder, Sam, TwoWayTransformer

    if image_size % patch_size:
        raise ValueError(f"image_size {image_size} is not a multiple of patch_size {patch_size}")
    grid = image_size // patch_size
    sam = Sam(
        image_encoder=ImageEncoderViT(
            img_size=image_size, patch_size=patch_size, embed_dim=embed_dim, depth=depth, num_heads=num_heads,
            mlp_ratio=4, norm_layer=partial(torch.nn.LayerNorm, eps=1e-6), qkv_bias=True, use_rel_pos=True,
            global_attn_indexes=tuple(global_attn_indexes), window_size=window_size, out_chans=prompt_embed_dim,
        ),
        prompt_encoder=PromptEncoder(embed_dim=prompt_embed_dim, image_embedding_size=(grid, grid),
                                     input_image_size=(image_size, image_size), mask_in_chans=mask_in_chans),
        mask_decoder=MaskDecoder(
            num_multimask_outputs=3,
            transformer=TwoWayTransformer(depth=2, embedding_dim=prompt_embed_dim, mlp_dim=mlp_dim, num_heads=decoder_heads),
            transformer_dim=prompt_embed_dim, iou_head_depth=3, iou_head_hidden_dim=iou_head_hidden_dim,
        ),
        pixel_mean=[123.675, 116.28, 103.53],
        pixel_std=[58.395, 57.12, 57.375],
    )
    return sam.eval()


def sam_callables(sam: torch.nn.Module):
    """``encode_fn`` and ``decode_fn`` of a segment_anything ``Sam`` (see the module doc)."""

    def encode(images: torch.Tensor) -> torch.Tensor:
        size = sam.image_encoder.img_size
        if images.ndim != 4 or images.shape[1] != 3 or tuple(images.shape[-2:]) != (size, size):
            raise ValueError(f"SAM encodes preprocessed (B, 3, {size}, {size}) images; got {tuple(images.shape)}")
        return sam.image_encoder(images.to(sam.device, torch.float32))

    def decode(embedding: torch.Tensor, *, points: torch.Tensor | None = None, point_labels: torch.Tensor | None = None,
               boxes: torch.Tensor | None = None, multimask: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
        device = sam.device
        if embedding.ndim != 3:
            raise ValueError(f"decode takes one image's embedding (C, h, w); got {tuple(embedding.shape)}")
        prompt_points = None
        if points is not None:
            points = torch.as_tensor(points, dtype=torch.float32, device=device)
            if point_labels is None:
                point_labels = torch.ones(points.shape[:2], device=device)
            prompt_points = (points, torch.as_tensor(point_labels, device=device).to(torch.int))
        if boxes is not None:
            boxes = torch.as_tensor(boxes, dtype=torch.float32, device=device).reshape(-1, 4)
        sparse, dense = sam.prompt_encoder(points=prompt_points, boxes=boxes, masks=None)
        return sam.mask_decoder(
            image_embeddings=embedding[None].to(device, torch.float32),  # the decoder repeats it for the P prompts
            image_pe=sam.prompt_encoder.get_dense_pe(),
            sparse_prompt_embeddings=sparse,
            dense_prompt_embeddings=dense,
            multimask_output=multimask,
        )

    return encode, decode


def make_sam_segmenter(name: str, arch: dict[str, Any], profile: PreprocessProfile, options: dict[str, Any]) -> Segmenter:
    unknown = set(options) - set(arch)
    if unknown:
        raise TypeError(f"{name}: unknown options {sorted(unknown)}; known: {sorted(arch)}")
    arch = {**arch, **options}
    arch["global_attn_indexes"] = tuple(int(i) for i in arch["global_attn_indexes"])
    sam = build_sam_module(**arch)
    profile = replace(profile, input_size=int(arch["image_size"]))
    encode, decode = sam_callables(sam)
    config = {"family": "segment_anything", "name": name, **arch, "global_attn_indexes": list(arch["global_attn_indexes"]),
              "profile": profile.to_dict(), "mask_threshold": 0.0,
              "low_res_size": 4 * arch["image_size"] // arch["patch_size"],
              "embedding_shape": [arch["prompt_embed_dim"], arch["image_size"] // arch["patch_size"],
                                  arch["image_size"] // arch["patch_size"]]}
    return Segmenter(name, sam, profile, promptable=True, config=config, encode_fn=encode, decode_fn=decode)


def _register(name: str, arch: dict[str, Any], profile: PreprocessProfile) -> None:
    @register_segmenter(name)
    def factory(**options: Any) -> Segmenter:
        return make_sam_segmenter(name, arch, profile, options)

    factory.__doc__ = f"{name}: segment_anything Sam ({arch['embed_dim']} wide, depth {arch['depth']}), profile {profile.name}."


_register("sam_vit_b", {**COMMON, **OFFICIAL["vit_b"]}, SAM_PROFILE)
_register("sam_vit_l", {**COMMON, **OFFICIAL["vit_l"]}, SAM_PROFILE)
_register("sam_vit_h", {**COMMON, **OFFICIAL["vit_h"]}, SAM_PROFILE)
_register("medsam", {**COMMON, **OFFICIAL["vit_b"]}, MEDSAM_PROFILE)
_register("sam_tiny", TINY, SAM_PROFILE)
