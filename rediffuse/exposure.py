"""Blending frames of different exposure without patches: every frame's detail at one smooth exposure.

Frames of a focus stack rarely share one exposure: flicker, auto exposure, vignetting that breathes
with the focus, white balance. Where the weights switch between frames that are about equally sharp
(a background blurred in every frame, a flat region), the blend ``Σ w_i V_i`` shows every switch as
a patch of another brightness or colour that no frame has. Rather than smoothing the weights (which
would bring back the halo of a defocused edge), each frame's values are brought to a common local
exposure before they are weighed:

    F = L_ramp(Σ_i w_i g_i) · Σ_i w_i · V_i / L_ramp(g_i),    g_i = L_gain(V_i)

per channel, on the brightness ``V + 1 + DARK`` (``V`` in [-1, 1]), with ``L_w`` a local mean (a
Gaussian of width ``w`` of the longer side, on a grid of at most ``SIDE`` pixels, brought back
bilinearly):

- ``g_i``, frame i's exposure, is its brightness averaged over ``GAIN_WIDTH`` (1/8 of the image):
  wide enough that the light a defocused edge spreads hardly moves it, narrow enough to follow
  vignetting. Frames of one exposure so have nearly equal ``g_i``, also beside a strongly defocused
  edge.
- ``V_i / L_ramp(g_i)`` is the frame's detail with its exposure divided out, and ``L_ramp(Σ w_i g_i)``
  the exposure the result takes: that of the frames the weights choose, smoothed over ``RAMP_WIDTH``.
  Where the weights switch between frames of different exposure, the result's exposure passes from
  one to the other in a ramp of that width instead of a step at every switch; where one frame wins
  outright over that width, its pixels come out unchanged.

Where this would change a pixel of the plain blend by less than ``TOLERANCE`` (3 %), the plain
blend is kept; from twice that on the change is made in full. The light a defocused edge moves
shifts the local means of a sharp and a blurred frame by a few per cent, and there the plain blend
is right: frames of one exposure come out as blended plainly, but for a few pixels (measured in
docs/stacks.md).

The weights are not touched, so a defocused edge keeps its sharp decision. Sums over frames (the
order of the frames does not matter) and symmetric filters (the step commutes with quarter turns).
"""
from __future__ import annotations

import math

import cv2
import numpy as np
import torch
from scipy import ndimage

from .layers import resize

__all__ = ["ExposureBlend", "FrameExposure", "local_mean", "SIDE", "GAIN_WIDTH", "RAMP_WIDTH", "DARK"]

#: The local means are taken on a grid whose longer side is at most this many pixels.
SIDE = 128
#: Width (Gaussian σ, as a fraction of the image's longer side) of the local brightness that stands
#: for a frame's exposure: wide against the blur of a defocused edge (whose light it must not count as
#: a change of exposure), narrow against the image, so that vignetting is followed.
GAIN_WIDTH = 1 / 8
#: Width of the smoothing of the blended exposure: the ramp over which the result's exposure passes
#: from the region one frame wins to the region another wins.
RAMP_WIDTH = 1 / 16
#: Offset of the brightness (in units of V, i.e. 16 grey levels): keeps near-black regions from
#: dividing by ~0 (there a ratio of exposures is noise).
DARK = 16 / 127.5
#: Changes of exposure (as a ratio) up to this are left alone, and those beyond twice this made in
#: full: the light a defocused edge moves shifts the local means of a sharp and a blurred frame by a
#: few per cent, where the plain blend is right, while an exposure step of a few per cent at a weight
#: switch hardly shows.
TOLERANCE = 0.03
# Rows per strip of full-size work (as ``stack.STRIP_ROWS``): bounded temporaries at 24 MP.
_ROWS = 256


def _grid(height: int, width: int) -> tuple[int, int]:
    f = min(1.0, SIDE / max(height, width))
    return max(1, round(height * f)), max(1, round(width * f))


def _shrink(x: torch.Tensor, size: tuple[int, int]) -> np.ndarray:
    return resize(x[None], size)[0].double().numpy()


def local_mean(v: np.ndarray, valid: np.ndarray | None = None, width: float = GAIN_WIDTH, *,
               offset: float = 1 + DARK) -> np.ndarray:
    """The local mean ``[C, h, w]`` float64 on the small grid of ``v + offset`` (``v`` ``[C, H, W]``;
    by default values in [-1, 1], so their brightness ``V + 1 + DARK``), a Gaussian of ``width`` of the
    longer side; with ``valid`` ``[H, W]`` bool, the mean over the covered pixels only (normalised
    convolution; pixels covered by none get the frame's mean)."""
    c, h, w = v.shape
    size = _grid(h, w)
    x = torch.from_numpy(np.ascontiguousarray(v, np.float32))
    if valid is None:
        return _smooth(_shrink(x, size) + offset, width)
    cover = torch.from_numpy(np.ascontiguousarray(valid, np.float32))[None]
    wsmall = _shrink(cover, size)  # [1, h, w]
    small = _shrink(x * cover, size) + offset * wsmall
    den = _smooth(wsmall, width)[0]
    fallback = small.sum((1, 2)) / max(wsmall.sum(), 1e-12)
    num = _smooth(small, width)
    return np.where(den > 1e-3, num / np.maximum(den, 1e-12), fallback[:, None, None])


def _smooth(small: np.ndarray, width: float) -> np.ndarray:
    """A Gaussian of ``width`` of the longer side over each channel of ``[C, h, w]``."""
    sigma = width * max(small.shape[-2:])
    return np.stack([ndimage.gaussian_filter(s, sigma, mode="reflect", truncate=3.0) for s in small])


