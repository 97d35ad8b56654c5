"""Classical multi-focus fusion methods, used as reference points for the learned models.

Every method has the signature ``fn(images: list[np.ndarray], **params) -> np.ndarray``: N >= 2
registered sources of the same shape, uint8 ``[H, W]`` (grey) or ``[H, W, 3]`` (RGB), and a uint8
result of that shape.

Colour: ``average`` works per channel. The other three follow GFF (Li, Kang, Hu, TIP 2013) and the
usual colour extension of decision-map methods: activity / saliency is measured on the luminance
(BT.601 Y, as MATLAB's ``rgb2gray``), and the resulting decision or weight maps are applied
identically to R, G and B. Copying whole colour pixels (``focus_select``) keeps in-focus regions
pixel-identical to the sources, and a shared map cannot create hues that no source has.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
from scipy import ndimage

from .data import luminance

__all__ = ["average", "laplacian_pyramid", "focus_select", "gff", "guided_filter", "guided_coefficients", "BASELINES", "get_baseline"]

FusionFn = Callable[..., np.ndarray]


def _check(images: Sequence[np.ndarray]) -> list[np.ndarray]:
    imgs = [np.asarray(im) for im in images]
    if len(imgs) < 2:
        raise ValueError(f"fusion needs at least 2 source images, got {len(imgs)}")
    shape = imgs[0].shape
    for i, im in enumerate(imgs):
        if im.dtype != np.uint8:
            raise TypeError(f"source {i}: expected uint8, got {im.dtype}")
        if im.shape != shape:
            raise ValueError(f"sources differ in shape: {[x.shape for x in imgs]}")
    if not (len(shape) == 2 or (len(shape) == 3 and shape[-1] == 3)):
        raise ValueError(f"expected [H, W] or [H, W, 3] sources, got {shape}")
    return imgs


def _to_uint8(x: np.ndarray) -> np.ndarray:
    return np.clip(np.rint(x), 0, 255).astype(np.uint8)


def _spread(w: np.ndarray, like: np.ndarray) -> np.ndarray:
    """Weight/decision map [H, W] -> broadcastable against an image [H, W] or [H, W, 3]."""
    return w[..., None] if like.ndim == 3 else w


# --------------------------------------------------------------------------------------------
# Average
# --------------------------------------------------------------------------------------------


def average(images: Sequence[np.ndarray]) -> np.ndarray:
    """Per-pixel, per-channel mean of the sources (rounded)."""
    imgs = _check(images)
    return _to_uint8(np.mean([im.astype(np.float64) for im in imgs], axis=0))


# --------------------------------------------------------------------------------------------
# Laplacian pyramid (Burt & Adelson)
# --------------------------------------------------------------------------------------------

# Burt-Adelson generating kernel with a = 0.375.
_BURT = np.array([1.0, 4.0, 6.0, 4.0, 1.0]) / 16.0


def _smooth(x: np.ndarray, gain: float = 1.0) -> np.ndarray:
    k = _BURT * gain
    y = ndimage.correlate1d(x, k, axis=0, mode="reflect")
    return ndimage.correlate1d(y, k, axis=1, mode="reflect")


def _reduce(x: np.ndarray) -> np.ndarray:
    return _smooth(x)[::2, ::2]


def _expand(x: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """Upsample to ``shape`` by zero insertion and interpolation, normalised so borders stay unbiased."""
    up = np.zeros(shape[:2] + x.shape[2:])
    up[::2, ::2] = x
    ones = np.zeros(shape[:2])
    ones[::2, ::2] = 1.0
    norm = _smooth(ones, 2.0)
    return _smooth(up, 2.0) / (norm[..., None] if up.ndim == 3 else norm)


def _pyramid(x: np.ndarray, levels: int) -> list[np.ndarray]:
    """Laplacian pyramid: ``levels`` detail layers (fine to coarse) followed by the base."""
    pyr = []
    cur = x
    for _ in range(levels):
        low = _reduce(cur)
        pyr.append(cur - _expand(low, cur.shape))
        cur = low
    pyr.append(cur)
    return pyr


def _collapse(pyr: list[np.ndarray]) -> np.ndarray:
    cur = pyr[-1]
    for detail in reversed(pyr[:-1]):
        cur = detail + _expand(cur, detail.shape)
    return cur


def laplacian_pyramid(images: Sequence[np.ndarray], levels: int = 4) -> np.ndarray:
    """Laplacian-pyramid fusion: per coefficient, the detail of the source with the largest
    absolute (luminance) detail; the coarsest (base) level is averaged.

    ``levels`` detail layers (default 4), reduced where the image is too small for the coarsest
    level to keep at least 8 pixels.
    """
    imgs = _check(images)
    h, w = imgs[0].shape[:2]
    levels = int(max(0, min(levels, np.floor(np.log2(min(h, w) / 8.0)))))
    srcs = [im.astype(np.float64) for im in imgs]
    pyrs = [_pyramid(s, levels) for s in srcs]
    # For colour, one decision per coefficient from the luminance pyramid, shared by R, G, B.
    ypyrs = pyrs if srcs[0].ndim == 2 else [_pyramid(luminance(im), levels) for im in imgs]
    fused = []
    for lvl in range(levels):
        choice = np.argmax(np.stack([np.abs(p[lvl]) for p in ypyrs]), axis=0)
        layer = np.zeros_like(pyrs[0][lvl])
        for i, p in enumerate(pyrs):
            layer += _spread(choice == i, layer) * p[lvl]
        fused.append(layer)
    fused.append(np.mean([p[-1] for p in pyrs], axis=0))
    return _to_uint8(_collapse(fused))


# --------------------------------------------------------------------------------------------
# Focus-measure selection
# --------------------------------------------------------------------------------------------


def focus_select(images: Sequence[np.ndarray], window: int = 7) -> np.ndarray:
    """Per pixel, copy the source with the largest energy of the Laplacian (sum of squared
    4-neighbour Laplacian of the luminance over a ``window`` x ``window`` box).

    Ties (e.g. identical or flat regions) go to the earlier source. Output pixels are exact copies of
    source pixels.
    """
    imgs = _check(images)
    fm = [
        ndimage.uniform_filter(ndimage.laplace(luminance(im), mode="reflect") ** 2, size=window, mode="reflect")
        for im in imgs
    ]
    choice = np.argmax(np.stack(fm), axis=0)
    out = imgs[0].copy()
    for i in range(1, len(imgs)):
        sel = choice == i
        out[sel] = imgs[i][sel]
    return out


# --------------------------------------------------------------------------------------------
# Guided filtering fusion (GFF)
# --------------------------------------------------------------------------------------------


def _box_mean(x: np.ndarray, r: int) -> np.ndarray:
    """Mean over the (2r+1)^2 window clipped to the image (He et al.'s ``boxfilter(.)/N``), axes 0, 1."""
    out = x
    for axis in (0, 1):
        n = out.shape[axis]
        c = np.cumsum(out, axis=axis)
        c = np.concatenate([np.zeros_like(np.take(c, [0], axis=axis)), c], axis=axis)
        idx = np.arange(n)
        lo = np.clip(idx - r, 0, n)
        hi = np.clip(idx + r + 1, 0, n)
        s = np.take(c, hi, axis=axis) - np.take(c, lo, axis=axis)
        cnt = (hi - lo).astype(np.float64)
        shape = [1] * out.ndim
        shape[axis] = n
        out = s / cnt.reshape(shape)
    return out


def guided_coefficients(guide: np.ndarray, src: np.ndarray, r: int, eps: float) -> tuple[np.ndarray, np.ndarray]:
    """The window-averaged linear coefficients ``(ā, b̄)`` ``[H, W]`` float64 of He et al.'s guided
    filter with a grey guide ``[H, W]``: the filtered ``src`` is ``ā · guide + b̄``. Apart from
    :func:`guided_filter` so that the coefficients can be computed on a small grid and applied to a
    finer guide (He & Sun's fast guided filter; ``rediffuse.fuse`` upsamples weight maps this way)."""
    p = np.asarray(src, dtype=np.float64)
    g = np.asarray(guide, dtype=np.float64)
    mp = _box_mean(p, r)
    mi = _box_mean(g, r)
    var = _box_mean(g * g, r) - mi * mi
    cov = _box_mean(g * p, r) - mi * mp
    a = cov / (var + eps)
    b = mp - a * mi
    return _box_mean(a, r), _box_mean(b, r)


def guided_filter(guide: np.ndarray, src: np.ndarray, r: int, eps: float) -> np.ndarray:
    """He et al.'s guided filter of ``src`` ``[H, W]`` with a grey ``[H, W]`` or colour ``[H, W, 3]``
    guide (intensities in [0, 1]); window (2r+1)^2, regularisation ``eps``. Returns ``[H, W]`` float64.
    """
    p = np.asarray(src, dtype=np.float64)
    g = np.asarray(guide, dtype=np.float64)
    if g.ndim == 2:
        a, b = guided_coefficients(g, p, r, eps)
        return a * g + b
    mp = _box_mean(p, r)
    # Colour guide: a is a 3-vector per pixel, a = (Sigma + eps U)^-1 cov(I, p).
    mi = _box_mean(g, r)  # [H, W, 3]
    cov = _box_mean(g * p[..., None], r) - mi * mp[..., None]
    s = np.empty(g.shape[:2] + (3, 3))
    for i in range(3):
        for j in range(i, 3):
            v = _box_mean(g[..., i] * g[..., j], r) - mi[..., i] * mi[..., j]
            s[..., i, j] = s[..., j, i] = v + (eps if i == j else 0.0)
    a = np.linalg.solve(s, cov[..., None])[..., 0]
    b = mp - np.einsum("hwc,hwc->hw", a, mi)
    return np.einsum("hwc,hwc->hw", _box_mean(a, r), g) + _box_mean(b, r)


def gff(
    images: Sequence[np.ndarray],
    r1: int = 45,
    eps1: float = 0.3,
    r2: int = 7,
    eps2: float = 1e-6,
    base_size: int = 31,
    saliency_radius: int = 5,
    saliency_sigma: float = 5.0,
    guide: str = "gray",
) -> np.ndarray:
    """Guided filtering fusion (S. Li, X. Kang, J. Hu, IEEE TIP 22(7), 2013).

    1. Two-scale decomposition: base ``B_n`` = ``base_size`` x ``base_size`` mean filter of
       ``I_n``, detail ``D_n = I_n - B_n``.
    2. Saliency ``S_n`` = Gaussian (radius ``saliency_radius``, sigma ``saliency_sigma``) of the
       absolute 3x3 Laplacian of the luminance.
    3. Binary weights ``P_n = [S_n is the maximum]``, refined by the guided filter with ``I_n`` as
       guide: ``(r1, eps1)`` for the base weights, ``(r2, eps2)`` for the detail weights; each set is
       normalised to sum to one per pixel.
    4. ``F = sum_n W^B_n B_n + W^D_n D_n``, the same weights for every colour channel.

    Intensities are scaled to [0, 1] (eps refers to that scale). ``guide="gray"`` guides with the
    luminance (as common implementations do); ``"color"`` uses He's colour guided filter with the RGB
    source as guide.
    """
    imgs = _check(images)
    if guide not in ("gray", "color"):
        raise ValueError(f"guide must be 'gray' or 'color', got {guide!r}")
    srcs = [im.astype(np.float64) / 255.0 for im in imgs]
    grays = [luminance(im) / 255.0 for im in imgs]
    size = (base_size, base_size) + ((1,) if srcs[0].ndim == 3 else ())
    bases = [ndimage.uniform_filter(s, size=size, mode="nearest") for s in srcs]
    details = [s - b for s, b in zip(srcs, bases)]

    lap = np.array([[0.0, 1.0, 0.0], [1.0, -4.0, 1.0], [0.0, 1.0, 0.0]])
    truncate = saliency_radius / saliency_sigma  # scipy's kernel radius is round(truncate * sigma)
    sal = [
        ndimage.gaussian_filter(
            np.abs(ndimage.correlate(g, lap, mode="nearest")), saliency_sigma, mode="nearest", truncate=truncate
        )
        for g in grays
    ]
    choice = np.argmax(np.stack(sal), axis=0)  # ties go to the earlier source

    guides = grays if (guide == "gray" or srcs[0].ndim == 2) else srcs
    wb = np.stack([guided_filter(gd, (choice == n).astype(np.float64), r1, eps1) for n, gd in enumerate(guides)])
    wd = np.stack([guided_filter(gd, (choice == n).astype(np.float64), r2, eps2) for n, gd in enumerate(guides)])

    def normalise(w: np.ndarray) -> np.ndarray:
        den = w.sum(axis=0)
        # The filtered maps sum to ~1 already; guard the (practically absent) zero sum.
        den = np.where(np.abs(den) < 1e-12, 1e-12, den)
        return w / den

    wb, wd = normalise(wb), normalise(wd)
    fused = sum(_spread(wb[n], b) * b + _spread(wd[n], d) * d for n, (b, d) in enumerate(zip(bases, details)))
    return _to_uint8(fused * 255.0)


# --------------------------------------------------------------------------------------------
# Registry
# --------------------------------------------------------------------------------------------

BASELINES: dict[str, FusionFn] = {
    "average": average,
    "laplacian": laplacian_pyramid,
    "focus-select": focus_select,
    "gff": gff,
}


def get_baseline(name: str) -> FusionFn:
    """The fusion function registered as ``name`` (case and ``_``/``-`` insensitive)."""
    key = name.strip().lower().replace("_", "-")
    if key not in BASELINES:
        raise ValueError(f"unknown baseline {name!r}; valid names: {', '.join(BASELINES)}")
    return BASELINES[key]
