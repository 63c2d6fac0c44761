"""Point and box prompts drawn from a ground-truth mask (SEGMENTATION.md, FairMedFM prompts).

Everything is in the pixel coordinates of the mask given (resize the mask to the model's input
size first, as FairMedFM does, or map the prompt afterwards). Points are ``(x, y)`` =
``(column, row)``; for a 3D mask ``(x, y, z)`` = ``(column, row, slice)`` — the array axes
reversed. Every point has label 1 (foreground).

Kinds (``PROMPT_KINDS``):

``center``
    ``mode="bbox_center"`` (FairMedFM): ``((xmin+xmax)//2, (ymin+ymax)//2)`` of the tight box. It
    can fall outside the object (in a ring's hole, in the notch of a crescent); :attr:`Prompt.inside`
    says whether it did, so callers can report per group how often.
    ``mode="interior"``: the pixel farthest from the background (argmax of the Euclidean distance
    transform; the image border counts as background). Always inside. Ties go to the pixel
    nearest the object's centroid, then to the first in row-major order.
``rand``
    One foreground pixel drawn uniformly.
``rands``
    ``k`` (default 5) foreground pixels drawn uniformly, with replacement by default (FairMedFM);
    ``replace=False`` draws distinct pixels (all of them when the object has fewer than ``k``).
``bbox``
    The tight inclusive box ``(x0, y0, x1, y1)`` (3D: ``(x0, y0, z0, x1, y1, z1)``). ``jitter=s``
    moves each side independently by up to ``s`` pixels (``jitter_direction="both"``: uniform in
    ``[-s, s]``; ``"outward"``: in ``[0, s]`` away from the object, MedSAM's training jitter),
    then clips to the image; if two opposite sides cross they are swapped, which keeps every side
    within ``s`` of the tight box.

Reproducibility: each (kind, class) prompt of a sample draws from its own generator seeded by
``SeedSequence([seed, stable_hash(sample_id), class, stable_hash(kind)])``, so prompts do not depend
on the order, batch size or worker count in which samples are processed (FairMedFM draws from the
global RNG). ``stable_hash`` is BLAKE2b of ``str(sample_id)`` (Python's ``hash`` of a string
changes between processes), so the ids ``5`` and ``"5"`` give the same prompts.

An absent class (no foreground pixel) gives ``None`` — no prompt, never a crash and never a
silent point at (0, 0). ``make_prompts(..., classes=None)`` prompts every class present.
"""

from __future__ import annotations

import functools
import hashlib
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy import ndimage

PROMPT_KINDS = ("center", "rand", "rands", "bbox")
CENTER_MODES = ("bbox_center", "interior")
JITTER_DIRECTIONS = ("both", "outward")

_OPTIONS: dict[str, dict[str, Any]] = {
    "center": {"mode": "bbox_center"},
    "rand": {},
    "rands": {"k": 5, "replace": True},
    "bbox": {"jitter": 0, "jitter_direction": "both"},
}


@dataclass(frozen=True)
class Prompt:
    """The prompt of one class of one image.

    ``points``: (N, ndim) int64 in (x, y[, z]) order (N = 0 for a box prompt); ``labels``: (N,)
    int64, all 1; ``box``: (2·ndim,) int64 inclusive ``(x0, y0[, z0], x1, y1[, z1])`` or None;
    ``kind``: one of :data:`PROMPT_KINDS`; ``class_id``: the mask value prompted; ``inside``:
    whether every point lies on the class's foreground (None for a box); ``mode``: the centre mode
    (None for other kinds).
    """

    points: np.ndarray
    labels: np.ndarray
    box: np.ndarray | None
    kind: str
    class_id: int
    inside: bool | None
    mode: str | None = None

    @property
    def n_points(self) -> int:
        return int(self.points.shape[0])


def stable_hash(value: Any) -> int:
    """A 64-bit hash of ``str(value)`` that is the same in every process and on every machine."""
    digest = hashlib.blake2b(str(value).encode("utf-8"), digest_size=8).digest()
    return int.from_bytes(digest, "little")


def prompt_rng(seed: int, sample_id: Any, class_id: int, kind: str) -> np.random.Generator:
    """The generator of one (sample, class, kind) prompt; see the module docstring."""
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
    entropy = [int(seed), stable_hash(sample_id), int(class_id), stable_hash(kind)]
    return np.random.default_rng(np.random.SeedSequence(entropy))


