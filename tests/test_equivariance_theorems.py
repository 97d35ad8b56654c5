"""The paper's equivariance theorems (§3.3), measured with rediffuse.theory (as notebook 02 does)."""
import math

import numpy as np
import pytest
import torch
import torch.nn as nn

from rediffuse import theory as th
from rediffuse.equivariance import equivariance_errors, randomize_constant_parameters
from rediffuse.groups import FieldType, rotate_image
from rediffuse.layers import FieldGroupNorm
from rediffuse.theory.networks import _centre_outputs, _network_patches

DELTAS = [2.0 ** -k for k in range(3, 9)]  # 1/8 … 1/256: five octaves


@pytest.fixture(scope="module")
def field():
    return th.GaborField.random(12, seed=0, rectify=True)


@pytest.fixture(scope="module")
def smooth_field():
    return th.GaborField.random(12, seed=0, rectify=False)


# --------------------------------------------------------------------------------------------------
# the continuous test field
# --------------------------------------------------------------------------------------------------

def test_gradient_matches_finite_differences(smooth_field):
    rng = np.random.default_rng(1)
    p = rng.uniform(-0.8, 0.8, (50, 2))
    h = 1e-6
    fd = np.stack([(smooth_field(p + [h, 0]) - smooth_field(p - [h, 0])) / (2 * h),
                   (smooth_field(p + [0, h]) - smooth_field(p - [0, h])) / (2 * h)], axis=-1)
    assert np.allclose(smooth_field.gradient(p), fd, atol=1e-6)


def test_gradient_bound_is_certified_and_tight(field):
    G = field.gradient_bound(1.0)
    g = np.linspace(-1, 1, 801)
    pts = np.stack(np.meshgrid(g, g, indexing="ij"), axis=-1)
    dense = np.linalg.norm(field.smooth_gradient(pts), axis=-1).max()
    assert dense <= G <= 1.02 * dense


def test_rectified_field_is_lipschitz_with_G(field):
    G = field.gradient_bound(1.0)
    rng = np.random.default_rng(2)
    a, b = rng.uniform(-0.9, 0.9, (2, 20000, 2))
    ratio = np.abs(field(a) - field(b)) / np.linalg.norm(a - b, axis=-1)
    assert ratio.max() <= G


def test_sampling_a_quarter_turned_field_is_rot90(field):
    for k in (1, 2, 3):
        turned = th.sample_field(field, 1 / 16, theta=k * math.pi / 2)
        assert torch.equal(turned, rotate_image(th.sample_field(field, 1 / 16), k))


# --------------------------------------------------------------------------------------------------
# Theorems 3.1 and 3.2
# --------------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def checks(field):
    return {op: th.check_bound(field, op, DELTAS, n_points=20000, seed=0) for op in ("maxpool", "bilinear")}


@pytest.mark.parametrize("op", ["maxpool", "bilinear"])
def test_bound_holds_at_every_delta(checks, op):
    chk = checks[op]
    assert np.all(chk.max_errors <= chk.bounds), chk.ratios
    assert chk.holds and chk.max_ratio <= 1.0


@pytest.mark.parametrize("op", ["maxpool", "bilinear"])
def test_error_is_first_order_in_delta(checks, op):
    assert 0.8 <= checks[op].slope <= 1.3, checks[op].as_dict()


def test_bounds_also_hold_with_the_sharper_constant(checks):
    for chk in checks.values():
        assert np.all(chk.max_errors <= th.operator_bound(chk.operator, chk.G, chk.deltas, sharp=True))


def test_bilinear_is_second_order_on_a_smooth_field(smooth_field):
    chk = th.check_bound(smooth_field, "bilinear", DELTAS, n_points=5000, seed=0)
    assert chk.holds and 1.7 <= chk.slope <= 2.3


