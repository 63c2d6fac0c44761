"""SAM-Med2D and FT-SAM: SAM ViT-B fine-tuned on SA-Med2D-20M at 256 × 256 (OpenGVLab / uni-medical).

Registered names: ``sam_med2d`` (``sam-med2d_b.pth``: ViT-B image encoder with an adapter in every
transformer block) and ``ft_sam`` (``ft-sam_b.pth``: the same ViT-B at 256 px fully fine-tuned,
*without* adapters — see below). Both give a 256-channel 16 × 16 embedding and 64 × 64 low-res logits.

Preprocessing (profile ``sam_med2d``, :data:`SAM_MED2D_PROFILE`): RGB, ``(x − mean) / std`` on the
0–255 scale with SAM's mean (123.675, 116.28, 103.53) and std (58.395, 57.12, 57.375) — the official
``SammedPredictor.set_image`` takes ``pixel_mean``/``pixel_std`` from the ``Sam`` built in
``segment_anything/build_sam.py`` with exactly those values — then both sides resized to 256 × 256,
no padding (``A.Resize(256, 256)``). The official predictor resizes with nearest-neighbour
interpolation (``cv2.INTER_NEAREST``); the shared profile resizes bilinearly with antialiasing, which
is the better choice for downsizing and is recorded in the profile, not hidden. Thresholding: the
official ``sigmoid(logits) > 0.5`` equals our ``logit > 0``.

Key layout (``image_encoder.`` prefix), written here so that the official files load key for key.
Sources read through the stored public material:

* ``OpenGVLab/SAM-Med2D`` — ``segment_anything/build_sam.py`` (``build_sam_vit_b``: embed 768, depth
  12, 12 heads, global attention in blocks 2, 5, 8, 11, window 14, patch 16, rel-pos, qkv bias,
  LayerNorm eps 1e-6, out 256, ``adapter_train=args.encoder_adapter``; checkpoints hold
  ``{"model": state_dict, ...}``), ``segment_anything/modeling/mask_decoder.py`` and
  ``transformer.py`` (same parameters as segment-anything's, so SAM's classes load them),
  ``segment_anything/predictor_sammed.py`` (preprocessing above) and the README (model table).
* The official ``image_encoder.py`` is not in the store; its definitions were read from FairMedFM's
  vendored copy ``FairMedFM/FairMedFM:models/sam_builder/build_sammed2d.py`` (which FairMedFM uses for
  both SAMMed2D and FT-SAM) and agree with every other copy found (``self.Adapter =
  Adapter_Layer(dim)``): per block ``norm1``, ``attn.{qkv,proj,rel_pos_h,rel_pos_w}``, ``norm2``,
  ``mlp.{lin1,lin2}`` and, with adapters, ``Adapter.norm`` (LayerNorm), ``Adapter.channel.{0,2}``
  (Linear 768→192→768 without bias, ReLU, sigmoid: channel gate) and ``Adapter.spatial.{0,2}``
  (3×3 stride-2 conv and 4×4 stride-2 transposed conv, no bias, ReLU each); the block computes
  ``x + mlp(norm2(x)) + Adapter(norm2(x))``. Plus ``patch_embed.proj``, ``pos_embed`` (1, 16, 16, 768)
  and the ``neck``. Counts: 249 encoder keys with adapters, 177 without (= segment-anything's ViT-B).

FT-SAM's adapters — not what the task brief assumed: the evidence says FT-SAM has **no** adapter
blocks. The SAM-Med2D README lists FT-SAM at 256 × 256 with 51 FPS, the same as plain SAM at 256,
against 35 FPS for SAM-Med2D (the adapters' cost); medico-sam (``computational-cell-analytics/
medico-sam``) labels its ``sam-med2d`` run "FT-SAM" and ``sam-med2d-adapter`` "SAM-Med2D" and loads
both checkpoints with ``encoder_adapter`` switched accordingly and a strict ``load_state_dict``. The
checkpoint file itself could not be inspected here, so ``ft_sam`` accepts ``adapter=True`` for a file
that turns out to carry ``Adapter`` keys; loading is strict about missing keys either way, so a wrong
guess fails loudly instead of running with random adapters (FairMedFM's builder loads a ``{"model":
...}`` checkpoint with ``strict=False`` and would not notice).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from medequity.models.segmenter import SAM_PIXEL_MEAN, SAM_PIXEL_STD, PreprocessProfile, Segmenter, register_segmenter
from medequity.models.segmenters.tiny_vit_sam import SAM_DECODER, LayerNorm2d, build_sam_with_encoder, sam_family_segmenter

SAM_MED2D_PROFILE = PreprocessProfile("sam_med2d", 256, mean=SAM_PIXEL_MEAN, std=SAM_PIXEL_STD, minmax=False, pad=False)

VIT_B_256 = {
    "img_size": 256,
    "patch_size": 16,
    "embed_dim": 768,
    "depth": 12,
    "num_heads": 12,
    "global_attn_indexes": (2, 5, 8, 11),
    "window_size": 14,
    "mlp_ratio": 4.0,
    "out_chans": 256,
}


class Adapter(nn.Module):
    """SAM-Med2D's adapter on (B, H, W, C) tokens: a channel gate (pooled → Linear → ReLU → Linear →
    sigmoid), then a spatial branch (3×3 stride-2 conv, ReLU, 4×4 stride-2 transposed conv, ReLU)
    added back, then LayerNorm."""

    def __init__(self, dim: int, ratio: float = 0.25):
        super().__init__()
        hidden = int(dim * ratio)
        self.norm = nn.LayerNorm(dim)
        self.channel = nn.Sequential(nn.Linear(dim, hidden, bias=False), nn.ReLU(), nn.Linear(hidden, dim, bias=False), nn.Sigmoid())
        self.spatial = nn.Sequential(
            nn.Conv2d(dim, dim, kernel_size=3, stride=2, padding=1, bias=False),
            nn.ReLU(),
            nn.ConvTranspose2d(dim, dim, kernel_size=4, stride=2, padding=1, bias=False),
            nn.ReLU(),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.permute(0, 3, 1, 2)
        gate = self.channel(x.mean(dim=(2, 3)))
        x = x + self.spatial(x * gate[:, :, None, None])
        return self.norm(x.permute(0, 2, 3, 1))


class RelPosAttention(nn.Module):
    """Multi-head self-attention on a (B, H, W, C) grid with decomposed relative-position terms
    (one table per axis, ``2·size − 1`` rows), as SAM's ViT."""

    def __init__(self, dim: int, num_heads: int, size: tuple[int, int]):
        super().__init__()
        self.num_heads = num_heads
        head_dim = dim // num_heads
        self.scale = head_dim**-0.5
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        self.rel_pos_h = nn.Parameter(torch.zeros(2 * size[0] - 1, head_dim))
        self.rel_pos_w = nn.Parameter(torch.zeros(2 * size[1] - 1, head_dim))

    @staticmethod
    def _table(rel_pos: torch.Tensor, size: int) -> torch.Tensor:
        if rel_pos.shape[0] != 2 * size - 1:
            raise ValueError(f"relative-position table of {rel_pos.shape[0]} rows for a {size}-token axis")
        idx = torch.arange(size, device=rel_pos.device)
        return rel_pos[idx[:, None] - idx[None, :] + size - 1]  # (q, k, c)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, h, w, _ = x.shape
        qkv = self.qkv(x).reshape(b, h * w, 3, self.num_heads, -1).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.reshape(3, b * self.num_heads, h * w, -1).unbind(0)
        attn = (q * self.scale) @ k.transpose(-2, -1)
        r_q = q.reshape(b * self.num_heads, h, w, -1)
        rel_h = torch.einsum("bhwc,hkc->bhwk", r_q, self._table(self.rel_pos_h, h))
        rel_w = torch.einsum("bhwc,wkc->bhwk", r_q, self._table(self.rel_pos_w, w))
        attn = (attn.view(-1, h, w, h, w) + rel_h[:, :, :, :, None] + rel_w[:, :, :, None, :]).view(-1, h * w, h * w)
        x = (attn.softmax(dim=-1) @ v).view(b, self.num_heads, h, w, -1).permute(0, 2, 3, 1, 4).reshape(b, h, w, -1)
        return self.proj(x)


