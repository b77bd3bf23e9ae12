"""The served models as plain callables (no server, no PyTriton): the requests of one batch succeed or fail
each on its own, a failure is a one-line reply naming the input, a target without a face comes back
unchanged, and a batched call that fails is rerun request by request so that only the failing one fails."""

import copy

import cv2
import numpy as np
import pytest

from simswap_trt import FaceSwapper
from simswap_trt.serving import ERROR, Identity, SwapAligned, SwapImage
from simswap_trt.vision.detect import CenterFace


@pytest.fixture(scope="module")
def swapper(tiny_bundle):
    from skimage import data

    swapper = FaceSwapper.from_bundle(tiny_bundle.root, threads=1, detector=CenterFace(threads=1))
    swapper.set_source(np.ascontiguousarray(data.astronaut()[..., ::-1]))
    return swapper


@pytest.fixture(scope="module")
def face():
    from skimage import data

    return cv2.resize(np.ascontiguousarray(data.astronaut()[..., ::-1]), (256, 256))


def png(image):
    return {"image": np.array([[cv2.imencode(".png", image)[1].tobytes()]], dtype=object)}


def error(reply):
    """(code, message) of a failed request's reply, which carries nothing else."""
    assert set(reply) == {ERROR}, set(reply)
    code, message = (bytes(v).decode() for v in reply[ERROR].reshape(-1))
    return code, message


def decoded(reply, n=0):
    return cv2.imdecode(np.frombuffer(reply["image"][n, 0], np.uint8), cv2.IMREAD_COLOR)


def test_a_bad_request_fails_alone_in_its_batch(swapper, face):
    garbage = {"image": np.array([[b"\x89PNG not really"]], dtype=object)}
    no_latent_row = png(face) | {"latent": np.full((1, 512), np.inf, np.float32)}
    replies = SwapImage(swapper)([png(face), garbage, png(face), no_latent_row])
    want = swapper.swap(face)
    for good in (replies[0], replies[2]):
        assert np.abs(decoded(good).astype(int) - want.image).max() <= 1 and good["swapped"].tolist() == [[1]]
    code, message = error(replies[1])
    assert code == "INVALID_ARG" and message == (
        "swap_image: input 'image' item 0 is not a readable image (not an image format Pillow knows)"
    )
    code, message = error(replies[3])
    assert code == "INVALID_ARG" and "input 'latent' must be finite" in message and "\n" not in message


def test_a_target_without_a_face_comes_back_unchanged_and_untagged(swapper, face):
    blank = np.full((48, 64, 3), 90, np.uint8)
    replies = SwapImage(swapper)([png(blank), png(face)])
    assert replies[0]["swapped"].tolist() == [[0]] and np.isnan(replies[0]["faces"]).all()
    np.testing.assert_array_equal(decoded(replies[0]), blank)
    assert replies[0]["image"][0, 0] == cv2.imencode(".png", blank)[1].tobytes()  # no synthetic tag
    assert replies[1]["swapped"].tolist() == [[1]]


def test_identity_without_a_face_is_refused_alone(swapper, face):
    blank = np.full((64, 64, 3), 90, np.uint8)
    replies = Identity(swapper)([png(face), png(blank)])
    np.testing.assert_allclose(replies[0]["latent"][0], copy.copy(swapper).set_source(face), atol=1e-5)
    assert error(replies[1]) == (
        "INVALID_ARG",
        "identity: input 'image' item 0: no face found (an identity needs one face)",
    )


def test_a_failing_batch_is_rerun_so_only_the_failing_request_fails(swapper, face, caplog):
    """A crop the engine cannot take (planted): the batch fails, each request is run alone, and only the
    culprit gets an error: INTERNAL, one line, no detail (the traceback is in the server's log)."""
    real = swapper.swap_aligned

    class Planted(RuntimeError):
        pass

    def swap_aligned(crops, latents=None):
        if (crops == 7).all(axis=(1, 2, 3)).any():
            raise Planted("/srv/secret/engine.py: the engine broke")
        return real(crops, latents)

    model = SwapAligned(swapper)
    model.swapper = type("S", (), {"swap_aligned": staticmethod(swap_aligned), "source_latent": swapper.source_latent})
    crops = np.random.default_rng(1).integers(0, 256, (3, 224, 224, 3), dtype=np.uint8)
    culprit = np.full((1, 224, 224, 3), 7, np.uint8)
    replies = model([{"crops": crops[:2]}, {"crops": culprit}, {"crops": crops[2:]}])
    np.testing.assert_array_equal(replies[0]["swapped"], real(crops[:2]))
    np.testing.assert_array_equal(replies[2]["swapped"], real(crops[2:]))
    code, message = error(replies[1])
    assert code == "INTERNAL" and "/srv" not in message and "server's log" in message
    assert "Planted" in caplog.text and "a batch of 3 requests failed" in caplog.text