@pytest.mark.parametrize("op", ["maxpool", "bilinear"])
def test_quarter_turns_about_a_grid_point_are_exact(field, op):
    """The grid through the rotation centre turns onto itself: Corollary 3.5 in miniature."""
    pts = th.random_points(2000, 0.8, np.random.default_rng(3))
    for k in (1, 2, 3):
        err = th.pointwise_errors(field, op, 1 / 16, pts, k * math.pi / 2, offsets=0.0)
        assert err.max() <= 1e-12


def test_pointwise_operators_match_their_definitions(field):
    corners, uv = th.cell_corners(np.array([[0.26, -0.13]]), 0.1)
    assert np.allclose(corners[0], [[0.2, -0.2], [0.2, -0.1], [0.3, -0.2], [0.3, -0.1]])
    assert np.allclose(uv, [[0.6, 0.7]])
    vals = np.array([[1.0, 2.0, 3.0, 4.0]])
    assert th.maxpool_at(vals, uv)[0] == 4.0
    assert math.isclose(th.bilinear_at(vals, uv)[0], 1 + 0.7 * 1 + 0.6 * 2)


# --------------------------------------------------------------------------------------------------
# Theorem 3.3
# --------------------------------------------------------------------------------------------------

def test_field_groupnorm_is_exact_and_plain_variants_are_not():
    errs = th.groupnorm_errors(dtype=torch.float32)
    assert errs["field"] <= 1e-6
    assert errs["plain_affine"] >= 1e-2
    assert errs["plain_split"] >= 1e-2


# --------------------------------------------------------------------------------------------------
# whole networks: Corollary 3.5, Theorem 3.4 / Corollary 3.6
# --------------------------------------------------------------------------------------------------

T1 = FieldType("trivial", 4, 1)


@pytest.mark.parametrize("m", [4, 8, 16])
def test_rote_stack_is_exact_at_quarter_turns(m):
    net = th.rote_stack(m)
    x = torch.randn(1, 1, 29, 34)
    assert max(equivariance_errors(net, x, in_type=T1, out_type=T1).values()) <= 1e-5


def test_rote_stacks_share_weights_across_m():
    a, b = th.rote_stack(4), th.rote_stack(16)
    assert torch.equal(a[0].weight, b[0].weight) and torch.equal(a[0].bias, b[0].bias)
    assert torch.allclose(a[2].weight, 4 * b[2].weight)


def test_plain_stack_is_not_equivariant():
    x = torch.randn(1, 1, 29, 34)
    assert min(equivariance_errors(th.plain_stack(), x, in_type=T1, out_type=T1).values()) >= 1e-2


def test_patch_evaluation_equals_the_full_grid(field):
    """The pointwise network measurement reads the same numbers as running on the whole grid."""
    net = th.rote_stack(8)
    delta, n = 1 / 16, 20
    full = net(th.sample_field(field, delta, n * delta).float())[0, 0].double()
    idx = np.array([[8, 12], [20, 20], [31, 9], [14, 32]])  # at least the receptive radius (8) from the border
    pts = (idx - n) * delta
    r = th.receptive_radius(net)
    left, _ = _network_patches(field, delta, pts, 0.0, r)
    patch_out = _centre_outputs(net, left, r)[:, 0]
    assert torch.allclose(patch_out, full[idx[:, 0], idx[:, 1]], atol=1e-5)


def test_network_pointwise_error_vanishes_without_rotation(field):
    pts = th.random_points(100, 0.6, np.random.default_rng(0))
    err, val = th.network_pointwise_errors(th.plain_stack(), field, 1 / 32, pts, 0.0)
    assert err.max() <= 1e-6 * max(val.max(), 1.0)


@pytest.fixture(scope="module")
def network_checks(field):
    nets = {m: th.rote_stack(m) for m in (4, 8, 16)}
    nets["plain"] = th.plain_stack()
    return th.network_errors(nets, field, [1 / 16, 1 / 32, 1 / 64], n_points=200, seed=0)


