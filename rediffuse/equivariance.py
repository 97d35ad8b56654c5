"""Measuring equivariance: one checker shared by the tests and the notebooks.

Part 1 — the discrete checker. ``equivariance_error(module, x, k)`` compares ``module(g·x)`` with
``g·module(x)`` and returns ``‖module(g·x) − g·module(x)‖ / ‖g·module(x)‖``. Quarter turns (``k``) are
exact permutations, so a correctly built C4 network gives float round-off (~1e-7 in float32, ~1e-16 in
float64). Rotations by other elements of C_m (``steps=``) are interpolated; the error is then measured
inside the centred disc that never leaves the grid, away from a margin where zero padding differs.

Part 2 — the theorems of the ReDiffuse paper (§3.3), measured. A feature map is modelled as the
samples, on a grid of mesh ``δ``, of a continuous function ``e`` on the plane whose gradient is bounded
by ``G``. Because ``e`` is known everywhere, the rotated input ``π_θ e = e∘R_θ⁻¹`` can be *sampled
exactly* — no interpolation muddies the measurement — and an operator ``Ψ`` (max pooling, bilinear
interpolation, a network) can be compared at any continuous point ``x``:

    error(x, θ) = | Ψ_δ[π_θ e](x) − Ψ_δ[e](R_θ⁻¹ x) |.

- ``GaborField``: sums of Gabor/Gaussian bumps, optionally rectified (ReLU: kinks, like real feature
  maps), with an analytic gradient and a *certified* bound ``G`` (``gradient_bound``).
- ``sample_field``: the grid samples (centred grid; quarter turns are exact index permutations).
- ``maxpool_at`` / ``bilinear_at`` / ``pointwise_errors`` / ``check_bound``: Theorems 3.1 and 3.2.
- ``groupnorm_errors``: Theorem 3.3.
- ``rote_stack`` / ``plain_stack`` / ``network_errors``: Theorem 3.4, Corollaries 3.5–3.6.
- ``design_mistakes``: the constructions that break exact C4 equivariance, each next to its fix.
- ``error_map``: ``|Φ(g·I) − g·Φ(I)|`` per pixel (the paper's Figure 8).

Coordinates are (row, col) pairs, as in ``rediffuse.groups``: a positive angle turns the way
``torch.rot90(x, 1, dims=(-2, -1))`` does.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from .groups import FieldType, disc_mask, rotate_image_angle, rotation_matrix

__all__ = [
    # discrete checker
    "field_types", "equivariance_error", "equivariance_errors", "relative_error",
    # continuous fields and the pointwise operators of Theorems 3.1-3.2
    "GaborField", "sample_field", "random_points", "cell_corners", "maxpool_at", "bilinear_at",
    "POINT_OPERATORS", "BOUND_CONSTANTS", "SHARP_CONSTANTS", "operator_bound", "pointwise_errors",
    "pointwise_error_map", "BoundCheck", "check_bound", "loglog_slope",
    # Theorem 3.3
    "groupnorm_errors",
    # networks: Theorem 3.4, Corollaries 3.5-3.6
    "rote_stack", "plain_stack", "receptive_radius", "network_pointwise_errors", "NetworkCheck",
    "network_errors", "fit_network_constants", "network_error_map",
    "randomize_constant_parameters", "build_unet", "unet_quarter_turn_errors",
    # design mistakes and error maps
    "EquivariantConvTranspose", "ResizeConv", "TimeBiasBlock", "ChannelBiasConv", "Pool", "SkipBlock",
    "DESIGN_VARIANTS", "design_mistakes", "error_map",
]

SQRT2 = math.sqrt(2.0)


def _typed_children(module: nn.Module) -> list[nn.Module]:
    return [mod for mod in module.modules() if hasattr(mod, "in_type") and hasattr(mod, "out_type")]


def field_types(module: nn.Module) -> tuple[FieldType, FieldType]:
    """(input type, output type) of a module or of a stack (first/last typed submodule)."""
    if hasattr(module, "in_type") and hasattr(module, "out_type"):
        return module.in_type, module.out_type
    typed = _typed_children(module)
    if not typed:
        raise ValueError("cannot tell how this module's input and output rotate: pass in_type= and out_type=")
    return typed[0].in_type, typed[-1].out_type


def relative_error(a: torch.Tensor, b: torch.Tensor, mask: torch.Tensor | None = None) -> float:
    """``‖a − b‖ / ‖b‖`` (optionally over a spatial ``[H, W]`` mask)."""
    if mask is not None:
        a, b = a * mask, b * mask
    denom = b.norm().item()
    return (a - b).norm().item() / (denom if denom > 0 else 1.0)


@torch.no_grad()
def equivariance_error(module: nn.Module | Callable, x: torch.Tensor, k: int = 1, *,
                       steps: int | None = None, in_type: FieldType | None = None,
                       out_type: FieldType | None = None, margin: float = 4.0,
                       forward_kwargs: dict[str, Any] | None = None) -> float:
    """Relative equivariance error of ``module`` at input ``x``.

    Args:
        module: a layer, a stack (``nn.Sequential``) or any callable; input/output types are read
            from the layers (``in_type``/``out_type``) unless given.
        x: input ``[B, C, H, W]`` (an image or regular fields, as ``in_type`` says).
        k: quarter turns (exact rotation), used when ``steps`` is None.
        steps: rotate instead by ``steps`` elements of C_m (angle 2π·steps/m, interpolated); the
            error is then measured inside the centred disc, ``margin`` pixels from its edge.
        forward_kwargs: extra keyword arguments for the forward call (e.g. a diffusion timestep).
    """
    if in_type is None or out_type is None:
        ti, to = field_types(module)
        in_type, out_type = in_type or ti, out_type or to
    kw = forward_kwargs or {}
    if steps is None:
        y_of_gx = module(in_type.rotate(x, k), **kw)
        g_y = out_type.rotate(module(x, **kw), k)
        return relative_error(y_of_gx, g_y)
    y_of_gx = module(in_type.rotate_steps(x, steps), **kw)
    g_y = out_type.rotate_steps(module(x, **kw), steps)
    H, W = g_y.shape[-2:]
    mask = disc_mask(H, W, margin, device=g_y.device, dtype=g_y.dtype)
    return relative_error(y_of_gx, g_y, mask)


def equivariance_errors(module: nn.Module | Callable, x: torch.Tensor, ks=(1, 2, 3), **kwargs) -> dict[int, float]:
    """``{k: equivariance_error(module, x, k)}`` for several quarter turns."""
    return {k: equivariance_error(module, x, k, **kwargs) for k in ks}


# =====================================================================================================
# Part 2a · continuous test fields with a known gradient bound
# =====================================================================================================

class GaborField:
    """A continuous feature map ``e: R² → R`` with an analytic gradient and a certified bound on it.

    ``f(x) = Σ_k a_k · exp(−|x − c_k|² / 2s_k²) · cos(ω_k ⟨u_k, x − c_k⟩ + φ_k)`` with ``u_k`` the unit
    vector at angle ``α_k`` (a Gabor bump; ``ω_k = 0`` gives a Gaussian). ``e = f``, or ``e = max(f, 0)``
    when ``rectify`` — a ReLU'd field is only Lipschitz, with kinks along ``f = 0``, exactly the kind of
    function the theorems assume (``‖∇e‖ ≤ G``, nothing smoother) and the kind a ReLU network produces.

    Points are arrays ``[..., 2]`` of (row, col) coordinates; values come back as ``[...]`` float64.
    """

    def __init__(self, centers, amplitudes, widths, frequencies, directions, phases, rectify: bool = False):
        self.centers = np.asarray(centers, dtype=np.float64).reshape(-1, 2)
        k = len(self.centers)
        arrays = [np.asarray(a, dtype=np.float64).reshape(-1) for a in (amplitudes, widths, frequencies,
                                                                        directions, phases)]
        if any(len(a) != k for a in arrays):
            raise ValueError(f"every bump parameter needs {k} entries (one per centre)")
        self.amplitudes, self.widths, self.frequencies, self.directions, self.phases = arrays
        if np.any(self.widths <= 0):
            raise ValueError("bump widths must be positive")
        self.rectify = bool(rectify)
        self._bounds: dict[tuple, float] = {}

    @classmethod
    def random(cls, n_bumps: int = 12, *, seed: int = 0, radius: float = 1.0,
               width: tuple[float, float] = (0.2, 0.4), frequency: tuple[float, float] = (0.0, 6.0),
               rectify: bool = False) -> "GaborField":
        """Bumps with centres uniform in the disc of ``radius``, amplitudes ±[0.5, 1], random orientations."""
        rng = np.random.default_rng(seed)
        r = radius * np.sqrt(rng.uniform(0.0, 1.0, n_bumps))
        a = rng.uniform(0.0, 2 * np.pi, n_bumps)
        centers = np.stack([r * np.cos(a), r * np.sin(a)], axis=-1)
        amplitudes = rng.choice([-1.0, 1.0], n_bumps) * rng.uniform(0.5, 1.0, n_bumps)
        return cls(centers, amplitudes, rng.uniform(*width, n_bumps), rng.uniform(*frequency, n_bumps),
                   rng.uniform(0.0, np.pi, n_bumps), rng.uniform(0.0, 2 * np.pi, n_bumps), rectify)

    def __repr__(self) -> str:
        kind = "rectified" if self.rectify else "smooth"
        return f"GaborField({len(self.centers)} bumps, {kind})"

    def _terms(self, points):
        p = np.asarray(points, dtype=np.float64)
        if p.shape[-1] != 2:
            raise ValueError(f"points must have a last axis of 2 (row, col), got shape {p.shape}")
        dr = p[..., 0, None] - self.centers[:, 0]  # [..., K]
        dc = p[..., 1, None] - self.centers[:, 1]
        env = self.amplitudes * np.exp((dr * dr + dc * dc) * (-0.5 / self.widths ** 2))
        arg = self.frequencies * (dr * np.cos(self.directions) + dc * np.sin(self.directions)) + self.phases
        return dr, dc, env, arg

    def smooth(self, points) -> np.ndarray:
        """The smooth sum ``f`` (before rectification)."""
        _, _, env, arg = self._terms(points)
        return (env * np.cos(arg)).sum(-1)

    def __call__(self, points) -> np.ndarray:
        f = self.smooth(points)
        return np.maximum(f, 0.0) if self.rectify else f

    def smooth_gradient(self, points) -> np.ndarray:
        """``∇f`` at ``points`` → ``[..., 2]``."""
        dr, dc, env, arg = self._terms(points)
        radial = -(env * np.cos(arg)) / self.widths ** 2
        wave = -(env * np.sin(arg) * self.frequencies)
        return np.stack([(radial * dr + wave * np.cos(self.directions)).sum(-1),
                         (radial * dc + wave * np.sin(self.directions)).sum(-1)], axis=-1)

    def gradient(self, points) -> np.ndarray:
        """``∇e`` (where it exists; on a kink of the rectified field, the side with ``f > 0``)."""
        g = self.smooth_gradient(points)
        if self.rectify:
            g = g * (self.smooth(points) > 0)[..., None]
        return g

    def gradient_lipschitz(self) -> float:
        """An analytic Lipschitz constant ``H`` of ``∇f``: ``Σ|a|(1/s² + 2ω e^{-1/2}/s + ω²)``.

        Per bump, the Hessian is (envelope Hessian)·cos + 2·(envelope gradient ⊗ ω u)·sin +
        envelope·ω² u⊗u·cos; the three norms are at most 1/s², ω·e^{-1/2}/s (twice) and ω².
        """
        s, w, a = self.widths, self.frequencies, np.abs(self.amplitudes)
        return float(np.sum(a * (1 / s ** 2 + 2 * w * math.exp(-0.5) / s + w ** 2)))

    def gradient_bound(self, half_width: float = 1.0, rel_tol: float = 1e-2) -> float:
        """A *certified* ``G ≥ sup ‖∇e‖`` over the square ``[−half_width, half_width]²``.

        Grid search with refinement: on a grid of spacing ``h`` every point of the square lies within
        ``h/√2`` of a node, so ``sup ‖∇f‖ ≤ max_nodes ‖∇f‖ + H·h/√2`` (``H`` from
        ``gradient_lipschitz``). Nodes that could still hold the supremum are refined until the slack
        is below ``rel_tol`` of the maximum. For a rectified field ``‖∇e‖ ≤ ‖∇f‖``, so the bound holds too.
        """
        key = (float(half_width), float(rel_tol))
        if key not in self._bounds:
            H = self.gradient_lipschitz()
            g = np.linspace(-half_width, half_width, 201)
            h = g[1] - g[0]
            nodes = np.stack(np.meshgrid(g, g, indexing="ij"), axis=-1).reshape(-1, 2)
            while True:
                val = np.linalg.norm(self.smooth_gradient(nodes), axis=-1)
                gmax, slack = float(val.max()), H * h / SQRT2
                if slack <= rel_tol * gmax or len(nodes) > 2_000_000:
                    break
                # only nodes whose cell could exceed the current maximum need a closer look;
                # each such cell (side h, centred on the node) is split into 4×4 sub-cells
                keep = nodes[val + slack > gmax]
                sub = (np.arange(4) - 1.5) * h / 4
                offsets = np.stack(np.meshgrid(sub, sub, indexing="ij"), axis=-1).reshape(-1, 2)
                nodes = (keep[:, None, :] + offsets).reshape(-1, 2)
                h = h / 4
            self._bounds[key] = gmax + slack
        return self._bounds[key]


def _grid_coords(n: int, delta: float) -> np.ndarray:
    idx = np.arange(-n, n + 1, dtype=np.float64) * delta
    return np.stack(np.meshgrid(idx, idx, indexing="ij"), axis=-1)  # [2n+1, 2n+1, 2]


def sample_field(field: Callable, delta: float, radius: float = 1.0, theta: float = 0.0,
                 dtype: torch.dtype = torch.float64) -> torch.Tensor:
    """Samples of ``π_θ e`` (the field turned by ``theta``) on the centred grid of mesh ``delta``.

    The grid has ``2n + 1`` points per side, ``n = round(radius/delta)``, pixel ``(i, j)`` at
    ``δ·(i − n, j − n)``; returns ``[1, 1, 2n+1, 2n+1]``. For multiples of 90° the rotation matrix is
    exact, so ``sample_field(e, δ, theta=π/2) == rotate_image(sample_field(e, δ), 1)`` bit for bit.
    """
    n = int(round(radius / delta))
    p = _grid_coords(n, delta)
    r_inv = rotation_matrix(-theta).numpy()
    values = field(p @ r_inv.T)
    return torch.from_numpy(np.ascontiguousarray(values)).to(dtype)[None, None]


def random_points(n: int, radius: float, rng: np.random.Generator) -> np.ndarray:
    """``n`` points uniform in the disc of ``radius`` → ``[n, 2]``."""
    r = radius * np.sqrt(rng.uniform(0.0, 1.0, n))
    a = rng.uniform(0.0, 2 * np.pi, n)
    return np.stack([r * np.cos(a), r * np.sin(a)], axis=-1)


_CORNERS = np.array([[0, 0], [0, 1], [1, 0], [1, 1]], dtype=np.float64)


def cell_corners(points: np.ndarray, delta: float, offset: np.ndarray | float = 0.0):
    """The mesh cell containing each point, on the grid ``offset + δ·Z²``.

    Returns ``(corners [..., 4, 2], uv [..., 2])``: the four grid points around ``x`` (the 2×2 samples
    a pooling or interpolation window reads) and ``x``'s position inside the cell, in ``[0, 1)²``.
    """
    offset = np.broadcast_to(np.asarray(offset, dtype=np.float64), np.shape(points))
    q = (points - offset) / delta
    base = np.floor(q)
    corners = offset[..., None, :] + delta * (base[..., None, :] + _CORNERS)
    return corners, q - base


def maxpool_at(values: np.ndarray, uv: np.ndarray) -> np.ndarray:
    """Max pooling at a continuous point: the largest of the cell's four samples ``[..., 4]``."""
    return values.max(-1)


