"""SAM 2 / SAM 2.1 / MedSAM2 image segmenters, built with the ``sam2`` package from a YAML config.

Registered names (every one takes ``config=`` a YAML file path; nothing is downloaded):

* ``sam2`` — any SAM 2-style config: a file on disk, or a config shipped inside the ``sam2``
  package given by its package-relative name (``configs/sam2.1/sam2.1_hiera_t.yaml``);
* ``sam2_hiera_{tiny,small,base_plus,large}`` and ``sam2.1_hiera_{tiny,small,base_plus,large}`` —
  the shipped configs (``config`` optional);
* ``medsam2`` — MedSAM2 (Hiera-T SAM 2.1 fine-tuned on medical images). Its YAML is not shipped
  with ``sam2``: ``config`` is required (the MedSAM2 repository's file).

The config is composed with hydra from the file's own folder (no network, sam2's global hydra
state restored afterwards), with sam2's image post-processing overrides unless
``postprocessing=False`` (as ``sam2.build_sam.build_sam2``: with single-mask output an unstable
mask falls back to the best multi-mask one), then instantiated; eval mode. Official checkpoints
(``torch.load(weights_only=True)["model"]``) load through ``create_segmenter(..., checkpoint=)``.

Profile: SAM2Transforms — RGB, resized to a square of ``image_size`` without padding,
ImageNet mean/std on [0, 1] (= SAM's numbers on the 0–255 scale).

Embedding: SAM 2's decoder also reads two high-resolution feature maps (strides 4 and 8, of
``d/8`` and ``d/4`` channels, already projected by ``conv_s0``/``conv_s1``). ``encode`` packs them
losslessly beside the stride-16 embedding (with the no-memory embedding added, as
``SAM2ImagePredictor.set_image``) into one tensor ``(B, d + 4·d/4 + 16·d/8, S/16, S/16)`` =
``(B, 4d, S/16, S/16)`` by pixel-unshuffle, so the cacheable embedding is one tensor; ``decode``
unpacks it (``config["embedding_layout"]``). ``decode`` follows ``SAM2ImagePredictor._predict``:
boxes become two corner points (labels 2, 3) before the clicks, one decoder call for the ``P``
prompts, logits clamped to ±32; ``K = 3`` with multi-mask output else 1; foreground where logit > 0.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from medequity.models.segmenter import SAM_PIXEL_MEAN, SAM_PIXEL_STD, PreprocessProfile, Segmenter, register_segmenter

POSTPROCESSING = (
    "++model.sam_mask_decoder_extra_args.dynamic_multimask_via_stability=true",
    "++model.sam_mask_decoder_extra_args.dynamic_multimask_stability_delta=0.05",
    "++model.sam_mask_decoder_extra_args.dynamic_multimask_stability_thresh=0.98",
)
SHIPPED = {
    "sam2_hiera_tiny": "configs/sam2/sam2_hiera_t.yaml",
    "sam2_hiera_small": "configs/sam2/sam2_hiera_s.yaml",
    "sam2_hiera_base_plus": "configs/sam2/sam2_hiera_b+.yaml",
    "sam2_hiera_large": "configs/sam2/sam2_hiera_l.yaml",
    "sam2.1_hiera_tiny": "configs/sam2.1/sam2.1_hiera_t.yaml",
    "sam2.1_hiera_small": "configs/sam2.1/sam2.1_hiera_s.yaml",
    "sam2.1_hiera_base_plus": "configs/sam2.1/sam2.1_hiera_b+.yaml",
    "sam2.1_hiera_large": "configs/sam2.1/sam2.1_hiera_l.yaml",
}


def sam2_profile(image_size: int) -> PreprocessProfile:
    return PreprocessProfile("sam2", int(image_size), mean=SAM_PIXEL_MEAN, std=SAM_PIXEL_STD, minmax=False, pad=False)


def resolve_config(config: str | os.PathLike) -> Path:
    """A config file on disk, else one shipped inside the sam2 package (package-relative name)."""
    path = Path(config).expanduser()
    if path.is_file():
        return path.resolve()
    import sam2

    shipped = Path(sam2.__path__[0]) / str(config)
    if shipped.is_file():
        return shipped
    raise FileNotFoundError(f"SAM 2 config {config!r} is neither a file nor a config shipped with sam2 "
                            f"(e.g. {SHIPPED['sam2.1_hiera_tiny']})")


def compose_config(config: str | os.PathLike, overrides: list[str] | tuple[str, ...] = ()) -> Any:
    """Hydra-compose a YAML file from its own folder, leaving sam2's global hydra state as it was."""
    import sam2  # noqa: F401  (initialises its global hydra on import; restored below)
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from hydra.initialize import get_gh_backup, restore_gh_from_backup
    from omegaconf import OmegaConf

    path = resolve_config(config)
    backup = get_gh_backup()
    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(config_dir=str(path.parent), version_base="1.2"):
            cfg = compose(config_name=path.name, overrides=list(overrides))
    finally:
        restore_gh_from_backup(backup)
    OmegaConf.resolve(cfg)
    return cfg


def build_sam2_module(config: str | os.PathLike, *, postprocessing: bool = True, overrides: tuple[str, ...] = ()) -> torch.nn.Module:
    from hydra.utils import instantiate

    cfg = compose_config(config, [*(POSTPROCESSING if postprocessing else ()), *overrides])
    return instantiate(cfg.model, _recursive_=True).eval()