def test_network_error_shrinks_with_delta_and_m(network_checks):
    for m in (4, 8, 16):
        e = network_checks[m].max_errors
        assert e[0] > e[-1], e
    finest = {k: c.max_errors[-1] for k, c in network_checks.items()}
    assert finest[16] < finest[4]
    assert finest["plain"] > 5 * finest[4]


def test_network_quarter_turns_pointwise(field):
    nets = {"rote": th.rote_stack(4), "plain": th.plain_stack()}
    res = th.network_errors(nets, field, [1 / 32], n_points=100, thetas=[math.pi / 2, math.pi, 1.5 * math.pi])
    assert res["rote"].max_errors.max() <= 1e-5
    assert res["plain"].max_errors.max() >= 1e-2


def test_envelope_covers_every_point_and_touches_one():
    rng = np.random.default_rng(0)
    for _ in range(50):
        d = 2.0 ** -rng.uniform(2, 9, 12)
        e = rng.uniform(0.01, 3.0, 12) * d ** rng.uniform(0.3, 2.0)
        c = th.envelope_constant(d, e)
        ratios = th.envelope_ratios(d, e, c)
        assert np.all(c * d >= e) and ratios.max() <= 1.0  # in floating point too, not just on paper
        assert np.isclose(ratios.max(), 1.0, rtol=1e-12)
    assert th.envelope_constant([], []) == 0.0
    with pytest.raises(ValueError):
        th.envelope_constant([0.1, 0.2], [1.0])


def test_needed_constants_are_error_over_delta():
    d, e = np.array([0.5, 0.25]), np.array([0.1, 0.2])
    assert np.allclose(th.needed_constants(d, e), [0.2, 0.8])
    assert th.envelope_constant(d, e, shape=lambda x: x ** 2) == pytest.approx(3.2)


def test_a_loglog_fit_leaves_points_above_it():
    d = 2.0 ** -np.arange(3, 9)
    e = 0.3 * d * np.exp(0.4 * np.random.default_rng(1).standard_normal(d.size))
    a, b = th.loglog_fit(d, e)
    assert np.any(e > a * d ** b)  # what a fit drawn as a bound looks like: violated
    assert np.all(e <= th.envelope_constant(d, e) * d)


def test_corollary_envelope_is_the_smallest_cover():
    d = np.array([1 / 16, 1 / 32, 1 / 64] * 2)
    m = np.array([4] * 3 + [8] * 3)
    e = np.array([0.2, 0.1, 0.06, 0.1, 0.05, 0.02])
    c1, c2 = th.corollary_envelope([1 / 16, 1 / 32], [0.05, 0.02], d, m, e)
    assert c1 == pytest.approx(0.8)
    bound = th.corollary_bound(d, m, c1, c2)
    assert np.all(bound >= e) and np.isclose((e / bound).max(), 1.0)
    # all points already under C₁δ: no orientation term needed
    assert th.corollary_envelope(d, e, d, m, e * 0.5)[1] == 0.0


def test_cubic_rotation_is_exact_at_quarter_turns_and_third_order(smooth_field):
    x = th.sample_field(smooth_field, 1 / 16, 1.5)
    for k in (1, 2, 3):
        assert torch.equal(th.rotate_grid_cubic(x, k * math.pi / 2), rotate_image(x, k))
    errs = []
    for delta in (1 / 16, 1 / 32, 1 / 64):
        x = th.sample_field(smooth_field, delta, 1.5)
        exact = th.sample_field(smooth_field, delta, 1.5, theta=0.5)
        n = (x.shape[-1] - 1) // 2
        idx = torch.arange(2 * n + 1) - n
        disc = (idx[:, None] ** 2 + idx[None, :] ** 2) <= (0.8 / delta) ** 2
        errs.append(float((th.rotate_grid_cubic(x, 0.5) - exact)[0, 0][disc].abs().max()))
    assert th.loglog_slope([1 / 16, 1 / 32, 1 / 64], errs) >= 2.7, errs


