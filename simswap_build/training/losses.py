"""SimSwap's training losses, one small function each. Images are NCHW tensors; discriminator outputs are
what ``MultiscaleDiscriminator`` returns: per scale, the list of every layer's output (the last is the
hinge logit map)."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F

ScaleOutputs = Sequence[Sequence[torch.Tensor]]


def identity_loss(fake_latent: torch.Tensor, source_latent: torch.Tensor) -> torch.Tensor:
    """``mean_b(1 − cos(z_fake_b, z_source_b))``: cosine distance between the ArcFace embeddings of the
    result and of the source, averaged over the batch."""
    return (1.0 - F.cosine_similarity(fake_latent, source_latent, dim=1)).mean()


def reconstruction_loss(fake: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """``mean|fake − target|`` (L1 per element). Only meaningful when source and target are the same
    person; the trainer adds it on same-identity batches only."""
    return (fake - target).abs().mean()


def hinge_generator_loss(fake_outputs: ScaleOutputs) -> torch.Tensor:
    """``(1/K) Σ_k −mean(D_k(fake))`` over the K scales' logit maps."""
    return torch.stack([-outputs[-1].mean() for outputs in fake_outputs]).mean()


def hinge_discriminator_loss(
    real_outputs: ScaleOutputs, fake_outputs: ScaleOutputs
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(1/K) Σ_k mean(relu(1 − D_k(real)))`` and ``(1/K) Σ_k mean(relu(1 + D_k(fake)))``, returned
    separately (real term, fake term)."""
    real = torch.stack([F.relu(1.0 - outputs[-1]).mean() for outputs in real_outputs]).mean()
    fake = torch.stack([F.relu(1.0 + outputs[-1]).mean() for outputs in fake_outputs]).mean()
    return real, fake


def feature_matching_loss(
    fake_outputs: ScaleOutputs,
    target_outputs: ScaleOutputs,
    first_layer: int,
    layer_weight: float = 1.0,
    scale_weight: float = 1.0,
) -> torch.Tensor:
    """``Σ_k scale_weight · Σ_{i ≥ first_layer} layer_weight · mean|D_k^i(fake) − D_k^i(target)|`` over the
    intermediate layers i (0-based, the logit map excluded) of every scale k; the target's features are
    constants (no gradient into the discriminator from this term).

    ``first_layer`` > 0 is the paper's *weak* feature matching (only the last layers, which carry
    identity-agnostic attributes); ``first_layer=0`` with ``layer_weight = 4/(n_layers+1)`` and
    ``scale_weight = 1/K`` is pix2pixHD's full feature matching."""
    total = fake_outputs[0][0].new_zeros(())
    for fake, target in zip(fake_outputs, target_outputs, strict=True):
        pairs = zip(fake[first_layer:-1], target[first_layer:-1], strict=True)
        layers = [(f - t.detach()).abs().mean() for f, t in pairs]
        if layers:
            total = total + scale_weight * layer_weight * torch.stack(layers).sum()
    return total


def gradient_penalty(
    critic: Callable[[torch.Tensor], torch.Tensor], real: torch.Tensor, fake: torch.Tensor, alpha: torch.Tensor
) -> torch.Tensor:
    """WGAN-GP: ``mean_b (‖∇_x c(x)_b‖₂ − 1)²`` at ``x = α·real + (1 − α)·fake`` (α [B,1,1,1], uniform
    per sample), where ``c`` maps images [B,…] to one score per sample. The graph is kept so the
    penalty trains the discriminator."""
    x = (alpha * real.detach() + (1.0 - alpha) * fake.detach()).requires_grad_(True)
    (grad,) = torch.autograd.grad(critic(x).sum(), x, create_graph=True)
    return ((grad.flatten(1).norm(2, dim=1) - 1.0) ** 2).mean()


def multiscale_score(outputs: ScaleOutputs) -> torch.Tensor:
    """One score per sample for the gradient penalty: the mean of every scale's logit map."""
    return torch.stack([o[-1].flatten(1).mean(1) for o in outputs]).mean(0)
