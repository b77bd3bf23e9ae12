"""Training settings: the paper's recipe by default, the released 2020 code's recipe as a preset.

Recipes (``TrainConfig.recipe(name)``):

* ``"paper"`` (SimSwap, ACM MM 2020): identity ``1 − cos`` (λ 10), reconstruction L1 on same-identity
  pairs (λ 10), hinge adversarial, WGAN-GP gradient penalty on D (λ 1e-5), *weak* feature matching over
  the last discriminator layers of both scales, comparing the result with the target (λ 10); Adam
  β = (0, 0.999).
* ``"pix2pixhd"`` (the first released training code): full feature matching over all intermediate layers
  weighted ``(1/2)·(4/5)·10``, λ_id 20, no gradient penalty, Adam β = (0.5, 0.999).

The second release's projected discriminator (a frozen ImageNet EfficientNet-Lite0 feature network) is
not offered: its pretrained weights cannot be fetched here, and without them it is a different model.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

RECIPES = ("paper", "pix2pixhd")
N_INTERMEDIATE = 5  # intermediate outputs of one PatchGAN scale (the sixth is the logit map)


@dataclass(frozen=True)
class TrainConfig:
    """Every knob of a run. Defaults are the paper's; see ``recipe``."""

    recipe_name: str = "paper"
    batch_size: int = 8
    lr: float = 2e-4
    beta1: float = 0.0
    beta2: float = 0.999
    lambda_id: float = 10.0
    lambda_rec: float = 10.0
    lambda_fm: float = 10.0
    lambda_gp: float = 1e-5
    fm_first_layer: int = 3  # weak FM: intermediate layers 3 and 4 (down4, conv1) of each scale, 0-based
    fm_layer_weight: float = 1.0
    fm_scale_weight: float = 1.0
    ndf: int = 64
    steps: int = 100_000
    checkpoint_every: int = 1000
    snapshot_every: int = 0  # also keep {step}_net_G.pth every this many steps (0: never)
    seed: int = 0
    mixed_precision: bool = False  # CUDA only; norms and styles always run in float32

    def __post_init__(self) -> None:
        if self.recipe_name not in RECIPES:
            raise ValueError(f"unknown recipe {self.recipe_name!r}; choose one of {', '.join(RECIPES)}")
        if not 0 <= self.fm_first_layer <= N_INTERMEDIATE:
            raise ValueError(f"fm_first_layer must be in 0..{N_INTERMEDIATE}, got {self.fm_first_layer}")
        for name in ("batch_size", "steps", "checkpoint_every", "ndf"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}")
        if self.batch_size < 2:
            raise ValueError("batch_size must be at least 2 (BatchNorm needs more than one sample)")

    @classmethod
    def recipe(cls, name: str = "paper", **overrides: Any) -> TrainConfig:
        """The preset ``name`` with ``overrides`` (any field) applied on top."""
        presets: dict[str, dict[str, Any]] = {
            "paper": {},
            "pix2pixhd": {
                "beta1": 0.5,
                "lambda_id": 20.0,
                "lambda_gp": 0.0,
                "fm_first_layer": 0,
                "fm_layer_weight": 4.0 / N_INTERMEDIATE,
                "fm_scale_weight": 0.5,
            },
        }
        if name not in presets:
            raise ValueError(f"unknown recipe {name!r}; choose one of {', '.join(RECIPES)}")
        return cls(recipe_name=name, **{**presets[name], **overrides})

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)
