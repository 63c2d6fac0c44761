"""Loading weights without executing code: safetensors, or ``torch.load(weights_only=True)``.

Accepted: a file (``.safetensors``, ``.pth``/``.pt``/``.bin``/``.tar``) or a Hugging Face-style folder
(``model.safetensors`` or ``pytorch_model.bin`` beside ``config.json``; open_clip's
``open_clip_model.safetensors``/``open_clip_pytorch_model.bin``). Training checkpoints nest the
weights (``{"state_dict": ...}``, ``{"model": ...}``, DINO's ``{"teacher": ...}``, any depth); they
are unwrapped. Key names are matched to the model by

1. the user's ``key_map`` (``{"old_prefix.": "new_prefix."}``, or ``{"re:<regex>": "<replacement>"}``
   for a regular expression), applied in order, then
2. repeated prefix stripping: wrapper prefixes (``module.`` of DataParallel, ``encoder.`` and
   ``encoder_q.`` of MoCo/C2L, ``backbone.``, ``model.``, ``teacher.``) are removed in whatever nesting
   order raises the number of keys the model knows (``encoder.module.`` in C2L,
   ``module.encoder_q.`` in MoCo-CXR); a prefix is only removed from the keys that carry it, so
   MoCo's key encoder (``encoder_k.``) and queue stay as unexpected keys.

Missing keys are always an error unless matched by ``allow_missing``; unexpected keys are an error
when ``allow_unexpected`` is given and they match none of its patterns (``fnmatch`` patterns such as
``"fc.*"``, ``"decoder_*"``), and are reported either way (:class:`LoadReport`).

OpenAI's CLIP ``.pt`` files are TorchScript archives: reading them means loading TorchScript, so they
are never read here. ``medequity models convert-openai SRC DST`` (:func:`convert_openai_checkpoint`)
converts one once, after checking its SHA-256 against OpenAI's published digest, into a plain
safetensors file.
"""

from __future__ import annotations

import fnmatch
import hashlib
import re
import zipfile
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

HF_WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin", "open_clip_model.safetensors", "open_clip_pytorch_model.bin")
#: Entries of a training checkpoint that hold the weights, in order of preference (DINO saves a
#: ``teacher`` and a ``student``: the teacher is the one its authors evaluate).
NESTED_KEYS = ("state_dict", "model", "model_state_dict", "teacher", "module", "net", "student")
#: Wrapper prefixes stripped (repeatedly, in any order) when that makes more keys fit the model.
PREFIXES = ("module.", "model.", "backbone.", "encoder.", "encoder_q.", "teacher.", "_orig_mod.")
#: Non-weight entries of OpenAI's CLIP archive (architecture hyper-parameters stored as tensors).
OPENAI_EXTRA_KEYS = ("input_resolution", "context_length", "vocab_size")
CONVERT_COMMAND = "medequity models convert-openai SRC DST"


class CheckpointError(ValueError):
    """A checkpoint cannot be read or does not fit the model; the message names the file and keys."""


@dataclass(frozen=True)
class LoadReport:
    """How a checkpoint's keys met the model's: what was missing, unexpected, allowed."""

    path: str
    missing: tuple[str, ...]
    unexpected: tuple[str, ...]
    renamed: dict[str, str] = field(default_factory=dict)  # checkpoint key -> model key, where they differ
    n_loaded: int = 0


def resolve_weights_file(path: str | Path) -> Path:
    path = Path(path).expanduser()
    if path.is_dir():
        for name in HF_WEIGHT_FILES:
            if (path / name).is_file():
                return path / name
        raise CheckpointError(f"checkpoint folder {path} has none of {list(HF_WEIGHT_FILES)}")
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    return path


def is_torchscript_archive(path: str | Path) -> bool:
    """True for a TorchScript zip (``code/`` and ``constants.pkl`` inside), e.g. OpenAI's CLIP ``.pt``."""
    path = Path(path)
    if not zipfile.is_zipfile(path):
        return False
    with zipfile.ZipFile(path) as archive:
        names = archive.namelist()
    return any(n.endswith("/constants.pkl") for n in names) or any("/code/" in n for n in names)