def bilinear_at(values: np.ndarray, uv: np.ndarray) -> np.ndarray:
    """Bilinear interpolation at a continuous point from the cell's four samples ``[..., 4]``."""
    u, v = uv[..., 0], uv[..., 1]
    w = np.stack([(1 - u) * (1 - v), (1 - u) * v, u * (1 - v), u * v], axis=-1)
    return (w * values).sum(-1)


POINT_OPERATORS: dict[str, Callable] = {"maxpool": maxpool_at, "bilinear": bilinear_at}

#: The paper's constants: error ≤ C·G·δ (Theorem 3.1: max pooling; Theorem 3.2: bilinear).
BOUND_CONSTANTS = {"maxpool": 2 * SQRT2, "bilinear": 2 * (SQRT2 + 1)}
#: The constant the two-line argument gives for *both* operators when Ω_x is the mesh cell: every one
#: of its four corners lies within √2·δ of x, so each side of the comparison is within √2·G·δ of
#: e(R⁻¹x). The paper's bilinear constant is looser but, of course, also holds.
SHARP_CONSTANTS = {"maxpool": 2 * SQRT2, "bilinear": 2 * SQRT2}


def operator_bound(operator: str, G: float, delta, sharp: bool = False):
    """``C·G·δ`` for ``operator`` (the paper's constant, or the sharper one)."""
    table = SHARP_CONSTANTS if sharp else BOUND_CONSTANTS
    if operator not in table:
        raise ValueError(f"unknown operator {operator!r}; choose one of {sorted(table)}")
    return table[operator] * G * np.asarray(delta, dtype=np.float64)


