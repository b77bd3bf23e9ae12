"""The official SimSwap post-processing, written the straightforward way the upstream scripts do it
(full-frame float64, one face at a time). It is the baseline of the benchmarks and the reference the
tests compare the fast paste-back with; it is not a product path."""

from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np
import onnx

from simswap_build.convert.architectures import ArcFaceConfig, GeneratorConfig


def paste_back_official(
    frame: np.ndarray, swaps_rgb01: Sequence[np.ndarray], matrices: Sequence[np.ndarray]
) -> np.ndarray:
    """``reverse2wholeimage`` without the parsing mask: ``swaps_rgb01`` are HxWx3 float RGB in [0, 1]."""
    height, width = frame.shape[:2]
    image = np.array(frame, dtype=np.float64)
    for swap, matrix in zip(swaps_rgb01, matrices, strict=True):
        inverse = cv2.invertAffineTransform(matrix)
        target = cv2.warpAffine(swap, inverse, (width, height))
        target = np.array(target, dtype=np.float64)[..., ::-1] * 255
        white = np.full(swap.shape[:2], 255, dtype=np.float64)
        white = cv2.warpAffine(white, inverse, (width, height))
        white[white > 20] = 255
        mask = cv2.erode(white, np.ones((40, 40), np.uint8), iterations=1)
        mask = cv2.GaussianBlur(mask, (41, 41), 0) / 255
        mask = mask[..., None]
        image = mask * target + (1 - mask) * image
    return image.astype(np.uint8)


class OfficialStylePipeline:
    """SimSwap as the upstream scripts run it: PyTorch eager FP32, batch 1, one face at a time, then the
    full-frame float64 paste-back above. Weights are random (speed does not depend on them); the detector
    and alignment are the caller's, so both pipelines see the same faces. Needs torch ('[build]' extra)."""

    def __init__(self, generator_config=None, arcface_config=None, crop_size: int = 224) -> None:
        import torch  # optional (the 'build' extra), as the models below: the harness runs without them

        from simswap_build.models import Generator, ResNet

        torch.manual_seed(0)
        self.torch = torch
        self.generator = Generator(generator_config or GeneratorConfig()).eval()
        self.arcface = ResNet(arcface_config or ArcFaceConfig()).eval()
        self.crop_size = crop_size
        self.latent = None

    @classmethod
    def for_bundle(cls, bundle) -> OfficialStylePipeline:
        """The baseline with the same architectures (widths, depths) as ``bundle``'s graphs."""

        def shapes(role: str) -> dict[str, list[int]]:
            model = onnx.load(bundle.path_of(role))
            return {init.name: list(init.dims) for init in model.graph.initializer}

        gen = shapes("generator")
        generator = GeneratorConfig.from_name(
            bundle.models["generator"].architecture,
            ngf=gen["down1.conv.weight"][1],
            n_blocks=sum(1 for name in gen if name.endswith(".conv1.weight") and name.startswith("BottleNeck.")),
        )
        arc = shapes("arcface")
        layers = tuple(
            sum(1 for n in arc if n.startswith(f"layer{s}.") and n.endswith(".conv1.weight")) for s in range(1, 5)
        )
        arcface = ArcFaceConfig(layers=layers, width=arc["conv1.weight"][0])
        return cls(generator, arcface, bundle.crop_size)

    def _tensor(self, frame: np.ndarray, matrix: np.ndarray):
        crop = cv2.warpAffine(frame, matrix, (self.crop_size, self.crop_size), borderValue=0)
        return self.torch.from_numpy(np.ascontiguousarray(crop[..., ::-1].transpose(2, 0, 1))).float().div(255)[None]

    def set_source(self, frame: np.ndarray, matrix: np.ndarray) -> None:
        from simswap_build.models import identity_latent  # imports torch (optional)

        with self.torch.no_grad():
            self.latent = identity_latent(self.arcface, self._tensor(frame, matrix))

    def swap(self, frame: np.ndarray, matrices: Sequence[np.ndarray]) -> np.ndarray:
        swaps = []
        with self.torch.no_grad():
            for matrix in matrices:
                out = self.generator(self._tensor(frame, matrix), self.latent)[0]
                swaps.append(out.permute(1, 2, 0).numpy())
        return paste_back_official(frame, swaps, matrices)
