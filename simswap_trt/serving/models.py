"""The served models as plain callables over one ``FaceSwapper``: Triton's request lists in, one reply dict
per request out. They know nothing of PyTriton, so they run (and are tested) without a server.

Each callable receives the requests Triton's dynamic batcher grouped together. Every request is checked and
decoded on its own first; the valid ones are then answered with batched swapper calls. A request that
cannot be served gets a reply of its own that carries only the ``error`` output (see ``refusal`` and
``failure``; the server turns it into an error reply for that request alone), so one bad request never
fails the others. If a batched call fails, each request of the batch is run alone, so that only the
request that fails gets the error. A target without a face is not an error: ``swap_image`` returns it
unchanged, with ``swapped`` 0 (as the CLI leaves such a target alone).
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from simswap_trt.constants import LATENT_SIZE
from simswap_trt.engines.scheduler import in_flight
from simswap_trt.errors import InputError, NoFaceError
from simswap_trt.images import MAX_PIXELS, decode_image, encode_image
from simswap_trt.provenance.signing import Provenance
from simswap_trt.swapper import FaceSwapper, InFlight

log = logging.getLogger(__name__)

Request = Mapping[str, np.ndarray]
Reply = dict[str, np.ndarray]
# One row per face in the ``faces`` output of swap_image; rows of absent faces (padding) are NaN.
FACE_COLUMNS = ("x1", "y1", "x2", "y2", "score", *(f"{a}{i}" for i in range(5) for a in "xy"), "swapped")
# The output of a failed request's reply: BYTES [1, 2], a Triton error code name and a one-line message.
ERROR = "error"
INVALID_ARG = "INVALID_ARG"  # the client's input is at fault: HTTP 400, gRPC INVALID_ARGUMENT
INTERNAL = "INTERNAL"  # the server is at fault: HTTP 500, gRPC INTERNAL


def refusal(model: str, message: str) -> Reply:
    """The reply to a request whose input cannot be served: ``message`` names the input and what is wrong."""
    return {ERROR: np.array([[INVALID_ARG.encode(), f"{model}: {message}".encode()]], dtype=object)}


def failure(model: str) -> Reply:
    """The reply to a request the server failed on: no detail for the client (it is in the server's log)."""
    message = f"{model}: the server failed on this request (the details are in the server's log)"
    return {ERROR: np.array([[INTERNAL.encode(), message.encode()]], dtype=object)}


def _bytes_items(request: Request, name: str) -> list[bytes]:
    """The encoded images of one request: a BYTES tensor [n, 1]."""
    items = [bytes(item) for item in np.asarray(request[name]).reshape(-1)]
    if not items:
        raise InputError(f"input '{name}' is empty")
    return items


def _latents(request: Request, count: int, default: np.ndarray | None) -> np.ndarray:
    """[count, 512] latents: the request's ``latent`` input (one per item), else the server's source."""
    if "latent" not in request:
        if default is None:
            raise InputError("input 'latent' is missing and the server was started without --source")
        return np.broadcast_to(default, (count, LATENT_SIZE))
    latent = np.asarray(request["latent"], np.float32)
    if latent.size != count * LATENT_SIZE or not np.isfinite(latent).all():
        raise InputError(f"input 'latent' must be finite float32 [{count}, {LATENT_SIZE}], one row per item")
    return latent.reshape(count, LATENT_SIZE)


def _blends(request: Request, count: int, swapper: FaceSwapper) -> list[float | None]:
    """The request's ``enhance`` input (float32 [count, 1], the restored face's share 0–1 per item), or None per
    item without one (the server's ``--enhance-blend``). Refused when the server runs no enhancer."""
    if "enhance" not in request:
        return [None] * count
    if swapper.enhance_model is None:
        raise InputError(
            "input 'enhance': this server has no face enhancer; start it with 'simswap-trt serve --enhancer' on a "
            "bundle with one ('simswap-build add-enhancer BUNDLE GFPGANv1.4.pth')"
        )
    blend = np.asarray(request["enhance"], np.float32).reshape(-1)
    if blend.size != count or not ((blend >= 0) & (blend <= 1)).all():
        raise InputError(f"input 'enhance' must be float32 [{count}, 1] between 0 and 1, one per item")
    return [float(b) for b in blend]


def _item_name(name: str, index: int) -> str:
    return f"input '{name}' item {index}"


class ServedModel:
    """A served model: ``prepare`` checks and decodes one request (an ``InputError`` refuses it), ``run``
    answers a list of prepared requests with one reply each, in batched swapper calls."""

    name = "model"

    def prepare(self, request: Request) -> Any:
        raise NotImplementedError

    def run(self, prepared: list[Any]) -> list[Reply]:
        raise NotImplementedError

    def __call__(self, requests: Sequence[Request]) -> list[Reply]:
        replies: dict[int, Reply] = {}
        work: dict[int, Any] = {}
        for i, request in enumerate(requests):
            try:
                work[i] = self.prepare(request)
            except InputError as exc:
                log.warning("%s: request refused: %s", self.name, exc)
                replies[i] = refusal(self.name, str(exc))
        replies.update(self._run_isolated(work))
        return [replies[i] for i in range(len(requests))]

    def _run_isolated(self, work: dict[int, Any]) -> dict[int, Reply]:
        """``run`` over ``work``; if it fails, each request alone, so that a failure is that request's only."""
        if not work:
            return {}
        try:
            return dict(zip(work, self.run(list(work.values())), strict=True))
        except Exception as exc:
            if len(work) > 1:
                log.warning("%s: a batch of %d requests failed (%s); running each alone", self.name, len(work), exc)
                return {k: v for i, item in work.items() for k, v in self._run_isolated({i: item}).items()}
            if isinstance(exc, InputError):
                log.warning("%s: request refused: %s", self.name, exc)
                return {i: refusal(self.name, str(exc)) for i in work}
            log.exception("%s: a request failed", self.name)
            return {i: failure(self.name) for i in work}


class SwapAligned(ServedModel):
    """``swap_aligned``: ``crops`` uint8 [n,S,S,3] BGR (+ optional ``latent`` float32 [n,512]) → ``swapped``
    uint8 [n,S,S,3]. All requests of a batch go through one ``FaceSwapper.swap_aligned`` call."""

    name = "swap_aligned"

    def __init__(self, swapper: FaceSwapper) -> None:
        self.swapper = swapper

    def prepare(self, request: Request) -> tuple[np.ndarray, np.ndarray]:
        crops = np.asarray(request["crops"])
        return crops, _latents(request, len(crops), self.swapper.source_latent)

    def run(self, prepared: list[tuple[np.ndarray, np.ndarray]]) -> list[Reply]:
        crops = [c for c, _ in prepared]
        swapped = self.swapper.swap_aligned(np.concatenate(crops), np.concatenate([lat for _, lat in prepared]))
        bounds = np.cumsum([len(c) for c in crops])[:-1]
        return [{"swapped": part} for part in np.split(swapped, bounds)]


class SwapImage(ServedModel):
    """``swap_image``: ``image`` encoded bytes [n,1] (+ optional ``latent`` [n,512], + optional ``enhance``
    float32 [n,1]: the restored face's share 0–1, on a server started with ``--enhancer``) → ``image`` encoded
    swapped bytes [n,1], ``swapped`` int32 [n,1] (faces swapped per image; 0: no face, the image comes back
    unchanged, without label or manifest) and ``faces`` float32 [n,F,16] (``FACE_COLUMNS``; NaN rows pad to
    the most faces, and stand alone in an image without faces). Requests using the same latent and enhance
    share are swapped in one batch, and the batches are kept in flight as ``FaceSwapper.swap_stream`` does
    (on the device, one is detected while the previous one is swapped). With a signer in ``provenance``, each swapped
    image carries a C2PA manifest with the request's image as its parent."""

    name = "swap_image"

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
        self._provenance = provenance or Provenance(synthetic)
        self._provenances: dict[bool, Provenance] = {}  # by whether the face enhancer ran

    def _models_of(self, swapper: FaceSwapper) -> Provenance:
        """The provenance of items ``swapper`` (this model's, or a variant with a request's enhance share)
        swapped: its models list the face enhancer only where it ran."""
        enhanced = swapper.enhancer is not None
        if enhanced not in self._provenances:
            self._provenances[enhanced] = self._provenance.with_models(swapper)
        return self._provenances[enhanced]

    def prepare(self, request: Request) -> list[tuple[np.ndarray, np.ndarray, bytes, str, float | None]]:
        """(image, latent, encoded image, name, enhance share or None) of each item."""
        encoded = _bytes_items(request, "image")
        latents = _latents(request, len(encoded), self.swapper.source_latent)
        blends = _blends(request, len(encoded), self.swapper)
        names = [_item_name("image", j) for j in range(len(encoded))]
        images = [decode_image(data, name, self.max_pixels) for data, name in zip(encoded, names, strict=True)]
        return list(zip(images, latents, encoded, names, blends, strict=True))

    def run(self, prepared: list[list[tuple[np.ndarray, np.ndarray, bytes, str, float | None]]]) -> list[Reply]:
        items = [item for request in prepared for item in request]
        results, provenances = [None] * len(items), [None] * len(items)
        groups = in_flight(self._groups(items), self._start, self._finish, self.swapper.stream_depth)
        for members, swapper, swapped in groups:
            for k, result in zip(members, swapped, strict=True):
                results[k], provenances[k] = result, self._models_of(swapper)
        done = [(r, p, data, name) for r, p, (_, _, data, name, _) in zip(results, provenances, items, strict=True)]
        starts = np.cumsum([0, *(len(request) for request in prepared)])
        return [self._reply(done[a:b]) for a, b in zip(starts[:-1], starts[1:], strict=True)]

    def _groups(self, items) -> list[tuple[list[int], FaceSwapper, list[np.ndarray]]]:
        """One batch per distinct latent and enhance share: the items' indices, the swapper for them (a
        shallow copy shares the engines but not the source identity nor the share) and their images."""
        groups: dict[tuple[bytes, float | None], list[int]] = {}
        for k, (_, latent, _, _, blend) in enumerate(items):
            groups.setdefault((np.ascontiguousarray(latent).tobytes(), blend), []).append(k)
        batches = []
        for (_, blend), members in groups.items():
            swapper = self.swapper if blend is None else self.swapper.with_enhance_blend(blend)
            latent = items[members[0]][1]
            if not np.array_equal(latent, swapper.source_latent):
                swapper = copy.copy(swapper)
                swapper.source_latent = np.asarray(latent, np.float32)
            batches.append((members, swapper, [items[k][0] for k in members]))
        return batches

    def _start(self, group) -> tuple[list[int], FaceSwapper, InFlight]:
        members, swapper, images = group
        return members, swapper, swapper.start_batch(images, swapper.detect(images), self.select)

    @staticmethod
    def _finish(started) -> tuple[list[int], FaceSwapper, list]:
        members, swapper, batch = started
        return members, swapper, swapper.finish_batch(batch)

    def _reply(self, done) -> Reply:
        """``done``: (result, its provenance, the request's encoded image, its name) of each item of one
        request."""
        results = [result for result, _, _, _ in done]
        images = [self._encode(*item) for item in done]
        most = max(1, *(len(r.faces) for r in results))  # one NaN row at least: no empty tensors on the wire
        faces = np.full((len(results), most, len(FACE_COLUMNS)), np.nan, np.float32)
        for n, result in enumerate(results):
            for f, face in enumerate(result.faces):
                faces[n, f] = [*face.box, face.score, *np.asarray(face.landmarks).reshape(-1), float(face.swapped)]
        swapped = np.array([[r.swapped_count] for r in results], np.int32)
        return {"image": np.array(images, dtype=object).reshape(-1, 1), "swapped": swapped, "faces": faces}

    def _encode(self, result, provenance: Provenance, data: bytes, name: str) -> bytes:
        """A swapped image labelled (and signed, with a signer); an unchanged one as it is."""
        if not result.swapped_count:
            return encode_image(result.image, self.image_format)
        encoded = encode_image(result.image, self.image_format, self.synthetic)
        return provenance.sign_image(encoded, self.image_format, data, name)


class Identity(ServedModel):
    """``identity``: ``image`` encoded bytes [n,1] → ``latent`` float32 [n,512], the identity of each
    image's largest face, computed by ``FaceSwapper.set_source`` on a shallow copy (the server's source
    identity stays as it is). An image without a face refuses its request (no identity to return)."""

    name = "identity"

    def __init__(self, swapper: FaceSwapper, max_pixels: int = MAX_PIXELS) -> None:
        self.swapper = swapper
        self.max_pixels = max_pixels

    def prepare(self, request: Request) -> list[np.ndarray]:
        encoded = _bytes_items(request, "image")
        return [decode_image(data, _item_name("image", j), self.max_pixels) for j, data in enumerate(encoded)]

    def run(self, prepared: list[list[np.ndarray]]) -> list[Reply]:
        return [self._reply(images) for images in prepared]

    def _reply(self, images: list[np.ndarray]) -> Reply:
        latents = []
        for j, image in enumerate(images):
            try:
                latents.append(copy.copy(self.swapper).set_source(image))
            except NoFaceError:
                log.warning("%s: request refused: %s has no face", self.name, _item_name("image", j))
                return refusal(self.name, f"{_item_name('image', j)}: no face found (an identity needs one face)")
        return {"latent": np.stack(latents)}
