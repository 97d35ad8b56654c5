"""Structural-similarity metrics: the fusion quality QE (Piella & Heijmans 2003) and ½[MS-SSIM(A,F) +
MS-SSIM(B,F)]; and the full-reference PSNR, SSIM and their scores inside a band of pixels."""
from __future__ import annotations

import numpy as np
import torch
from pytorch_msssim import ms_ssim as _pt_ms_ssim
from skimage.metrics import structural_similarity

from .grey import _corr3_same, _prepare, _prepare_pair

__all__ = ["qe", "ms_ssim_fusion", "psnr", "ssim", "band_scores"]


# --------------------------------------------------------------------------------------------
# QE (Piella & Heijmans 2003), metricPeilla.m sw = 3, alpha = 1
# --------------------------------------------------------------------------------------------

def _box8_valid(x: np.ndarray) -> np.ndarray:
    """Mean over every full 8x8 window (``filter2(ones(8)/64, x, 'valid')``).

    Straight sums of shifted slices rather than cumulative sums: cumulative sums lose the
    absolute precision that the tiny C1 = C2 = 6.5e-8 constants need on flat windows.
    """
    h, w = x.shape
    r = x[0:h - 7].copy()
    for i in range(1, 8):
        r += x[i:h - 7 + i]
    c = r[:, 0:w - 7].copy()
    for j in range(1, 8):
        c += r[:, j:w - 7 + j]
    return c * (1.0 / 64)


_QE_C = (1e-6 * 255) ** 2


def _uiqi_map(x, y):
    """SSIM map with C1 = C2 = (1e-6*255)^2 (UIQI in effect), 8x8 box window, valid region."""
    mx, my = _box8_valid(x), _box8_valid(y)
    vx = _box8_valid(x * x) - mx * mx
    vy = _box8_valid(y * y) - my * my
    cxy = _box8_valid(x * y) - mx * my
    return ((2 * mx * my + _QE_C) * (2 * cxy + _QE_C)) / ((mx * mx + my * my + _QE_C) * (vx + vy + _QE_C))


def _piella_weighted(ga, gb, gf) -> float:
    ma, mb = _box8_valid(ga), _box8_valid(gb)
    va = _box8_valid(ga * ga) - ma * ma
    vb = _box8_valid(gb * gb) - mb * mb
    # The toolbox adds 0.5 to both variances where σ_A² + σ_B² == 0 (λ = 0.5, weight 0.5).
    # In MATLAB that test only fires on all-zero windows: filter2 factors the box kernel by SVD,
    # so a constant non-zero window gets a ~1e-12 variance instead of 0 and hence ~0 weight.
    # Applying the rule to all-zero windows only reproduces the published QE to ~1e-14 on 80
    # of the 90 reference images (the literal rule leaves ~1e-5 on images with flat areas).
    # Our images and edge maps are non-negative, so a zero mean means an all-zero window.
    zero = (ma == 0) & (mb == 0)
    va = va + zero * 0.5
    vb = vb + zero * 0.5
    den = va + vb
    with np.errstate(divide="ignore", invalid="ignore"):
        lam = np.where(den != 0, va / den, 0.5)  # 0/0 only with weight 0 below
    q = lam * _uiqi_map(gf, ga) + (1 - lam) * _uiqi_map(gf, gb)
    cw = np.maximum(va, vb)
    total = cw.sum()
    if total <= 0:  # neither source varies anywhere: no saliency to weight by
        return float(q.mean())
    return float((cw / total * q).sum())


def _prewitt_mag(x):
    gx = _corr3_same(x, ((1, 0, -1), (1, 0, -1), (1, 0, -1)))
    gy = _corr3_same(x, ((1, 1, 1), (0, 0, 0), (-1, -1, -1)))
    return np.sqrt(gx * gx + gy * gy)


def _qe(ga, gb, gf) -> float:
    q_w = _piella_weighted(ga, gb, gf)
    q_edge = _piella_weighted(_prewitt_mag(ga), _prewitt_mag(gb), _prewitt_mag(gf))
    return q_w * q_edge


