"""Lower tolerance bounds of per-face fidelity: what the INT8 recipe accepts a candidate graph on.

A one-sided normal tolerance bound: with probability ``confidence`` (over the draw of the check faces), at
least ``coverage`` of all faces score above ``mean - k * sd`` of the ``n`` check faces' scores, where
``k = t'(confidence; n - 1, z(coverage) * sqrt(n)) / sqrt(n)`` (``t'``: the noncentral t quantile, ``z``: the
standard normal quantile; Owen 1968). ``k`` grows as ``n`` shrinks, so a small check split asks for more
headroom by itself. Scales on which per-face scores are close to normal:

* generator: PSNR in dB (already the logarithm of the per-face MSE);
* ArcFace: ``log(1 - cosine)``, bounded from above, then mapped back to a cosine.
"""

from __future__ import annotations

import math

import numpy as np

COVERAGE = 0.95  # share of faces the bound holds for ...
CONFIDENCE = 0.90  # ... with this confidence
PSNR_CAP_DB = 150.0  # identical outputs (infinite PSNR) count as this
COSINE_FLOOR = 1e-12  # 1 - cosine below this (identical latents) counts as this

METHODS = {
    "generator": "one-sided normal tolerance bound mean - k*sd of per-face PSNR (dB)",
    "arcface": "one-sided normal tolerance bound of per-face log(1 - cosine) (mean + k*sd), mapped back to a cosine",
}


def tolerance_factor(n: int, coverage: float = COVERAGE, confidence: float = CONFIDENCE) -> float:
    """``k`` of the one-sided normal tolerance bound for ``n`` samples (``n >= 2``)."""
    from scipy.stats import nct, norm

    if n < 2:
        raise ValueError(f"a tolerance bound needs at least 2 samples, got {n}")
    if not (0 < coverage < 1 and 0 < confidence < 1):
        raise ValueError(f"coverage and confidence must lie in (0, 1), got {coverage} and {confidence}")
    return float(nct.ppf(confidence, n - 1, norm.ppf(coverage) * math.sqrt(n)) / math.sqrt(n))


def lower_bound(role: str, scores: np.ndarray, coverage: float = COVERAGE, confidence: float = CONFIDENCE) -> float:
    """The lower tolerance bound of per-face ``scores``: PSNR (dB) for the generator, cosine for ArcFace."""
    scores = np.asarray(scores, np.float64)
    k = tolerance_factor(len(scores), coverage, confidence)
    if role == "generator":
        psnr = np.minimum(scores, PSNR_CAP_DB)
        return float(psnr.mean() - k * psnr.std(ddof=1))
    distance = np.log(np.maximum(1.0 - scores, COSINE_FLOOR))
    return float(1.0 - np.exp(distance.mean() + k * distance.std(ddof=1)))
