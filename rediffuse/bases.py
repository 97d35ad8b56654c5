"""Filter bases sampled at rotated grids: B-Conv (bicubic), F-Conv (Fourier), G-Conv (rot90 tying).

A basis is a set of ``R`` continuous functions φ_r on [-1, 1]² (coordinates (row, col)). Sampled on
the p×p grid of a filter at coordinates rotated by -θ_t, θ_t = 2πt/m, it gives a tensor
``[m, p, p, R]``: filter orientation ``t`` is ``Σ_r w_r φ_r(R_{-θ_t} x)``, i.e. the same learned
filter turned by θ_t. Quarter turns land exactly on the grid (see ``groups.rotation_matrix``), so
m = 4 gives exact equivariance for every basis; m = 8, 16 are interpolated.
"""
from __future__ import annotations

import math

import torch

from .groups import rotation_matrix

__all__ = ["FilterBasis", "BicubicBasis", "FourierBasis", "RotTyingBasis", "make_basis", "BASES"]


def keys_cubic(x: torch.Tensor, a: float = -0.5) -> torch.Tensor:
    """Keys' cubic convolution kernel (a = -0.5: the classic bicubic interpolant)."""
    ax = x.abs()
    near = ((a + 2) * ax - (a + 3)) * ax * ax + 1
    far = ((a * ax - 5 * a) * ax + 8 * a) * ax - 4 * a
    return torch.where(ax <= 1, near, torch.where(ax < 2, far, torch.zeros_like(ax)))


def _grid(p: int) -> torch.Tensor:
    """Centred filter coordinates normalised to [-1, 1] (a single 0 for p = 1)."""
    c = (p - 1) / 2
    idx = torch.arange(p, dtype=torch.float64) - c
    return idx / c if c > 0 else idx


def rotated_coords(p: int, theta: float) -> tuple[torch.Tensor, torch.Tensor]:
    """(row, col) of the p×p grid mapped by R_{-θ}: where orientation θ samples the base filter."""
    g = _grid(p)
    r, c = torch.meshgrid(g, g, indexing="ij")
    R = rotation_matrix(-theta)
    return R[0, 0] * r + R[0, 1] * c, R[1, 0] * r + R[1, 1] * c


def grid_offset(p: int, theta: float) -> float:
    """Largest distance, in pixels, from a sample point of the p×p grid turned by θ to the nearest grid
    point: 0 (up to round-off) for quarter turns, where turning a filter only permutes its taps."""
    r, c = rotated_coords(p, theta)
    half = (p - 1) / 2
    rr, cc = r * half, c * half  # pixel units, grid points at the integers (odd p) or half-integers (even p)
    shift = 0.0 if p % 2 else 0.5
    dr, dc = rr - shift - torch.round(rr - shift), cc - shift - torch.round(cc - shift)
    return float(torch.sqrt(dr * dr + dc * dc).max())


def radial_mask(p: int, width: float = 0.25) -> torch.Tensor:
    """``[p, p]`` soft disc: 1 inside the unit circle, Gaussian fall-off outside.

    Filter corners move off the grid when turned by non-right angles; damping them keeps the
    interpolated rotations close to true rotations. The mask is rotation invariant, so applying it
    to every orientation preserves the tying.
    """
    g = _grid(p)
    r = torch.sqrt(g[:, None] ** 2 + g[None, :] ** 2)
    return torch.exp(-((r - 1).clamp(min=0) / width) ** 2)


