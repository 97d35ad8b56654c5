"""Whole networks measured: Theorem 3.4 and Corollaries 3.5-3.6 of the ReDiffuse paper.

A stride-1 conv network is evaluated at continuous points of a ``fields.GaborField`` (one small
forward pass per point, nothing interpolated), so its pointwise error ``|Φ_δ[π_θ e](x) − Φ_δ[e](R_θ⁻¹x)|``
can be followed as the mesh ``δ`` and the number of orientations ``m`` shrink.

The package's diffusion U-Net (``build_unet``) resamples its grid and normalises over the whole
image, so a point cannot be evaluated on a patch of its own; ``unet_angle_errors`` runs it on whole
grids instead: the turned fields are sampled exactly, and only the output ``Φ_δ[e]`` is turned, with a
third-order interpolation (``fields.rotate_grid_cubic``) whose own error is recorded next to it.
``unet_quarter_turn_errors`` is the discrete check at quarter turns.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import numpy as np
import torch
import torch.nn as nn

from ..bases import BicubicBasis
from ..bconv import LiftConv2d, ProjectConv2d
from ..equivariance import equivariance_errors, randomize_constant_parameters
from ..unet import ReDiffuseUNet
from .fields import (GaborField, _grid_coords, _inverse_rotations, loglog_slope, random_points, rotate_grid_cubic,
                     sample_field)

__all__ = ["rote_stack", "plain_stack", "receptive_radius", "network_pointwise_errors", "NetworkCheck",
           "network_errors", "network_error_map", "build_unet", "unet_quarter_turn_errors", "unet_test_fields",
           "render_fields", "AngleSweep", "unet_angle_errors", "unet_error_map"]


def rote_stack(m: int, fields: int = 4, kernel_size: int = 5, hidden: int = 2, seed: int = 0,
               dtype: torch.dtype = torch.float32) -> nn.Sequential:
    """A small Rot-E network image → image: lift → SiLU → project → SiLU → lift → SiLU → project.

    Its learned weights do not depend on ``m`` (a lifting or projection filter is one learned filter
    used at m orientations), so ``rote_stack(4)``, ``rote_stack(8)`` and ``rote_stack(16)`` are the
    *same* network sampled at 4, 8 and 16 orientations — a fair comparison of the ``δ/m`` term of
    Corollary 3.6. Every B-Conv basis carries the soft radial mask (the same filters for every m);
    projections are scaled by 4/m so the sum over orientations keeps its size.
    """
    def layers(mm: int) -> list[nn.Module]:
        basis = BicubicBasis(kernel_size, mask=True)
        return [LiftConv2d(1, fields, kernel_size, m=mm, basis=basis),
                ProjectConv2d(fields, hidden, kernel_size, m=mm, basis=basis),
                LiftConv2d(hidden, fields, kernel_size, m=mm, basis=basis),
                ProjectConv2d(fields, 1, kernel_size, m=mm, basis=basis)]

    torch.manual_seed(seed)
    reference = layers(4)
    gen = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for layer in reference:  # biases, one per field (zero at init would hide nothing, but be dull)
            layer.bias.copy_(0.2 * torch.randn(layer.bias.shape, generator=gen))
    mods = layers(m)
    with torch.no_grad():
        for layer, ref in zip(mods, reference):
            layer.weight.copy_(ref.weight * (4.0 / m if isinstance(layer, ProjectConv2d) else 1.0))
            layer.bias.copy_(ref.bias)
    net = nn.Sequential(mods[0], nn.SiLU(), mods[1], nn.SiLU(), mods[2], nn.SiLU(), mods[3])
    return net.to(dtype).eval()


def plain_stack(channels: int = 16, hidden: int = 2, kernel_size: int = 5, seed: int = 0,
                dtype: torch.dtype = torch.float32) -> nn.Sequential:
    """The plain twin of ``rote_stack(4)``: the same topology and widths with ``nn.Conv2d``."""
    torch.manual_seed(seed)
    pad = kernel_size // 2
    net = nn.Sequential(nn.Conv2d(1, channels, kernel_size, padding=pad), nn.SiLU(),
                        nn.Conv2d(channels, hidden, kernel_size, padding=pad), nn.SiLU(),
                        nn.Conv2d(hidden, channels, kernel_size, padding=pad), nn.SiLU(),
                        nn.Conv2d(channels, 1, kernel_size, padding=pad))
    return net.to(dtype).eval()


def receptive_radius(module: nn.Module) -> int:
    """Pixels the output at a point depends on, in each direction (stride-1 conv stacks)."""
    r = 0
    for mod in module.modules():
        if isinstance(mod, nn.Conv2d):
            r += (mod.kernel_size[0] - 1) // 2 * mod.dilation[0]
        elif hasattr(mod, "kernel_size") and hasattr(mod, "expanded_filter"):
            r += (mod.kernel_size - 1) // 2
    return r


def _network_patches(field: Callable, delta: float, points: np.ndarray, thetas, r: int):
    """Input patches ``[n, 2r+1, 2r+1]`` for both sides of the pointwise comparison (see below)."""
    offsets = _grid_coords(r, delta)  # [P, P, 2]
    points = np.asarray(points, dtype=np.float64).reshape(-1, 2)
    thetas = np.broadcast_to(np.asarray(thetas, dtype=np.float64), points.shape[:-1])
    r_inv = _inverse_rotations(thetas)
    left = field(np.einsum("nij,npqj->npqi", r_inv, points[:, None, None, :] + offsets))
    right = field(np.einsum("nij,nj->ni", r_inv, points)[:, None, None, :] + offsets)
    return left, right


def _param_dtype(net: nn.Module) -> torch.dtype:
    p = next(net.parameters(), None)
    return p.dtype if p is not None else torch.float64


@torch.no_grad()
def _centre_outputs(net: nn.Module, patches: np.ndarray, r: int, batch: int = 1024) -> torch.Tensor:
    dtype = _param_dtype(net)
    x = torch.from_numpy(patches).to(dtype)[:, None]
    return torch.cat([net(x[s:s + batch])[:, :, r, r] for s in range(0, len(x), batch)]).double()


def network_pointwise_errors(net: nn.Module, field: Callable, delta: float, points: np.ndarray,
                             thetas) -> tuple[np.ndarray, np.ndarray]:
    """``|Φ_δ[π_θ e](x) − Φ_δ[e](R_θ⁻¹x)|`` of an image → image conv network at continuous points.

    A stride-1 conv network is translation equivariant, so its output *at any point* ``z`` is defined
    by running it on the grid ``z + δZ²`` through that point. Only a patch of the receptive field's
    size matters (zero padding at the patch border never reaches its centre), so each point costs one
    small forward pass and nothing is interpolated: the left side samples the turned field around
    ``x``, the right side samples ``e`` around ``R_θ⁻¹x``. Returns ``(errors [n], |Φ_δ[e](R_θ⁻¹x)| [n])``
    (max over output channels). The network runs in its own dtype.
    """
    r = receptive_radius(net)
    left, right = _network_patches(field, delta, points, thetas, r)
    out_left, out_right = _centre_outputs(net, left, r), _centre_outputs(net, right, r)
    return (out_left - out_right).abs().amax(1).numpy(), out_right.abs().amax(1).numpy()


@dataclass
class NetworkCheck:
    """Relative pointwise equivariance errors of one network over a list of mesh sizes."""

    name: str
    deltas: np.ndarray
    max_errors: np.ndarray   # max_x |error| / max_x |Φ|
    mean_errors: np.ndarray  # mean_x |error| / max_x |Φ|

    @property
    def slope(self) -> float:
        return loglog_slope(self.deltas, self.max_errors)

    def as_dict(self) -> dict[str, Any]:
        return {"name": self.name, "deltas": self.deltas.tolist(), "max_errors": self.max_errors.tolist(),
                "mean_errors": self.mean_errors.tolist(), "slope": self.slope}


def network_errors(nets: dict[str, nn.Module], field: Callable, deltas: Sequence[float], n_points: int = 2000,
                   radius: float = 0.7, thetas=None, seed: int = 0,
                   log: Callable[[str], None] | None = None) -> dict[str, NetworkCheck]:
    """Theorem 3.4 / Corollaries 3.5–3.6 measured: ``{name: NetworkCheck}``.

    The same random points (in the disc of ``radius``) and angles are used for every network and δ;
    ``thetas=None`` draws one uniform angle per point (almost surely not a multiple of 90°), a number
    or a list of numbers uses those angles (cycled over the points). ``log`` (e.g. ``print``) hears one
    line per mesh size as it is done.
    """
    rng = np.random.default_rng(seed)
    pts = random_points(n_points, radius, rng)
    if thetas is None:
        th = rng.uniform(0.0, 2 * np.pi, n_points)
    else:
        th = np.resize(np.atleast_1d(np.asarray(thetas, dtype=np.float64)), n_points)
    deltas = np.asarray(sorted(deltas, reverse=True), dtype=np.float64)
    radii = {name: receptive_radius(net) for name, net in nets.items()}
    mx = {name: [] for name in nets}
    mean = {name: [] for name in nets}
    for delta in deltas:
        patches = {}  # the field is sampled once per receptive-field size, shared by the networks
        for name, net in nets.items():
            r = radii[name]
            if r not in patches:
                patches[r] = _network_patches(field, float(delta), pts, th, r)
            left, right = patches[r]
            out_left, out_right = _centre_outputs(net, left, r), _centre_outputs(net, right, r)
            err = (out_left - out_right).abs().amax(1)
            scale = float(out_right.abs().max()) or 1.0
            mx[name].append(float(err.max()) / scale)
            mean[name].append(float(err.mean()) / scale)
        if log is not None:
            log(f"  δ = 1/{1 / delta:.0f}: largest error " + ", ".join(f"{n} {v[-1]:.2e}" for n, v in mx.items()))
    return {name: NetworkCheck(name, deltas, np.array(mx[name]), np.array(mean[name])) for name in nets}


def network_error_map(net: nn.Module, field: Callable, delta: float, theta: float, radius: float = 0.7,
                      resolution: int = 64) -> np.ndarray:
    """``network_pointwise_errors`` on a ``resolution²`` raster of the disc (NaN outside), relative to
    the largest output in it."""
    g = np.linspace(-radius, radius, resolution)
    pts = np.stack(np.meshgrid(g, g, indexing="ij"), axis=-1).reshape(-1, 2)
    inside = (pts ** 2).sum(-1) <= radius ** 2
    err, val = network_pointwise_errors(net, field, delta, pts[inside], theta)
    out = np.full(len(pts), np.nan)
    out[inside] = err / (val.max() if val.max() > 0 else 1.0)
    return out.reshape(resolution, resolution)


def build_unet(seed: int = 0, **overrides) -> ReDiffuseUNet:
    """A small ``ReDiffuseUNet`` (3 → 1 channels, base 16, two levels; ``overrides`` change any
    constructor argument) in eval mode, its constant parameters randomised."""
    kwargs = dict(in_channels=3, out_channels=1, base=16, mults=(1, 2), num_res_blocks=1, conv="bconv",
                  m=4, groups=2, emb_dim=16)
    kwargs.update(overrides)
    torch.manual_seed(seed)
    net = ReDiffuseUNet(**kwargs)
    return randomize_constant_parameters(net, seed).eval()


def unet_quarter_turn_errors(size: tuple[int, int] = (37, 44), seed: int = 0, dtype: torch.dtype = torch.float32,
                             timestep: float = 123.0, **overrides) -> dict[int, float]:
    """``{k: error}`` of ``build_unet(seed, **overrides)`` at quarter turns, on one random input
    ``[1, in_channels, *size]`` at diffusion step ``timestep``."""
    net = build_unet(seed, **overrides).to(dtype)
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(1, net.config["in_channels"], *size, generator=gen).to(dtype)
    t = torch.full((1,), timestep, dtype=dtype)
    return equivariance_errors(net, x, (1, 2, 3), forward_kwargs={"t": t})


# ---------------------------------------------------------------------------------------------------
# the U-Net at any angle
# ---------------------------------------------------------------------------------------------------

def unet_test_fields(n_fields: int = 3, seed: int = 0) -> list[GaborField]:
    """Smooth inputs for the U-Net, one field per input channel (sources A, B and the noisy image):
    six Gabor bumps each (width 0.15–0.3, at most 3 cycles per unit), centred within 0.3 of the
    origin, so that beyond radius 1.65 every bump is below 1e-4 of its amplitude."""
    return [GaborField.random(6, seed=seed + i, radius=0.3, width=(0.15, 0.3), frequency=(0.0, 3.0))
            for i in range(n_fields)]


def _support_radius(fields: Sequence[GaborField], decay: float = 4.5) -> float:
    """A radius outside which every bump is below ``exp(−decay²/2)`` of its amplitude."""
    return max(float(np.max(np.linalg.norm(f.centers, axis=-1) + decay * f.widths)) for f in fields)


def render_fields(fields: Sequence[Callable], delta: float, theta: float, half_width: float,
                  dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """``[1, len(fields), N, N]``: every field turned by ``theta``, sampled exactly on the centred grid of
    mesh ``delta`` reaching ``half_width`` (``N = 2·round(half_width/δ) + 1``)."""
    return torch.cat([sample_field(f, delta, half_width, theta, dtype=dtype) for f in fields], dim=1)


@dataclass
class AngleSweep:
    """Relative errors ``max |Φ_δ[π_θ e] − π_θ Φ_δ[e]| / span Φ_δ[e]`` (in the measurement disc) of one
    network over mesh sizes × angles. ``errors[i, j]`` is NaN where (δᵢ, θⱼ) was not measured;
    ``floor[i, j]`` is the same measurement of the identity map, i.e. the error the output rotation
    itself contributes."""

    name: str
    m: int
    deltas: np.ndarray      # [D]
    angles: np.ndarray      # [A] degrees
    errors: np.ndarray      # [D, A]
    floor: np.ndarray       # [D, A]

    def in_group(self) -> np.ndarray:
        """``[A]`` bool: angles that are elements of C_m (multiples of 360°/m)."""
        steps = self.angles * self.m / 360.0
        return np.abs(steps - np.round(steps)) < 1e-9

    def quarter_turns(self) -> np.ndarray:
        steps = self.angles / 90.0
        return np.abs(steps - np.round(steps)) < 1e-9

    def points(self, angles: str = "all") -> tuple[np.ndarray, np.ndarray]:
        """Measured ``(δ, error)`` pairs, flattened. ``angles``: ``"all"``, ``"group"`` (elements of C_m:
        Theorem 3.4's case), ``"other"`` (not in C_m: what Corollary 3.6 adds) or ``"quarter"``."""
        sel = {"all": np.ones(len(self.angles), bool), "group": self.in_group(), "other": ~self.in_group(),
               "quarter": self.quarter_turns()}[angles]
        d = np.broadcast_to(self.deltas[:, None], self.errors.shape)[:, sel]
        e = self.errors[:, sel]
        ok = np.isfinite(e)
        return d[ok].astype(np.float64), e[ok].astype(np.float64)

    def max_errors(self, angles: str = "all") -> np.ndarray:
        """``[D]``: the largest measured error at each δ over the selected angles (NaN if none)."""
        out = []
        for d in self.deltas:
            dd, ee = self.points(angles)
            ee = ee[dd == d]
            out.append(float(ee.max()) if ee.size else float("nan"))
        return np.array(out)

    def as_dict(self) -> dict[str, Any]:
        return {"name": self.name, "m": self.m, "deltas": self.deltas.tolist(), "angles": self.angles.tolist(),
                "errors": [[None if not np.isfinite(v) else float(v) for v in row] for row in self.errors],
                "floor": [[None if not np.isfinite(v) else float(v) for v in row] for row in self.floor]}


class _UNetGrid:
    """The grid of one mesh size: the unturned samples, the measurement disc, the comparison."""

    def __init__(self, fields, delta: float, half: float, radius: float, margin: int):
        self.fields, self.delta = fields, float(delta)
        self.n = int(math.ceil(half / delta)) + margin
        self.x0 = render_fields(fields, delta, 0.0, self.n * delta)
        idx = torch.arange(2 * self.n + 1, dtype=torch.float64) - self.n
        self.disc = (idx[:, None] ** 2 + idx[None, :] ** 2) <= (radius / delta) ** 2

    def turned(self, theta: float) -> torch.Tensor:
        return render_fields(self.fields, self.delta, theta, self.n * self.delta)

    def error_map(self, y_turned: torch.Tensor, y0: torch.Tensor, theta: float) -> torch.Tensor:
        """``|y_turned − π_θ y0|`` (max over channels) divided by the range of ``y0`` in the disc."""
        ref = y0[0]
        span = float(ref.amax(0)[self.disc].max() - ref.amin(0)[self.disc].min()) or 1.0
        return (y_turned - rotate_grid_cubic(y0, theta))[0].abs().amax(0) / span

    def relative_max(self, y_turned: torch.Tensor, y0: torch.Tensor, theta: float) -> float:
        return float(self.error_map(y_turned, y0, theta)[self.disc].max())


@torch.no_grad()
def unet_error_map(net: nn.Module, fields: Sequence[GaborField], delta: float, theta: float, radius: float = 0.8,
                   margin: int = 16, timestep: float = 123.0) -> np.ndarray:
    """The per-pixel error of ``unet_angle_errors`` at one (δ, θ): ``[N, N]``, NaN outside the disc."""
    grid = _UNetGrid(fields, delta, _support_radius(fields), radius, margin)
    t = torch.full((1,), float(timestep))
    emap = grid.error_map(net(grid.turned(theta), t), net(grid.x0, t), theta).double().numpy()
    emap[~grid.disc.numpy()] = np.nan
    return emap


@torch.no_grad()
def unet_angle_errors(nets: dict[str, nn.Module], fields: Sequence[GaborField],
                      plan: dict[float, Sequence[float]], radius: float = 0.8, margin: int = 16,
                      timestep: float = 123.0, log: Callable[[str], None] | None = None) -> dict[str, AngleSweep]:
    """Measure image → image networks (``ReDiffuseUNet``s, called as ``net(x, t)``) at any angle.

    ``plan`` maps each mesh size δ to the angles (degrees) to measure there. For every δ the fields
    are sampled on a centred grid that holds all of them plus ``margin`` pixels — so zero padding and
    the GroupNorm statistics see the same empty border on both sides of the comparison — once
    unturned and once turned by each angle, exactly (the fields are formulas). The error at (δ, θ) is
    ``max |Φ(turned samples) − rotate_grid_cubic(Φ(samples), θ)|`` over the output channels and the
    disc of ``radius``, divided by the range of ``Φ(samples)`` in that disc. ``log`` (e.g. ``print``)
    gets one line per mesh size as it is done, so a long measurement is not silent.
    """
    plan = {float(d): aa for d, aa in plan.items()}
    deltas = np.array(sorted(plan, reverse=True))
    angles = np.array(sorted({float(a) for aa in plan.values() for a in aa}))
    half = _support_radius(fields)
    err = {name: np.full((len(deltas), len(angles)), np.nan) for name in nets}
    floor = np.full((len(deltas), len(angles)), np.nan)
    t = torch.full((1,), float(timestep))
    started = time.perf_counter()
    for i, delta in enumerate(deltas):
        grid = _UNetGrid(fields, delta, half, radius, margin)
        y0 = {name: net(grid.x0, t) for name, net in nets.items()}
        for a in sorted({float(v) for v in plan[float(delta)]}):
            j = int(np.flatnonzero(np.isclose(angles, a))[0])
            xt = grid.turned(math.radians(a))
            floor[i, j] = grid.relative_max(xt[:, :1], grid.x0[:, :1], math.radians(a))
            for name, net in nets.items():
                err[name][i, j] = grid.relative_max(net(xt, t), y0[name], math.radians(a))
        if log is not None:
            log(f"δ = 1/{1 / delta:.0f} done ({i + 1} of {len(deltas)}): {len(set(plan[float(delta)]))} angles, "
                f"{time.perf_counter() - started:.0f} s so far")
    return {name: AngleSweep(name, int(getattr(net, "m", 4)), deltas, angles, err[name], floor.copy())
            for name, net in nets.items()}
