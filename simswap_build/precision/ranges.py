"""Symmetric INT8 activation ranges (amax; scale = amax / 127, zero point 0) from a histogram of |x|.

A histogram here is ``counts`` over ``len(counts)`` bins of equal ``width`` starting at 0: bin ``j`` holds
the values with ``j * width <= |x| < (j + 1) * width``. Every method returns an upper bin edge.

* ``max``: the upper edge of the last non-empty bin, the largest |x| seen: nothing seen is clipped.
* ``percentile``: the smallest edge below which ``percentile`` % of the values lie.
* ``entropy``: TensorRT's entropy calibration. For every window of the first ``i >= 128`` bins, the
  reference distribution P is the window with everything above it added to its last bin; the candidate Q
  merges the window into 128 levels and spreads each level evenly over its non-empty bins. The window
  with the smallest KL(P || Q) wins (the widest one on ties).
* ``mse``: the edge that minimises the expected squared error of rounding to ``amax / 127`` steps and
  clipping at ``amax``, with every value at its bin's centre.
"""

from __future__ import annotations

import numpy as np

METHODS = ("max", "percentile", "entropy", "mse")
BINS = 2048
LEVELS = 128  # positive INT8 levels: 0..127, so 128 values per sign
PERCENTILE = 99.99


def max_amax(counts: np.ndarray, width: float) -> float:
    """The upper edge of the last non-empty bin."""
    return float((int(np.flatnonzero(counts)[-1]) + 1) * width)


def percentile_amax(counts: np.ndarray, width: float, percentile: float = PERCENTILE) -> float:
    """The smallest upper bin edge with at least ``percentile`` % of the counts at or below it."""
    cdf = np.cumsum(counts, dtype=np.float64)
    index = int(np.searchsorted(cdf, cdf[-1] * percentile / 100.0, side="left"))
    return float((min(index, len(counts) - 1) + 1) * width)


def _kl(p: np.ndarray, q: np.ndarray) -> float:
    p, q = p / p.sum(), q / q.sum()
    mask = p > 0
    if np.any(q[mask] == 0):
        return float("inf")
    return float(np.sum(p[mask] * np.log(p[mask] / q[mask])))


def entropy_amax(counts: np.ndarray, width: float, levels: int = LEVELS) -> float:
    """TensorRT-style entropy (KL) calibration; see the module docstring."""
    counts = np.asarray(counts, dtype=np.float64)
    tail = np.concatenate([np.cumsum(counts[::-1])[::-1], [0.0]])  # tail[i] = counts[i:].sum()
    best, best_edge = float("inf"), len(counts)
    for edge in range(levels, len(counts) + 1):
        window = counts[:edge]
        p = window.copy()
        p[-1] += tail[edge]
        level = np.arange(edge) * levels // edge
        nonzero = window > 0
        totals = np.bincount(level, weights=window, minlength=levels)
        filled = np.bincount(level, weights=nonzero, minlength=levels)
        q = np.where(nonzero, totals[level] / np.maximum(filled[level], 1), 0.0)
        if q.sum() == 0:
            continue
        divergence = _kl(p, q)
        if divergence <= best:
            best, best_edge = divergence, edge
    return float(best_edge * width)


def mse_amax(counts: np.ndarray, width: float) -> float:
    """The upper bin edge that minimises the expected squared quantization error; see the module docstring."""
    counts = np.asarray(counts, dtype=np.float64)
    centres = (np.arange(len(counts)) + 0.5) * width
    candidates = (np.arange(len(counts)) + 1) * width
    best, best_amax = float("inf"), float(candidates[-1])
    for start in range(0, len(candidates), 256):  # blocks bound the (candidates x bins) working set
        amax = candidates[start : start + 256, None]
        step = amax / 127.0
        rounded = np.minimum(np.round(centres / step), 127.0) * step
        error = np.where(centres <= amax, (centres - rounded) ** 2, (centres - amax) ** 2) @ counts
        i = int(np.argmin(error))
        if error[i] < best:
            best, best_amax = float(error[i]), float(amax[i, 0])
    return best_amax


def amax_from_histogram(method: str, counts: np.ndarray, width: float) -> float:
    """The ``method``'s amax for one tensor's histogram (0 for a tensor that is always 0)."""
    if width <= 0 or not np.any(counts):
        return 0.0
    if method == "max":
        return max_amax(counts, width)
    if method == "percentile":
        return percentile_amax(counts, width)
    if method == "entropy":
        return entropy_amax(counts, width)
    if method == "mse":
        return mse_amax(counts, width)
    raise ValueError(f"unknown range method {method!r}; choose from {', '.join(METHODS)}")
