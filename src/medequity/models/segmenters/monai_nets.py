"""MONAI segmentation networks: trainable UNet (2D/3D) and SwinUNETR, and point-promptable VISTA3D.

Registered names and options (defaults in brackets):

* ``monai_unet`` — ``spatial_dims`` [3], ``in_channels`` [1], ``out_channels`` [2], ``channels``
  [(16, 32, 64, 128, 256)], ``strides`` [(2, 2, 2, 2)], ``num_res_units`` [2], ``norm``
  ["instance"], ``dropout`` [0.0], ``roi_size`` [96 per axis];
* ``swin_unetr`` — ``spatial_dims`` [3], ``in_channels``, ``out_channels``, ``feature_size`` [48,
  a multiple of 12], ``depths`` [(2, 2, 2, 2)], ``num_heads`` [(3, 6, 12, 24)], ``use_v2`` [False],
  ``roi_size`` [96]. Inputs: every spatial size a multiple of 32 and ≥ 64 (at 32 the bottleneck is
  1 voxel and its instance norm refuses, in eval mode too); needs einops;
* ``vista3d`` — ``in_channels`` [1], ``encoder_embed_dim`` [48], ``blocks_down`` [(1, 2, 2, 4, 4)],
  ``n_classes`` [512], ``last_supported`` [132], ``roi_size`` [128]; the defaults are MONAI's
  ``vista3d132`` (the released model's architecture and key names).

UNet and SwinUNETR are ``promptable=False``: ``segmenter.module(x)`` maps ``(B, in_channels,
*spatial)`` to logits ``(B, out_channels, *spatial)`` (softmax over classes), for training and for
:func:`sliding_window_predict` (MONAI's ``sliding_window_inference`` with the recorded
``roi_size``). ``encode``/``decode`` raise for them.

VISTA3D is point-promptable in 3D through the same encode/decode contract, on volumes:
``encode`` maps ``(B, in_channels, D, H, W)`` (sizes multiples of 16) to the point-branch features
``(B, encoder_embed_dim, D, H, W)``; ``decode`` takes one volume's features and ``points``
``(P, N, 3)`` in voxel indices of the tensor's three spatial axes (not (x, y) order), labels
``(P, N)`` (1 foreground, 0 background, 2/3 for VISTA3D's special classes, −1 padding) and gives
logits ``(P, 1, D, H, W)`` (foreground where > 0) — exactly ``VISTA3D.forward``'s point-only path
without re-encoding. VISTA3D has no box prompt, no multi-mask output (``K = 1`` always) and no
IoU head: the returned IoUs are NaN. Its config records ``spatial_dims`` = 3 (a natively 3D model:
zero-shot segmentation prompts and decodes whole volumes) and ``size_multiple`` (the encoder's
stride: every spatial size a multiple of it). Its automatic (class-vector) segmentation is
``segmenter.module(x, class_vector=...)``.

Profiles: these networks take single-channel volumes scaled by the data pipeline; the recorded
profile is per-image min–max to [0, 1] without padding (what ``profile.prepare`` does for a 2D
image), with ``input_size`` the ROI's first axis; ``config["roi_size"]`` holds the whole ROI.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from medequity.models.segmenter import PreprocessProfile, Segmenter, register_segmenter


def _roi(roi_size: int | Sequence[int], spatial_dims: int) -> tuple[int, ...]:
    roi = (int(roi_size),) * spatial_dims if isinstance(roi_size, int) else tuple(int(s) for s in roi_size)
    if len(roi) != spatial_dims:
        raise ValueError(f"roi_size {roi_size} does not have {spatial_dims} axes")
    return roi


def _profile(name: str, roi: tuple[int, ...]) -> PreprocessProfile:
    return PreprocessProfile(name, roi[0], mean=None, std=None, minmax=True, pad=False)


def _trainable(name: str, module: nn.Module, roi: tuple[int, ...], options: dict[str, Any]) -> Segmenter:
    profile = _profile(name, roi)
    config = {"family": "monai", "name": name, **options, "roi_size": list(roi), "output": "logits (B, out_channels, *spatial)",
              "profile": profile.to_dict()}
    return Segmenter(name, module, profile, promptable=False, config=config)


@register_segmenter("monai_unet")
def monai_unet(*, spatial_dims: int = 3, in_channels: int = 1, out_channels: int = 2,
               channels: Sequence[int] = (16, 32, 64, 128, 256), strides: Sequence[int] = (2, 2, 2, 2),
               num_res_units: int = 2, norm: str = "instance", dropout: float = 0.0,
               roi_size: int | Sequence[int] = 96) -> Segmenter:
    """MONAI's residual UNet, 2D or 3D; trained from scratch (not promptable)."""
    from monai.networks.nets import UNet

    module = UNet(spatial_dims=spatial_dims, in_channels=in_channels, out_channels=out_channels, channels=tuple(channels),
                  strides=tuple(strides), num_res_units=num_res_units, norm=norm, dropout=dropout)
    options = {"spatial_dims": spatial_dims, "in_channels": in_channels, "out_channels": out_channels,
               "channels": list(channels), "strides": list(strides), "num_res_units": num_res_units, "norm": norm,
               "dropout": dropout}
    return _trainable("monai_unet", module, _roi(roi_size, spatial_dims), options)


