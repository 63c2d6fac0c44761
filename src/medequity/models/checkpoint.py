"""Loading weights without executing code: safetensors, or ``torch.load(weights_only=True)``.

Accepts a file (``.safetensors``, ``.pth``/``.pt``/``.bin``) or a Hugging Face-style folder
(``model.safetensors`` or ``pytorch_model.bin`` beside ``config.json``). Nested checkpoints
(``{"state_dict": ...}``, ``{"model": ...}``) and wrapper prefixes (``module.``, ``model.``) are
unwrapped. Missing backbone keys are an error naming them; unexpected keys (e.g. a classifier
head we replace) are reported, not silently dropped.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

HF_WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin", "open_clip_model.safetensors", "open_clip_pytorch_model.bin")
NESTED_KEYS = ("state_dict", "model", "model_state_dict", "module", "net")
PREFIXES = ("module.", "model.", "backbone.", "encoder.")


class CheckpointError(ValueError):
    """A checkpoint cannot be read or does not fit the model; the message names the file and keys."""


@dataclass(frozen=True)
class LoadReport:
    path: str
    missing: tuple[str, ...]
    unexpected: tuple[str, ...]


def resolve_weights_file(path: str | Path) -> Path:
    path = Path(path)
    if path.is_dir():
        for name in HF_WEIGHT_FILES:
            if (path / name).is_file():
                return path / name
        raise CheckpointError(f"checkpoint folder {path} has none of {list(HF_WEIGHT_FILES)}")
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    return path


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """The tensors of a checkpoint, loaded without running any code from it."""
    file = resolve_weights_file(path)
    try:
        if file.suffix == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(str(file), device="cpu")
        else:
            state = torch.load(file, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any failure here is "cannot read", with the reason
        raise CheckpointError(f"cannot read checkpoint {file}: {exc}") from None
    for key in NESTED_KEYS:
        if isinstance(state, dict) and key in state and isinstance(state[key], dict):
            state = state[key]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise CheckpointError(f"checkpoint {file} does not hold a state dict of tensors")
    return state


def _strip_prefixes(state: dict[str, torch.Tensor], expected: set[str]) -> dict[str, torch.Tensor]:
    for prefix in PREFIXES:
        if not (set(state) & expected) and all(k.startswith(prefix) for k in state):
            state = {k[len(prefix):]: v for k, v in state.items()}
    return state


def load_weights(model: nn.Module, path: str | Path, *, ignore_missing: tuple[str, ...] = ()) -> LoadReport:
    """Load a checkpoint into ``model``; missing keys (other than ``ignore_missing`` prefixes) raise."""
    state = read_state_dict(path)
    expected = set(model.state_dict())
    state = _strip_prefixes(state, expected)
    shape_errors = [
        f"{k}: checkpoint {tuple(v.shape)} vs model {tuple(model.state_dict()[k].shape)}"
        for k, v in state.items()
        if k in expected and v.shape != model.state_dict()[k].shape
    ]
    if shape_errors:
        raise CheckpointError(f"checkpoint {path} does not fit the model: {shape_errors[:5]}")
    result = model.load_state_dict(state, strict=False)
    missing = tuple(k for k in result.missing_keys if not (ignore_missing and k.startswith(ignore_missing)))
    if missing:
        raise CheckpointError(
            f"checkpoint {path} lacks {len(missing)} weights of the model, e.g. {list(missing[:5])}; "
            "is it the right architecture?"
        )
    return LoadReport(str(path), missing, tuple(result.unexpected_keys))


def state_fingerprint(module: nn.Module) -> str:
    """A hash of a module's weights: the feature cache key changes whenever the weights do."""
    digest = hashlib.sha256()
    for name, tensor in sorted(module.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()[:16]