class _Rows:
    """A smooth field ``[C, h, w]`` on the small grid, brought to full size ``(H, W)`` bilinearly (pixel
    centres aligned, as ``layers.resize``) one strip of rows at a time: no full-size copy of it."""

    def __init__(self, small: np.ndarray, size: tuple[int, int]):
        self.c, h, w = small.shape
        self.size = tuple(size)
        self.hwc = np.ascontiguousarray(np.moveaxis(np.asarray(small, np.float32), 0, -1))
        self.sy, self.sx = h / size[0], w / size[1]
        self.mapx = ((np.arange(size[1], dtype=np.float64) + 0.5) * self.sx - 0.5).astype(np.float32)

    def __call__(self, s: slice) -> np.ndarray:
        """Rows ``s`` of the full-size field: ``[C, rows, W]`` float32."""
        mapy = ((np.arange(s.start, s.stop, dtype=np.float64) + 0.5) * self.sy - 0.5).astype(np.float32)
        shape = (len(mapy), self.size[1])
        mx, my = (np.ascontiguousarray(np.broadcast_to(m, shape)) for m in (self.mapx, mapy[:, None]))
        up = cv2.remap(self.hwc, mx, my, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
        return np.moveaxis(up.reshape(len(mapy), self.size[1], self.c), -1, 0)


class FrameExposure:
    """One frame's exposure (:meth:`ExposureBlend.frame`); :meth:`rows` gives the two values the blend
    weighs in place of the frame's values, strip by strip."""

    def __init__(self, gain: np.ndarray, size: tuple[int, int]):
        self.gain = _Rows(gain, size)
        # divided by its exposure smoothed as finish() smooths the blend's, so that where the frame
        # wins alone the two cancel and its pixels come out unchanged
        self.inverse = _Rows(1.0 / _smooth(gain, RAMP_WIDTH), size)

    def rows(self, v: np.ndarray, s: slice) -> tuple[np.ndarray, np.ndarray]:
        """``(V / L_ramp(g), g)`` ``[C, rows, W]`` float32 of the frame's values ``v`` ``[C, rows, W]``
        (rows ``s`` of the frame, in [-1, 1])."""
        return (np.asarray(v, np.float32) + np.float32(1 + DARK)) * self.inverse(s), self.gain(s)


class ExposureBlend:
    """``F = L_ramp(Σ_i w_i g_i) · Σ_i w_i V_i / L_ramp(g_i)`` (module docstring) for a blend whose
    weights are accumulated elsewhere: :meth:`frame` measures a frame's exposure, its
    :meth:`FrameExposure.rows` give the two values to weigh besides the frame's values, and
    :meth:`finish` turns the three blends into the result. ``size``: ``(H, W)`` of the stack."""

    def __init__(self, size: tuple[int, int]):
        self.size = tuple(size)

    def frame(self, v: np.ndarray, valid: np.ndarray | None = None) -> FrameExposure:
        """The exposure of a frame's values ``[C, H, W]`` in [-1, 1], covering ``valid`` ``[H, W]``."""
        return FrameExposure(local_mean(v, valid), self.size)

    def finish(self, plain: np.ndarray, relative: np.ndarray, gain: np.ndarray) -> np.ndarray:
        """The result ``[C, H, W]`` float32 in V's units from the blends (same weights, normalised) of
        the values, of the relative values and of the exposures; computed in place of ``relative``.
        Where the common exposure would change a pixel of the plain blend by less than ``TOLERANCE`` (as
        a ratio), the pixel stays as it is; from twice that on, it changes in full, and in between in
        part."""
        ramp = _Rows(local_mean(gain, width=RAMP_WIDTH, offset=0.0), self.size)
        off, tol = np.float32(1 + DARK), np.float32(math.log1p(TOLERANCE))
        for r in range(0, self.size[0], _ROWS):
            s = slice(r, min(r + _ROWS, self.size[0]))
            base = plain[:, s] + off
            change = np.log(relative[:, s] * ramp(s) / base)
            change *= np.clip(np.abs(change) / tol - 1, 0, 1)  # 0 up to the tolerance, all from twice it
            relative[:, s] = base * np.exp(change) - off
        return relative

    def pair(self, w: torch.Tensor, x: torch.Tensor, y: torch.Tensor, valid_x: np.ndarray | None = None,
             valid_y: np.ndarray | None = None) -> torch.Tensor:
        """Two frames ``x``, ``y`` ``[1, C, H, W]`` in [-1, 1] blended with the weight ``w`` of ``x``
        (``[1, 1 or C, H, W]``, ``y`` gets ``1 − w``) at a common local exposure: ``[1, C, H, W]``
        float32 on ``x``'s device. ``valid_*``: where each frame covers the grid. Row strips: beyond
        the result, one more array of its size."""
        w = w.detach().float().cpu().numpy()[0]
        xv, yv = (v.detach().float().cpu().numpy()[0] for v in (x, y))
        ex, ey = self.frame(xv, valid_x), self.frame(yv, valid_y)
        plain, rel, gain = (np.empty(xv.shape, np.float32) for _ in range(3))
        for r in range(0, self.size[0], _ROWS):
            s = slice(r, min(r + _ROWS, self.size[0]))
            (rx, gx), (ry, gy) = ex.rows(xv[:, s], s), ey.rows(yv[:, s], s)
            ws = w[:, s]
            plain[:, s] = ws * xv[:, s] + (1 - ws) * yv[:, s]
            rel[:, s] = ws * rx + (1 - ws) * ry
            gain[:, s] = ws * gx + (1 - ws) * gy
        return torch.from_numpy(self.finish(plain, rel, gain))[None].to(x.device)
