"""MobileSAM and TinySAM: SAM's prompt encoder and mask decoder on a TinyViT-5M ("vit_t") image encoder.

Registered names: ``mobile_sam`` and ``tinysam``. Both take 1024-px inputs with SAM's preprocessing
(RGB, (x − mean) / std on the 0–255 scale, longest side resized, padded: :data:`SAM_PROFILE`) and give
a 256-channel 64 × 64 embedding; the decoder's low-res logits are 256 × 256.

Key layout (written here, not copied, so that the official checkpoint files load key for key). What
it follows, read through the stored public sources:

* ``ChaoningZhang/MobileSAM`` — ``mobile_sam/modeling/tiny_vit_sam.py`` (module definitions) and
  ``mobile_sam/build_sam.py`` (``build_sam_vit_t``: ``TinyViT(img_size=1024, num_classes=1000,
  embed_dims=[64, 128, 160, 320], depths=[2, 2, 6, 2], num_heads=[2, 4, 5, 10],
  window_sizes=[7, 7, 14, 7], mlp_ratio=4, mbconv_expand_ratio=4, local_conv_size=3)`` inside
  segment-anything's ``Sam`` with the standard ``PromptEncoder``/``MaskDecoder``/``TwoWayTransformer``
  (256 channels, depth 2, mlp 2048, 8 heads, 3 multimask outputs, IoU head 3 × 256).
* ``FairMedFM/FairMedFM`` — ``models/sam_builder/build_tinysam.py``: FairMedFM builds *both* MobileSAM
  and TinySAM with that same ``vit_t`` builder (``sam_model_registry2['vit_t']``) and loads the
  checkpoints strictly, so TinySAM's ``tinysam.pth`` has the same keys.
* ``xinghaochen/TinySAM`` — ``tinysam/modeling/sam.py`` (``Sam`` over ``tiny_vit_sam.TinyViT``) and
  ``tinysam/modeling/mask_decoder.py``. Not established from the stored material: TinySAM's own
  ``tiny_vit_sam.py``/``build_sam.py`` are not in the store; the TinyViT definition is taken to be
  MobileSAM's (FairMedFM's strict load of both checkpoints with one builder supports that).

Image-encoder state-dict keys (``image_encoder.`` prefix), 302 in the full model:
``patch_embed.seq.{0,2}.{c,bn}`` (Conv2d_BN = conv without bias + BatchNorm, 6 keys each);
``layers.0.blocks.M.conv{1,2,3}`` (MBConv) and ``layers.0.downsample.conv{1,2,3}`` (PatchMerging);
``layers.{1,2,3}.blocks.M.attn.{attention_biases,norm,qkv,proj}``, ``...mlp.{norm,fc1,fc2}``,
``...local_conv.{c,bn}``, ``layers.{1,2}.downsample.conv{1,2,3}``; ``norm_head`` and ``head``
(TinyViT's ImageNet classifier, ``Linear(320, 1000)``: present in the checkpoints, unused by SAM,
kept so the load is exact); ``neck.{0,1,2,3}`` (1×1 conv, LayerNorm2d, 3×3 conv, LayerNorm2d). The
attention-bias index table is a non-persistent buffer, as in the official code.

Architecture facts the official code hard-codes, generalised here so that tiny test configurations
work: the patch merging *into the last stage* keeps the resolution (official: depthwise stride 1 when
``out_dim in (320, 448, 576)``, i.e. exactly that merging for the released TinyViT sizes), so the
token grid is ``img_size / 16`` (official: ``view(B, 64, 64, C)``).

Decoding: MobileSAM uses segment-anything's mask decoder unchanged (``multimask`` → the 3 multimask
tokens, else token 0). TinySAM's official ``MaskDecoder.forward`` has no single-mask mode: it always
returns tokens 1–3 (``mask_slice = slice(1, None)``). So ``tinysam`` with ``multimask=False`` returns
the best of those three by predicted IoU (K = 1), never the untrained-for-TinySAM token 0.
"""

from __future__ import annotations

import itertools
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from medequity.models.segmenter import SAM_PROFILE, PreprocessProfile, Segmenter, register_segmenter

