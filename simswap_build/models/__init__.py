"""PyTorch reference models with the official SimSwap state_dict layouts."""

from simswap_build.convert.architectures import IR_SE_50, IR_SE_101, ArcFaceConfig, GeneratorConfig
from simswap_build.models.arcface import ResNet, identity_latent
from simswap_build.models.discriminator import MultiscaleDiscriminator, PatchDiscriminator
from simswap_build.models.generator import Generator

__all__ = [
    "IR_SE_50",
    "IR_SE_101",
    "ArcFaceConfig",
    "Generator",
    "GeneratorConfig",
    "MultiscaleDiscriminator",
    "PatchDiscriminator",
    "ResNet",
    "identity_latent",
]
