"""Input checks shared by every metric (METRICS.md, "Bad input").

Whole-input problems raise ``ValueError`` naming the argument; per-group problems (one class, too
few samples) are not errors: the group's value is NaN and a :class:`GroupMetricWarning` says why.
"""

from __future__ import annotations

import warnings

import numpy as np

# Groups with fewer samples are flagged (GroupMetricWarning) by every per-group function alike.
MIN_GROUP_SIZE = 30

# Rounding slack of a mean of values in [0, 1] (a weighted mean can land 1 ulp above 1).
_FRACTION_SLACK = 1e-9


class GroupMetricWarning(UserWarning):
    """A per-group value could not be computed (NaN) or rests on too few samples."""


def warn_group(message: str) -> None:
    warnings.warn(message, GroupMetricWarning, stacklevel=3)


def as_1d(values, name: str) -> np.ndarray:
    array = np.asarray(values)
    if array.ndim == 2 and 1 in array.shape:
        array = array.reshape(-1)
    if array.ndim != 1:
        raise ValueError(f"{name} must be one-dimensional; got shape {array.shape}")
    return array


def check_same_length(**arrays) -> int:
    lengths = {name: len(a) for name, a in arrays.items() if a is not None}
    if len(set(lengths.values())) > 1:
        detail = ", ".join(f"{name}={n}" for name, n in lengths.items())
        raise ValueError(f"inputs have different lengths: {detail}")
    n = next(iter(lengths.values()))
    if n == 0:
        raise ValueError(f"{next(iter(lengths))} is empty")
    return n


def check_binary(values, name: str = "y_true") -> np.ndarray:
    """Binary labels or hard predictions as int8 0/1 (bool and {0,1} numbers accepted)."""
    array = as_1d(values, name)
    if array.dtype == bool:
        return array.astype(np.int8)
    if array.dtype.kind not in "iuf":
        try:
            array = array.astype(np.float64)
        except (TypeError, ValueError):
            raise ValueError(f"{name} must be binary 0/1 numbers; got dtype {array.dtype}") from None
    if array.dtype.kind == "f" and not np.all(np.isfinite(array)):
        bad = np.flatnonzero(~np.isfinite(array))
        raise ValueError(f"{name} contains {bad.size} NaN/inf values (first at index {bad[0]})")
    found = np.unique(array)
    if not np.all(np.isin(found, (0, 1))):
        shown = ", ".join(str(v) for v in found[:10])
        raise ValueError(
            f"{name} must be binary (0/1); found values [{shown}]"
            " — map the positive class to 1 and the rest to 0 first"
        )
    return array.astype(np.int8)


def check_scores(values, name: str = "y_score", *, probability: bool = True) -> np.ndarray:
    """Scores as float64; finite; in [0, 1] when probabilities are required (BCE, ECE)."""
    array = as_1d(values, name)
    try:
        array = array.astype(np.float64)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be numeric scores; got dtype {array.dtype}") from None
    finite = np.isfinite(array)
    if not finite.all():
        bad = np.flatnonzero(~finite)
        raise ValueError(f"{name} contains {bad.size} NaN/inf values (first at index {bad[0]})")
    if probability and (array.min() < 0.0 or array.max() > 1.0):
        raise ValueError(
            f"{name} must be probabilities in [0, 1]; found range [{array.min():.4g}, {array.max():.4g}]"
            " — apply a sigmoid/softmax first"
        )
    return array


def check_fractions(values, name: str, function: str) -> None:
    """Raise if ``values`` (NaN allowed: an undefined group) leave [0, 1]: ``function``'s formula is
    defined on fractions, and a value above 1 is almost always a percentage (FairMedFM and FairDi
    print their tables in percent), which would silently give a wrong number."""
    array = np.asarray(values, dtype=np.float64)
    finite = array[np.isfinite(array)]
    if finite.size == 0:
        return
    high, low = finite.max(), finite.min()
    if high > 1.0 + _FRACTION_SLACK or low < -_FRACTION_SLACK:
        bad = high if high > 1.0 + _FRACTION_SLACK else low
        hint = f" — percentages? divide by 100 ({bad:g} -> {bad / 100:g})" if 1.0 < bad <= 100.0 else ""
        raise ValueError(
            f"{function} needs {name} as fractions in [0, 1] (AUC, accuracy, Dice, ...); found {bad:g}{hint}"
        )
