"""One SimSwap training step, and the run state that checkpoints and resumes.

Each step alternates the pair kind as the paper does: even steps take the source identity from another
photo of the target's person (the reconstruction loss applies), odd steps from a different person. The
generator is updated first, then the discriminator on the same (detached) result. The discriminator sees
images in [−1, 1]; its "real" images are the targets.
"""

from __future__ import annotations

import contextlib
import logging

import numpy as np
import torch

from simswap_build.models import Generator, MultiscaleDiscriminator, ResNet, identity_latent
from simswap_build.training import losses
from simswap_build.training.config import TrainConfig
from simswap_build.training.data import FaceSet, PairSampler
from simswap_build.training.models import freeze, keep_float32
from simswap_trt.errors import CheckpointError, InputError
from simswap_trt.vision.preprocess import crops_to_tensor

log = logging.getLogger(__name__)

MIN_CROP = 96
LOSS_NAMES = ("g_total", "g_adv", "g_fm", "g_id", "g_rec", "d_total", "d_real", "d_fake", "d_gp")


class Trainer:
    """Generator, discriminator, optimisers (Adam), random state and step counter of one run."""

    def __init__(
        self,
        config: TrainConfig,
        generator: Generator,
        arcface: ResNet,
        faces: FaceSet,
        discriminator: MultiscaleDiscriminator | None = None,
        device: str | torch.device = "cpu",
    ) -> None:
        if generator.config.family != "official":
            raise InputError("training needs an official-family generator (RGB [0,1] in and out, Tanh)")
        size = faces.crops.shape[1]
        if size % generator.config.size_multiple or size < MIN_CROP:
            raise InputError(
                f"crop size {size}: training needs a multiple of {generator.config.size_multiple} of at least "
                f"{MIN_CROP} px (the discriminator's coarse scale sees half of it)"
            )
        self.device = torch.device(device)
        if config.mixed_precision and self.device.type != "cuda":
            raise InputError("mixed precision is for CUDA devices; train in float32 on the CPU")
        self.config, self.faces, self.sampler = config, faces, PairSampler(faces)
        self.generator = generator.to(self.device).train()
        if discriminator is None:
            torch.manual_seed(config.seed + 1)
            discriminator = MultiscaleDiscriminator(config.ndf)
        self.discriminator = discriminator.to(self.device).train()
        self.arcface = freeze(arcface.to(self.device))
        if config.mixed_precision:
            keep_float32(self.generator), keep_float32(self.discriminator), keep_float32(self.arcface)
        betas = (config.beta1, config.beta2)
        self.optim_g = torch.optim.Adam(self.generator.parameters(), lr=config.lr, betas=betas)
        self.optim_d = torch.optim.Adam(self.discriminator.parameters(), lr=config.lr, betas=betas)
        self.scaler_g = torch.amp.GradScaler("cuda", enabled=config.mixed_precision)
        self.scaler_d = torch.amp.GradScaler("cuda", enabled=config.mixed_precision)
        self.rng = np.random.default_rng(config.seed)
        self.alpha_rng = torch.Generator().manual_seed(config.seed)
        self.step = 0

    # -- one step ------------------------------------------------------------------------------------------

    def _batch(self, indices: np.ndarray) -> torch.Tensor:
        crops = self.faces.crops[indices]
        return torch.from_numpy(crops_to_tensor(crops, crops.shape[1])).to(self.device)

    def _autocast(self):
        if self.config.mixed_precision:
            return torch.autocast(self.device.type, dtype=torch.float16)
        return contextlib.nullcontext()

    def train_step(self) -> dict[str, float]:
        """One generator and one discriminator update; returns every loss term (float)."""
        cfg = self.config
        same = self.step % 2 == 0
        target_idx, source_idx = self.sampler.sample(self.rng, cfg.batch_size, same)
        target, source = self._batch(target_idx), self._batch(source_idx)
        with torch.no_grad(), self._autocast():
            source_latent = identity_latent(self.arcface, source).float()

        self.discriminator.requires_grad_(False)
        with self._autocast():
            fake = self.generator(target, source_latent).float()
            fake_out = self.discriminator(fake * 2 - 1)
            with torch.no_grad():
                target_out = self.discriminator(target * 2 - 1)
            fake_latent = identity_latent(self.arcface, fake).float()
        fake_out = _float(fake_out)
        g_adv = losses.hinge_generator_loss(fake_out)
        g_fm = losses.feature_matching_loss(
            fake_out, _float(target_out), cfg.fm_first_layer, cfg.fm_layer_weight, cfg.fm_scale_weight
        )
        g_id = losses.identity_loss(fake_latent, source_latent)
        g_rec = losses.reconstruction_loss(fake, target) if same else fake.new_zeros(())
        g_total = g_adv + cfg.lambda_fm * g_fm + cfg.lambda_id * g_id + cfg.lambda_rec * g_rec
        self.optim_g.zero_grad(set_to_none=True)
        self.scaler_g.scale(g_total).backward()
        self.scaler_g.step(self.optim_g)
        self.scaler_g.update()

        self.discriminator.requires_grad_(True)
        real_in, fake_in = target * 2 - 1, fake.detach() * 2 - 1
        with self._autocast():
            real_out, fake_out = self.discriminator(real_in), self.discriminator(fake_in)
        d_real, d_fake = losses.hinge_discriminator_loss(_float(real_out), _float(fake_out))
        d_gp = fake.new_zeros(())
        if cfg.lambda_gp > 0:  # float32 outside autocast: a double backward through scaled fp16 is fragile
            alpha = torch.rand(len(target), 1, 1, 1, generator=self.alpha_rng).to(self.device)
            d_gp = losses.gradient_penalty(
                lambda x: losses.multiscale_score(self.discriminator(x)), real_in, fake_in, alpha
            )
        d_total = d_real + d_fake + cfg.lambda_gp * d_gp
        self.optim_d.zero_grad(set_to_none=True)
        self.scaler_d.scale(d_total).backward()
        self.scaler_d.step(self.optim_d)
        self.scaler_d.update()

        self.step += 1
        values = (g_total, g_adv, g_fm, g_id, g_rec, d_total, d_real, d_fake, d_gp)
        return {name: float(v.detach()) for name, v in zip(LOSS_NAMES, values, strict=True)}

    # -- state ---------------------------------------------------------------------------------------------

    def state_dict(self) -> dict:
        """Everything a resume needs, as CPU tensors and plain data (loadable with ``weights_only=True``)."""
        return {
            "step": self.step,
            "config": self.config.to_dict(),
            "generator_config": {
                "layout": self.generator.config.layout,
                "ngf": self.generator.config.ngf,
                "n_blocks": self.generator.config.n_blocks,
            },
            "generator": _cpu(self.generator.state_dict()),
            "discriminator": _cpu(self.discriminator.state_dict()),
            "optim_g": self.optim_g.state_dict(),
            "optim_d": self.optim_d.state_dict(),
            "scaler_g": self.scaler_g.state_dict(),
            "scaler_d": self.scaler_d.state_dict(),
            "numpy_rng": self.rng.bit_generator.state,
            "alpha_rng": self.alpha_rng.get_state(),
        }

    def load_state_dict(self, state: dict) -> None:
        """Restore a ``state_dict`` written for the same architecture (and normally the same config)."""
        g = self.generator.config
        mine = {"layout": g.layout, "ngf": g.ngf, "n_blocks": g.n_blocks}
        if state["generator_config"] != mine:
            raise CheckpointError(f"the checkpoint's generator {state['generator_config']} is not this run's {mine}")
        self.generator.load_state_dict(state["generator"])
        self.discriminator.load_state_dict(state["discriminator"])
        self.optim_g.load_state_dict(state["optim_g"])
        self.optim_d.load_state_dict(state["optim_d"])
        if state["scaler_g"]:
            self.scaler_g.load_state_dict(state["scaler_g"])
            self.scaler_d.load_state_dict(state["scaler_d"])
        self.rng.bit_generator.state = state["numpy_rng"]
        self.alpha_rng.set_state(state["alpha_rng"])
        self.step = int(state["step"])


def _float(outputs):
    return [[o.float() for o in scale] for scale in outputs]


def _cpu(state: dict) -> dict:
    return {k: v.detach().cpu().clone() for k, v in state.items()}
