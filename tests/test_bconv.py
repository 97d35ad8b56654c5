"""Equivariant layers: exactness at quarter turns, interpolated rotations, parameter counts, caching."""
import math

import pytest
import torch
import torch.nn as nn

from rediffuse.bases import BicubicBasis, FourierBasis, RotTyingBasis, keys_cubic
from rediffuse.bconv import GroupConv1x1, GroupConv2d, LiftConv2d, ProjectConv2d
from rediffuse.equivariance import equivariance_error, equivariance_errors
from rediffuse.groups import rotate_fields, rotate_image, rotate_image_angle

BASES = ["bconv", "fconv", "gconv"]
SIZES = [(31, 31), (32, 32), (33, 47)]


def stack(basis, m=4, p=5):
    return nn.Sequential(
        LiftConv2d(3, 4, p, m=m, basis=basis), nn.SiLU(),
        GroupConv2d(4, 6, 3, m=m, basis=basis), nn.SiLU(),
        GroupConv1x1(6, 4, m=m), nn.SiLU(),
        ProjectConv2d(4, 2, 3, m=m, basis=basis),
    )


@pytest.mark.parametrize("basis", BASES)
@pytest.mark.parametrize("dtype,tol", [(torch.float32, 1e-5), (torch.float64, 1e-12)])
@pytest.mark.parametrize("size", SIZES)
def test_stack_is_exactly_c4_equivariant(basis, dtype, tol, size):
    torch.manual_seed(0)
    net = stack(basis).to(dtype).eval()
    x = torch.randn(2, 3, *size, dtype=dtype)
    errs = equivariance_errors(net, x, ks=(1, 2, 3))
    assert max(errs.values()) <= tol, errs


def test_plain_cnn_is_not_equivariant():
    # guards the checker itself: an ordinary CNN must fail it
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.SiLU(), nn.Conv2d(8, 2, 3, padding=1)).double()
    x = torch.randn(1, 3, 32, 32, dtype=torch.float64)
    from rediffuse.groups import FieldType
    t_in, t_out = FieldType("trivial", 4, 3), FieldType("trivial", 4, 2)
    assert equivariance_error(net, x, 1, in_type=t_in, out_type=t_out) > 0.1