@register_segmenter("swin_unetr")
def swin_unetr(*, spatial_dims: int = 3, in_channels: int = 1, out_channels: int = 2, feature_size: int = 48,
               depths: Sequence[int] = (2, 2, 2, 2), num_heads: Sequence[int] = (3, 6, 12, 24), use_v2: bool = False,
               roi_size: int | Sequence[int] = 96) -> Segmenter:
    """MONAI's SwinUNETR (2D or 3D); trained from scratch (not promptable)."""
    from monai.networks.nets import SwinUNETR

    roi = _roi(roi_size, spatial_dims)
    if any(s % 32 or s < 64 for s in roi):
        raise ValueError(f"SwinUNETR needs every ROI axis a multiple of 32 and >= 64; got {roi}")
    module = SwinUNETR(in_channels=in_channels, out_channels=out_channels, feature_size=feature_size, depths=tuple(depths),
                       num_heads=tuple(num_heads), spatial_dims=spatial_dims, use_v2=use_v2)
    options = {"spatial_dims": spatial_dims, "in_channels": in_channels, "out_channels": out_channels,
               "feature_size": feature_size, "depths": list(depths), "num_heads": list(num_heads), "use_v2": use_v2}
    return _trainable("swin_unetr", module, roi, options)


@register_segmenter("vista3d")
def vista3d(*, in_channels: int = 1, encoder_embed_dim: int = 48, blocks_down: Sequence[int] = (1, 2, 2, 4, 4),
            n_classes: int = 512, last_supported: int = 132, roi_size: int | Sequence[int] = 128) -> Segmenter:
    """VISTA3D (MONAI's vista3d132 at the defaults): point-promptable 3D, see the module doc."""
    from monai.networks.nets.segresnet_ds import SegResNetDS2
    from monai.networks.nets.vista3d import VISTA3D, ClassMappingClassify, PointMappingSAM

    encoder = SegResNetDS2(in_channels=in_channels, blocks_down=tuple(blocks_down), norm="instance",
                           out_channels=encoder_embed_dim, init_filters=encoder_embed_dim, dsdepth=1)
    model = VISTA3D(image_encoder=encoder,
                    class_head=ClassMappingClassify(n_classes=n_classes, feature_size=encoder_embed_dim, use_mlp=True),
                    point_head=PointMappingSAM(feature_size=encoder_embed_dim, n_classes=n_classes, last_supported=last_supported))
    model.eval()
    stride = 2 ** (len(tuple(blocks_down)) - 1)

    def device() -> torch.device:
        return next(model.parameters()).device

    def encode(volumes: torch.Tensor) -> torch.Tensor:
        if volumes.ndim != 5 or volumes.shape[1] != in_channels or any(s % stride for s in volumes.shape[-3:]):
            raise ValueError(f"VISTA3D encodes (B, {in_channels}, D, H, W) volumes, sizes multiples of {stride}; "
                             f"got {tuple(volumes.shape)}")
        features, _ = model.image_encoder(volumes.to(device(), torch.float32), with_point=True, with_label=False)
        return features

    def decode(embedding: torch.Tensor, *, points: torch.Tensor | None = None, point_labels: torch.Tensor | None = None,
               boxes: torch.Tensor | None = None, multimask: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
        del multimask  # one mask per prompt: VISTA3D has no multi-mask output
        if boxes is not None:
            raise ValueError("VISTA3D takes point prompts only (no boxes)")
        if points is None:
            raise ValueError("VISTA3D decode needs points (P, N, 3)")
        if embedding.ndim != 4:
            raise ValueError(f"decode takes one volume's features (C, D, H, W); got {tuple(embedding.shape)}")
        dev = device()
        coords = torch.as_tensor(points, dtype=torch.float32, device=dev)
        if coords.ndim != 3 or coords.shape[-1] != 3:
            raise ValueError(f"VISTA3D points are (P, N, 3) voxel indices; got {tuple(coords.shape)}")
        labels = (torch.ones(coords.shape[:2], dtype=torch.long, device=dev) if point_labels is None
                  else torch.as_tensor(point_labels, device=dev).long())
        logits = model.point_head(embedding[None].to(dev, torch.float32), coords, labels)
        return logits, torch.full((coords.shape[0], 1), float("nan"), device=dev)

    roi = _roi(roi_size, 3)
    profile = _profile("vista3d", roi)
    config = {"family": "monai", "name": "vista3d", "spatial_dims": 3, "size_multiple": stride, "in_channels": in_channels,
              "encoder_embed_dim": encoder_embed_dim,
              "blocks_down": list(blocks_down), "n_classes": n_classes, "last_supported": last_supported,
              "roi_size": list(roi), "points": "(P, N, 3) voxel indices of the tensor's spatial axes", "iou": "none (NaN)",
              "mask_threshold": 0.0, "profile": profile.to_dict()}
    return Segmenter("vista3d", model, profile, promptable=True, config=config, encode_fn=encode, decode_fn=decode)


@torch.no_grad()
def sliding_window_predict(segmenter: Segmenter, images: torch.Tensor, *, roi_size: Sequence[int] | None = None,
                           sw_batch_size: int = 1, overlap: float = 0.25, mode: str = "gaussian") -> torch.Tensor:
    """Logits of a trainable (not promptable) segmenter on whole images/volumes ``(B, C, *spatial)``
    by MONAI's sliding-window inference over the recorded ROI (eval mode, restored afterwards)."""
    from monai.inferers import sliding_window_inference

    if segmenter.promptable:
        raise TypeError(f"{segmenter.name} is promptable: use encode/decode")
    roi = tuple(roi_size) if roi_size is not None else tuple(segmenter.config["roi_size"])
    was_training = segmenter.module.training
    segmenter.module.eval()
    try:
        return sliding_window_inference(images, roi, sw_batch_size, segmenter.module, overlap=overlap, mode=mode)
    finally:
        segmenter.module.train(was_training)
