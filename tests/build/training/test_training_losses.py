"""Each training loss equals an independent float64 NumPy computation of its formula on fixed tensors;
the gradient penalty's gradient norm is checked against analytic critics; the discriminator's per-scale
shapes at 224 follow the reference table."""

import numpy as np
import pytest
import torch

from simswap_build.models import MultiscaleDiscriminator
from simswap_build.training import losses
from simswap_build.training.config import TrainConfig

TOL = 1e-6


def fixed(*shape, seed=0):
    return torch.from_numpy(np.random.default_rng(seed).normal(size=shape)).float()


def scales(seed, batch=2):
    """Two scales of six outputs (five feature maps and a logit map) with varied shapes."""
    shapes = [
        (batch, 4, 8, 8),
        (batch, 6, 4, 4),
        (batch, 8, 3, 3),
        (batch, 8, 2, 2),
        (batch, 8, 2, 2),
        (batch, 1, 2, 2),
    ]
    return [[fixed(*s, seed=seed * 100 + 10 * k + i) for i, s in enumerate(shapes)] for k in range(2)]


def np64(t):
    return t.detach().double().numpy()


def test_identity_loss_is_one_minus_cosine():
    a, b = fixed(4, 512, seed=1), fixed(4, 512, seed=2)
    x, y = np64(a), np64(b)
    expected = np.mean(1 - (x * y).sum(1) / (np.linalg.norm(x, axis=1) * np.linalg.norm(y, axis=1)))
    assert abs(losses.identity_loss(a, b).item() - expected) < TOL
    assert abs(losses.identity_loss(a, a).item()) < TOL  # same embedding: no loss


def test_reconstruction_loss_is_mean_absolute_error():
    a, b = fixed(2, 3, 8, 8, seed=3), fixed(2, 3, 8, 8, seed=4)
    assert abs(losses.reconstruction_loss(a, b).item() - np.abs(np64(a) - np64(b)).mean()) < TOL


def test_hinge_losses():
    real, fake = scales(1), scales(2)
    g = np.mean([-np64(s[-1]).mean() for s in fake])
    d_real = np.mean([np.maximum(0, 1 - np64(s[-1])).mean() for s in real])
    d_fake = np.mean([np.maximum(0, 1 + np64(s[-1])).mean() for s in fake])
    assert abs(losses.hinge_generator_loss(fake).item() - g) < TOL
    got_real, got_fake = losses.hinge_discriminator_loss(real, fake)
    assert abs(got_real.item() - d_real) < TOL and abs(got_fake.item() - d_fake) < TOL
    assert d_real > 0 and d_fake > 0  # the fixed logits straddle the margins, so both terms are exercised


@pytest.mark.parametrize("first_layer", [0, 2, 3])
def test_feature_matching_formula(first_layer):
    fake, target = scales(3), scales(4)
    expected = sum(
        0.5 * 0.8 * np.abs(np64(f) - np64(t)).mean()
        for fs, ts in zip(fake, target, strict=True)
        for f, t in zip(fs[first_layer:5], ts[first_layer:5], strict=True)
    )
    got = losses.feature_matching_loss(fake, target, first_layer, layer_weight=0.8, scale_weight=0.5)
    assert abs(got.item() - expected) < TOL


def test_weak_feature_matching_ignores_first_layers_and_logits():
    fake, target = scales(5), scales(6)
    base = losses.feature_matching_loss(fake, target, first_layer=3).item()
    changed = [[t.clone() for t in s] for s in fake]
    for s in changed:
        s[0] += 5.0  # first layers and the logit map are not compared
        s[2] -= 3.0
        s[5] += 7.0
    assert losses.feature_matching_loss(changed, target, first_layer=3).item() == pytest.approx(base, abs=TOL)
    assert losses.feature_matching_loss(changed, target, first_layer=0).item() > base + 1.0
    changed[1][4] += 5.0  # a compared layer of the second scale
    assert losses.feature_matching_loss(changed, target, first_layer=3).item() > base + 2.0


def test_feature_matching_sends_no_gradient_through_the_target():
    fake, target = scales(7), scales(8)
    for s in fake + target:
        for t in s:
            t.requires_grad_(True)
    losses.feature_matching_loss(fake, target, first_layer=0).backward()
    assert all(t.grad is None for s in target for t in s)
    assert all(t.grad is not None for s in fake for t in s[:5])


