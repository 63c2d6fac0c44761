"""Encoding of sensitive features into integer group codes.

Accepts one attribute (any hashable values, 2+ groups) or several (a DataFrame, a dict of arrays or
a 2-D array), in which case the groups are their intersections, named ``"F & >60"``. Missing values
(None, NaN, pd.NA) are either dropped from the per-group analysis with a count (default) or kept as
their own ``"missing"`` group — never silently merged into another group.

This module is the one place group codes and intersection names are made (the lowest layer that
data, training and methods can all import):

- :func:`encode_groups` *discovers* the groups of some values (names = distinct values in
  :func:`group_sort_key` order: numeric bins by their bounds, ``<40``, ``40-<60``, ``>=60``);
- :meth:`Groups.from_names` encodes values against a *fixed* coding (e.g. the training split's
  group names applied to the test split): code = position in ``names``, ``-1`` for missing;
- :func:`group_names` is the coding a column implies (its categories, else its values in that order);
- :func:`intersection_name` / :func:`split_intersection`: an intersection of attributes is named
  ``"sex & age"`` and its groups ``"female & >60"``, with the one separator :data:`INTERSECTION_SEP`.
  On input the compact spelling ``"sex&age"`` (CLI options, saved specs) is accepted too.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from medequity.metrics._validation import warn_group

MISSING_LABEL = "missing"
INTERSECTION_SEP = " & "  # the one separator: attribute "sex & age", group "female & >60"
INTERSECTION_MARK = INTERSECTION_SEP.strip()  # what marks an intersection on input ("sex&age" too)
GROUP_PREFIX = "group:"  # table column of a grouped attribute: "group:<attribute>" (re-exported by data.base)
UNKNOWN_CODE = -1  # group code of a sample whose group is missing/unknown


def intersection_name(parts: Sequence[str]) -> str:
    """The name of an intersection, of attributes or of their values: ``("sex", "age")`` →
    ``"sex & age"``; ``("female", ">60")`` → ``"female & >60"``."""
    return INTERSECTION_SEP.join(str(part) for part in parts)


def is_intersection(name: str) -> bool:
    """Whether an attribute name names an intersection (``"sex & age"`` or ``"sex&age"``)."""
    return INTERSECTION_MARK in str(name)


def split_intersection(name: str) -> tuple[str, ...]:
    """The parts of an intersection name in either spelling: ``"sex&age"`` and ``"sex & age"``
    → ``("sex", "age")``; a plain name → ``(name,)``."""
    parts = tuple(part.strip() for part in str(name).split(INTERSECTION_MARK))
    if any(not part for part in parts):
        raise ValueError(f"intersection {name!r} has an empty part; write e.g. 'sex & age'")
    return parts


def canonical_attribute(name: str) -> str:
    """An attribute name in the one produced spelling: ``"sex&age"`` → ``"sex & age"``."""
    return intersection_name(split_intersection(name)) if is_intersection(name) else str(name)


def same_attribute(a: str, b: str) -> bool:
    """Whether two attribute names name the same attribute (intersections in either spelling)."""
    return canonical_attribute(a) == canonical_attribute(b)


# A group name that starts with a number, optionally after a comparison ("<40", ">=80", "40-<60",
# "80+", "3") or a quantile label ("Q2 [40, 55]"). Its order is that of the bin's lower bound.
_NUMERIC_GROUP = re.compile(r"^\s*(?:Q(?=\d))?(?P<op><=|<|>=|>)?\s*(?P<number>[-+]?\d+(?:\.\d+)?)")
_OPERATOR_RANK = {"<": 0, "<=": 1, None: 2, ">=": 2, ">": 3}


def group_sort_key(name: str) -> tuple:
    """Sort key listing groups as a reader expects: numeric bins in numeric order (``<40``,
    ``40-<60``, ``60-<80``, ``>=80``; ``<=60``, ``>60``; ``Q1`` … ``Q10``; ``2`` before ``10``),
    then text names in text order. Intersections (``"F & <40"``) sort part by part.

    Plain text order put ``40-<60`` before ``<40`` and ``10`` before ``2``. A bin is ordered by its
    lower bound: ``<X`` has none (first), ``X-<Y``/``>=X``/``X+`` start at X, ``>X`` just above X.
    """
    key = []
    for part in str(name).split(INTERSECTION_SEP):
        match = _NUMERIC_GROUP.match(part)
        if match is None:
            key.append((1, 0.0, 0.0, 0, part))
            continue
        number, op = float(match["number"]), match["op"]
        lower = -math.inf if op in ("<", "<=") else number
        key.append((0, lower, number, _OPERATOR_RANK[op], part))
    return tuple(key)


def sort_group_names(names) -> list[str]:
    """``names`` as text in :func:`group_sort_key` order."""
    return sorted((str(name) for name in names), key=group_sort_key)


def group_names(values) -> tuple[str, ...]:
    """The coding a column implies: a categorical's categories (a subset keeps them), otherwise the
    distinct known values as text in :func:`group_sort_key` order. Missing values are no group."""
    series = values if isinstance(values, pd.Series) else pd.Series(np.asarray(values, dtype=object))
    if isinstance(series.dtype, pd.CategoricalDtype):
        return tuple(str(c) for c in series.cat.categories)
    return tuple(sort_group_names({str(v) for v in series.dropna().unique()}))


@dataclass(frozen=True)
class Groups:
    """Integer group code per sample (``-1`` = excluded) and the name of each code."""

    codes: np.ndarray
    names: tuple[str, ...]
    attribute: str = "group"
    n_excluded_missing: int = 0
    n_excluded_small: int = 0
    small_groups: tuple[str, ...] = field(default=())

    @property
    def n_groups(self) -> int:
        return len(self.names)

    @classmethod
    def from_names(cls, values, names: Sequence[str], *, attribute: str = "group", unknown: str = "missing") -> Groups:
        """Encode ``values`` against a fixed, known coding: code = position of ``str(value)`` in
        ``names``, ``-1`` for a missing value (None, NaN, <NA>), counted in ``n_excluded_missing``.

        A value that is not in ``names`` is ``-1`` too with ``unknown="missing"`` (a group the
        training split never saw); ``unknown="raise"`` raises a ValueError naming it instead.
        """
        if unknown not in ("missing", "raise"):
            raise ValueError(f"unknown must be 'missing' or 'raise'; got {unknown!r}")
        names = tuple(str(name) for name in names)
        if len(set(names)) < len(names):
            raise ValueError(f"group names must be distinct; got {list(names)}")
        series = values if isinstance(values, pd.Series) else pd.Series(np.asarray(values, dtype=object))
        series = series.reset_index(drop=True).astype(object)
        missing = series.isna().to_numpy()
        # One lookup per distinct value, not per sample.
        value_codes, uniques = pd.factorize(series, use_na_sentinel=True)
        position = {name: code for code, name in enumerate(names)}
        lookup = np.array([position.get(str(v), UNKNOWN_CODE) for v in uniques] + [UNKNOWN_CODE], dtype=np.int64)
        codes = lookup[value_codes]  # the NA sentinel -1 reads the last entry: UNKNOWN_CODE
        not_in = (codes == UNKNOWN_CODE) & ~missing
        if not_in.any() and unknown == "raise":
            row = int(np.flatnonzero(not_in)[0])
            raise ValueError(f"group {series.iloc[row]!r} of row {row} is not in the coding {list(names)}")
        return cls(codes=codes, names=names, attribute=attribute, n_excluded_missing=int(missing.sum()))

    def encode(self, values, *, unknown: str = "missing") -> Groups:
        """Other values (e.g. another split) in this coding: same names, same codes."""
        return Groups.from_names(values, self.names, attribute=self.attribute, unknown=unknown)

    def name_of(self, code: int) -> str | None:
        """The group name of ``code`` (``None`` for -1, unknown)."""
        return None if code == UNKNOWN_CODE else self.names[code]

    def indices(self) -> list[np.ndarray]:
        """Sample indices of each group, in code order."""
        order = np.argsort(self.codes, kind="stable")
        sorted_codes = self.codes[order]
        bounds = np.searchsorted(sorted_codes, np.arange(self.n_groups + 1))
        return [order[bounds[g] : bounds[g + 1]] for g in range(self.n_groups)]


def _is_missing(series: pd.Series) -> np.ndarray:
    return series.isna().to_numpy()


def _as_frame(sensitive_features, n: int | None) -> pd.DataFrame:
    if isinstance(sensitive_features, pd.DataFrame):
        frame = sensitive_features.reset_index(drop=True)
    elif isinstance(sensitive_features, pd.Series):
        frame = sensitive_features.reset_index(drop=True).to_frame(name=sensitive_features.name or "group")
    elif isinstance(sensitive_features, dict):
        frame = pd.DataFrame({k: np.asarray(v, dtype=object) for k, v in sensitive_features.items()})
    else:
        array = np.asarray(sensitive_features, dtype=object)
        if array.ndim == 1:
            frame = pd.DataFrame({"group": array})
        elif array.ndim == 2:
            frame = pd.DataFrame(array, columns=[f"attribute_{i}" for i in range(array.shape[1])])
        else:
            raise ValueError(f"sensitive_features must be 1-D or 2-D; got shape {array.shape}")
    if frame.shape[1] == 0:
        raise ValueError("sensitive_features has no columns")
    if n is not None and len(frame) != n:
        raise ValueError(f"sensitive_features has {len(frame)} rows but y_true has {n}")
    return frame


def _format(value) -> str:
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def encode_groups(
    sensitive_features,
    n: int | None = None,
    *,
    missing: str = "drop",
    min_group_size: int = 1,
    drop_small: bool = False,
    require_two: bool = True,
) -> Groups:
    """Encode sensitive features as group codes.

    ``missing="drop"`` excludes samples with a missing value (counted in ``n_excluded_missing``);
    ``missing="category"`` makes them a group named ``"missing"``. Groups with fewer than
    ``min_group_size`` samples are flagged (``small_groups``) and, with ``drop_small=True``,
    excluded. Groups are listed in :func:`group_sort_key` order (numeric bins numerically), so
    results are reproducible and tables read in the bins' natural order.
    """
    if missing not in ("drop", "category"):
        raise ValueError(f"missing must be 'drop' or 'category'; got {missing!r}")
    frame = _as_frame(sensitive_features, n)
    attribute = intersection_name([str(c) for c in frame.columns])
    missing_mask = np.zeros(len(frame), dtype=bool)
    parts: list[np.ndarray] = []
    for column in frame.columns:
        series = frame[column]
        is_missing = _is_missing(series)
        # Format each distinct value once (not once per sample): 1M rows stay fast.
        codes_, uniques = pd.factorize(series, use_na_sentinel=True)
        value_names = [_format(v) for v in uniques]
        if missing == "category" and is_missing.any():
            value_names_and_missing = value_names + [MISSING_LABEL]
        else:
            value_names_and_missing = value_names
        if len(set(value_names_and_missing)) < len(value_names_and_missing):
            clashes = sorted({v for v in value_names_and_missing if value_names_and_missing.count(v) > 1})
            raise ValueError(
                f"sensitive_features column {column!r} has distinct values named alike {clashes} "
                "(e.g. 1 and '1', or a value 'missing' beside missing values); recode them first"
            )
        formatted = np.array(value_names + [MISSING_LABEL], dtype=object)
        labels = formatted[codes_]
        if missing == "category":
            labels[is_missing] = MISSING_LABEL
        else:
            missing_mask |= is_missing
        parts.append(labels)
    if len(parts) == 1:
        combined = parts[0]
    else:
        combined = np.array([intersection_name(vals) for vals in zip(*parts)], dtype=object)

    codes = np.full(len(frame), -1, dtype=np.int64)
    keep = ~missing_mask
    kept_values = combined[keep]
    names, kept_codes = (np.unique(kept_values.astype(str), return_inverse=True) if keep.any()
                         else (np.array([]), np.array([], dtype=np.int64)))
    order = np.array(sorted(range(len(names)), key=lambda i: group_sort_key(str(names[i]))), dtype=np.int64)
    rank = np.empty_like(order)
    rank[order] = np.arange(order.size)
    names, kept_codes = names[order], rank[np.asarray(kept_codes, dtype=np.int64).reshape(-1)]
    codes[keep] = kept_codes
    n_missing = int(missing_mask.sum())
    if n_missing:
        warn_group(f"{n_missing} samples have a missing {attribute!r} value and are excluded from its groups")

    sizes = np.bincount(codes[codes >= 0], minlength=len(names))
    small = tuple(str(names[g]) for g in np.flatnonzero(sizes < min_group_size))
    n_small = 0
    if small:
        if drop_small:
            small_codes = np.flatnonzero(sizes < min_group_size)
            drop = np.isin(codes, small_codes)
            n_small = int(drop.sum())
            remap = np.full(len(names) + 1, -1, dtype=np.int64)
            kept_group_codes = np.flatnonzero(sizes >= min_group_size)
            remap[kept_group_codes] = np.arange(kept_group_codes.size)
            codes = np.where(codes >= 0, remap[codes], -1)
            names = names[kept_group_codes]
            warn_group(f"groups {list(small)} of {attribute!r} have fewer than {min_group_size} samples and are excluded")
        else:
            warn_group(f"groups {list(small)} of {attribute!r} have fewer than {min_group_size} samples; their values are unreliable")
    if require_two and len(names) < 2:
        raise ValueError(
            f"sensitive_features must define at least two groups; {attribute!r} has "
            f"{len(names)}: {[str(v) for v in names]}"
        )
    return Groups(
        codes=codes,
        names=tuple(str(v) for v in names),
        attribute=attribute,
        n_excluded_missing=n_missing,
        n_excluded_small=n_small,
        small_groups=small,
    )