def _unwrap(state: object, file: Path) -> dict[str, torch.Tensor]:
    """The tensors of a (possibly nested) checkpoint payload."""
    while isinstance(state, dict) and not all(isinstance(v, torch.Tensor) for v in state.values()):
        inner = next((state[k] for k in NESTED_KEYS if isinstance(state.get(k), dict)), None)
        if inner is None:
            break
        state = inner
    if not isinstance(state, dict) or not state or not all(isinstance(v, torch.Tensor) for v in state.values()):
        entries = sorted(state)[:10] if isinstance(state, dict) else type(state).__name__
        raise CheckpointError(f"checkpoint {file} does not hold a state dict of tensors (found {entries}; weights are "
                              f"looked for under {list(NESTED_KEYS)})")
    return state


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """The tensors of a checkpoint, loaded without running any code from it."""
    file = resolve_weights_file(path)
    if file.suffix != ".safetensors" and is_torchscript_archive(file):
        raise CheckpointError(
            f"checkpoint {file} is a TorchScript archive (OpenAI's CLIP .pt format); it is not loaded implicitly "
            f"because reading TorchScript loads code. Convert it once with `{CONVERT_COMMAND}` (checks OpenAI's "
            "published SHA-256) and give the converted .safetensors file")
    try:
        if file.suffix == ".safetensors":
            from safetensors.torch import load_file

            state: object = load_file(str(file), device="cpu")
        else:
            state = torch.load(file, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any failure here is "cannot read", with the reason
        raise CheckpointError(f"cannot read checkpoint {file}: {exc}") from None
    return _unwrap(state, file)


def apply_key_map(keys: Iterable[str], key_map: Mapping[str, str] | None) -> dict[str, str]:
    """{old key: new key} after the user's renames: ``"prefix." -> "new."`` or ``"re:<regex>" -> repl``."""
    mapping = {k: k for k in keys}
    for pattern, replacement in (key_map or {}).items():
        if pattern.startswith("re:"):
            try:
                regex = re.compile(pattern[3:])
            except re.error as exc:
                raise CheckpointError(f"key_map entry {pattern!r} is not a valid regular expression: {exc}") from None
            mapping = {k: regex.sub(replacement, v) for k, v in mapping.items()}
        else:
            mapping = {k: replacement + v[len(pattern):] if v.startswith(pattern) else v for k, v in mapping.items()}
    return mapping


def _strip_prefixes(mapping: dict[str, str], expected: set[str], depth: int = 3) -> dict[str, str]:
    """Remove the sequence of wrapper prefixes (up to ``depth`` deep, any order) that makes the most
    keys known to the model; with no gain, nothing is removed. A prefix that alone gains nothing
    can still be needed (``encoder.`` before ``module.`` in C2L), so sequences are searched."""
    best, best_score = mapping, len(set(mapping.values()) & expected)
    frontier = [mapping]
    for _ in range(depth):
        next_frontier = []
        for current in frontier:
            for prefix in PREFIXES:
                if not any(v.startswith(prefix) for v in current.values()):
                    continue
                candidate = {k: v[len(prefix):] if v.startswith(prefix) else v for k, v in current.items()}
                if len(set(candidate.values())) != len(candidate):  # keys would collide: not a wrapper prefix
                    continue
                next_frontier.append(candidate)
                score = len(set(candidate.values()) & expected)
                if score > best_score:
                    best, best_score = candidate, score
        frontier = next_frontier
    return best


def match_keys(checkpoint_keys: Iterable[str], model_keys: Iterable[str], *,
               key_map: Mapping[str, str] | None = None) -> dict[str, str]:
    """{checkpoint key: model key} after ``key_map`` and prefix stripping (names only; no tensors)."""
    expected = set(model_keys)
    mapping = apply_key_map(checkpoint_keys, key_map)
    mapping = _strip_prefixes(mapping, expected)
    names = list(mapping.values())
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise CheckpointError(f"key_map maps several checkpoint keys to the same name, e.g. {duplicates[:5]}")
    return mapping


def _matches(name: str, patterns: Sequence[str]) -> bool:
    return any(fnmatch.fnmatchcase(name, p) for p in patterns)


def plan_load(checkpoint_keys: Iterable[str], model_keys: Iterable[str], *, source: str = "checkpoint",
              key_map: Mapping[str, str] | None = None, allow_missing: Sequence[str] = (),
              allow_unexpected: Sequence[str] | None = None) -> LoadReport:
    """Match keys and apply the rules, without tensors (a full-size model on the meta device works).

    Raises :class:`CheckpointError` for missing keys not in ``allow_missing``, and (when
    ``allow_unexpected`` is given) for unexpected keys none of its patterns match.
    """
    model_keys = list(model_keys)
    mapping = match_keys(checkpoint_keys, model_keys, key_map=key_map)
    present = set(mapping.values())
    missing = tuple(k for k in model_keys if k not in present)
    unexpected = tuple(sorted(v for v in present if v not in set(model_keys)))
    fatal_missing = [k for k in missing if not _matches(k, allow_missing)]
    if fatal_missing:
        raise CheckpointError(
            f"{source} lacks {len(fatal_missing)} weights of the model, e.g. {fatal_missing[:5]} (it has e.g. "
            f"{sorted(mapping)[:5]}); is it the right architecture? A differently named layout can be mapped with "
            "key_map={'old_prefix.': 'new_prefix.'}")
    if allow_unexpected is not None:
        fatal_unexpected = [k for k in unexpected if not _matches(k, allow_unexpected)]
        if fatal_unexpected:
            raise CheckpointError(
                f"{source} has {len(fatal_unexpected)} weights the model does not use, e.g. {fatal_unexpected[:5]}; "
                f"allowed unused weights: {list(allow_unexpected)}. If they are expected (a classifier head), allow "
                "them with allow_unexpected=['<pattern>'] or map them with key_map")
    renamed = {k: v for k, v in mapping.items() if k != v}
    return LoadReport(source, missing, unexpected, renamed, len(present) - len(unexpected))


def load_state(model: nn.Module, state: Mapping[str, torch.Tensor], *, source: str = "checkpoint",
               key_map: Mapping[str, str] | None = None, allow_missing: Sequence[str] = (),
               allow_unexpected: Sequence[str] | None = None) -> LoadReport:
    """Load tensors into ``model`` under the key rules of :func:`plan_load`; shapes must agree."""
    model_state = model.state_dict()
    report = plan_load(state, model_state, source=source, key_map=key_map, allow_missing=allow_missing,
                       allow_unexpected=allow_unexpected)
    mapping = match_keys(state, model_state, key_map=key_map)
    renamed = {mapping[k]: v for k, v in state.items() if mapping[k] in model_state}
    shape_errors = [f"{k}: checkpoint {tuple(v.shape)} vs model {tuple(model_state[k].shape)}"
                    for k, v in renamed.items() if v.shape != model_state[k].shape]
    if shape_errors:
        raise CheckpointError(f"{source} does not fit the model: {shape_errors[:5]}")
    model.load_state_dict(renamed, strict=False)
    return report


def load_weights(model: nn.Module, path: str | Path, *, key_map: Mapping[str, str] | None = None,
                 allow_missing: Sequence[str] = (), allow_unexpected: Sequence[str] | None = None) -> LoadReport:
    """Load a checkpoint file or folder into ``model`` (see the module docstring for the rules)."""
    return load_state(model, read_state_dict(path), source=f"checkpoint {path}", key_map=key_map,
                      allow_missing=allow_missing, allow_unexpected=allow_unexpected)


def sha256_file(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def openai_digests() -> dict[str, str]:
    """{SHA-256: model name} of OpenAI's CLIP files, as their download URLs publish them (via open_clip)."""
    import open_clip

    digests = {}
    for model, tag in open_clip.list_pretrained():
        if tag == "openai":
            url = open_clip.get_pretrained_cfg(model, tag).get("url", "")
            if "openaipublic" in url:
                digests[url.rstrip("/").split("/")[-2]] = model
    return digests


def convert_openai_checkpoint(src: str | Path, dst: str | Path, *, trust: bool = False) -> dict[str, object]:
    """Convert OpenAI's TorchScript CLIP archive to a plain safetensors state dict, once.

    The archive is only opened (``torch.jit.load``) when its SHA-256 equals a digest OpenAI
    publishes in its download URLs, or when ``trust=True``; the model's code is never run, only its
    parameters read. The architecture integers OpenAI stores as tensors (``input_resolution``,
    ``context_length``, ``vocab_size``) are dropped; the weights keep OpenAI's (= open_clip's) names.
    """
    src, dst = Path(src), Path(dst)
    if not src.is_file():
        raise CheckpointError(f"{src} not found")
    if not is_torchscript_archive(src):
        raise CheckpointError(f"{src} is not a TorchScript archive: give it to the loader directly (no conversion needed)")
    if Path(dst).suffix != ".safetensors":
        raise CheckpointError(f"destination {dst} must end in .safetensors")
    digest = sha256_file(src)
    known = openai_digests()
    if digest not in known and not trust:
        raise CheckpointError(f"{src} (sha256 {digest[:16]}…) is not one of OpenAI's published CLIP files; convert it "
                              "only if you trust its origin (--trust)")
    archive = torch.jit.load(str(src), map_location="cpu")
    state = {k: v.detach().contiguous().clone() for k, v in archive.state_dict().items() if k not in OPENAI_EXTRA_KEYS}
    from safetensors.torch import save_file

    dst.parent.mkdir(parents=True, exist_ok=True)
    save_file(state, str(dst), metadata={"source": src.name, "sha256": digest, "format": "openai-clip"})
    return {"model": known.get(digest), "sha256": digest, "n_tensors": len(state), "path": str(dst)}


def state_fingerprint(module: nn.Module) -> str:
    """A hash of a module's weights: the feature cache key changes whenever the weights do."""
    digest = hashlib.sha256()
    for name, tensor in sorted(module.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()[:16]
