"""Continuous test fields, exact sampling on rotated grids, and Theorems 3.1-3.2 of the ReDiffuse paper.

A feature map is modelled as the samples, on a grid of mesh ``δ``, of a continuous function ``e`` on
the plane whose gradient is bounded by ``G``. Because ``e`` is known everywhere, the rotated input
``π_θ e = e∘R_θ⁻¹`` can be sampled exactly, so no interpolation muddies the measurement, and an operator
``Ψ`` (max pooling, bilinear interpolation) can be compared at any continuous point ``x``:

    error(x, θ) = | Ψ_δ[π_θ e](x) − Ψ_δ[e](R_θ⁻¹ x) |.

- ``GaborField``: sums of Gabor/Gaussian bumps, optionally rectified, with a certified gradient bound.
- ``sample_field``: the grid samples (centred grid; quarter turns are exact index permutations).
- ``maxpool_at`` / ``bilinear_at`` / ``pointwise_errors`` / ``check_bound``: the two theorems measured.

Coordinates are (row, col) pairs, as in ``rediffuse.groups``: a positive angle turns the way
``torch.rot90(x, 1, dims=(-2, -1))`` does.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import numpy as np
import torch

from ..bases import keys_cubic
from ..groups import rotation_matrix

__all__ = ["GaborField", "sample_field", "rotate_grid_cubic", "random_points", "cell_corners", "maxpool_at",
           "bilinear_at", "POINT_OPERATORS", "BOUND_CONSTANTS", "SHARP_CONSTANTS", "operator_bound", "pointwise_errors",
           "pointwise_error_map", "BoundCheck", "check_bound", "loglog_slope"]

SQRT2 = math.sqrt(2.0)


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


def rotate_grid_cubic(y: torch.Tensor, theta: float) -> torch.Tensor:
    """``π_θ`` on a grid function: ``[B, C, H, W]`` read at ``R_θ⁻¹x`` for every pixel ``x`` (about the
    grid centre, the convention of ``sample_field``), with Keys' cubic kernel (a = −0.5), zeros outside.

    The Keys kernel with a = −0.5 is third-order accurate: on a smooth function the interpolation error
    falls like δ³, so it stays far below the O(δ) effects being measured. (``torch``'s bicubic mode uses
    a = −0.75, which is only first order: it would add an O(δ) error of its own.) At multiples of 90°
    every source point is a grid point and the result is an exact copy (``rot90``).
    """
    H, W = y.shape[-2:]
    r_inv = torch.from_numpy(_inverse_rotations(np.array(float(theta))))
    rows = torch.arange(H, dtype=torch.float64) - (H - 1) / 2
    cols = torch.arange(W, dtype=torch.float64) - (W - 1) / 2
    pr, pc = torch.meshgrid(rows, cols, indexing="ij")
    src_r = r_inv[0, 0] * pr + r_inv[0, 1] * pc + (H - 1) / 2
    src_c = r_inv[1, 0] * pr + r_inv[1, 1] * pc + (W - 1) / 2
    taps = torch.arange(-1, 3, dtype=torch.float64)
    ri = torch.floor(src_r)[..., None] + taps  # [H, W, 4]: the 4 rows (cols) around each source point
    ci = torch.floor(src_c)[..., None] + taps
    wr = keys_cubic(src_r[..., None] - ri) * ((ri >= 0) & (ri < H))
    wc = keys_cubic(src_c[..., None] - ci) * ((ci >= 0) & (ci < W))
    ri, ci = ri.clamp(0, H - 1).long(), ci.clamp(0, W - 1).long()
    vals = y[..., ri[:, :, :, None], ci[:, :, None, :]]  # [..., H, W, 4, 4]
    weights = (wr[:, :, :, None] * wc[:, :, None, :]).to(y.dtype)
    return (vals * weights).sum((-1, -2))


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