VIT_T = {
    "img_size": 1024,
    "embed_dims": (64, 128, 160, 320),
    "depths": (2, 2, 6, 2),
    "num_heads": (2, 4, 5, 10),
    "window_sizes": (7, 7, 14, 7),
    "mlp_ratio": 4.0,
    "mbconv_expand_ratio": 4.0,
    "local_conv_size": 3,
    "num_classes": 1000,
    "out_chans": 256,
}
SAM_DECODER = {"decoder_depth": 2, "decoder_heads": 8, "decoder_mlp_dim": 2048, "iou_head_hidden_dim": 256}


class Conv2dBN(nn.Sequential):
    """Convolution without bias then BatchNorm: keys ``c.weight`` and ``bn.*``."""

    def __init__(self, in_ch: int, out_ch: int, kernel: int = 1, stride: int = 1, pad: int = 0, groups: int = 1):
        super().__init__()
        self.add_module("c", nn.Conv2d(in_ch, out_ch, kernel, stride, pad, groups=groups, bias=False))
        self.add_module("bn", nn.BatchNorm2d(out_ch))


class LayerNorm2d(nn.Module):
    """LayerNorm over the channels of a (B, C, H, W) map (eps 1e-6, as SAM's neck)."""

    def __init__(self, channels: int, eps: float = 1e-6):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(channels))
        self.bias = nn.Parameter(torch.zeros(channels))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mean = x.mean(1, keepdim=True)
        var = (x - mean).pow(2).mean(1, keepdim=True)
        x = (x - mean) / torch.sqrt(var + self.eps)
        return self.weight[:, None, None] * x + self.bias[:, None, None]


