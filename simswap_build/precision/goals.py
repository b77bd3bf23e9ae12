"""The accuracy goals of lower precision, defined once for the INT8 recipe, ``validate`` and the command line;
the error the recipe raises when it cannot meet them."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from simswap_build.precision import tolerance
from simswap_trt.errors import BuildError

METRICS = {"generator": "psnr_min_db", "arcface": "cosine_min"}  # the report's name of each role's per-face score
ENHANCER_FP16_GOAL_DB = 45.0  # the FP16 enhancer against its FP32 graph, on the worst face


class PrecisionGoalError(BuildError):
    """The INT8 recipe cannot meet its goals on the check split within the FP32 budget; ``report`` has the
    figures."""

    def __init__(self, message: str, report: dict):
        super().__init__(message)
        self.report = report


@dataclass(frozen=True)
class Goals:
    """INT8 accuracy goals per face (the one definition of their defaults): the check split's lower
    tolerance bound (``coverage`` of faces, with ``confidence``) and its worst face must reach them."""

    psnr_db: float = 35.0  # generator output vs FP32, per face
    cosine: float = 0.98  # ArcFace latent vs FP32, per face
    coverage: float = tolerance.COVERAGE
    confidence: float = tolerance.CONFIDENCE

    def goal(self, role: str) -> float:
        return self.psnr_db if role == "generator" else self.cosine

    def bound(self, role: str, scores: np.ndarray) -> float:
        """The lower tolerance bound of per-face ``scores`` (``simswap_build.precision.tolerance``)."""
        return tolerance.lower_bound(role, scores, self.coverage, self.confidence)
