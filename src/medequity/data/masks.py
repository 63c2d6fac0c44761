"""Mask coding: stored mask values (e.g. Montgomery's 128/255, FairSeg's −1/−2) → class indices.

``values="binary"``: any value > 0 is class 1. ``values=None``: the stored integers already are
class indices 0..len(classes)−1 (checked). A mapping ``{stored: class}``: values outside it are an
error naming the file (``other="error"``) or background (``other="background"``).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from medequity.data.base import DatasetFormatError


def encode_mask(raw: np.ndarray, values: Any, classes: list[str] | None, *, other: str = "error", where: str = "") -> np.ndarray:
    """Stored mask values → class indices ``0..len(classes)-1`` (see the module docstring)."""
    raw = np.asarray(raw)
    if values == "binary":
        return (raw > 0).astype(np.uint8)
    if classes is None:  # no coding given: the stored integers as they are
        return raw.astype(np.int64) if raw.dtype.kind != "f" else np.rint(raw).astype(np.int64)
    dtype = np.uint8 if len(classes) <= 256 else np.int32
    if values is None:
        found = np.unique(raw)
        bad = found[(found < 0) | (found >= len(classes))]
        if bad.size:
            raise DatasetFormatError(
                f"{where}: mask values {bad.tolist()[:10]} are not class indices 0..{len(classes) - 1} ({classes})"
            )
        return raw.astype(dtype)
    if not isinstance(values, Mapping):
        raise TypeError(f"mask_values must be 'binary', None or a mapping, got {values!r}")
    if raw.dtype.kind not in "iub":
        raw = np.rint(raw).astype(np.int64)
    if raw.size == 0:
        return np.zeros(raw.shape, dtype=dtype)
    # one look-up table over the span of stored values and coded keys (SPIDER codes ~200 values)
    keys = np.fromiter((int(k) for k in values), dtype=np.int64, count=len(values))
    low = int(min(raw.min(), keys.min()))
    high = int(max(raw.max(), keys.max()))
    table = np.full(high - low + 1, -1, dtype=np.int64)
    table[keys - low] = np.fromiter((int(v) for v in values.values()), dtype=np.int64, count=len(values))
    out = table[raw.astype(np.int64) - low]
    unknown = out < 0
    if unknown.any():
        if other != "background":
            found = np.unique(raw[unknown])
            raise DatasetFormatError(f"{where}: mask values {found.tolist()[:10]} are not in the coding {dict(values)}")
        out[unknown] = 0
    return out.astype(dtype)