class PatchEmbed(nn.Module):
    """Two stride-2 3×3 Conv2dBN with GELU between: (B, 3, S, S) → (B, C, S/4, S/4)."""

    def __init__(self, in_chans: int, dim: int):
        super().__init__()
        self.seq = nn.Sequential(Conv2dBN(in_chans, dim // 2, 3, 2, 1), nn.GELU(), Conv2dBN(dim // 2, dim, 3, 2, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.seq(x)


class MBConv(nn.Module):
    """Inverted residual: 1×1 expand, 3×3 depthwise, 1×1 project, residual, GELU."""

    def __init__(self, dim: int, expand_ratio: float):
        super().__init__()
        hidden = int(dim * expand_ratio)
        self.conv1 = Conv2dBN(dim, hidden)
        self.conv2 = Conv2dBN(hidden, hidden, 3, 1, 1, groups=hidden)
        self.conv3 = Conv2dBN(hidden, dim)
        self.act = nn.GELU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.act(self.conv1(x))
        y = self.act(self.conv2(y))
        return self.act(self.conv3(y) + x)


class PatchMerging(nn.Module):
    """1×1 conv, depthwise 3×3 (stride 2, or 1 into the last stage), 1×1 conv → tokens (B, L, C)."""

    def __init__(self, resolution: tuple[int, int], dim: int, out_dim: int, stride: int):
        super().__init__()
        self.resolution = resolution
        self.conv1 = Conv2dBN(dim, out_dim)
        self.conv2 = Conv2dBN(out_dim, out_dim, 3, stride, 1, groups=out_dim)
        self.conv3 = Conv2dBN(out_dim, out_dim)
        self.act = nn.GELU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim == 3:  # tokens (B, L, C) → map
            h, w = self.resolution
            x = x.view(x.shape[0], h, w, -1).permute(0, 3, 1, 2)
        x = self.act(self.conv1(x))
        x = self.act(self.conv2(x))
        return self.conv3(x).flatten(2).transpose(1, 2)


class WindowAttention(nn.Module):
    """Multi-head attention inside a window with a learned bias per head and |Δrow|, |Δcol| offset
    (LeViT style); pre-norm inside (``attn.norm``), q/k/v from one ``qkv`` linear (attention ratio 1)."""

    def __init__(self, dim: int, num_heads: int, window: int):
        super().__init__()
        self.num_heads = num_heads
        self.key_dim = dim // num_heads
        self.scale = self.key_dim**-0.5
        self.norm = nn.LayerNorm(dim)
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        points = list(itertools.product(range(window), range(window)))
        offsets: dict[tuple[int, int], int] = {}
        index = [offsets.setdefault((abs(a[0] - b[0]), abs(a[1] - b[1])), len(offsets)) for a in points for b in points]
        self.attention_biases = nn.Parameter(torch.zeros(num_heads, len(offsets)))
        self.register_buffer("attention_bias_idxs", torch.tensor(index).view(len(points), len(points)), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, _ = x.shape
        q, k, v = self.qkv(self.norm(x)).view(b, n, self.num_heads, 3 * self.key_dim).split(self.key_dim, dim=3)
        q, k, v = (t.permute(0, 2, 1, 3) for t in (q, k, v))
        attn = (q @ k.transpose(-2, -1)) * self.scale + self.attention_biases[:, self.attention_bias_idxs]
        x = (attn.softmax(dim=-1) @ v).transpose(1, 2).reshape(b, n, -1)
        return self.proj(x)


class TokenMlp(nn.Module):
    """Pre-norm MLP (``norm``, ``fc1``, GELU, ``fc2``)."""

    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.norm = nn.LayerNorm(dim)
        self.fc1 = nn.Linear(dim, hidden)
        self.fc2 = nn.Linear(hidden, dim)
        self.act = nn.GELU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(self.norm(x))))


class TinyViTBlock(nn.Module):
    """Window attention (zero-padded windows) + residual, depthwise ``local_conv``, MLP + residual."""

    def __init__(self, dim: int, resolution: tuple[int, int], num_heads: int, window: int, mlp_ratio: float, local_conv_size: int):
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"TinyViT block width {dim} is not divisible by {num_heads} heads")
        self.resolution = resolution
        self.window = window
        self.attn = WindowAttention(dim, num_heads, window)
        self.mlp = TokenMlp(dim, int(dim * mlp_ratio))
        self.local_conv = Conv2dBN(dim, dim, local_conv_size, 1, local_conv_size // 2, groups=dim)

    def _windowed_attention(self, x: torch.Tensor) -> torch.Tensor:
        h, w = self.resolution
        b, n, c = x.shape
        ws = self.window
        if h == ws and w == ws:
            return self.attn(x)
        grid = x.view(b, h, w, c)
        pad_b, pad_r = (ws - h % ws) % ws, (ws - w % ws) % ws
        if pad_b or pad_r:
            grid = F.pad(grid, (0, 0, 0, pad_r, 0, pad_b))
        ph, pw = h + pad_b, w + pad_r
        nh, nw = ph // ws, pw // ws
        windows = grid.view(b, nh, ws, nw, ws, c).transpose(2, 3).reshape(b * nh * nw, ws * ws, c)
        out = self.attn(windows).view(b, nh, nw, ws, ws, c).transpose(2, 3).reshape(b, ph, pw, c)
        return out[:, :h, :w].reshape(b, n, c)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = self.resolution
        b, n, c = x.shape
        x = x + self._windowed_attention(x)
        x = self.local_conv(x.transpose(1, 2).reshape(b, c, h, w)).view(b, c, n).transpose(1, 2)
        return x + self.mlp(x)


class ConvStage(nn.Module):
    def __init__(self, dim: int, depth: int, expand_ratio: float, downsample: PatchMerging | None):
        super().__init__()
        self.blocks = nn.ModuleList(MBConv(dim, expand_ratio) for _ in range(depth))
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for block in self.blocks:
            x = block(x)
        return x if self.downsample is None else self.downsample(x)


class AttentionStage(nn.Module):
    def __init__(self, blocks: list[TinyViTBlock], downsample: PatchMerging | None):
        super().__init__()
        self.blocks = nn.ModuleList(blocks)
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for block in self.blocks:
            x = block(x)
        return x if self.downsample is None else self.downsample(x)


class TinyViTImageEncoder(nn.Module):
    """TinyViT as MobileSAM uses it: images (B, 3, S, S) → embedding (B, out_chans, S/16, S/16)."""

    def __init__(self, img_size: int = 1024, embed_dims=VIT_T["embed_dims"], depths=VIT_T["depths"],
                 num_heads=VIT_T["num_heads"], window_sizes=VIT_T["window_sizes"], mlp_ratio: float = 4.0,
                 mbconv_expand_ratio: float = 4.0, local_conv_size: int = 3, num_classes: int = 1000,
                 out_chans: int = 256, in_chans: int = 3):
        super().__init__()
        n = len(depths)
        if not (len(embed_dims) == len(num_heads) == len(window_sizes) == n) or n < 2:
            raise ValueError("TinyViT needs one embed_dim, num_heads and window_size per stage (at least 2 stages)")
        if img_size % 16:
            raise ValueError(f"TinyViT input size {img_size} is not a multiple of 16")
        self.img_size = img_size
        self.patch_embed = PatchEmbed(in_chans, embed_dims[0])
        res = img_size // 4
        resolutions = []
        for i in range(n):  # each merging halves the grid, except the one into the last stage
            resolutions.append((res, res))
            if i < n - 2:
                res //= 2
        self.grid = resolutions[-1][0]
        self.layers = nn.ModuleList()
        for i in range(n):
            downsample = None
            if i < n - 1:
                stride = 1 if i == n - 2 else 2
                downsample = PatchMerging(resolutions[i], embed_dims[i], embed_dims[i + 1], stride)
            if i == 0:
                self.layers.append(ConvStage(embed_dims[0], depths[0], mbconv_expand_ratio, downsample))
            else:
                blocks = [TinyViTBlock(embed_dims[i], resolutions[i], num_heads[i], window_sizes[i], mlp_ratio, local_conv_size)
                          for _ in range(depths[i])]
                self.layers.append(AttentionStage(blocks, downsample))
        self.norm_head = nn.LayerNorm(embed_dims[-1])  # TinyViT's classifier: in the checkpoints, unused
        self.head = nn.Linear(embed_dims[-1], num_classes) if num_classes > 0 else nn.Identity()
        self.neck = nn.Sequential(
            nn.Conv2d(embed_dims[-1], out_chans, kernel_size=1, bias=False),
            LayerNorm2d(out_chans),
            nn.Conv2d(out_chans, out_chans, kernel_size=3, padding=1, bias=False),
            LayerNorm2d(out_chans),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.patch_embed(x)
        for layer in self.layers:
            x = layer(x)
        b, _, c = x.shape
        return self.neck(x.view(b, self.grid, self.grid, c).permute(0, 3, 1, 2))


def build_sam_with_encoder(image_encoder: nn.Module, *, img_size: int, embed_dim: int, decoder_depth: int = 2,
                           decoder_heads: int = 8, decoder_mlp_dim: int = 2048, iou_head_hidden_dim: int = 256) -> nn.Module:
    """segment-anything's ``Sam`` (prompt encoder, mask decoder: keys ``prompt_encoder.*``,
    ``mask_decoder.*``) around ``image_encoder`` (keys ``image_encoder.*``); pixel mean/std are
    non-persistent buffers there, so the state dict is exactly the official checkpoints' layout."""
    try:
        from segment_anything.modeling import MaskDecoder, PromptEncoder, Sam, TwoWayTransformer
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ImportError("SAM-family segmenters need segment-anything: pip install 'medequity[seg]'") from exc
    grid = img_size // 16
    return Sam(
        image_encoder=image_encoder,
        prompt_encoder=PromptEncoder(embed_dim=embed_dim, image_embedding_size=(grid, grid),
                                     input_image_size=(img_size, img_size), mask_in_chans=16),
        mask_decoder=MaskDecoder(
            num_multimask_outputs=3,
            transformer=TwoWayTransformer(depth=decoder_depth, embedding_dim=embed_dim, mlp_dim=decoder_mlp_dim,
                                          num_heads=decoder_heads),
            transformer_dim=embed_dim, iou_head_depth=3, iou_head_hidden_dim=iou_head_hidden_dim,
        ),
    )


def sam_decode(sam: nn.Module, embedding: torch.Tensor, *, points: torch.Tensor | None = None,
               point_labels: torch.Tensor | None = None, boxes: torch.Tensor | None = None, multimask: bool = True,
               multimask_only: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """One image's embedding (C, h, w) and P prompts → low-res logits (P, K, 4h, 4w), IoUs (P, K).

    Points are (P, N, 2) model-input (x, y) pixels (labels default to 1, foreground), boxes (P, 4);
    both together must agree on P. ``multimask_only``: the decoder was trained/distilled for the three
    multimask tokens only (TinySAM); a single mask is then the best of them by predicted IoU."""
    if embedding.ndim != 3:
        raise ValueError(f"decode takes one image's embedding (C, h, w); got shape {tuple(embedding.shape)}")
    device = embedding.device
    point_input = None
    if points is not None:
        points = torch.as_tensor(points, dtype=torch.float32, device=device)
        if points.ndim != 3 or points.shape[-1] != 2:
            raise ValueError(f"points must be (P, N, 2); got {tuple(points.shape)}")
        if point_labels is None:
            point_labels = torch.ones(points.shape[:2], dtype=torch.int64, device=device)
        point_labels = torch.as_tensor(point_labels, device=device).to(torch.int64)
        if point_labels.shape != points.shape[:2]:
            raise ValueError(f"point_labels {tuple(point_labels.shape)} do not match points {tuple(points.shape)}")
        point_input = (points, point_labels)
    if boxes is not None:
        boxes = torch.as_tensor(boxes, dtype=torch.float32, device=device).reshape(-1, 4)
        if points is not None and boxes.shape[0] != points.shape[0]:
            raise ValueError(f"{points.shape[0]} point prompts but {boxes.shape[0]} boxes")
    sparse, dense = sam.prompt_encoder(points=point_input, boxes=boxes, masks=None)
    logits, iou = sam.mask_decoder(
        image_embeddings=embedding[None],
        image_pe=sam.prompt_encoder.get_dense_pe(),
        sparse_prompt_embeddings=sparse,
        dense_prompt_embeddings=dense,
        multimask_output=multimask or multimask_only,
    )
    if multimask_only and not multimask:
        best = iou.argmax(dim=1)
        rows = torch.arange(iou.shape[0], device=device)
        logits, iou = logits[rows, best][:, None], iou[rows, best][:, None]
    return logits, iou


def sam_family_segmenter(name: str, sam: nn.Module, profile: PreprocessProfile, config: dict[str, Any], *,
                         multimask_only: bool = False) -> Segmenter:
    """A :class:`Segmenter` over a segment-anything ``Sam``-structured module: ``encode`` checks for
    preprocessed (B, 3, S, S) inputs and runs ``sam.image_encoder``; ``decode`` is :func:`sam_decode`."""
    size = profile.input_size

    def encode(images: torch.Tensor) -> torch.Tensor:
        if images.ndim != 4 or tuple(images.shape[1:]) != (3, size, size):
            raise ValueError(f"{name} encodes preprocessed (B, 3, {size}, {size}) images; got {tuple(images.shape)}")
        return sam.image_encoder(images)

    def decode(embedding: torch.Tensor, **prompts: Any) -> tuple[torch.Tensor, torch.Tensor]:
        return sam_decode(sam, embedding, multimask_only=multimask_only, **prompts)

    config = {**config, "profile": profile.to_dict(), "mask_threshold": 0.0, "low_res_size": 4 * (size // 16)}
    return Segmenter(name, sam, profile, promptable=True, config=config, encode_fn=encode, decode_fn=decode)


def _tiny_vit_segmenter(name: str, *, multimask_only: bool, options: dict[str, Any]) -> Segmenter:
    encoder_keys = set(VIT_T)
    unknown = set(options) - encoder_keys - set(SAM_DECODER)
    if unknown:
        raise TypeError(f"{name} got unknown options {sorted(unknown)}; known: {sorted(encoder_keys | set(SAM_DECODER))}")
    enc = {**VIT_T, **{k: v for k, v in options.items() if k in encoder_keys}}
    dec = {**SAM_DECODER, **{k: v for k, v in options.items() if k in SAM_DECODER}}
    for key in ("embed_dims", "depths", "num_heads", "window_sizes"):
        enc[key] = tuple(enc[key])
    encoder = TinyViTImageEncoder(**enc)
    sam = build_sam_with_encoder(encoder, img_size=enc["img_size"], embed_dim=enc["out_chans"], **dec)
    sam.eval()
    profile = SAM_PROFILE if enc["img_size"] == SAM_PROFILE.input_size else PreprocessProfile("sam", enc["img_size"])

    config = {"family": name, "encoder": "tiny_vit_5m" if enc == VIT_T else "tiny_vit", **enc, **dec,
              "multimask_only": multimask_only}
    return sam_family_segmenter(name, sam, profile, config, multimask_only=multimask_only)


@register_segmenter("mobile_sam")
def mobile_sam(**options: Any) -> Segmenter:
    """MobileSAM (``mobile_sam.pt``): TinyViT-5M encoder distilled from SAM ViT-H, SAM's decoder."""
    return _tiny_vit_segmenter("mobile_sam", multimask_only=False, options=options)


@register_segmenter("tinysam")
def tinysam(**options: Any) -> Segmenter:
    """TinySAM (``tinysam.pth``): same architecture and keys; its decoder only outputs the 3 multimask tokens."""
    return _tiny_vit_segmenter("tinysam", multimask_only=True, options=options)
