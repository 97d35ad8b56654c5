"""How images and regular feature fields transform under the rotation group C_m.

Conventions (used everywhere in the project):

- A *regular field* tensor has shape ``[B, C*m, H, W]``; channel ``c*m + t`` is field ``c`` at
  orientation ``t`` (i.e. ``h.view(B, C, m, H, W)``).
- Rotating by one step of C_m (angle 2π/m) rotates the spatial grid *and* shifts the orientation axis
  cyclically by ``+1``. An image (the "trivial" representation) only rotates spatially.
- A positive angle turns the grid the way ``torch.rot90(x, 1, dims=(-2, -1))`` does. In centred
  (row, col) coordinates the rotated image is ``out(p) = in(R⁻¹ p)`` with
  ``R = [[cos θ, -sin θ], [sin θ, cos θ]]`` acting on ``(row, col)``.

Quarter turns (``k``) are exact index permutations. Other multiples of 2π/m are interpolated and
therefore only approximately equivariant; that approximation is what the paper's theorems bound.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

__all__ = [
    "FieldType",
    "rotate_image",
    "rotate_fields",
    "rotate_image_angle",
    "rotate_fields_angle",
    "rotation_matrix",
    "disc_mask",
]


def rotation_matrix(theta: float, dtype=torch.float64) -> torch.Tensor:
    """2x2 matrix ``R_θ`` acting on centred (row, col) coordinates.

    Entries are snapped to exact 0/±1 at multiples of 90°, so that rotated sample points land
    *exactly* on the grid (``cos(π/2)`` is 6e-17 in floating point, which would break exactness).
    """
    c, s = math.cos(theta), math.sin(theta)
    c = float(round(c)) if abs(c - round(c)) < 1e-12 else c
    s = float(round(s)) if abs(s - round(s)) < 1e-12 else s
    return torch.tensor([[c, -s], [s, c]], dtype=dtype)


def rotate_image(x: torch.Tensor, k: int) -> torch.Tensor:
    """Rotate ``[..., H, W]`` by ``k`` quarter turns (exact)."""
    return torch.rot90(x, k % 4, dims=(-2, -1))


def _roll_orientations(h: torch.Tensor, shift: int, m: int) -> torch.Tensor:
    B, Cm, H, W = h.shape
    if Cm % m:
        raise ValueError(f"a regular field tensor needs channels divisible by m={m}, got {Cm}")
    return h.view(B, Cm // m, m, H, W).roll(shift, dims=2).view(B, Cm, H, W)


def rotate_fields(h: torch.Tensor, k: int, m: int = 4) -> torch.Tensor:
    """Rotate regular fields ``[B, C*m, H, W]`` by ``k`` quarter turns (exact).

    A quarter turn is ``m/4`` steps of C_m, so ``m`` must be a multiple of 4.
    """
    if m % 4:
        raise ValueError(f"quarter turns act on C_m only when m is a multiple of 4, got m={m}")
    return _roll_orientations(rotate_image(h, k), (k % 4) * (m // 4), m)


def disc_mask(h: int, w: int, margin: float = 0.0, device=None, dtype=torch.float32) -> torch.Tensor:
    """``[H, W]`` mask of the centred disc that stays inside the grid under every rotation."""
    r = (min(h, w) - 1) / 2 - margin
    yy = torch.arange(h, device=device, dtype=torch.float64) - (h - 1) / 2
    xx = torch.arange(w, device=device, dtype=torch.float64) - (w - 1) / 2
    return ((yy[:, None] ** 2 + xx[None, :] ** 2) <= r * r).to(dtype)


def rotate_image_angle(x: torch.Tensor, theta: float, mode: str = "bicubic") -> torch.Tensor:
    """Rotate ``[B, C, H, W]`` by an arbitrary angle ``theta`` (radians) about the grid centre.

    Interpolated with ``grid_sample`` (zeros outside); for multiples of 90° on a square grid this
    coincides with :func:`rotate_image` up to interpolation round-off. Compare results inside
    :func:`disc_mask`, where no content leaves the grid.
    """
    B, C, H, W = x.shape
    R_inv = rotation_matrix(-theta)
    rows = torch.arange(H, dtype=torch.float64) - (H - 1) / 2
    cols = torch.arange(W, dtype=torch.float64) - (W - 1) / 2
    pr, pc = torch.meshgrid(rows, cols, indexing="ij")
    src_r = R_inv[0, 0] * pr + R_inv[0, 1] * pc
    src_c = R_inv[1, 0] * pr + R_inv[1, 1] * pc
    # grid_sample wants (x=col, y=row) normalised to [-1, 1] with align_corners=True.
    gx = src_c / ((W - 1) / 2) if W > 1 else src_c
    gy = src_r / ((H - 1) / 2) if H > 1 else src_r
    grid = torch.stack([gx, gy], dim=-1).to(x.dtype).to(x.device).expand(B, H, W, 2)
    return F.grid_sample(x, grid, mode=mode, padding_mode="zeros", align_corners=True)


def rotate_fields_angle(h: torch.Tensor, steps: int, m: int, mode: str = "bicubic") -> torch.Tensor:
    """Rotate regular fields by ``steps`` elements of C_m (angle ``2π·steps/m``), interpolating space."""
    return _roll_orientations(rotate_image_angle(h, 2 * math.pi * steps / m, mode), steps % m, m)


@dataclass(frozen=True)
class FieldType:
    """How a tensor transforms: ``"trivial"`` (images, invariant outputs) or ``"regular"`` fields.

    ``channels`` counts tensor channels (``fields * m`` for regular types).
    """

    kind: str
    m: int
    channels: int

    def __post_init__(self):
        if self.kind not in ("trivial", "regular"):
            raise ValueError(f"field kind must be 'trivial' or 'regular', got {self.kind!r}")
        if self.kind == "regular" and self.channels % self.m:
            raise ValueError(f"regular type needs channels divisible by m={self.m}, got {self.channels}")

    @property
    def fields(self) -> int:
        return self.channels // self.m if self.kind == "regular" else self.channels

    def rotate(self, x: torch.Tensor, k: int) -> torch.Tensor:
        """Act with ``k`` quarter turns (exact)."""
        return rotate_image(x, k) if self.kind == "trivial" else rotate_fields(x, k, self.m)

    def rotate_steps(self, x: torch.Tensor, steps: int, mode: str = "bicubic") -> torch.Tensor:
        """Act with ``steps`` elements of C_m (angle 2π·steps/m), interpolated."""
        if self.kind == "trivial":
            return rotate_image_angle(x, 2 * math.pi * steps / self.m, mode)
        return rotate_fields_angle(x, steps, self.m, mode)