def test_gradient_penalty_of_a_linear_critic_is_analytic():
    """c(x) = Σ w·x has gradient w everywhere: penalty (‖w‖ − 1)², and d/dw = 2(‖w‖ − 1) w/‖w‖."""
    w = fixed(1, 3, 4, 4, seed=9).requires_grad_(True)
    real, fake = fixed(3, 3, 4, 4, seed=10), fixed(3, 3, 4, 4, seed=11)
    alpha = torch.rand(3, 1, 1, 1, generator=torch.Generator().manual_seed(0))
    gp = losses.gradient_penalty(lambda x: (x * w).flatten(1).sum(1), real, fake, alpha)
    norm = np.linalg.norm(np64(w))
    assert abs(gp.item() - (norm - 1) ** 2) < 1e-5
    gp.backward()
    np.testing.assert_allclose(np64(w.grad), 2 * (norm - 1) * np64(w) / norm, atol=1e-5)


def test_gradient_penalty_is_taken_at_the_interpolates():
    """c(x) = Σ x³ has gradient 3x²: the norm depends on where the penalty is evaluated."""
    real, fake = fixed(2, 3, 5, 5, seed=12), fixed(2, 3, 5, 5, seed=13)
    alpha = torch.tensor([0.25, 0.8]).view(2, 1, 1, 1)
    gp = losses.gradient_penalty(lambda x: (x**3).flatten(1).sum(1), real, fake, alpha)
    a = np64(alpha)
    x = a * np64(real) + (1 - a) * np64(fake)
    norms = np.linalg.norm((3 * x**2).reshape(2, -1), axis=1)
    assert abs(gp.item() - np.mean((norms - 1) ** 2)) / np.mean((norms - 1) ** 2) < 1e-6


def test_multiscale_score_averages_the_logit_maps():
    outputs = scales(14)
    expected = np.mean([np64(s[-1]).reshape(2, -1).mean(1) for s in outputs], axis=0)
    np.testing.assert_allclose(losses.multiscale_score(outputs).numpy(), expected, atol=TOL)


def _conv_out(size, k, s, p):
    return (size + 2 * p - k) // s + 1


def test_discriminator_shapes_per_scale_at_224():
    """Reference table: Conv k4 s2 p1 ×4 (64, 128, 256, 512 channels), Conv k4 s1 p1 (512), Conv k4 s1 p1 (1);
    the second scale sees AvgPool(3, 2, 1) of the input."""
    d1, d2 = MultiscaleDiscriminator().eval()(torch.zeros(1, 3, 224, 224))
    for outputs, size in ((d1, 224), (d2, _conv_out(224, 3, 2, 1))):
        expected = []
        for channels, stride in ((64, 2), (128, 2), (256, 2), (512, 2), (512, 1), (1, 1)):
            size = _conv_out(size, 4, stride, 1)
            expected.append((1, channels, size, size))
        assert [tuple(o.shape) for o in outputs] == expected
    assert tuple(d1[-1].shape[2:]) == (12, 12) and tuple(d2[-1].shape[2:]) == (5, 5)


def test_reduced_width_discriminator_keeps_the_spatial_layout():
    d1, _ = MultiscaleDiscriminator(ndf=8).eval()(torch.zeros(1, 3, 224, 224))
    assert [o.shape[1] for o in d1] == [8, 16, 32, 64, 64, 1]
    assert tuple(d1[-1].shape[2:]) == (12, 12)


def test_recipes():
    paper, hd = TrainConfig.recipe("paper"), TrainConfig.recipe("pix2pixhd", lambda_id=5.0)
    assert (paper.lambda_id, paper.lambda_rec, paper.lambda_fm, paper.lambda_gp) == (10.0, 10.0, 10.0, 1e-5)
    assert (paper.beta1, paper.beta2, paper.fm_first_layer) == (0.0, 0.999, 3)
    assert (hd.lambda_id, hd.lambda_gp, hd.fm_first_layer, hd.beta1) == (5.0, 0.0, 0, 0.5)
    assert hd.fm_layer_weight * hd.fm_scale_weight * hd.lambda_fm == pytest.approx(0.5 * 0.8 * 10)
    with pytest.raises(ValueError, match="fm_first_layer"):
        TrainConfig(fm_first_layer=6)
