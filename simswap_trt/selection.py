"""Which faces of an image to swap: the one selection policy of images (``FaceSwapper``) and video
(``StreamSwapper``, where a face's similarity is its track's).

``"all"`` faces; the ``"largest"`` face of each image (by box area, the first of equal ones); or the
faces whose cosine similarity to the reference identity is at least a threshold (``"reference"``; a face
without a similarity is not swapped)."""

from __future__ import annotations

import math
from collections.abc import Sequence

from simswap_trt.errors import InputError

SELECT_MODES = ("all", "largest", "reference")
# Cosine similarity between L2-normalised ArcFace latents above which a target face counts as the
# reference person (select="reference"). Same-person pairs of aligned crops typically score well above
# it, different people below; tune it for your footage.
DEFAULT_MATCH_THRESHOLD = 0.5


def check_select(select: str) -> None:
    """An ``InputError`` naming the modes when ``select`` is none of them."""
    if select not in SELECT_MODES:
        raise InputError(f"select must be one of {', '.join(SELECT_MODES)}, got {select!r}")


def select_faces(
    select: str,
    areas: Sequence[float],
    similarities: Sequence[float | None] = (),
    threshold: float = DEFAULT_MATCH_THRESHOLD,
) -> list[bool]:
    """Whether to swap each face of one image, given each one's box area and (for ``"reference"``) its
    similarity to the reference identity (None or NaN: unknown, not swapped)."""
    check_select(select)
    if select == "all":
        return [True] * len(areas)
    if select == "largest":
        largest = max(range(len(areas)), key=areas.__getitem__, default=-1)
        return [i == largest for i in range(len(areas))]
    if len(similarities) != len(areas):
        raise InputError(f"{len(similarities)} similarities for {len(areas)} faces")
    return [s is not None and not math.isnan(s) and s >= threshold for s in similarities]
