"""Colour conventions (BT.601 full-range Y'CbCr, the chroma fusion rule) and the conversions between
uint8 images and model tensors in [-1, 1]; ``rediffuse.data`` describes the conventions."""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

__all__ = ["rgb_to_ycbcr", "ycbcr_to_rgb", "luminance", "luma", "fuse_chroma", "recombine", "recombine_float",
           "image_to_tensor", "tensor_to_image", "center_crop"]

_KR, _KB = 0.299, 0.114
_KG = 1.0 - _KR - _KB
# Rows: Y, Cb - 128, Cr - 128 as linear functions of (R, G, B).
_RGB2YCC = np.array(
    [
        [_KR, _KG, _KB],
        [-0.5 * _KR / (1 - _KB), -0.5 * _KG / (1 - _KB), 0.5],
        [0.5, -0.5 * _KG / (1 - _KR), -0.5 * _KB / (1 - _KR)],
    ]
)
# The exact inverse (not the rounded 1.402 / 0.344136 / ... of the JFIF text), so a round trip
# in float is exact to machine precision.
_YCC2RGB = np.linalg.inv(_RGB2YCC)
_OFFSET = np.array([0.0, 128.0, 128.0])


def _check_rgb(img: np.ndarray, name: str) -> np.ndarray:
    a = np.asarray(img)
    if a.shape[-1:] != (3,):
        raise ValueError(f"{name}: expected [..., 3], got shape {a.shape}")
    return a.astype(np.float64, copy=False)


def rgb_to_ycbcr(img: np.ndarray) -> np.ndarray:
    """RGB ``[..., 3]`` (uint8 or float, 0-255 scale) -> Y'CbCr ``[..., 3]`` float64, 0-255 scale."""
    a = _check_rgb(img, "rgb_to_ycbcr")
    return a @ _RGB2YCC.T + _OFFSET


def ycbcr_to_rgb(ycc: np.ndarray) -> np.ndarray:
    """Y'CbCr ``[..., 3]`` (0-255 scale) -> RGB ``[..., 3]`` float64, unrounded and unclipped."""
    a = _check_rgb(ycc, "ycbcr_to_rgb")
    return (a - _OFFSET) @ _YCC2RGB.T


def luminance(img: np.ndarray) -> np.ndarray:
    """Y (float64, 0-255) of an RGB ``[H, W, 3]`` image; a grey ``[H, W]`` image is returned as float."""
    a = np.asarray(img)
    if a.ndim == 2:
        return a.astype(np.float64)
    return _check_rgb(a, "luminance") @ _RGB2YCC[0]


def luma(img: np.ndarray, rows: int = 512) -> np.ndarray:
    """Y ``[H, W]`` float32 (0–255 scale) of a grey or RGB image (uint8, or float/uint16 already in the
    0–255 scale), the :func:`luminance` coefficients in float32 and ``rows`` rows at a time: no
    float64 copy of a 24-MP frame. A grey image is returned as float32 (no copy if it already is)."""
    a = np.asarray(img)
    if a.ndim == 2:
        return a.astype(np.float32, copy=False)
    _check_rgb(a[:1, :1], "luma")
    y = np.empty(a.shape[:2], np.float32)
    coef = _RGB2YCC[0].astype(np.float32)
    for r in range(0, a.shape[0], rows):
        y[r:r + rows] = a[r:r + rows].astype(np.float32) @ coef
    return y


def fuse_chroma(chroma: Sequence[np.ndarray]) -> np.ndarray:
    """Fuse one chroma channel (Cb or Cr, 0-255) of N >= 2 sources, each ``[H, W]`` -> ``[H, W]`` float64.

    ``sum_i C_i |C_i - 128| / sum_i |C_i - 128|``: the more saturated source dominates; 128 (grey)
    where every source is exactly 128, the only place the denominator is zero.
    """
    if len(chroma) < 2:
        raise ValueError(f"fuse_chroma needs at least 2 sources, got {len(chroma)}")
    c = np.stack([np.asarray(x, dtype=np.float64) for x in chroma])
    w = np.abs(c - 128.0)
    den = w.sum(axis=0)
    num = (c * w).sum(axis=0)
    out = np.full(den.shape, 128.0)
    nz = den > 0
    out[nz] = num[nz] / den[nz]
    return out


