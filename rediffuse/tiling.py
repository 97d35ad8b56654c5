"""Overlapping tiles: a network evaluated piecewise on an image too large for memory, and blended.

Tiling happens inside every sampling step: the sampler keeps the whole-image state, and each network
evaluation is computed tile by tile and blended with raised-cosine windows (weights ramping smoothly
over the overlap, normalised to sum to one), so every step starts from one consistent image and no
seams appear. :class:`TiledNet` is that evaluation; :func:`auto_tile` the tile side a memory budget
allows; :func:`pad_to` the reflect padding of images below the network's smallest side.
"""
from __future__ import annotations

import math
from typing import Callable

import numpy as np
import torch

__all__ = ["TILE_BUDGET_BYTES", "plan_tiles", "tile_window", "auto_tile", "TiledNet", "pad_to"]

#: Activation memory aimed at per tile by ``tile="auto"``.
TILE_BUDGET_BYTES = 768 * 2**20

# Peak activation bytes per pixel and per base channel of a U-Net forward pass without gradients,
# measured on the default model (base 16, mults 1 2 4: ≈ 1.27 kB/px at 512²) and rounded up.
_BYTES_PER_PX_PER_BASE_CHANNEL = 80


def auto_tile(base_channels: int, budget_bytes: int = TILE_BUDGET_BYTES) -> int:
    """Tile side (a multiple of 32, at least 64) whose network activations take about ``budget_bytes``
    for a U-Net of ``base_channels``."""
    per_px = _BYTES_PER_PX_PER_BASE_CHANNEL * int(base_channels)
    return max(64, int(math.sqrt(budget_bytes / per_px)) // 32 * 32)


def _axis_tiles(n: int, tile: int, overlap: int) -> list[tuple[int, int]]:
    """Intervals ``[a, b)`` covering ``0..n``: the fewest tiles of at most ``tile`` that overlap by
    at least ``overlap``, all of one length and spread evenly (first at 0, last ending at n)."""
    if tile <= 0 or n <= tile:
        return [(0, n)]
    if not 0 <= overlap < tile:
        raise ValueError(f"overlap must be ≥ 0 and smaller than the tile ({tile}), got {overlap}")
    k = math.ceil((n - overlap) / (tile - overlap))
    side = min(tile, math.ceil((n + (k - 1) * overlap) / k))
    while True:
        starts = [round(i * (n - side) / (k - 1)) for i in range(k)]
        # rounding the starts may cost a pixel of overlap: widen the tiles by one where it did
        if side >= tile or all(starts[i] + side - starts[i + 1] >= overlap for i in range(k - 1)):
            return [(s, s + side) for s in starts]
        side += 1


def plan_tiles(height: int, width: int, tile: int | None, overlap: int) -> list[tuple[int, int, int, int]]:
    """Tiles ``(top, bottom, left, right)`` covering a ``height × width`` image (one tile if it fits)."""
    tile = int(tile or 0)
    return [(t, b, l, r) for t, b in _axis_tiles(height, tile, overlap) for l, r in _axis_tiles(width, tile, overlap)]


def tile_window(length: int, ramp_start: bool, ramp_end: bool, overlap: int) -> torch.Tensor:
    """1-D blending weights of a tile: raised-cosine ramps 0 → 1 over ``overlap`` pixels at the ends
    that border another tile, 1 elsewhere (and at the image border). Strictly positive."""
    w = torch.ones(length, dtype=torch.float64)
    r = min(overlap, length)
    if r > 0:
        ramp = 0.5 - 0.5 * torch.cos(math.pi * (torch.arange(r, dtype=torch.float64) + 0.5) / r)
        if ramp_start:
            w[:r] *= ramp
        if ramp_end:
            w[length - r:] *= ramp.flip(0)
    return w


class TiledNet:
    """``model(x_t, t, cond)`` for the samplers: the network evaluated tile by tile and blended.

    Also checks every output for NaN/inf and reports each evaluation to ``on_eval``.
    """

    def __init__(self, net: torch.nn.Module, height: int, width: int, tile: int | None, overlap: int,
                 on_eval: Callable[[], None] | None, precision: str = "fp32"):
        self.net = net
        self.low = torch.bfloat16 if precision == "bf16" else None
        self.tiles = plan_tiles(height, width, tile, overlap)
        self.overlap = overlap
        self.height, self.width = height, width
        self.on_eval = on_eval
        self._wsum: torch.Tensor | None = None

    def _window(self, t: int, b: int, l: int, r: int, device) -> torch.Tensor:
        wy = tile_window(b - t, t > 0, b < self.height, self.overlap)
        wx = tile_window(r - l, l > 0, r < self.width, self.overlap)
        return (wy[:, None] * wx[None, :]).to(device=device, dtype=torch.float32)

    def _check(self, out: torch.Tensor, t: torch.Tensor, where: str) -> None:
        if not bool(torch.isfinite(out).all()):
            step = int(t.reshape(-1)[0])
            raise RuntimeError(f"the network produced NaN/inf values at timestep {step}{where}: "
                               "the checkpoint looks broken (diverged training?); try another checkpoint")

    def _run(self, x: torch.Tensor, t: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        if self.low is None:
            return self.net(x, t, cond)
        # the network in bfloat16 (autocast), everything the sampler does with its output in float32
        with torch.autocast(device_type=x.device.type, dtype=self.low):
            return self.net(x, t, cond).float()

    def __call__(self, x: torch.Tensor, t: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        if len(self.tiles) == 1:
            out = self._run(x, t, cond)
            self._check(out, t, "")
            if self.on_eval:
                self.on_eval()
            return out
        if self._wsum is None:
            wsum = torch.zeros(self.height, self.width, device=x.device)
            for tb in self.tiles:
                wsum[tb[0]:tb[1], tb[2]:tb[3]] += self._window(*tb, x.device)
            self._wsum = wsum
        acc = None
        for i, (t0, t1, l0, l1) in enumerate(self.tiles):
            o = self._run(x[..., t0:t1, l0:l1], t, cond[..., t0:t1, l0:l1])
            self._check(o, t, f" (tile {i + 1} of {len(self.tiles)}, rows {t0}-{t1}, columns {l0}-{l1})")
            if acc is None:
                acc = x.new_zeros(x.shape[0], o.shape[1], self.height, self.width)
            acc[..., t0:t1, l0:l1] += o * self._window(t0, t1, l0, l1, x.device)
            del o
            if self.on_eval:
                self.on_eval()
        return acc.div_(self._wsum)


def pad_to(y: torch.Tensor, size: int) -> tuple[torch.Tensor, tuple[int, int, int, int]]:
    """Reflect-pad ``[B, C, H, W]`` so both sides are ≥ ``size`` (repeated reflection when the pad is
    wider than the image); returns the padded tensor and ``(top, bottom, left, right)``."""
    h, w = y.shape[-2:]
    ph, pw = max(size - h, 0), max(size - w, 0)
    pads = (ph // 2, ph - ph // 2, pw // 2, pw - pw // 2)
    if not any(pads):
        return y, pads
    a = np.pad(y.cpu().numpy(), ((0, 0), (0, 0), pads[:2], pads[2:]), mode="reflect")
    return torch.from_numpy(a).to(y.device), pads

