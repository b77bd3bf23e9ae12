"""The runtime (and the torch-free parts of the builder) work with torch made unimportable."""

import os
import subprocess
import sys
import textwrap

SCRIPT = textwrap.dedent(
    """
    import sys
    sys.modules["torch"] = None  # any 'import torch' now raises ImportError
    sys.path.insert(0, "tests")
    import numpy as np
    import simswap_trt
    from simswap_trt import FaceSwapper
    from simswap_build.convert.bundle import untrained_bundle
    from support.tiny import TINY_ARCFACE, TINY_GENERATOR
    bundle = untrained_bundle(sys.argv[1], generator_config=TINY_GENERATOR, arcface_config=TINY_ARCFACE)
    swapper = FaceSwapper.from_bundle(bundle.root)
    crops = np.zeros((2, 224, 224, 3), np.uint8)
    swapper.set_source_crops(crops[:1])
    out = swapper.swap_aligned(crops)
    assert out.shape == (2, 224, 224, 3) and out.dtype == np.uint8
    print("ok", sorted(m for m in sys.modules if m.split(".")[0] == "torch" and sys.modules[m] is not None))
    """
)


def test_runtime_runs_without_torch(tmp_path):
    result = subprocess.run([sys.executable, "-c", SCRIPT, str(tmp_path / "b")], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ok []"


def test_demo_without_torch_creates_an_untrained_bundle_and_says_so(tmp_path):
    """The README's main job on a fresh machine: full-size untrained bundle, whole pipeline, plain warning."""
    code = (
        f"import sys; sys.modules['torch'] = None; from simswap_trt.cli import main; "
        f"sys.exit(main(['demo', '--output', {str(tmp_path / 'out')!r}]))"
    )
    env = {**os.environ, "XDG_CACHE_HOME": str(tmp_path / "cache")}
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    assert result.returncode == 0, result.stderr
    assert "creating an UNTRAINED demo bundle" in result.stderr
    assert "camera.png: 1 face(s) found, 1 swapped" in result.stdout
    assert "two-faces.png: 2 face(s) found, 2 swapped" in result.stdout
    assert "THESE ARE NOT REAL SWAPS" in result.stdout
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [".simswap-demo", "camera.png", "two-faces.png"]
    again = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)  # the README twice
    assert again.returncode == 0 and "creating" not in again.stderr, again.stderr
    assert "two-faces.png: 2 face(s) found, 2 swapped" in again.stdout


def test_cli_help_without_torch():
    for module in ("simswap_trt.cli", "simswap_build.cli"):
        code = f"import sys; sys.modules['torch'] = None; from {module} import main; main(['--help'])"
        result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
        assert result.returncode == 0, result.stderr
        assert "examples:" in result.stdout