def qe(a, b, f) -> float:
    """Edge-dependent fusion quality QE (Piella & Heijmans 2003), α = 1.

    Q_W = Σ c·[λ S(F,A) + (1-λ) S(F,B)] with S an SSIM over 8x8 box windows (valid region)
    whose constants C1 = C2 = (1e-6·255)² make it UIQI, λ = σ_A²/(σ_A²+σ_B²), c = max(σ_A², σ_B²)
    normalised to sum 1; QE = Q_W(A,B,F)·Q_W(A',B',F') with A', B', F' Prewitt edge magnitudes.
    Windows that are all zero in both sources get λ = 0.5 and c = 0.5, other windows flat in
    both get c = 0, which is what the reference MATLAB run effectively computed (see
    ``_piella_weighted``); agreement with the published values is ~1e-14 on most images and
    within ~3e-5 where flat areas leave MATLAB's float noise in play.
    """
    return _qe(*_prepare(a, b, f, min_side=8))


# --------------------------------------------------------------------------------------------
# MS-SSIM and full-reference metrics
# --------------------------------------------------------------------------------------------

def _ms_ssim(x: np.ndarray, y: np.ndarray) -> float:

    tx = torch.from_numpy(x)[None, None]
    ty = torch.from_numpy(y)[None, None]
    return float(_pt_ms_ssim(tx, ty, data_range=255, size_average=True))


def _ms_ssim_fusion(ga, gb, gf) -> float:
    return 0.5 * (_ms_ssim(ga, gf) + _ms_ssim(gb, gf))


def ms_ssim_fusion(a, b, f) -> float:
    """½[MS-SSIM(A,F) + MS-SSIM(B,F)] on the grey images, computed with pytorch-msssim.

    Convention (pytorch-msssim 1.x, ``data_range=255``, float64): Wang et al. 2003 with 5 scales,
    weights (0.0448, 0.2856, 0.3001, 0.2363, 0.1333), 11x11 Gaussian σ=1.5 applied 'valid' (no
    padding), K = (0.01, 0.03), 2x2 average pooling between scales (odd sides zero-padded);
    the contrast-structure terms and the last-scale SSIM are clamped at 0 (ReLU) before the
    weighted product. Needs the shorter side > 160 pixels.
    """
    ga, gb, gf = _prepare(a, b, f, min_side=1)
    if min(ga.shape) <= 160:
        raise ValueError(f"MS-SSIM needs both sides > 160 pixels (5 scales), got {ga.shape}")
    return _ms_ssim_fusion(ga, gb, gf)


def psnr(x, gt) -> float:
    """PSNR in dB of ``x`` against ground truth ``gt`` on the grey (rgb2gray) images, peak 255.

    Identical images give ``inf``.
    """
    gx, gg = _prepare_pair(x, gt)
    mse = float(np.mean((gx - gg) ** 2))
    return float("inf") if mse == 0 else 10.0 * np.log10(255.0 ** 2 / mse)


def ssim(x, gt) -> float:
    """SSIM of ``x`` against ``gt`` on the grey images, Wang et al. 2004 settings.

    scikit-image ``structural_similarity`` with ``data_range=255``, an 11x11 Gaussian window
    (σ=1.5), population covariances and K = (0.01, 0.03); the mean excludes a 5-pixel border.
    """
    gx, gg = _prepare_pair(x, gt)
    if min(gx.shape) < 11:
        raise ValueError(f"SSIM needs images of at least 11x11, got {gx.shape}")
    return float(structural_similarity(
        gx, gg, data_range=255.0, gaussian_weights=True, sigma=1.5, use_sample_covariance=False
    ))


def band_scores(x, gt, band) -> dict:
    """PSNR and mean SSIM of ``x`` against ``gt`` inside ``band`` (bool or 0/255 ``[H, W]``, e.g. the
    pixels within 15 px of a focus boundary): ``{"PSNR-band", "SSIM-band"}``. The SSIM map is the
    one :func:`ssim` averages (same window and constants), averaged over the band instead."""
    gx, gg = _prepare_pair(x, gt)
    m = np.asarray(band) > 0
    if m.shape != gx.shape:
        raise ValueError(f"band mask {m.shape} does not match the image {gx.shape}")
    if not m.any():
        return {"PSNR-band": float("nan"), "SSIM-band": float("nan")}
    mse = float(np.mean((gx[m] - gg[m]) ** 2))
    _, smap = structural_similarity(gx, gg, data_range=255.0, gaussian_weights=True, sigma=1.5,
                                    use_sample_covariance=False, full=True)
    return {"PSNR-band": float("inf") if mse == 0 else 10.0 * np.log10(255.0 ** 2 / mse),
            "SSIM-band": float(smap[m].mean())}