@pytest.fixture(scope="module")
def unet_sweep():
    nets = {"m=4": th.build_unet(0, m=4), "m=8": th.build_unet(0, m=8, base=32)}
    plan = {1 / 16: [0.0, 22.5, 45.0, 90.0, 112.5, 135.0], 1 / 32: [22.5, 45.0]}
    return th.unet_angle_errors(nets, th.unet_test_fields(), plan)


def test_unet_any_angle_sweep(unet_sweep):
    for sw in unet_sweep.values():
        assert sw.errors.shape == (2, 6) and np.isnan(sw.errors[1, 0])  # (1/32, 0°) was not asked for
        quarter = sw.points("quarter")[1]
        assert quarter.size == 2 and quarter.max() <= 1e-5  # Corollary 3.5: float round-off
        assert sw.points("other")[1].min() >= 1e-3
        row = sw.errors[0]
        j = {a: i for i, a in enumerate(sw.angles)}
        assert row[j[112.5]] == pytest.approx(row[j[22.5]], rel=1e-3)  # exact C4: the curve repeats every 90°
        assert np.nanmax(sw.floor) <= 1e-2  # the output rotation adds little
    assert unet_sweep["m=8"].in_group().tolist() == [True, False, True, True, False, True]
    assert unet_sweep["m=4"].points("group")[1].size == 2 and unet_sweep["m=8"].points("group")[1].size == 5


def test_unet_error_map_matches_the_sweep(unet_sweep):
    emap = th.unet_error_map(th.build_unet(0, m=8, base=32), th.unet_test_fields(), 1 / 16, math.pi / 4)
    assert np.isnan(emap[0, 0])
    j = int(np.flatnonzero(unet_sweep["m=8"].angles == 45.0)[0])
    assert np.nanmax(emap) == pytest.approx(unet_sweep["m=8"].errors[0, j], rel=1e-5)


def test_unet_is_exact_at_quarter_turns():
    assert max(th.unet_quarter_turn_errors().values()) <= 1e-5


# --------------------------------------------------------------------------------------------------
# design mistakes and error maps
# --------------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def variants():
    return {v["name"]: v for v in th.design_mistakes(dtype=torch.float32)}


def test_every_design_variant_is_measured(variants):
    assert set(variants) == set(th.DESIGN_VARIANTS)


@pytest.mark.parametrize("name", th.DESIGN_VARIANTS)
def test_mistake_breaks_equivariance_and_fix_restores_it(variants, name):
    v = variants[name]
    assert v["mistake_error"] >= 1e-2, v
    assert all(e <= 1e-5 for e in v["fixes"].values()), v


def test_transposed_conv_filter_is_equivariant_at_stride_one():
    """So the defect of the stride-2 version is geometric, not in the filter."""
    up = th.EquivariantConvTranspose(3, 2, m=4, stride=1, padding=1, output_padding=0).double().eval()
    x = torch.randn(1, 12, 11, 14, dtype=torch.float64)
    assert max(equivariance_errors(up, x).values()) <= 1e-12


def test_error_map_is_zero_for_rote_and_not_for_plain():
    img = torch.randn(1, 1, 40, 40)
    rote = th.error_map(th.rote_stack(4), img, k=1, in_type=T1, out_type=T1)
    plain = th.error_map(th.plain_stack(), img, k=1, in_type=T1, out_type=T1)
    assert rote.shape == (40, 40) and np.nanmax(rote) <= 1e-5 and np.nanmax(plain) >= 1e-2
    turned = th.error_map(nn.Identity(), img, theta=0.3)
    assert np.isnan(turned[0, 0]) and np.nanmax(turned) == 0.0


def test_randomize_constant_parameters_keeps_equivariance():
    gn = randomize_constant_parameters(FieldGroupNorm(2, 4, 4))
    assert not torch.all(gn.weight == 1) and not torch.all(gn.bias == 0)
    x = torch.randn(1, 16, 9, 9)
    assert max(equivariance_errors(gn, x).values()) <= 1e-6
