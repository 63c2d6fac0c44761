"""Resampling weights for the bootstrap and the permutation test, generated in bounded chunks.

A bootstrap replicate is represented by how many times each sample is drawn (multinomial counts),
so metrics are weighted statistics (see :mod:`medequity.metrics.weighted`). Samples must be
arranged so that each stratum is a contiguous block; stratifying by group × label keeps every
group's positives and negatives in every replicate (METRICS.md), so no replicate loses a group.
Chunks hold at most ``max_elements`` weights, which bounds memory whatever n and B are.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

import numpy as np
from threadpoolctl import threadpool_limits

T = TypeVar("T")

DEFAULT_MAX_ELEMENTS = 1 << 22  # 4M float64 weights = 32 MB per chunk


def chunk_sizes(total: int, n: int, max_elements: int = DEFAULT_MAX_ELEMENTS) -> list[int]:
    per_chunk = max(1, min(total, max_elements // max(n, 1)))
    sizes = [per_chunk] * (total // per_chunk)
    if total % per_chunk:
        sizes.append(total % per_chunk)
    return sizes


def multinomial_counts(m: int, b: int, rng: np.random.Generator) -> np.ndarray:
    """``b`` independent resamples (with replacement) of ``m`` items, as counts of shape (b, m)."""
    return _counts(m, b, rng).astype(np.float64)


def _counts(m: int, b: int, rng: np.random.Generator) -> np.ndarray:
    """Integer counts (b, m) of ``multinomial_counts`` (the same draws from ``rng``)."""
    if m == 0:
        return np.zeros((b, 0), dtype=np.intp)
    draws = rng.integers(0, m, size=(b, m), dtype=np.int64 if m * b >= 2**31 else np.int32)
    draws += (np.arange(b, dtype=draws.dtype) * m)[:, None]
    return np.bincount(draws.ravel(), minlength=b * m).reshape(b, m)


def stratified_counts(strata_bounds: np.ndarray, b: int, rng: np.random.Generator, dtype=np.float64) -> np.ndarray:
    """Weights (b, n) whose rows are bootstrap replicates resampled within each stratum.

    ``strata_bounds`` are the block boundaries ``[0, e1, e2, ..., n]`` of the contiguous strata.
    ``dtype=np.int32`` gives the same counts as integers: half the memory of float64, and the
    engine's cumulative sums and segment sums of integers are exact and several times faster.
    """
    bounds = np.asarray(strata_bounds, dtype=np.int64)
    weights = np.empty((b, int(bounds[-1])), dtype=dtype)
    for start, end in zip(bounds[:-1], bounds[1:]):
        weights[:, start:end] = _counts(int(end - start), b, rng)
    return weights


def permuted_codes(codes: np.ndarray, strata: list[np.ndarray], b: int, rng: np.random.Generator) -> np.ndarray:
    """Group codes (b, n), each row shuffled within each stratum (index arrays)."""
    out = np.empty((b, codes.size), dtype=codes.dtype)
    for index in strata:
        out[:, index] = rng.permuted(np.broadcast_to(codes[index], (b, index.size)), axis=1)
    return out


def default_n_jobs() -> int:
    return max(1, min(4, os.cpu_count() or 1))


def map_chunks(
    work: Callable[[int, np.random.Generator], T],
    total: int,
    n: int,
    seed: np.random.SeedSequence,
    *,
    max_elements: int = DEFAULT_MAX_ELEMENTS,
    n_jobs: int | None = None,
) -> list[T]:
    """Run ``work(b, rng)`` over chunks of ``total`` replicates, in threads, results in order.

    Each chunk draws from its own child of ``seed``, so results are identical for any ``n_jobs``.
    NumPy releases the GIL in the sorting, cumulative sums and matrix products that dominate, so
    threads scale without copying the data into processes; at most ``n_jobs`` chunks are alive,
    which bounds memory.
    """
    sizes = chunk_sizes(total, n, max_elements)
    seeds = seed.spawn(len(sizes))
    jobs = n_jobs or default_n_jobs()
    tasks = [(b, np.random.default_rng(s)) for b, s in zip(sizes, seeds)]
    # The chunks are the parallelism: the engine's matrix products are thin (a chunk's replicates ×
    # a few dozen columns), and BLAS threads on top of the chunk threads oversubscribe the cores —
    # measured 10-20x slower per product on 2 busy cores than one BLAS thread per chunk.
    with threadpool_limits(limits=1, user_api="blas"):
        if jobs == 1 or len(tasks) == 1:
            return [work(b, rng) for b, rng in tasks]
        with ThreadPoolExecutor(max_workers=jobs) as pool:
            return list(pool.map(lambda task: work(*task), tasks))


def percentile_interval(replicates: np.ndarray, ci: float = 0.95, axis: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Percentile bootstrap interval, ignoring replicates where the statistic is undefined."""
    if not 0 < ci < 1:
        raise ValueError(f"ci must be in (0, 1); got {ci}")
    alpha = (1 - ci) / 2
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN slices give NaN, as intended
        low, high = np.nanquantile(replicates, [alpha, 1 - alpha], axis=axis)
    return low, high


def two_sided_p_value(replicate_differences: np.ndarray) -> float:
    """Bootstrap p-value for "difference = 0": twice the smaller tail mass at 0 (with +1 smoothing)."""
    d = replicate_differences[np.isfinite(replicate_differences)]
    if d.size == 0:
        return float("nan")
    below = (np.sum(d <= 0) + 1) / (d.size + 1)
    above = (np.sum(d >= 0) + 1) / (d.size + 1)
    return float(min(1.0, 2 * min(below, above)))