# --- one binary mask -> coordinates --------------------------------------------------------------


def _xy(index_coords: np.ndarray) -> np.ndarray:
    """(N, ndim) array-index coordinates (row-major axes) -> (N, ndim) (x, y[, z]) int64."""
    return np.ascontiguousarray(index_coords[:, ::-1]).astype(np.int64)


def _foreground(binary: np.ndarray) -> np.ndarray:
    """(N, ndim) array indices of the foreground, in row-major order."""
    return np.argwhere(binary)


def center_point(binary: np.ndarray, mode: str = "bbox_center") -> tuple[np.ndarray, bool]:
    """The centre point (x, y[, z]) of a non-empty binary mask and whether it is on the foreground."""
    if mode not in CENTER_MODES:
        raise ValueError(f"center mode must be one of {list(CENTER_MODES)}, got {mode!r}")
    coords = _foreground(binary)
    if len(coords) == 0:
        raise ValueError("the mask is empty: no centre point")
    if mode == "bbox_center":
        index = (coords.min(axis=0) + coords.max(axis=0)) // 2
    else:
        # Pad with background so that the image border counts as the object's edge.
        padded = np.pad(binary.astype(bool), 1, constant_values=False)
        distance = ndimage.distance_transform_edt(padded)[(slice(1, -1),) * binary.ndim]
        best = np.argwhere(distance == distance.max())  # row-major order
        if len(best) > 1:
            centroid = coords.mean(axis=0)
            gap = ((best - centroid) ** 2).sum(axis=1)
            best = best[gap == gap.min()]
        index = best[0]
    inside = bool(binary[tuple(index)])
    return _xy(index[None, :])[0], inside


def random_points(binary: np.ndarray, k: int, rng: np.random.Generator, *, replace: bool = True) -> np.ndarray:
    """``k`` foreground pixels (x, y[, z]) drawn uniformly (distinct ones with ``replace=False``)."""
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
        raise ValueError(f"k must be a positive integer, got {k!r}")
    coords = _foreground(binary)
    if len(coords) == 0:
        raise ValueError("the mask is empty: no foreground pixel to draw")
    if replace:
        chosen = rng.integers(0, len(coords), size=int(k))
    else:
        chosen = rng.choice(len(coords), size=min(int(k), len(coords)), replace=False)
    return _xy(coords[chosen])


def bounding_box(binary: np.ndarray, *, jitter: int = 0, jitter_direction: str = "both",
                 rng: np.random.Generator | None = None) -> np.ndarray:
    """Tight inclusive box ``(x0, y0[, z0], x1, y1[, z1])`` of a non-empty mask, optionally jittered."""
    if isinstance(jitter, bool) or not isinstance(jitter, (int, np.integer)) or jitter < 0:
        raise ValueError(f"jitter must be a non-negative integer number of pixels, got {jitter!r}")
    if jitter_direction not in JITTER_DIRECTIONS:
        raise ValueError(f"jitter_direction must be one of {list(JITTER_DIRECTIONS)}, got {jitter_direction!r}")
    coords = _foreground(binary)
    if len(coords) == 0:
        raise ValueError("the mask is empty: no bounding box")
    low = coords.min(axis=0)[::-1].astype(np.int64)  # (x0, y0[, z0])
    high = coords.max(axis=0)[::-1].astype(np.int64)
    if jitter:
        if rng is None:
            raise ValueError("a jittered box needs an rng")
        ndim = binary.ndim
        if jitter_direction == "both":
            low = low + rng.integers(-jitter, jitter + 1, size=ndim)
            high = high + rng.integers(-jitter, jitter + 1, size=ndim)
        else:
            low = low - rng.integers(0, jitter + 1, size=ndim)
            high = high + rng.integers(0, jitter + 1, size=ndim)
        limit = np.asarray(binary.shape[::-1], dtype=np.int64) - 1
        low, high = np.clip(low, 0, limit), np.clip(high, 0, limit)
        low, high = np.minimum(low, high), np.maximum(low, high)
    return np.concatenate([low, high]).astype(np.int64)


