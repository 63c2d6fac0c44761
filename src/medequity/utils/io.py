"""Atomic writes: a run stopped mid-write never leaves a half-written file (or folder) behind."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Collection, Iterator, Mapping
from contextlib import contextmanager
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


@contextmanager
def atomic_directory(path: str | Path, *, replaceable: Collection[str] = ()) -> Iterator[Path]:
    """Build a report folder in a temporary sibling, then swap it in: all its files or none.

    Yields the temporary folder; write every file into it. When the block raises, the temporary
    folder is deleted and ``path`` is left exactly as it was. When it ends without an error:

    - if ``path`` is new, or holds only entries named in ``replaceable`` (the files an earlier run of
      the same writer made), the earlier folder is moved aside, the new one renamed into place and
      the old one deleted: ``path`` never holds a mix of an earlier run's files and this one's;
    - if ``path`` also holds other files (a training run's folder with its model, or ``--out .``),
      those are left alone: the new files are renamed in one by one and the ``replaceable`` files
      this run did not write (an earlier run's ``report.html`` when this one writes none) deleted.

    Nothing is renamed before every file is written, so a failure while rendering or writing leaves
    the earlier folder whole. The renames themselves are not one atomic step: a crash between them
    can leave the earlier folder under a ``.<name>.old-*`` sibling. A ``path`` that is a file raises
    :class:`NotADirectoryError` before anything is written.
    """
    path = Path(path)
    check_output_directory(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}.tmp-"))
    try:
        umask = os.umask(0)  # mkdtemp makes the folder private (0700); give it a plain mkdir's mode
        os.umask(umask)
        os.chmod(tmp, 0o777 & ~umask)
        yield tmp
        check_output_directory(path)  # it may have changed while the files were written
        if not path.exists() or all(entry.name in replaceable for entry in path.iterdir()):
            _swap_in(tmp, path)
        else:
            written = {entry.name for entry in tmp.iterdir()}
            for name in sorted(written):
                os.replace(tmp / name, path / name)
            for name in sorted(set(replaceable) - written):
                stale = path / name
                if stale.is_dir() and not stale.is_symlink():
                    shutil.rmtree(stale)
                else:
                    stale.unlink(missing_ok=True)
            tmp.rmdir()
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _swap_in(new: Path, path: Path) -> None:
    old = None
    if path.exists():
        old = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}.old-"))
        os.replace(path, old / path.name)
    os.replace(new, path)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def check_output_directory(path: str | Path) -> None:
    """Raise :class:`NotADirectoryError` when ``path`` exists and is not a folder (lets a command
    refuse a bad ``--out`` before any work)."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise NotADirectoryError(f"{path} is a file, not a folder; give a folder path (new, or an earlier report's)")
