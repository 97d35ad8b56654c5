"""Degradation operators: pseudo-inverse identities (float64), correction, shapes, errors."""

import pytest
import torch
import torch.nn.functional as F

from rediffuse.degradations import (
    AvgPoolDown,
    BicubicDown,
    GaussianBlur,
    Identity,
    fusion_constraint,
    get_degradation,
    range_null_correction,
)

OPS = [
    Identity(),
    GaussianBlur(1.0),
    GaussianBlur(3.0, eps=1e-4),
    AvgPoolDown(2),
    AvgPoolDown(4),
    BicubicDown(2),
    BicubicDown(4),
]
IDS = [repr(o) for o in OPS]


def _img(shape=(2, 3, 24, 32), seed=0, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(shape, generator=g, dtype=dtype) * 2 - 1


@pytest.mark.parametrize("op", OPS, ids=IDS)
def test_penrose_identities(op):
    x = _img()
    Ax = op.A(x)
    torch.testing.assert_close(op.A(op.A_pinv(Ax)), Ax, rtol=0, atol=1e-12)  # A A⁺ A = A
    y = _img(Ax.shape, seed=1)
    P = op.A_pinv(y)
    torch.testing.assert_close(op.A_pinv(op.A(P)), P, rtol=0, atol=1e-10)  # A⁺ A A⁺ = A⁺


@pytest.mark.parametrize("op", OPS, ids=IDS)
def test_range_null_correction_is_consistent(op):
    x_true, x0_hat = _img(seed=2), _img(seed=3)
    y = op.A(x_true)
    x = range_null_correction(x0_hat, y, op, lam=1.0)
    assert x.shape == x0_hat.shape
    torch.testing.assert_close(op.A(x), y, rtol=0, atol=1e-12)
    # λ = 0 leaves the estimate alone; a tensor λ broadcasts
    assert torch.equal(range_null_correction(x0_hat, y, op, lam=0.0), x0_hat)
    lam = torch.full((1, 1, 1, 1), 0.5, dtype=torch.float64)
    assert range_null_correction(x0_hat, y, op, lam=lam).shape == x0_hat.shape


@pytest.mark.parametrize("op", OPS, ids=IDS)
def test_shapes_and_float32(op):
    x = _img((1, 2, 16, 24), dtype=torch.float32)
    f = getattr(op, "factor", 1)
    y = op.A(x)
    assert y.shape == (1, 2, 16 // f, 24 // f) and y.dtype == torch.float32
    assert op.A_pinv(y).shape == x.shape
    torch.testing.assert_close(op.A(op.A_pinv(y)), y, rtol=0, atol=1e-5)


@pytest.mark.parametrize("op", [AvgPoolDown(2), BicubicDown(4)], ids=repr)
def test_non_divisible_size_is_a_clear_error(op):
    with pytest.raises(ValueError, match="not divisible by factor"):
        op.A(torch.zeros(1, 1, 18, 17))


def test_avgpool_pinv_is_replication():
    op = AvgPoolDown(2)
    y = _img((1, 1, 3, 4))
    up = op.A_pinv(y)
    assert torch.equal(up[..., ::2, ::2], y) and torch.equal(up[..., 1::2, 1::2], y)
    assert torch.equal(op.A(up), y)  # A A⁺ = I


def test_blur_matches_circular_convolution():
    """Away from the eps-truncated frequencies A is the periodic Gaussian blur."""
    sigma, n = 1.5, 16
    op = GaussianBlur(sigma, eps=1e-12)
    x = _img((1, 1, n, n))
    d = torch.tensor([min(i, n - i) for i in range(n)], dtype=torch.float64)
    k1 = torch.exp(-(d**2) / (2 * sigma**2))
    k1 = k1 / k1.sum()
    ref = torch.zeros_like(x)
    for i in range(n):
        for j in range(n):
            ref += k1[i] * k1[j] * torch.roll(x, shifts=(i, j), dims=(-2, -1))
    torch.testing.assert_close(op.A(x), ref, rtol=0, atol=1e-10)
    # mean preserved (kernel sums to 1)
    assert float(op.A(x).mean()) == pytest.approx(float(x.mean()), abs=1e-12)


def test_bicubic_matches_torch_antialiased_in_interior():
    """Same kernel and sampling grid as torch/MATLAB bicubic with antialiasing; only the border
    handling differs (symmetric reflection here)."""
    x = _img((1, 1, 32, 32))
    ours = BicubicDown(2).A(x)
    ref = F.interpolate(x, scale_factor=0.5, mode="bicubic", antialias=True, align_corners=False)
    torch.testing.assert_close(ours[..., 2:-2, 2:-2], ref[..., 2:-2, 2:-2], rtol=0, atol=1e-12)
    # rows of the operator sum to one: constants are preserved
    c = torch.full((1, 1, 16, 24), 0.3, dtype=torch.float64)
    torch.testing.assert_close(BicubicDown(4).A(c), torch.full((1, 1, 4, 6), 0.3, dtype=torch.float64))


def test_degrade_noise_from_generator():
    op = AvgPoolDown(2)
    x = _img((2, 1, 64, 64))
    a = op.degrade(x, 0.1, torch.Generator().manual_seed(5))
    b = op.degrade(x, 0.1, torch.Generator().manual_seed(5))
    c = op.degrade(x, 0.1, torch.Generator().manual_seed(6))
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert float((a - op.A(x)).std()) == pytest.approx(0.1, rel=0.1)
    assert torch.equal(op.degrade(x, 0.0), op.A(x))


def test_fusion_constraint():
    xa, xb = _img(seed=4), _img(seed=5)
    m = (torch.rand(2, 1, 24, 32, generator=torch.Generator().manual_seed(0)) > 0.5).double()
    out = fusion_constraint(xa, xb, m)
    assert torch.equal(out, torch.where(m.bool(), xa, xb))
    torch.testing.assert_close(fusion_constraint(xa, xb, 0.25), 0.25 * xa + 0.75 * xb)


def test_get_degradation():
    assert isinstance(get_degradation("bicubic", factor=2), BicubicDown)
    with pytest.raises(ValueError, match="avgpool"):
        get_degradation("jpeg")


def test_bad_arguments():
    with pytest.raises(ValueError):
        GaussianBlur(0.0)
    with pytest.raises(ValueError):
        AvgPoolDown(0)
    with pytest.raises(ValueError, match=r"\[B, C, H, W\]"):
        Identity().A(torch.zeros(3, 4, 4))