def _inverse_rotations(thetas: np.ndarray) -> np.ndarray:
    c, s = np.cos(thetas), np.sin(thetas)
    # exact 0/±1 at multiples of 90° (as groups.rotation_matrix), so quarter turns permute grids exactly
    c = np.where(np.abs(c - np.round(c)) < 1e-12, np.round(c), c)
    s = np.where(np.abs(s - np.round(s)) < 1e-12, np.round(s), s)
    # R_θ⁻¹ = [[c, s], [−s, c]] acting on (row, col)
    return np.stack([np.stack([c, s], -1), np.stack([-s, c], -1)], -2)


def pointwise_errors(field: Callable, operator: str | Callable, delta: float, points: np.ndarray,
                     thetas, offsets=0.0) -> np.ndarray:
    """``|Ψ_δ[π_θ e](x) − Ψ_δ[e](R_θ⁻¹x)|`` at each point (one angle per point, or one for all).

    Left: sample the turned field on the grid ``offset + δZ²`` and apply ``Ψ`` in the cell of ``x``.
    Right: apply ``Ψ`` to the samples of ``e`` itself and read the result where ``x`` came from. An
    exactly equivariant operator makes the two equal.
    """
    op = POINT_OPERATORS[operator] if isinstance(operator, str) else operator
    points = np.asarray(points, dtype=np.float64)
    thetas = np.broadcast_to(np.asarray(thetas, dtype=np.float64), points.shape[:-1])
    r_inv = _inverse_rotations(thetas)  # [..., 2, 2]
    corners, uv = cell_corners(points, delta, offsets)
    left = op(field(np.einsum("...ij,...kj->...ki", r_inv, corners)), uv)
    source = np.einsum("...ij,...j->...i", r_inv, points)
    corners2, uv2 = cell_corners(source, delta, offsets)
    right = op(field(corners2), uv2)
    return np.abs(left - right)