def sam2_callables(model: torch.nn.Module):
    """``encode_fn``/``decode_fn`` of a ``SAM2Base`` and the packed embedding's layout."""
    d = model.hidden_dim
    high_res = bool(model.use_high_res_features_in_sam)
    c0 = model.sam_mask_decoder.conv_s0.out_channels if high_res else 0
    c1 = model.sam_mask_decoder.conv_s1.out_channels if high_res else 0
    layout = {"image_embed": d, "high_res_s4_unshuffled_by_4": 16 * c0, "high_res_s8_unshuffled_by_2": 4 * c1}

    def device() -> torch.device:
        return model.no_mem_embed.device

    def encode(images: torch.Tensor) -> torch.Tensor:
        size = model.image_size
        if images.ndim != 4 or images.shape[1] != 3 or tuple(images.shape[-2:]) != (size, size):
            raise ValueError(f"SAM 2 encodes preprocessed (B, 3, {size}, {size}) images; got {tuple(images.shape)}")
        backbone_out = model.forward_image(images.to(device(), torch.float32))
        _, vision_feats, _, feat_sizes = model._prepare_backbone_features(backbone_out)
        if model.directly_add_no_mem_embed:
            vision_feats[-1] = vision_feats[-1] + model.no_mem_embed
        batch = images.shape[0]
        feats = [f.permute(1, 2, 0).reshape(batch, -1, *hw) for f, hw in zip(vision_feats, feat_sizes)]
        if not high_res:
            return feats[-1]
        s0, s1, embed = feats[-3], feats[-2], feats[-1]
        return torch.cat([embed, F.pixel_unshuffle(s0, 4), F.pixel_unshuffle(s1, 2)], dim=1)

    def unpack(embedding: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        x = embedding[None]
        if x.shape[1] != d + 16 * c0 + 4 * c1:
            raise ValueError(f"SAM 2 embedding has {d + 16 * c0 + 4 * c1} channels ({layout}); got {tuple(embedding.shape)}")
        if not high_res:
            return x, []
        s0 = F.pixel_shuffle(x[:, d:d + 16 * c0], 4)
        s1 = F.pixel_shuffle(x[:, d + 16 * c0:], 2)
        return x[:, :d], [s0, s1]

    def decode(embedding: torch.Tensor, *, points: torch.Tensor | None = None, point_labels: torch.Tensor | None = None,
               boxes: torch.Tensor | None = None, multimask: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
        if embedding.ndim != 3:
            raise ValueError(f"decode takes one image's embedding (C, h, w); got {tuple(embedding.shape)}")
        dev = device()
        image_embed, high_res_feats = unpack(embedding.to(dev, torch.float32))
        coords = labels = None
        if points is not None:
            coords = torch.as_tensor(points, dtype=torch.float32, device=dev)
            labels = (torch.ones(coords.shape[:2], dtype=torch.int, device=dev) if point_labels is None
                      else torch.as_tensor(point_labels, device=dev).to(torch.int))
        if boxes is not None:
            box_coords = torch.as_tensor(boxes, dtype=torch.float32, device=dev).reshape(-1, 2, 2)
            box_labels = torch.tensor([[2, 3]], dtype=torch.int, device=dev).repeat(box_coords.shape[0], 1)
            coords = box_coords if coords is None else torch.cat([box_coords, coords], dim=1)
            labels = box_labels if labels is None else torch.cat([box_labels, labels], dim=1)
        sparse, dense = model.sam_prompt_encoder(points=(coords, labels), boxes=None, masks=None)
        low_res, iou, _, _ = model.sam_mask_decoder(
            image_embeddings=image_embed,
            image_pe=model.sam_prompt_encoder.get_dense_pe(),
            sparse_prompt_embeddings=sparse,
            dense_prompt_embeddings=dense,
            multimask_output=multimask,
            repeat_image=coords.shape[0] > 1,  # one embedding, P prompts
            high_res_features=high_res_feats,
        )
        return torch.clamp(low_res, -32.0, 32.0), iou

    return encode, decode, layout


def make_sam2_segmenter(name: str, config: str | os.PathLike | None, *, postprocessing: bool = True,
                        overrides: tuple[str, ...] | list[str] = ()) -> Segmenter:
    if config is None:
        raise ValueError(f"{name} needs config= a SAM 2 YAML file (its config is not shipped with sam2)")
    config_path = resolve_config(config)
    model = build_sam2_module(config_path, postprocessing=postprocessing, overrides=tuple(overrides))
    profile = sam2_profile(model.image_size)
    encode, decode, layout = sam2_callables(model)
    stride = model.backbone_stride
    record = {"family": "sam2", "name": name, "config_file": str(config_path), "postprocessing": postprocessing,
              "overrides": list(overrides), "image_size": model.image_size, "hidden_dim": model.hidden_dim,
              "embedding_layout": layout, "embedding_size": model.image_size // stride,
              "low_res_size": 4 * model.image_size // stride, "mask_threshold": 0.0, "profile": profile.to_dict()}
    return Segmenter(name, model, profile, promptable=True, config=record, encode_fn=encode, decode_fn=decode)


@register_segmenter("sam2")
def sam2_any(*, config: str | os.PathLike | None = None, **options: Any) -> Segmenter:
    """Any SAM 2-style YAML config (file path or shipped package-relative name)."""
    return make_sam2_segmenter("sam2", config, **options)


@register_segmenter("medsam2")
def medsam2(*, config: str | os.PathLike | None = None, **options: Any) -> Segmenter:
    """MedSAM2: the user's YAML (not shipped with sam2) and checkpoint; SAM 2 preprocessing."""
    return make_sam2_segmenter("medsam2", config, **options)


def _register_shipped(name: str, shipped: str) -> None:
    @register_segmenter(name)
    def factory(*, config: str | os.PathLike | None = None, **options: Any) -> Segmenter:
        return make_sam2_segmenter(name, config or shipped, **options)

    factory.__doc__ = f"{name}: sam2's shipped {shipped}."


for _name, _shipped in SHIPPED.items():
    _register_shipped(_name, _shipped)