class MlpBlock(nn.Module):
    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.lin1 = nn.Linear(dim, hidden)
        self.lin2 = nn.Linear(hidden, dim)
        self.act = nn.GELU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.lin2(self.act(self.lin1(x)))


class AdapterBlock(nn.Module):
    """Pre-norm ViT block, windowed (zero-padded windows) or global attention; with ``adapter`` the
    MLP residual becomes ``mlp(norm2(x)) + Adapter(norm2(x))``."""

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float, window_size: int, grid: tuple[int, int], adapter: bool):
        super().__init__()
        self.window_size = window_size
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.attn = RelPosAttention(dim, num_heads, grid if window_size == 0 else (window_size, window_size))
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = MlpBlock(dim, int(dim * mlp_ratio))
        self.Adapter = Adapter(dim) if adapter else None  # official attribute name (capital A)

    def _attend(self, x: torch.Tensor) -> torch.Tensor:
        ws = self.window_size
        if ws == 0:
            return self.attn(x)
        b, h, w, c = x.shape
        pad_h, pad_w = (ws - h % ws) % ws, (ws - w % ws) % ws
        if pad_h or pad_w:
            x = F.pad(x, (0, 0, 0, pad_w, 0, pad_h))
        ph, pw = h + pad_h, w + pad_w
        windows = x.view(b, ph // ws, ws, pw // ws, ws, c).permute(0, 1, 3, 2, 4, 5).reshape(-1, ws, ws, c)
        out = self.attn(windows).view(b, ph // ws, pw // ws, ws, ws, c).permute(0, 1, 3, 2, 4, 5).reshape(b, ph, pw, c)
        return out[:, :h, :w].contiguous()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self._attend(self.norm1(x))
        y = self.norm2(x)
        out = x + self.mlp(y)
        return out + self.Adapter(y) if self.Adapter is not None else out


class PatchEmbed(nn.Module):
    def __init__(self, patch_size: int, in_chans: int, dim: int):
        super().__init__()
        self.proj = nn.Conv2d(in_chans, dim, kernel_size=patch_size, stride=patch_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x).permute(0, 2, 3, 1)


class AdapterViTImageEncoder(nn.Module):
    """SAM's ViT image encoder with optional SAM-Med2D adapters: (B, 3, S, S) → (B, out_chans, S/p, S/p)."""

    def __init__(self, img_size: int = 256, patch_size: int = 16, embed_dim: int = 768, depth: int = 12, num_heads: int = 12,
                 global_attn_indexes: tuple[int, ...] = (2, 5, 8, 11), window_size: int = 14, mlp_ratio: float = 4.0,
                 out_chans: int = 256, adapter: bool = True, in_chans: int = 3):
        super().__init__()
        if img_size % patch_size:
            raise ValueError(f"input size {img_size} is not a multiple of the patch size {patch_size}")
        grid = img_size // patch_size
        if adapter and grid % 2:
            raise ValueError(f"the adapter's stride-2 spatial branch needs an even token grid; got {grid}")
        self.img_size = img_size
        self.patch_embed = PatchEmbed(patch_size, in_chans, embed_dim)
        self.pos_embed = nn.Parameter(torch.zeros(1, grid, grid, embed_dim))
        self.blocks = nn.ModuleList(
            AdapterBlock(embed_dim, num_heads, mlp_ratio, 0 if i in global_attn_indexes else window_size, (grid, grid), adapter)
            for i in range(depth)
        )
        self.neck = nn.Sequential(
            nn.Conv2d(embed_dim, out_chans, kernel_size=1, bias=False),
            LayerNorm2d(out_chans),
            nn.Conv2d(out_chans, out_chans, kernel_size=3, padding=1, bias=False),
            LayerNorm2d(out_chans),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.patch_embed(x) + self.pos_embed
        for block in self.blocks:
            x = block(x)
        return self.neck(x.permute(0, 3, 1, 2))


def _sam_med2d_segmenter(name: str, *, adapter: bool, options: dict[str, Any]) -> Segmenter:
    known = set(VIT_B_256) | set(SAM_DECODER)
    unknown = set(options) - known
    if unknown:
        raise TypeError(f"{name} got unknown options {sorted(unknown)}; known: {sorted(known | {'adapter'})}")
    enc = {**VIT_B_256, **{k: v for k, v in options.items() if k in VIT_B_256}}
    enc["global_attn_indexes"] = tuple(enc["global_attn_indexes"])
    dec = {**SAM_DECODER, **{k: v for k, v in options.items() if k in SAM_DECODER}}
    if enc["patch_size"] != 16:
        raise ValueError("SAM's prompt encoder and decoder assume patch size 16 (embedding = input / 16)")
    encoder = AdapterViTImageEncoder(**enc, adapter=adapter)
    sam = build_sam_with_encoder(encoder, img_size=enc["img_size"], embed_dim=enc["out_chans"], **dec)
    sam.eval()
    profile = SAM_MED2D_PROFILE if enc["img_size"] == SAM_MED2D_PROFILE.input_size else PreprocessProfile(
        "sam_med2d", enc["img_size"], mean=SAM_PIXEL_MEAN, std=SAM_PIXEL_STD, pad=False)

    config = {"family": name, "encoder": "vit_b" if enc == VIT_B_256 else "vit", "adapter": adapter, **enc, **dec}
    return sam_family_segmenter(name, sam, profile, config)


@register_segmenter("sam_med2d")
def sam_med2d(*, adapter: bool = True, **options: Any) -> Segmenter:
    """SAM-Med2D (``sam-med2d_b.pth``): ViT-B at 256 px with an adapter in each block."""
    return _sam_med2d_segmenter("sam_med2d", adapter=adapter, options=options)


@register_segmenter("ft_sam")
def ft_sam(*, adapter: bool = False, **options: Any) -> Segmenter:
    """FT-SAM (``ft-sam_b.pth``): SAM ViT-B fully fine-tuned at 256 px; no adapters (module docstring)."""
    return _sam_med2d_segmenter("ft_sam", adapter=adapter, options=options)