def pointwise_error_map(field: Callable, operator: str, delta: float, theta: float, radius: float = 0.8,
                        resolution: int = 161, offset=0.0) -> np.ndarray:
    """Error of ``operator`` on a fine ``resolution²`` raster of the disc (NaN outside), one angle."""
    g = np.linspace(-radius, radius, resolution)
    pts = np.stack(np.meshgrid(g, g, indexing="ij"), axis=-1)
    err = pointwise_errors(field, operator, delta, pts, theta, offset)
    err[(pts ** 2).sum(-1) > radius ** 2] = np.nan
    return err


def loglog_slope(x, y) -> float:
    """Least-squares slope of ``log y`` against ``log x`` (1 means ``y ∝ x``)."""
    x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    ok = (x > 0) & (y > 0)
    if ok.sum() < 2:
        return float("nan")
    return float(np.polyfit(np.log(x[ok]), np.log(y[ok]), 1)[0])


@dataclass
class BoundCheck:
    """Measured errors of one operator against its bound ``C·G·δ``, over a list of mesh sizes."""

    operator: str
    deltas: np.ndarray
    max_errors: np.ndarray
    mean_errors: np.ndarray
    G: float
    constant: float
    n_points: int
    field_name: str = ""

    @property
    def bounds(self) -> np.ndarray:
        return self.constant * self.G * self.deltas

    @property
    def ratios(self) -> np.ndarray:
        """measured max error / bound at each δ (≤ 1 means the theorem holds there)."""
        return self.max_errors / self.bounds

    @property
    def max_ratio(self) -> float:
        return float(self.ratios.max())

    @property
    def holds(self) -> bool:
        return bool(np.all(self.max_errors <= self.bounds))

    @property
    def slope(self) -> float:
        """log–log slope of the max error against δ (the theorem predicts at most first order)."""
        return loglog_slope(self.deltas, self.max_errors)

    def as_dict(self) -> dict[str, Any]:
        return {"operator": self.operator, "field": self.field_name, "G": self.G, "constant": self.constant,
                "deltas": self.deltas.tolist(), "max_errors": self.max_errors.tolist(),
                "mean_errors": self.mean_errors.tolist(), "bounds": self.bounds.tolist(),
                "max_ratio": self.max_ratio, "slope": self.slope, "holds": self.holds}