class FilterBasis:
    """Base class. Subclasses define ``functions(row, col) -> [..., R]`` on continuous coordinates."""

    name = "basis"

    def __init__(self, size: int, mask: bool | None = None):
        if size < 1 or size % 2 == 0:
            raise ValueError(f"kernel size must be odd (keeps the filter centred under rotation), got {size}")
        self.size = size
        self.mask = mask

    dim: int

    def _check_inP(self, inP: int | None) -> int:
        """Control points / frequencies per axis: odd (centred), at most the kernel size."""
        inP = self.size if inP is None else inP
        if inP < 1 or inP % 2 == 0 or inP > self.size:
            raise ValueError(f"inP must be odd and in [1, size={self.size}], got {inP}")
        return inP

    def functions(self, row: torch.Tensor, col: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def sample(self, m: int) -> torch.Tensor:
        """``[m, p, p, R]`` float64: every basis function sampled at the grid turned by 2πt/m."""
        out = torch.stack([self.functions(*rotated_coords(self.size, 2 * math.pi * t / m)) for t in range(m)])
        use_mask = self.mask if self.mask is not None else (4 % m != 0)
        if use_mask:
            out = out * radial_mask(self.size)[None, :, :, None]
        return out

    def __repr__(self) -> str:
        return f"{type(self).__name__}(size={self.size}, dim={self.dim})"


class BicubicBasis(FilterBasis):
    """B-Conv: ``φ_kl(x, y) = K(s·x − k) K(s·y − l)``, k, l ∈ {−s..s}, s = (inP − 1)/2.

    With ``inP == size`` the unrotated basis is the identity (any p×p filter; R = p²); a smaller
    ``inP`` gives smooth filters with fewer parameters (R = inP²).
    """

    name = "bconv"

    def __init__(self, size: int, inP: int | None = None, mask: bool | None = None):
        super().__init__(size, mask)
        self.inP = self._check_inP(inP)
        self.dim = self.inP ** 2

    def functions(self, row, col):
        s = (self.inP - 1) / 2
        ks = torch.arange(self.inP, dtype=torch.float64) - s
        fr = keys_cubic(s * row[..., None] - ks)  # [..., inP]
        fc = keys_cubic(s * col[..., None] - ks)
        return (fr[..., :, None] * fc[..., None, :]).flatten(-2)


class FourierBasis(FilterBasis):
    """F-Conv: real 2-D Fourier functions cos/sin(2π(k·n_row + l·n_col)/p), |k|, |l| ≤ (inP−1)/2.

    ``n = c·x`` is the pixel offset. With ``inP == size`` the p² functions span every p×p filter.
    They are orthonormalised on the unrotated grid by one fixed linear map, which is applied to the
    continuous functions as well, so the rotated copies stay consistent.
    """

    name = "fconv"

    def __init__(self, size: int, inP: int | None = None, mask: bool | None = None):
        super().__init__(size, mask)
        self.inP = self._check_inP(inP)
        h = (self.inP - 1) // 2
        freqs = [(k, l) for k in range(-h, h + 1) for l in range(-h, h + 1)]
        # one representative of each ±(k, l) pair: cos for all, sin for the non-zero ones
        half = [f for f in freqs if f > (0, 0)]
        self._cos = torch.tensor([(0, 0)] + half, dtype=torch.float64)
        self._sin = torch.tensor(half, dtype=torch.float64).reshape(-1, 2)
        self.dim = len(self._cos) + len(self._sin)
        raw = self._raw(*rotated_coords(size, 0.0)).reshape(size * size, self.dim)
        evals, evecs = torch.linalg.eigh(raw.T @ raw)
        self._ortho = evecs @ torch.diag(evals.clamp(min=1e-12).rsqrt()) @ evecs.T

    def _raw(self, row, col):
        c = (self.size - 1) / 2
        scale = 2 * math.pi * c / self.size if c > 0 else 0.0
        arg_c = scale * (row[..., None] * self._cos[:, 0] + col[..., None] * self._cos[:, 1])
        arg_s = scale * (row[..., None] * self._sin[:, 0] + col[..., None] * self._sin[:, 1])
        return torch.cat([torch.cos(arg_c), torch.sin(arg_s)], dim=-1)

    def functions(self, row, col):
        return self._raw(row, col) @ self._ortho


class RotTyingBasis(FilterBasis):
    """G-Conv: one free p×p filter, orientation t is ``rot90(filter, t·4/m)``. Only m ∈ {1, 2, 4}."""

    name = "gconv"

    def __init__(self, size: int, inP: int | None = None, mask: bool | None = None):
        super().__init__(size, mask=False)
        if inP not in (None, size):
            raise ValueError("G-Conv has no smooth basis: leave inP unset")
        self.dim = size * size

    def sample(self, m: int) -> torch.Tensor:
        if 4 % m:
            raise ValueError(f"G-Conv ties filters by exact rot90, which needs m in (1, 2, 4); got m={m}")
        eye = torch.eye(self.dim, dtype=torch.float64).reshape(self.size, self.size, self.dim)
        return torch.stack([torch.rot90(eye, t * 4 // m, dims=(0, 1)) for t in range(m)])


BASES = {"bconv": BicubicBasis, "fconv": FourierBasis, "gconv": RotTyingBasis}


def make_basis(kind: str | FilterBasis, size: int, inP: int | None = None) -> FilterBasis:
    """Build a basis by name (``"bconv"``, ``"fconv"``, ``"gconv"``) or pass one through."""
    if isinstance(kind, FilterBasis):
        return kind
    if kind not in BASES:
        raise ValueError(f"unknown basis {kind!r}; choose one of {sorted(BASES)}")
    return BASES[kind](size, inP)
