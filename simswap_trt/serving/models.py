"""The served models as plain callables over one ``FaceSwapper``: Triton's request lists in, one output dict
per request out. They know nothing of PyTriton, so they run (and are tested) without a server.

Each callable receives the requests Triton's dynamic batcher grouped together and answers all of them with
batched swapper calls. A request that cannot be served (undecodable image, no face, malformed latent) raises
an ``InputError`` that names it; Triton returns that error to every request of the same batch, and the
next batch is served normally.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence

import numpy as np

from simswap_trt.constants import LATENT_SIZE
from simswap_trt.errors import InputError, NoFaceError
from simswap_trt.images import MAX_PIXELS, decode_image, encode_image
from simswap_trt.provenance.signing import Provenance
from simswap_trt.swapper import FaceSwapper

Request = Mapping[str, np.ndarray]
# One row per face in the ``faces`` output of swap_image; rows of absent faces (padding) are NaN.
FACE_COLUMNS = ("x1", "y1", "x2", "y2", "score", *(f"{a}{i}" for i in range(5) for a in "xy"), "swapped")


def _bytes_items(request: Request, name: str, index: int) -> list[bytes]:
    """The encoded images of one request: a BYTES tensor [n, 1]."""
    items = [bytes(item) for item in np.asarray(request[name]).reshape(-1)]
    if not items:
        raise InputError(f"request {index}: {name} is empty")
    return items


def _latents(request: Request, count: int, default: np.ndarray | None, index: int) -> np.ndarray:
    """[count, 512] latents: the request's ``latent`` input (one per item), else the server's source."""
    if "latent" not in request:
        if default is None:
            raise InputError(f"request {index} has no latent and the server was started without --source")
        return np.broadcast_to(default, (count, LATENT_SIZE))
    latent = np.asarray(request["latent"], np.float32)
    if latent.size != count * LATENT_SIZE or not np.isfinite(latent).all():
        raise InputError(f"request {index}: latent must be finite float32 [{count}, {LATENT_SIZE}]")
    return latent.reshape(count, LATENT_SIZE)


class SwapAligned:
    """``swap_aligned``: ``crops`` uint8 [n,S,S,3] BGR (+ optional ``latent`` float32 [n,512]) → ``swapped``
    uint8 [n,S,S,3]. All requests of a batch go through one ``FaceSwapper.swap_aligned`` call."""

    def __init__(self, swapper: FaceSwapper) -> None:
        self.swapper = swapper

    def __call__(self, requests: Sequence[Request]) -> list[dict[str, np.ndarray]]:
        crops = [np.asarray(r["crops"]) for r in requests]
        default = self.swapper.source_latent
        latents = [_latents(r, len(c), default, i) for i, (r, c) in enumerate(zip(requests, crops, strict=True))]
        swapped = self.swapper.swap_aligned(np.concatenate(crops), np.concatenate(latents))
        bounds = np.cumsum([len(c) for c in crops])[:-1]
        return [{"swapped": part} for part in np.split(swapped, bounds)]


class SwapImage:
    """``swap_image``: ``image`` encoded bytes [n,1] (+ optional ``latent`` [n,512]) → ``image`` encoded
    swapped bytes [n,1] and ``faces`` float32 [n,F,16] (``FACE_COLUMNS``, NaN rows pad to the most faces).
    Requests using the server's source are swapped in one ``FaceSwapper.swap_batch`` call. With a signer in
    ``provenance``, each returned image carries a C2PA manifest with the request's image as its parent."""

    def __init__(
        self,
        swapper: FaceSwapper,
        select: str = "all",
        image_format: str = ".png",
        synthetic: bool = True,
        max_pixels: int = MAX_PIXELS,
        provenance: Provenance | None = None,
    ) -> None:
        self.swapper = swapper
        self.select = select
        self.image_format = image_format
        self.synthetic = synthetic
        self.max_pixels = max_pixels
        self.provenance = (provenance or Provenance(synthetic)).with_models(swapper)

    def __call__(self, requests: Sequence[Request]) -> list[dict[str, np.ndarray]]:
        items = []  # (request, name, image, latent, encoded)
        for i, request in enumerate(requests):
            encoded = _bytes_items(request, "image", i)
            latents = _latents(request, len(encoded), self.swapper.source_latent, i)
            for j, (data, latent) in enumerate(zip(encoded, latents, strict=True)):
                name = f"request {i} image {j}"
                items.append((i, name, decode_image(data, name, self.max_pixels), latent, data))
        results = [None] * len(items)
        # one swap_batch per distinct latent; a shallow copy shares the engines but not the source identity
        groups: dict[bytes, list[int]] = {}
        for k, (_, _, _, latent, _) in enumerate(items):
            groups.setdefault(np.ascontiguousarray(latent).tobytes(), []).append(k)
        for members in groups.values():
            swapper = self.swapper
            if not np.array_equal(items[members[0]][3], swapper.source_latent):
                swapper = copy.copy(self.swapper)
                swapper.source_latent = np.asarray(items[members[0]][3], np.float32)
            for k, result in zip(members, swapper.swap_batch([items[k][2] for k in members], self.select), strict=True):
                if not result.swapped_count:
                    raise NoFaceError(f"{items[k][1]}: no face to swap ({len(result.faces)} detected)")
                results[k] = result
        owners = [item[0] for item in items]
        done = [(r, item[4], item[1]) for r, item in zip(results, items, strict=True)]
        return [self._response([d for i, d in zip(owners, done, strict=True) if i == n]) for n in range(len(requests))]

    def _response(self, done) -> dict[str, np.ndarray]:
        """``done``: (result, the request's encoded image, its name) of each item of one request."""
        results = [result for result, _, _ in done]
        images = [
            self.provenance.sign_image(
                encode_image(r.image, self.image_format, self.synthetic), self.image_format, data, name
            )
            for r, data, name in done
        ]
        most = max(len(r.faces) for r in results)
        faces = np.full((len(results), most, len(FACE_COLUMNS)), np.nan, np.float32)
        for n, result in enumerate(results):
            for f, face in enumerate(result.faces):
                faces[n, f] = [*face.box, face.score, *np.asarray(face.landmarks).reshape(-1), float(face.swapped)]
        return {"image": np.array(images, dtype=object).reshape(-1, 1), "faces": faces}


class Identity:
    """``identity``: ``image`` encoded bytes [n,1] → ``latent`` float32 [n,512], the identity of each
    image's largest face, computed by ``FaceSwapper.set_source`` on a shallow copy (the server's source
    identity stays as it is)."""

    def __init__(self, swapper: FaceSwapper, max_pixels: int = MAX_PIXELS) -> None:
        self.swapper = swapper
        self.max_pixels = max_pixels

    def __call__(self, requests: Sequence[Request]) -> list[dict[str, np.ndarray]]:
        answers = []
        for i, request in enumerate(requests):
            latents = []
            for j, data in enumerate(_bytes_items(request, "image", i)):
                name = f"request {i} image {j}"
                image = decode_image(data, name, self.max_pixels)
                try:
                    latents.append(copy.copy(self.swapper).set_source(image))
                except NoFaceError:
                    raise NoFaceError(f"{name}: no face found") from None
            answers.append({"latent": np.stack(latents)})
        return answers