def check_bound(field: GaborField, operator: str, deltas: Sequence[float], n_points: int = 20000,
                radius: float = 0.8, seed: int = 0, G: float | None = None) -> BoundCheck:
    """Measure Theorem 3.1 (``"maxpool"``) or 3.2 (``"bilinear"``) over ``deltas``.

    At every δ: ``n_points`` random points in the disc of ``radius``, each with its own random angle in
    [0, 2π) and random grid offset; the maximum and mean error are recorded. ``G`` defaults to the
    field's certified gradient bound on a square that holds every sample used.
    """
    deltas = np.asarray(sorted(deltas, reverse=True), dtype=np.float64)
    if G is None:
        G = field.gradient_bound(radius + 2 * float(deltas.max()))
    max_e, mean_e = [], []
    for delta in deltas:
        rng = np.random.default_rng(seed)
        pts = random_points(n_points, radius, rng)
        thetas = rng.uniform(0.0, 2 * np.pi, n_points)
        offsets = rng.uniform(0.0, delta, (n_points, 2))
        err = pointwise_errors(field, operator, float(delta), pts, thetas, offsets)
        max_e.append(err.max())
        mean_e.append(err.mean())
    return BoundCheck(operator, deltas, np.array(max_e), np.array(mean_e), float(G),
                      float(BOUND_CONSTANTS[operator]), n_points, repr(field))


# =====================================================================================================
# Part 2b · Theorem 3.3: group normalisation
# =====================================================================================================

def _random_fields(shape: tuple[int, ...], gen: torch.Generator, dtype: torch.dtype) -> torch.Tensor:
    """Random feature maps whose channels differ in mean and spread, as real features do (an edge
    seen at one orientation and not at another); identical statistics would hide some defects."""
    C = shape[1]
    scale = 0.5 + torch.rand(1, C, 1, 1, generator=gen) * 2
    shift = torch.randn(1, C, 1, 1, generator=gen)
    return (torch.randn(*shape, generator=gen) * scale + shift).to(dtype)


def groupnorm_errors(fields: int = 8, m: int = 4, groups: int = 4, size: tuple[int, int] = (24, 30),
                     seed: int = 0, dtype: torch.dtype = torch.float32, ks=(1, 2, 3)) -> dict[str, float]:
    """Quarter-turn equivariance error (max over ``ks``) of three group normalisations.

    - ``"field"``: ``layers.FieldGroupNorm`` — statistics over whole fields, one affine per field
      (Theorem 3.3: exact);
    - ``"plain_affine"``: ``nn.GroupNorm(groups, C·m)`` — the same statistics, per-channel affine;
    - ``"plain_split"``: ``nn.GroupNorm(2·fields, C·m)`` — groups that cut fields in half, so the
      orientations of a field are normalised with different statistics.

    Affine parameters are random (as after training); at initialisation (ones, zeros) the per-channel
    affine would hide its own defect.
    """
    from .layers import FieldGroupNorm

    gen = torch.Generator().manual_seed(seed)
    x = _random_fields((2, fields * m, *size), gen, dtype)
    t = FieldType("regular", m, fields * m)
    field_gn = FieldGroupNorm(groups, fields, m)
    plain_affine = nn.GroupNorm(groups, fields * m)
    plain_split = nn.GroupNorm(2 * fields, fields * m)
    for mod in (field_gn, plain_affine):
        _randomized(mod, gen)
    out = {}
    for name, mod in (("field", field_gn), ("plain_affine", plain_affine), ("plain_split", plain_split)):
        mod = mod.to(dtype).eval()
        out[name] = max(equivariance_errors(mod, x, ks, in_type=t, out_type=t).values())
    return out


# =====================================================================================================
# Part 2c · whole networks: Theorem 3.4, Corollaries 3.5 and 3.6
# =====================================================================================================

