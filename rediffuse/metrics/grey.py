"""What every metric starts from: uint8 images checked and turned grey exactly as MATLAB ``rgb2gray``
does, as float64; and the small filters that equal MATLAB's ``filter2``/``conv2`` bit for bit."""
from __future__ import annotations

import numpy as np

__all__ = ["to_gray_uint8"]

# MATLAB rgb2gray weights: the first row of inv([1 .956 .621; 1 -.272 -.647; 1 -1.106 1.703])
# (NTSC YIQ), printed in MATLAB's doc as 0.2989 0.5870 0.1140. Full precision matters: QMI
# depends on every grey level and the rounding of near-ties.
_RGB2GRAY = np.linalg.inv(
    np.array([[1.0, 0.956, 0.621], [1.0, -0.272, -0.647], [1.0, -1.106, 1.703]])
)[0]


# --------------------------------------------------------------------------------------------
# input handling
# --------------------------------------------------------------------------------------------

def _round_half_away(x: np.ndarray) -> np.ndarray:
    """MATLAB ``round`` (half away from zero); ``np.round`` rounds half to even."""
    return np.sign(x) * np.floor(np.abs(x) + 0.5)


def _check_uint8(img, name: str) -> np.ndarray:
    if not isinstance(img, np.ndarray):
        raise ValueError(f"{name} must be a numpy array, got {type(img).__name__}")
    if img.dtype != np.uint8:
        raise ValueError(f"{name} must be uint8, got dtype {img.dtype}")
    if not (img.ndim == 2 or (img.ndim == 3 and img.shape[2] == 3)):
        raise ValueError(f"{name} must be HxW or HxWx3, got shape {img.shape}")
    return img


def to_gray_uint8(img: np.ndarray) -> np.ndarray:
    """Grey uint8 image as MATLAB ``rgb2gray`` gives on uint8 input.

    Y = 0.298936 R + 0.587043 G + 0.114021 B (full-precision NTSC weights), rounded half away from
    zero and saturated to 0..255. A grey ``HxW`` uint8 image is returned unchanged (a copy is not
    made).
    """
    img = _check_uint8(img, "image")
    if img.ndim == 2:
        return img
    rgb = img.astype(np.float64)
    y = rgb[..., 0] * _RGB2GRAY[0] + rgb[..., 1] * _RGB2GRAY[1] + rgb[..., 2] * _RGB2GRAY[2]
    return np.clip(_round_half_away(y), 0, 255).astype(np.uint8)


def _gray64(img: np.ndarray, name: str) -> np.ndarray:
    _check_uint8(img, name)
    return to_gray_uint8(img).astype(np.float64)


def _prepare(a, b, f, min_side: int = 8):
    """Validate a fusion triple and return the three grey float64 images."""
    ga, gb, gf = _gray64(a, "a"), _gray64(b, "b"), _gray64(f, "f")
    if not (ga.shape == gb.shape == gf.shape):
        raise ValueError(f"a, b, f must have the same height and width, got {ga.shape}, {gb.shape}, {gf.shape}")
    if min(ga.shape) < min_side:
        raise ValueError(f"images must be at least {min_side}x{min_side}, got {ga.shape}")
    return ga, gb, gf


# --------------------------------------------------------------------------------------------
# small filters (exact on integer images, so they equal MATLAB's filter2/conv2 bit for bit there)
# --------------------------------------------------------------------------------------------

def _corr3_same(x: np.ndarray, k) -> np.ndarray:
    """``filter2(k, x, 'same')`` for a 3x3 kernel: zero-padded correlation, by shifted slices."""
    h, w = x.shape
    xp = np.pad(x, 1)
    out = np.zeros_like(x)
    for i in range(3):
        for j in range(3):
            if k[i][j] != 0:
                out += k[i][j] * xp[i:i + h, j:j + w]
    return out


def _conv3_same(x: np.ndarray, k) -> np.ndarray:
    """``conv2(x, k, 'same')`` for a 3x3 kernel: correlation with the kernel rotated by 180°."""
    return _corr3_same(x, np.asarray(k)[::-1, ::-1])


_SOBEL_X = ((-1, 0, 1), (-2, 0, 2), (-1, 0, 1))
_SOBEL_Y = ((-1, -2, -1), (0, 0, 0), (1, 2, 1))


def _prepare_pair(x, gt):
    gx, gg = _gray64(x, "x"), _gray64(gt, "gt")
    if gx.shape != gg.shape:
        raise ValueError(f"x and gt must have the same height and width, got {gx.shape}, {gg.shape}")
    return gx, gg