def recombine(y_fused: np.ndarray, sources_rgb: Sequence[np.ndarray]) -> np.ndarray:
    """Join a fused luminance with the fused chroma of the sources -> uint8.

    ``y_fused``: ``[H, W]`` in 0-255 (float or uint8; convert model output with
    ``(x + 1) * 127.5`` first). ``sources_rgb``: N >= 2 sources ``[H, W, 3]`` (or grey ``[H, W]``, in
    which case the rounded Y is returned as ``[H, W]``). Returns ``[H, W, 3]`` uint8.
    """
    return np.clip(np.rint(recombine_float(y_fused, sources_rgb)), 0, 255).astype(np.uint8)


def recombine_float(y_fused: np.ndarray, sources_rgb: Sequence[np.ndarray]) -> np.ndarray:
    """:func:`recombine` before rounding: float64 in the 0-255 scale, unclipped (so a 16-bit
    result can be made from it without the 8-bit rounding)."""
    y = np.asarray(y_fused, dtype=np.float64)
    srcs = [np.asarray(s) for s in sources_rgb]
    if len(srcs) < 2:
        raise ValueError(f"recombine needs at least 2 sources, got {len(srcs)}")
    if y.ndim != 2:
        raise ValueError(f"recombine: y_fused must be [H, W], got {y.shape}")
    if any(s.shape[:2] != y.shape for s in srcs):
        raise ValueError(f"recombine: source sizes {[s.shape for s in srcs]} differ from Y {y.shape}")
    if all(s.ndim == 2 for s in srcs):
        return y
    ycc = [rgb_to_ycbcr(s if s.ndim == 3 else np.repeat(s[..., None], 3, -1)) for s in srcs]
    cb = fuse_chroma([c[..., 1] for c in ycc])
    cr = fuse_chroma([c[..., 2] for c in ycc])
    return ycbcr_to_rgb(np.stack([y, cb, cr], axis=-1))


def image_to_tensor(img: np.ndarray, y_only: bool = True) -> torch.Tensor:
    """uint8 (or float 0–255) ``[H, W]`` / ``[H, W, 3]`` -> float32 in [-1, 1]: ``[1, H, W]`` (Y) or
    ``[3, H, W]`` (RGB).

    Y is not rounded to integers; a grey image gives Y = grey, and is repeated for RGB. Converted in
    row strips, so a 24-MP photo never exists as a full float64 copy.
    """
    a = np.asarray(img)
    if a.ndim == 2 and not y_only:
        a = a[..., None]
    h, w = a.shape[:2]
    out = np.empty((1 if y_only else 3, h, w), np.float32)
    for r in range(0, h, _STRIP_ROWS):
        s = slice(r, min(r + _STRIP_ROWS, h))
        v = luminance(a[s])[None] if y_only else np.moveaxis(a[s].astype(np.float64), -1, 0)
        out[:, s] = v / 127.5 - 1.0
    return torch.from_numpy(out)


_STRIP_ROWS = 256


def center_crop(img: np.ndarray, size: int | None) -> np.ndarray:
    """The central ``size``×``size`` window of ``[H, W(, C)]`` (the whole image when ``size`` is
    None or not smaller than it)."""
    if not size:
        return img
    h, w = img.shape[:2]
    if size > min(h, w):
        raise ValueError(f"crop {size} is larger than the image ({h}×{w}); use a smaller crop or none")
    top, left = (h - size) // 2, (w - size) // 2
    return img[top:top + size, left:left + size]


def tensor_to_image(t: torch.Tensor) -> np.ndarray:
    """float tensor in [-1, 1], ``[1, H, W]`` / ``[3, H, W]`` (or ``[H, W]``) -> uint8 ``[H, W]`` / ``[H, W, 3]``."""
    a = t.detach().cpu().double().numpy()
    a = np.clip(np.rint((a + 1.0) * 127.5), 0, 255).astype(np.uint8)
    if a.ndim == 3:
        a = a[0] if a.shape[0] == 1 else np.moveaxis(a, 0, -1)
    return a