def rote_stack(m: int, fields: int = 4, kernel_size: int = 5, hidden: int = 2, seed: int = 0,
               dtype: torch.dtype = torch.float32) -> nn.Sequential:
    """A small Rot-E network image → image: lift → SiLU → project → SiLU → lift → SiLU → project.

    Its learned weights do not depend on ``m`` (a lifting or projection filter is one learned filter
    used at m orientations), so ``rote_stack(4)``, ``rote_stack(8)`` and ``rote_stack(16)`` are the
    *same* network sampled at 4, 8 and 16 orientations — a fair comparison of the ``δ/m`` term of
    Corollary 3.6. Every B-Conv basis carries the soft radial mask (the same filters for every m);
    projections are scaled by 4/m so the sum over orientations keeps its size.
    """
    from .bases import BicubicBasis
    from .bconv import LiftConv2d, ProjectConv2d

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
                   radius: float = 0.7, thetas=None, seed: int = 0) -> dict[str, NetworkCheck]:
    """Theorem 3.4 / Corollaries 3.5–3.6 measured: ``{name: NetworkCheck}``.

    The same random points (in the disc of ``radius``) and angles are used for every network and δ;
    ``thetas=None`` draws one uniform angle per point (almost surely not a multiple of 90°), a number
    or a list of numbers uses those angles (cycled over the points).
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
    return {name: NetworkCheck(name, deltas, np.array(mx[name]), np.array(mean[name])) for name in nets}


def fit_network_constants(checks: dict[int, NetworkCheck], skip_coarsest: int = 1) -> tuple[float, float]:
    """Fit Corollary 3.6's form ``error ≈ C₁·δ + C₂·δ/m`` (C₁, C₂ ≥ 0) to the max errors of the same
    network at several m (``{m: NetworkCheck}``), leaving out the ``skip_coarsest`` coarsest meshes
    (before the asymptotic regime sets in). Residuals are taken in log space, so every point counts
    by its ratio to the model, as on a log–log plot."""
    from scipy.optimize import least_squares

    rows = [(dd, 1.0 / m, ee) for m, chk in checks.items()
            for dd, ee in list(zip(chk.deltas, chk.max_errors))[skip_coarsest:] if ee > 0]
    d, inv_m, e = (np.array(col, dtype=np.float64) for col in zip(*rows)) if rows else ([], [], [])
    if len(e) < 2:
        raise ValueError("need at least two positive errors to fit C1, C2")
    scale = float(np.median(e / d))  # fit in units where the constants are O(1)

    def residuals(c):
        return np.log((c[0] * d + c[1] * d * inv_m) * scale + 1e-300) - np.log(e)

    best = least_squares(residuals, x0=[0.1, 1.0], bounds=([0.0, 0.0], [np.inf, np.inf]))
    c1, c2 = (float(c) for c in best.x * scale)
    # a constant pinned at its bound comes back as round-off (1e-20 …): report it as the 0 it is
    return (0.0 if c1 < 1e-9 * c2 else c1), (0.0 if c2 < 1e-9 * c1 else c2)


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


def randomize_constant_parameters(module: nn.Module, seed: int = 0, scale: float = 0.1) -> nn.Module:
    """Give parameters that start constant (norm scales = 1, biases = 0, zero-initialised output
    convs) random values, as after training, so no defect hides behind a symmetric initialisation.

    Random values in the *learned* parameters keep an equivariant network equivariant: its
    equivariance comes from how parameters are tied, not from their values.
    """
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            if p.numel() and bool((p == p.reshape(-1)[0]).all()):
                p.add_(scale * torch.randn(p.shape, generator=gen).to(p))
    return module


def build_unet(seed: int = 0, **overrides) -> tuple[nn.Module | None, str]:
    """A small ``rediffuse.unet.ReDiffuseUNet`` with random parameters, or ``(None, why)``.

    Guarded: notebooks and tests keep running when the U-Net module is absent or its constructor
    differs from what is expected here.
    """
    try:
        from .unet import ReDiffuseUNet
    except Exception as exc:  # ImportError, or a half-written module
        return None, f"rediffuse.unet is not available ({type(exc).__name__}: {exc})"
    kwargs = dict(in_channels=3, out_channels=1, base=16, mults=(1, 2), num_res_blocks=1, conv="bconv",
                  m=4, groups=2, emb_dim=16)
    kwargs.update(overrides)
    try:
        torch.manual_seed(seed)
        net = ReDiffuseUNet(**kwargs)
    except Exception as exc:
        return None, f"ReDiffuseUNet(**{kwargs}) failed ({type(exc).__name__}: {exc})"
    return randomize_constant_parameters(net, seed).eval(), "ok"


def unet_quarter_turn_errors(size: tuple[int, int] = (37, 44), seed: int = 0, dtype: torch.dtype = torch.float32,
                             timestep: float = 123.0, strict: bool = False, **overrides) -> dict[int, float] | None:
    """``{k: error}`` of a small ReDiffuse U-Net at quarter turns; None when it cannot be built.

    With ``strict=False`` (notebooks) a failing forward pass also gives None; tests pass
    ``strict=True`` so that such a failure is reported rather than skipped.
    """
    net, _ = build_unet(seed, **overrides)
    if net is None:
        return None
    net = net.to(dtype)
    gen = torch.Generator().manual_seed(seed)
    in_ch = getattr(net, "config", {}).get("in_channels", 3)
    x = torch.randn(1, in_ch, *size, generator=gen).to(dtype)
    t = torch.full((1,), timestep, dtype=dtype)
    try:
        return equivariance_errors(net, x, (1, 2, 3), forward_kwargs={"t": t})
    except Exception:
        if strict:
            raise
        return None


# =====================================================================================================
# Part 2d · the design mistakes that break exact equivariance, each next to its fix
# =====================================================================================================

class EquivariantConvTranspose(nn.Module):
    """Transposed convolution whose filter is the adjoint of a Rot-E conv.

    At stride 1 the adjoint of an equivariant map is equivariant (the group acts by permutations),
    so any defect at stride 2 comes from the geometry of the upsampling, not from the filter.
    """

    def __init__(self, in_fields: int, out_fields: int, m: int = 4, kernel_size: int = 3, stride: int = 2,
                 padding: int = 1, output_padding: int = 1):
        super().__init__()
        from .bconv import GroupConv2d

        self.m, self.stride, self.padding, self.output_padding = m, stride, padding, output_padding
        self.adjoint_of = GroupConv2d(out_fields, in_fields, kernel_size, m=m, bias=False)
        self.bias = nn.Parameter(0.1 * torch.randn(out_fields))
        self.in_type = FieldType("regular", m, in_fields * m)
        self.out_type = FieldType("regular", m, out_fields * m)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w = self.adjoint_of.expanded_filter()  # [in·m, out·m, p, p]: conv_transpose2d's layout
        return F.conv_transpose2d(x, w, self.bias.repeat_interleave(self.m), self.stride, self.padding,
                                  self.output_padding)


class _Typed(nn.Module):
    """Regular fields in, regular fields out (so ``equivariance_error`` knows how to rotate them)."""

    def __init__(self, fields: int, m: int):
        super().__init__()
        self.fields, self.m = fields, m
        self.in_type = self.out_type = FieldType("regular", m, fields * m)

    def conv(self, **kw) -> nn.Module:
        return _group_conv(self.fields, self.m, **kw)


def _group_conv(fields: int, m: int, **kw) -> nn.Module:
    """A 3×3 Rot-E conv, fields → the same number of fields."""
    from .bconv import GroupConv2d
    return GroupConv2d(fields, fields, 3, m=m, **kw)


def _half(x: torch.Tensor) -> tuple[int, int]:
    return (x.shape[-2] + 1) // 2, (x.shape[-1] + 1) // 2


class ResizeConv(_Typed):
    """Resample (``"half"``: ``layers.resize`` to half; ``"resize2x"``: ``layers.resize`` ×2;
    ``"nearest2x"``: nearest ×2), then a stride-1 Rot-E conv."""

    def __init__(self, fields: int, m: int, how: str):
        super().__init__(fields, m)
        self.how, self.body = how, self.conv()

    def forward(self, x):
        from .layers import resize
        if self.how == "half":
            x = resize(x, _half(x))
        elif self.how == "resize2x":
            x = resize(x, (2 * x.shape[-2], 2 * x.shape[-1]))
        else:
            x = F.interpolate(x, scale_factor=2, mode="nearest")
        return self.body(x)


class TimeBiasBlock(_Typed):
    """conv → + time bias → SiLU → conv, with the bias one value per channel (the mistake) or per
    field (``layers.FieldTimeBias``, the fix). The timestep is fixed; only the feature map turns."""

    def __init__(self, fields: int, m: int, per_field: bool, emb_dim: int = 32, timestep: float = 250.0):
        super().__init__(fields, m)
        from .layers import FieldTimeBias, sinusoidal_embedding
        self.conv1, self.conv2 = self.conv(), self.conv()
        self.time = FieldTimeBias(emb_dim, fields, m) if per_field else FieldTimeBias(emb_dim, fields * m, 1)
        self.register_buffer("emb", sinusoidal_embedding(torch.tensor([timestep]), emb_dim))

    def forward(self, x):
        return self.conv2(F.silu(self.conv1(x) + self.time(self.emb).to(x)))


class ChannelBiasConv(_Typed):
    """A Rot-E conv whose bias has one value per *channel*: the m orientations get different offsets."""

    def __init__(self, fields: int, m: int, gen: torch.Generator):
        super().__init__(fields, m)
        self.body = self.conv(bias=False)
        self.bias = nn.Parameter(0.5 * torch.randn(fields * m, generator=gen))

    def forward(self, x):
        return self.body(x) + self.bias[None, :, None, None]


class Pool(_Typed):
    """2×2 max pooling, stride 2 (``"maxpool"``) or ``layers.resize`` to half (``"resize"``)."""

    def __init__(self, fields: int, m: int, how: str = "maxpool"):
        super().__init__(fields, m)
        self.how = how

    def forward(self, x):
        from .layers import resize
        return F.max_pool2d(x, 2) if self.how == "maxpool" else resize(x, _half(x))


class SkipBlock(_Typed):
    """x + up(down(x)): the coarse path is brought back to the skip's size by upsampling ×2 and
    cropping the top-left corner (``crop=True``, the official code's habit) or by resizing straight
    to the skip's size (``layers.resize``)."""

    def __init__(self, fields: int, m: int, crop: bool):
        super().__init__(fields, m)
        self.crop, self.down, self.up = crop, self.conv(), self.conv()

    def forward(self, x):
        from .layers import resize
        h = self.down(resize(x, _half(x)))
        if self.crop:
            h = F.interpolate(h, scale_factor=2, mode="nearest")[..., : x.shape[-2], : x.shape[-1]]
        else:
            h = resize(h, tuple(x.shape[-2:]))
        return x + self.up(h)


def _randomized(mod: nn.Module, gen: torch.Generator) -> nn.Module:
    """Random affine / bias values, as after training (ones and zeros would hide a defect)."""
    with torch.no_grad():
        if getattr(mod, "weight", None) is not None and mod.weight.dim() == 1:
            mod.weight.copy_(1 + 0.5 * torch.randn(mod.weight.shape, generator=gen))
        for sub in mod.modules():
            b = getattr(sub, "bias", None)
            if isinstance(b, nn.Parameter):
                b.copy_(0.5 * torch.randn(b.shape, generator=gen))
    return mod


def _variants(fields: int, m: int, gen: torch.Generator) -> dict:
    """name → (title, mistake, (module, size), {fix: (module, size)})."""
    from .layers import FieldGroupNorm

    C = fields * m
    conv = _group_conv
    return {
        "stride2_conv": (
            "stride-2 conv", "Rot-E 3×3 conv, stride 2, padding 1, on an even grid (32×32)",
            (_randomized(conv(fields, m, stride=2, padding=1), gen), (32, 32)),
            {"the same conv on an odd grid (33×33)": (_randomized(conv(fields, m, stride=2, padding=1), gen), (33, 33)),
             "layers.resize to half, then a stride-1 conv": (ResizeConv(fields, m, "half"), (32, 32))}),
        "transposed_conv": (
            "transposed-conv upsampling", "Rot-E transposed conv 3×3, stride 2, padding 1, output_padding 1",
            (EquivariantConvTranspose(fields, fields, m), (16, 16)),
            {"layers.resize ×2, then a conv": (ResizeConv(fields, m, "resize2x"), (16, 16)),
             "nearest ×2, then a conv": (ResizeConv(fields, m, "nearest2x"), (16, 16))}),
        "time_per_channel": (
            "time embedding", "time embedding added per channel (C·m values)",
            (_randomized(TimeBiasBlock(fields, m, per_field=False), gen), (20, 20)),
            {"layers.FieldTimeBias: one value per field": (_randomized(TimeBiasBlock(fields, m, per_field=True), gen),
                                                           (20, 20))}),
        "groupnorm": (
            "GroupNorm affine", "nn.GroupNorm over C·m channels with a per-channel affine",
            (_randomized(nn.GroupNorm(2, C), gen), (20, 20)),
            {"layers.FieldGroupNorm: one affine per field": (_randomized(FieldGroupNorm(2, fields, m), gen), (20, 20))}),
        "groupnorm_split": (
            "GroupNorm groups", "nn.GroupNorm with 2·C groups: each group holds half a field's orientations",
            (nn.GroupNorm(2 * fields, C), (20, 20)),
            {"layers.FieldGroupNorm: whole fields in every group": (FieldGroupNorm(fields, fields, m), (20, 20))}),
        "conv_bias_per_channel": (
            "conv bias", "a conv bias with one value per channel",
            (ChannelBiasConv(fields, m, gen), (20, 20)),
            {"one bias per field, shared by its orientations": (_randomized(conv(fields, m), gen), (20, 20))}),
        "maxpool_odd": (
            "2×2 max pooling", "2×2 max pool, stride 2, on an odd grid (33×33)",
            (Pool(fields, m), (33, 33)),
            {"the same pool on an even grid (32×32)": (Pool(fields, m), (32, 32)),
             "layers.resize to half (any size)": (Pool(fields, m, "resize"), (33, 33))}),
        "skip_crop": (
            "U-Net skip sizes", "upsample ×2 and crop top-left to the skip's odd size",
            (SkipBlock(fields, m, crop=True), (33, 33)),
            {"layers.resize straight to the skip's size": (SkipBlock(fields, m, crop=False), (33, 33))}),
    }


#: The variants ``design_mistakes`` measures (name → what goes wrong).
DESIGN_VARIANTS = ("stride2_conv", "transposed_conv", "time_per_channel", "groupnorm", "groupnorm_split",
                   "conv_bias_per_channel", "maxpool_odd", "skip_crop")


@torch.no_grad()
def design_mistakes(fields: int = 4, m: int = 4, seed: int = 0, dtype: torch.dtype = torch.float32,
                    ks=(1, 2, 3)) -> list[dict[str, Any]]:
    """Quarter-turn error of each construction that breaks exact C4 equivariance, next to its fixes.

    Returns one dict per variant: ``name``, ``title``, ``mistake`` (description), ``mistake_error``,
    ``fixes`` ({description: error}) and ``fix_error`` (the largest of them). Errors are relative,
    max over ``ks`` quarter turns, on random inputs, with random weights, biases and affines.
    """
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    out = []
    for name, (title, mistake, (module, size), fixes) in _variants(fields, m, gen).items():
        def err(mod, sz):
            mod = mod.to(dtype).eval()
            x = _random_fields((2, fields * m, *sz), gen, dtype)
            t = FieldType("regular", m, fields * m)
            return max(equivariance_errors(mod, x, ks, in_type=t, out_type=t).values())

        fix_errors = {desc: err(mod, sz) for desc, (mod, sz) in fixes.items()}
        out.append({"name": name, "title": title, "mistake": mistake, "mistake_error": err(module, size),
                    "fixes": fix_errors, "fix_error": max(fix_errors.values())})
    return out


# =====================================================================================================
# Part 2e · error maps (the paper's Figure 8)
# =====================================================================================================

@torch.no_grad()
def error_map(module: nn.Module | Callable, image: torch.Tensor, k: int = 1, theta: float | None = None,
              in_type: FieldType | None = None, out_type: FieldType | None = None, margin: float = 4.0,
              relative: bool = True) -> np.ndarray:
    """Per-pixel ``|Φ(g·I) − g·Φ(I)|`` (max over output channels) → ``[H, W]`` numpy.

    ``k`` quarter turns (exact permutations), or ``theta`` radians: then input and output are turned
    with ``rotate_image_angle`` (bicubic) and pixels outside the centred disc (``margin`` pixels in
    from its edge) are NaN; only image → image modules then. ``relative`` divides by the range
    (max − min) of ``g·Φ(I)`` over the valid pixels, so networks with different output scales compare.
    """
    if theta is None:
        if in_type is None or out_type is None:
            ti, to = field_types(module)
            in_type, out_type = in_type or ti, out_type or to
        g_y = out_type.rotate(module(image), k)
        diff = (module(in_type.rotate(image, k)) - g_y)[0].abs().amax(0).detach().cpu().double().numpy()
        valid = np.ones(diff.shape, dtype=bool)
    else:
        g_y = rotate_image_angle(module(image), theta)
        diff = (module(rotate_image_angle(image, theta)) - g_y)[0].abs().amax(0).detach().cpu().double().numpy()
        valid = disc_mask(*diff.shape, margin, dtype=torch.bool).numpy()
        diff[~valid] = np.nan
    if relative:
        vals = g_y[0].detach().cpu().double().numpy()[:, valid]
        span = float(vals.max() - vals.min()) if vals.size else 0.0
        diff = diff / (span if span > 0 else 1.0)
    return diff