# --- prompts of a labelled mask ------------------------------------------------------------------


def _check_options(kind: str, options: dict[str, Any]) -> dict[str, Any]:
    if kind not in PROMPT_KINDS:
        raise ValueError(f"prompt kind must be one of {list(PROMPT_KINDS)}, got {kind!r}")
    valid = _OPTIONS[kind]
    unknown = [key for key in options if key not in valid]
    if unknown:
        allowed = ", ".join(valid) or "(none)"
        raise TypeError(f"unknown option(s) {unknown} for prompt kind {kind!r}; valid: {allowed}")
    return {**valid, **options}


def _one_prompt(binary: np.ndarray, kind: str, class_id: int, rng_factory: Callable[[], np.random.Generator],
                options: dict[str, Any]) -> Prompt | None:
    if not binary.any():
        return None
    ndim = binary.ndim
    no_points = np.zeros((0, ndim), dtype=np.int64)
    no_labels = np.zeros(0, dtype=np.int64)
    if kind == "center":
        point, inside = center_point(binary, options["mode"])
        return Prompt(point[None, :], np.ones(1, np.int64), None, kind, class_id, inside, options["mode"])
    if kind == "bbox":
        rng = rng_factory() if options["jitter"] else None
        box = bounding_box(binary, jitter=options["jitter"], jitter_direction=options["jitter_direction"], rng=rng)
        return Prompt(no_points, no_labels, box, kind, class_id, None)
    k, replace = (1, True) if kind == "rand" else (options["k"], options["replace"])
    points = random_points(binary, k, rng_factory(), replace=replace)
    return Prompt(points, np.ones(len(points), np.int64), None, kind, class_id, True)


def make_prompts(mask: np.ndarray, kind: str, *, seed: int, sample_id: Any, classes: Iterable[int] | None = None,
                 **options: Any) -> dict[int, Prompt | None]:
    """Prompts of one image's (or volume's) label mask, per class: ``{class: Prompt or None}``.

    ``mask``: 2D (H×W) or 3D (D×H×W) integer or boolean label map (a boolean mask is class 1).
    ``classes``: the class values to prompt (default: every non-zero value present); a requested
    class that is absent gives ``None``. ``options``: ``mode`` for ``center``; ``k`` and ``replace``
    for ``rands``; ``jitter`` and ``jitter_direction`` for ``bbox``.
    """
    options = _check_options(kind, options)
    mask = np.asarray(mask)
    if mask.ndim not in (2, 3):
        raise ValueError(f"mask must be 2D (H, W) or 3D (D, H, W), got shape {mask.shape}")
    if mask.dtype == bool:
        mask = mask.astype(np.uint8)
    if classes is None:
        class_list = [int(c) for c in np.unique(mask) if c != 0]
    else:
        class_list = [int(c) for c in classes]
        if 0 in class_list:
            raise ValueError("class 0 is the background and cannot be prompted")
    prompts: dict[int, Prompt | None] = {}
    for class_id in class_list:
        factory = functools.partial(prompt_rng, seed, sample_id, class_id, kind)
        prompts[class_id] = _one_prompt(mask == class_id, kind, class_id, factory, options)
    return prompts


def make_prompt_batch(masks: np.ndarray | Sequence[np.ndarray], kind: str, *, seed: int, sample_ids: Sequence[Any],
                      classes: Iterable[int] | None = None, **options: Any) -> list[dict[int, Prompt | None]]:
    """:func:`make_prompts` for each mask of a batch; identical to calling it one sample at a time."""
    if len(masks) != len(sample_ids):
        raise ValueError(f"{len(masks)} masks but {len(sample_ids)} sample ids")
    class_list = None if classes is None else list(classes)
    return [make_prompts(m, kind, seed=seed, sample_id=s, classes=class_list, **options)
            for m, s in zip(masks, sample_ids, strict=True)]


def inside_rate(prompts: Iterable[Prompt | None]) -> float:
    """Share of the given point prompts whose points all lie on their class (absent prompts skipped).

    NaN when there is no point prompt. Report it per group for ``center`` prompts: the
    ``bbox_center`` point misses hollow or curved objects more often.
    """
    flags = [p.inside for p in prompts if p is not None and p.inside is not None]
    return float(np.mean(flags)) if flags else float("nan")
