"""The check split: calibration faces and check faces, disjoint by content, and the variants each face is
seen in (calibration sees every variant of its faces; a check face scores the worst of its variants)."""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass

import cv2
import numpy as np

from simswap_trt.errors import InputError

log = logging.getLogger(__name__)

# Each face of both parts also as photographed differently: calibration sees these variants of its faces,
# and a check face scores the worst of its variants
VARIANTS = (
    "as is",
    "mirrored",
    "darker (x0.8 - 16)",
    "brighter (x1.2 + 16)",
    "turned 6 deg, 6 % larger",
    "turned -6 deg, 6 % smaller",
)
CHECK_FRACTION = 0.4  # share of the distinct faces held out as the check split ...
MIN_CHECK = 6  # ... but at least this many (the tolerance bound of fewer faces is very wide)
MIN_CALIBRATION = 4  # faces left for the activation histograms


@dataclass(frozen=True)
class FaceSplit:
    """Calibration and check faces, disjoint by content (sha256 of the aligned crop's pixels)."""

    calibration: np.ndarray
    check: np.ndarray
    calibration_sha256: tuple[str, ...]
    check_sha256: tuple[str, ...]
    fraction: float = CHECK_FRACTION
    min_check: int = MIN_CHECK

    def to_json(self) -> dict:
        return {
            "rule": (
                "unique aligned crops ranked by sha256 of their pixels; the lowest ranks are the check split: "
                f"{self.fraction:g} of them, at least {self.min_check}, at least {MIN_CALIBRATION} left for calibration"
            ),
            "calibration_faces": len(self.calibration),
            "check_faces": len(self.check),
            "calibration_sha256": list(self.calibration_sha256),
            "check_sha256": list(self.check_sha256),
        }


def face_sha256(crop: np.ndarray) -> str:
    """Content hash of an aligned crop (its shape and pixels)."""
    crop = np.ascontiguousarray(crop)
    return hashlib.sha256(str(crop.shape).encode() + crop.tobytes()).hexdigest()


def face_variants(crops: np.ndarray) -> np.ndarray:
    """Each aligned crop in the ``VARIANTS`` (consecutive: face i's variants at ``i * len(VARIANTS)``...)."""
    size = crops.shape[1]
    out = []
    for crop in crops:
        lit = crop.astype(np.float32)
        out += [crop, crop[:, ::-1]]
        for gain, offset in ((0.8, -16), (1.2, 16)):
            out.append(np.clip(np.rint(lit * gain + offset), 0, 255).astype(np.uint8))
        for angle, scale in ((6, 1.06), (-6, 0.94)):
            matrix = cv2.getRotationMatrix2D((size / 2, size / 2), angle, scale)
            out.append(cv2.warpAffine(crop, matrix, (size, size), borderMode=cv2.BORDER_REFLECT))
    return np.stack([np.ascontiguousarray(c) for c in out])


def check_count(faces: int, fraction: float = CHECK_FRACTION, min_check: int = MIN_CHECK) -> int:
    """How many of ``faces`` distinct faces the check split takes: ``max(min_check, round(fraction * faces))``.
    Raises ``InputError`` when fewer than ``MIN_CALIBRATION`` would be left for calibration."""
    if not 0 < fraction < 1:
        raise InputError(f"the check fraction must be between 0 and 1, got {fraction}")
    n_check = max(min_check, round(fraction * faces))
    if faces - n_check < MIN_CALIBRATION:
        raise InputError(
            f"INT8 needs at least {n_check + MIN_CALIBRATION} distinct faces ({n_check} for the check split, "
            f"{MIN_CALIBRATION} for calibration); the calibration folder gave {faces}: add photos (a dozen or more "
            "of different people, like your footage)"
        )
    return n_check


def split_faces(crops: np.ndarray, check_fraction: float = CHECK_FRACTION, min_check: int = MIN_CHECK) -> FaceSplit:
    """Split ``crops`` by content hash: duplicates are dropped, the unique crops are ranked by their hash
    and the first ``check_count(n)`` form the check split, which calibration never sees. Independent of
    file names and order."""
    unique: dict[str, int] = {}
    for i, crop in enumerate(crops):
        unique.setdefault(face_sha256(crop), i)
    if len(unique) < len(crops):
        log.warning("calibration: %d duplicate face(s) dropped", len(crops) - len(unique))
    ranked = sorted(unique)
    n_check = check_count(len(ranked), check_fraction, min_check)
    check, calibration = ranked[:n_check], ranked[n_check:]
    return FaceSplit(
        calibration=np.stack([crops[unique[h]] for h in calibration]),
        check=np.stack([crops[unique[h]] for h in check]),
        calibration_sha256=tuple(calibration),
        check_sha256=tuple(check),
        fraction=check_fraction,
        min_check=min_check,
    )
