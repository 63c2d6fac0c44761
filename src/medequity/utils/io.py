"""Atomic writes: a run stopped mid-write never leaves a half-written file behind."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any


def atomic_write_bytes(path: str | Path, data: bytes) -> Path:
    """Write to a temporary file in the same folder, fsync, then rename over ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        # mkstemp makes the file private (0600); give it the permissions a plain open() would.
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def atomic_write_text(path: str | Path, text: str) -> Path:
    return atomic_write_bytes(path, text.encode("utf-8"))


def atomic_save_safetensors(path: str | Path, tensors: Mapping[str, Any], metadata: Mapping[str, str] | None = None) -> Path:
    """Save torch tensors as a safetensors file at ``path`` atomically (see :func:`atomic_write_bytes`).

    Tensors are moved to the CPU and made contiguous (views of a state dict are fine); the file is
    serialised in memory, so no partial or temporary file is ever visible under ``path`` or left
    behind when serialisation or the write fails. ``metadata`` values must be strings.
    """
    from safetensors.torch import save

    if metadata is not None:
        bad = {k: type(v).__name__ for k, v in metadata.items() if not isinstance(k, str) or not isinstance(v, str)}
        if bad:
            raise TypeError(f"safetensors metadata keys and values must be str; got {bad}")
    cpu = {str(name): tensor.detach().cpu().contiguous() for name, tensor in tensors.items()}
    data = save(cpu, metadata=dict(metadata) if metadata is not None else None)
    return atomic_write_bytes(path, data)
