"""What a zoo entry is (:class:`ZooEntry`), the ``ZOO`` table, and the helpers every family shares.

A zoo entry is a foundation model as its authors published it: the architecture, the file it comes
in and how that file names its keys, the layer its paper reads features from, its preprocessing,
its text tower and tokenizer (vision-language models), and its licence. Each family module builds
the module and calls :func:`zoo_backbone`, which attaches the entry's loading rules (the keys the
features do not use, e.g. MoCo's key encoder) so ``create_backbone(name, checkpoint=path)`` loads
the official file through :func:`medequity.models.checkpoint.load_weights`.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from medequity.models.checkpoint import CheckpointError, LoadReport, load_weights
from medequity.models.registry import Backbone, register_backbone

IMAGENET = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
OPENAI_CLIP = ((0.48145466, 0.4578275, 0.40821073), (0.26862954, 0.26130258, 0.27577711))
TOKENIZER_FILES = ("tokenizer.json", "vocab.txt", "tokenizer_config.json")


@dataclass(frozen=True)
class ZooEntry:
    """A published foundation model: architecture, file, feature layer, preprocessing, licence."""

    name: str
    paper: str
    architecture: str
    expected_file: str  # the file as published, and how its keys are laid out
    feature_layer: str  # what ``forward(images)`` returns (the paper's linear-probe layer)
    feature_dim: int
    input_size: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    licence: str
    formats: tuple[str, ...] = (".pth/.pt/.bin (torch, weights_only)", ".safetensors")
    channel_order: str = "RGB"  # grayscale images are replicated to 3 channels by the 2D transform
    resize: int | None = None  # None: FairMedFM's resize 256 -> centre crop 224 for 224-pixel models
    allow_unexpected: tuple[str, ...] = ()  # keys of the official file the features do not use
    allow_missing: tuple[str, ...] = ()
    # Renames from the published names to the module's, applied before the user's key_map (e.g.
    # transformers 5 renamed Dinov2's attention weights; files published earlier keep the old names).
    key_map: tuple[tuple[str, str], ...] = ()
    text: str | None = None  # text tower and tokenizer, for CLIP zero-shot / CLIP-Adapt
    notes: str = ""

    @property
    def zero_shot(self) -> bool:
        return self.text is not None

    def preprocess(self) -> dict[str, Any] | None:
        if self.resize is None:
            return None
        return {"resize": self.resize, "crop": self.input_size}

    def row(self) -> dict[str, Any]:
        """One line of ``medequity models list``."""
        return {"name": self.name, "architecture": self.architecture, "expected file": self.expected_file,
                "feature": f"{self.feature_dim}-d {self.feature_layer}",
                "preprocessing": (f"{self.channel_order} {self.resize or 256}->{self.input_size} px, "
                                  f"mean {_fmt(self.mean)} std {_fmt(self.std)}"),
                "zero-shot": self.text or "no (vision only)", "licence": self.licence}


def _fmt(values: Sequence[float]) -> str:
    return "/".join(f"{v:.3g}" for v in values) if len(set(values)) > 1 else f"{values[0]:.4g}"


ZOO: dict[str, ZooEntry] = {}


def merge(base: Mapping[str, Any], overrides: Mapping[str, Any] | None) -> dict[str, Any]:
    """``base`` with ``overrides`` merged in, one level of nested dicts deep (architecture configs)."""
    out = copy.deepcopy(dict(base))
    for key, value in (overrides or {}).items():
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = {**out[key], **value}
        else:
            out[key] = value
    return out


class HFTokenizer:
    """A Hugging Face tokenizer read from a local folder (never the hub): texts -> padded input ids.

    The text towers derive the attention mask from the padding id, as open_clip's HFTextEncoder does.
    """

    def __init__(self, folder: str | Path, context_length: int):
        folder = Path(folder)
        if not folder.is_dir() or not any((folder / f).is_file() for f in TOKENIZER_FILES):
            raise FileNotFoundError(f"tokenizer folder {folder} has none of {list(TOKENIZER_FILES)}; give the folder of "
                                    "the model's tokenizer files (as downloaded with the model)")
        from transformers import AutoTokenizer

        self.tokenizer = AutoTokenizer.from_pretrained(str(folder), local_files_only=True, trust_remote_code=False)
        self.context_length = context_length
        self.folder = str(folder)

    @property
    def pad_token_id(self) -> int:
        return int(self.tokenizer.pad_token_id or 0)

    def __call__(self, texts: Sequence[str] | str) -> torch.Tensor:
        texts = [texts] if isinstance(texts, str) else list(texts)
        out = self.tokenizer(texts, padding="max_length", truncation=True, max_length=self.context_length,
                             return_tensors="pt")
        return out["input_ids"]


def tokenizer_folder(tokenizer: str | Path | None, checkpoint: str | Path | None) -> Path | None:
    """The tokenizer folder: the one given, else the checkpoint folder when it holds tokenizer files."""
    if tokenizer is not None:
        return Path(tokenizer).expanduser()
    folder = Path(checkpoint).expanduser() if checkpoint is not None else None
    if folder is not None and folder.is_dir() and any((folder / f).is_file() for f in TOKENIZER_FILES):
        return folder
    return None


def freeze_text_tower(module: nn.Module, is_image_parameter: Callable[[str], bool]) -> None:
    """Only the image tower trains (FT/PEFT); nothing in FairMedFM trains a text tower."""
    for name, param in module.named_parameters():
        param.requires_grad_(is_image_parameter(name))


def attach_tokenizer(module: nn.Module, tokenizer: str | Path | None, context: int) -> Callable[[str | Path], None]:
    """Give a text model its tokenizer: from ``tokenizer`` (a folder) now, else from the checkpoint's
    folder once the weights load (the returned ``on_load``)."""
    folder = tokenizer_folder(tokenizer, None)
    module.tokenizer = HFTokenizer(folder, context) if folder is not None else None

    def find_tokenizer(path: str | Path) -> None:
        found = tokenizer_folder(tokenizer, path)
        if module.tokenizer is None and found is not None:
            module.tokenizer = HFTokenizer(found, context)

    return find_tokenizer


def zoo_backbone(entry: ZooEntry, module: nn.Module, *, load_into: nn.Module | None = None,
                 module_groups: Callable[[], dict[str, list[str]]] | None = None,
                 on_load: Callable[[str | Path], None] | None = None, config: dict[str, Any] | None = None) -> Backbone:
    """A :class:`Backbone` for ``module`` that loads the entry's official file into ``load_into``.

    ``on_load(path)`` runs after a successful load (e.g. to find a tokenizer beside the weights).
    """
    target = module if load_into is None else load_into

    def load_checkpoint(path: str | Path, *, key_map: Mapping[str, str] | None = None,
                        allow_unexpected: Sequence[str] | None = None, allow_missing: Sequence[str] = ()) -> LoadReport:
        try:
            report = load_weights(target, path, key_map={**dict(entry.key_map), **dict(key_map or {})},
                                  allow_unexpected=entry.allow_unexpected + tuple(allow_unexpected or ()),
                                  allow_missing=entry.allow_missing + tuple(allow_missing))
        except CheckpointError as exc:
            raise CheckpointError(f"{entry.name}: {exc}. Expected: {entry.expected_file}") from None
        if on_load is not None:
            on_load(path)
        return report

    backbone = Backbone(entry.name, module, entry.feature_dim, input_size=entry.input_size, mean=entry.mean,
                        std=entry.std, config={"zoo": entry.name, **(config or {})}, module_groups=module_groups,
                        load_checkpoint=load_checkpoint, preprocess=entry.preprocess())
    return backbone


def register_zoo(entry: ZooEntry) -> Callable[[Callable[..., Backbone]], Callable[..., Backbone]]:
    """Decorator: record ``entry`` in ``ZOO`` and register its factory as backbone ``entry.name``."""

    def decorator(factory: Callable[..., Backbone]) -> Callable[..., Backbone]:
        if entry.name in ZOO:
            raise ValueError(f"zoo model {entry.name!r} is registered twice")
        ZOO[entry.name] = entry
        return register_backbone(entry.name)(factory)

    return decorator


def resnet_features(arch: str = "resnet18") -> nn.Module:
    """A torchvision ResNet whose output is the global-average-pooled last stage (``fc`` removed).

    Its keys are torchvision's (``conv1``, ``layer1.0.conv1`` …), which the C2L and MoCo-CXR
    ResNets share; their checkpoints' ``fc`` weights (a contrastive projection) are unused.
    """
    import torchvision

    if arch not in ("resnet18", "resnet34", "resnet50"):
        raise ValueError(f"arch must be resnet18, resnet34 or resnet50, got {arch!r}")
    module = getattr(torchvision.models, arch)(weights=None)
    module.fc = nn.Identity()
    return module


def block_groups(module: nn.Module, blocks: str, *, attn: Sequence[str], mlp: Sequence[str],
                 norms: Sequence[str]) -> dict[str, list[str]]:
    """FairTune's per-block groups (``blocks.{i}.attn``/``.mlp``/``.norm``, as timm ViTs get them from
    :func:`~medequity.models.timm_backbones.timm_module_groups`) for transformers whose blocks have
    other names. ``blocks`` is the dotted path of the block list, or several joined by ``,`` (Swin's
    stages), numbered on in order; ``attn``/``mlp``/``norms``: the block's child names for each part."""
    groups: dict[str, list[str]] = {}
    paths = [p for spec in blocks.split(",") for p in _expand(module, spec.strip())]
    for i, path in enumerate(paths):
        for part, names in (("attn", attn), ("mlp", mlp), ("norm", norms)):
            groups[f"blocks.{i}.{part}"] = [f"{path}.{name}." for name in names]
    return groups


def _expand(module: nn.Module, spec: str) -> list[str]:
    """``a.b`` -> the block paths ``a.b.0``, ``a.b.1``…; ``a.*.b`` -> the same under every child of ``a``."""
    head, star, tail = spec.partition(".*.")
    if not star:
        return [f"{spec}.{i}" for i in range(len(module.get_submodule(spec)))]
    return [p for i in range(len(module.get_submodule(head))) for p in _expand(module, f"{head}.{i}.{tail}")]
