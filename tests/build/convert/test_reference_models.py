"""The PyTorch reference blocks implement the spec's formulas (checked against independent torch ops)."""

import torch

from simswap_build.models.generator import ApplyStyle, InstanceNorm


def test_instance_norm_equals_torch_instance_norm_with_eps_1e8():
    x = torch.randn(2, 16, 9, 11, dtype=torch.float64) * 3 + 1
    reference = torch.nn.functional.instance_norm(x, eps=1e-8)
    assert torch.allclose(InstanceNorm()(x), reference, atol=1e-10)


def test_apply_style_is_x_times_one_plus_scale_plus_shift():
    style = ApplyStyle(8, 4)
    x, latent = torch.randn(3, 4, 5, 5), torch.randn(3, 8)
    params = latent @ style.linear.weight.T + style.linear.bias
    scale, shift = params[:, :4, None, None], params[:, 4:, None, None]
    assert torch.allclose(style(x, latent), x * (scale + 1) + shift, atol=1e-6)