@pytest.mark.parametrize("basis", BASES)
@pytest.mark.parametrize("k", [1, 2, 3])
def test_group_conv_output_is_rot90_plus_roll(basis, k):
    """Written with torch.rot90/roll directly, independent of rediffuse.groups."""
    torch.manual_seed(1)
    conv = GroupConv2d(3, 2, 3, m=4, basis=basis).double().eval()
    h = torch.randn(1, 12, 17, 20, dtype=torch.float64)

    def act(t):
        t = torch.rot90(t, k, dims=(2, 3))
        B, C, H, W = t.shape
        return t.reshape(B, C // 4, 4, H, W).roll(k, dims=2).reshape(B, C, H, W)

    assert torch.allclose(conv(act(h)), act(conv(h)), atol=1e-12, rtol=0)


def test_lift_and_project_types():
    torch.manual_seed(0)
    lift, proj = LiftConv2d(3, 5, 5), ProjectConv2d(5, 2, 3)
    x = torch.randn(1, 3, 21, 21, dtype=torch.float64)
    lift, proj = lift.double(), proj.double()
    h = lift(x)
    assert h.shape == (1, 20, 21, 21)
    assert torch.allclose(lift(rotate_image(x, 1)), rotate_fields(h, 1, 4), atol=1e-12)
    assert torch.allclose(proj(rotate_fields(h, 1, 4)), rotate_image(proj(h), 1), atol=1e-12)


def test_rotations_by_angle_agree_with_rot90():
    x = torch.randn(1, 2, 15, 15, dtype=torch.float64)
    assert torch.allclose(rotate_image_angle(x, math.pi / 2, "bilinear"), rotate_image(x, 1), atol=1e-12)
    assert torch.allclose(rotate_image_angle(x, math.pi, "nearest"), rotate_image(x, 2), atol=1e-12)


def _smooth_image(n):
    g = torch.linspace(-1, 1, n, dtype=torch.float64)
    yy, xx = torch.meshgrid(g, g, indexing="ij")
    img = torch.exp(-((yy - 0.2) ** 2 + (xx + 0.1) ** 2) / 0.1) + torch.cos(3 * xx + 2 * yy) * torch.exp(-(xx ** 2 + yy ** 2) / 0.3)
    return img[None, None]


@pytest.mark.parametrize("basis", ["bconv", "fconv"])
def test_m8_error_at_45_degrees_shrinks_with_resolution(basis):
    torch.manual_seed(0)
    net = nn.Sequential(LiftConv2d(1, 4, 5, m=8, basis=basis), nn.SiLU(),
                        GroupConv2d(4, 4, 5, m=8, basis=basis), nn.SiLU(),
                        ProjectConv2d(4, 1, 5, m=8, basis=basis)).double().eval()
    errs = [equivariance_error(net, _smooth_image(n), steps=1, margin=6) for n in (33, 65, 129)]
    assert errs[0] > errs[1] > errs[2], errs
    assert errs[2] < 0.02, errs
    # quarter turns stay exact for m = 8 as well (two steps of C_8)
    assert equivariance_error(net, _smooth_image(33), 1) < 1e-12


@pytest.mark.parametrize("m", [4, 8, 16])
def test_hidden_parameter_ratio_is_one_over_m(m):
    conv = GroupConv2d(6, 5, 5, m=m, basis="bconv", bias=False)
    plain = nn.Conv2d(6 * m, 5 * m, 5, bias=False)
    n_eq = sum(p.numel() for p in conv.parameters())
    n_plain = sum(p.numel() for p in plain.parameters())
    assert n_eq * m == n_plain


def test_smooth_basis_has_fewer_parameters():
    assert GroupConv2d(2, 2, 5, inP=3).weight.numel() == 2 * 2 * 4 * 9


def test_full_bicubic_basis_is_identity_and_matches_gconv():
    b = BicubicBasis(5).sample(4)
    eye = torch.eye(25, dtype=torch.float64).reshape(5, 5, 25)
    assert torch.equal(b[0], eye)
    assert torch.equal(b, RotTyingBasis(5).sample(4))


def test_fourier_basis_is_orthonormal_and_full():
    fb = FourierBasis(5)
    b0 = fb.sample(4)[0].reshape(25, -1)
    assert b0.shape[1] == 25
    assert torch.allclose(b0.T @ b0, torch.eye(25, dtype=torch.float64), atol=1e-10)


def test_keys_kernel_interpolates():
    x = torch.tensor([0.0, 1.0, 2.0, -1.0, 0.5], dtype=torch.float64)
    assert torch.allclose(keys_cubic(x), torch.tensor([1.0, 0.0, 0.0, 0.0, 0.5625], dtype=torch.float64))


def test_bias_is_shared_per_field():
    conv = GroupConv2d(2, 3, 3, m=4)
    with torch.no_grad():
        conv.bias.copy_(torch.tensor([1.0, 2.0, 3.0]))
    assert conv.expanded_bias().tolist() == [1.0] * 4 + [2.0] * 4 + [3.0] * 4


def test_filter_cache_in_eval_mode_follows_weight_updates():
    conv = GroupConv2d(2, 2, 3).eval()
    with torch.no_grad():
        f1 = conv.expanded_filter()
        assert conv.expanded_filter() is f1  # expanded once
        conv.weight.mul_(2.0)  # an EMA/load_state_dict-style in-place update
        f2 = conv.expanded_filter()
    assert f2 is not f1 and torch.allclose(f2, 2 * f1)
    conv.train()
    assert conv.expanded_filter().requires_grad  # training always re-expands, with gradients


def test_gradients_flow_to_weights():
    conv = GroupConv2d(2, 2, 3)
    conv(torch.randn(1, 8, 9, 9)).square().sum().backward()
    assert conv.weight.grad is not None and conv.weight.grad.abs().sum() > 0


def test_errors_are_one_line_and_helpful():
    with pytest.raises(ValueError, match="odd"):
        GroupConv2d(2, 2, 4)
    with pytest.raises(ValueError, match="m in"):
        GroupConv2d(2, 2, 3, m=8, basis="gconv")
    with pytest.raises(ValueError, match="unknown basis"):
        GroupConv2d(2, 2, 3, basis="nope")
    with pytest.raises(ValueError, match="input channels"):
        GroupConv2d(2, 2, 3)(torch.randn(1, 7, 5, 5))
    with pytest.raises(ValueError, match="multiple of 4"):
        rotate_fields(torch.randn(1, 6, 5, 5), 1, m=6)
