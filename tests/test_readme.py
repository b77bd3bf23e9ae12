"""The README's Python example runs as written (on a tiny random-weight bundle) and saves tagged images."""

import os
import re
import shutil

import cv2
import numpy as np
from PIL import Image
from support.paths import ROOT

from simswap_trt.provenance import DIGITAL_SOURCE_TYPE

README = ROOT / "README.md"


def readme_example() -> str:
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), re.S)
    return next(block for block in blocks if "FaceSwapper.from_bundle" in block)


def test_the_readme_python_example_runs_and_saves(tiny_bundle, tmp_path, monkeypatch):
    from skimage import data

    astronaut = np.ascontiguousarray(data.astronaut()[..., ::-1])
    camera = cv2.cvtColor(data.camera(), cv2.COLOR_GRAY2BGR)
    shutil.copytree(tiny_bundle.root, tmp_path / "bundles" / "simswap-224")
    for name in ("me1.jpg", "me2.jpg"):
        cv2.imwrite(str(tmp_path / name), astronaut)
    (tmp_path / "frames").mkdir()
    cv2.imwrite(str(tmp_path / "frames" / "a.jpg"), camera)
    cv2.imwrite(str(tmp_path / "frames" / "b.jpg"), np.hstack([camera, astronaut]))
    monkeypatch.chdir(tmp_path)
    exec(compile(readme_example(), str(README), "exec"), {})
    written = sorted(os.listdir(tmp_path / "swapped"))
    assert written == ["a.jpg", "b.jpg"]
    for name in written:
        with Image.open(tmp_path / "swapped" / name) as image:
            assert DIGITAL_SOURCE_TYPE in str(image.info["xmp"])
