"""The command line as the hardening tests drive it: photos on disk (the ``photos`` fixture, imported by the
modules that use it), the swap command, and the one-line error it must print."""

import cv2
import numpy as np
import pytest

from simswap_trt.cli import main as trt_main


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    from skimage import data

    folder = tmp_path_factory.mktemp("photos")
    astronaut = np.ascontiguousarray(data.astronaut()[..., ::-1])
    camera = cv2.cvtColor(data.camera(), cv2.COLOR_GRAY2BGR)
    cv2.imwrite(str(folder / "astronaut.png"), astronaut)
    cv2.imwrite(str(folder / "camera.png"), camera)
    cv2.imwrite(str(folder / "two.png"), np.hstack([camera, cv2.flip(astronaut, 1)]))
    return folder


def one_error_line(capsys, *fragments: str) -> str:
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1 and "Traceback" not in err, err
    for fragment in fragments:
        assert fragment in err, err
    return err


def swap(bundle, source, target, output, *extra):
    return trt_main(
        ["swap", "--bundle", str(bundle), "--source", str(source), "--target", str(target), "--output", str(output)]
        + list(extra)
    )
