"""No-reference multi-focus fusion metrics and full-reference PSNR / SSIM.

Every fusion metric takes the two sources ``a``, ``b`` and the fused image ``f`` as uint8 arrays,
grey ``HxW`` or colour ``HxWx3``. Colour is reduced to grey exactly as MATLAB ``rgb2gray`` does
on uint8 input (see :func:`to_gray_uint8`), because the published leaderboard (Liu et al.,
Information Fusion 2020) was scored that way; the metrics then work on the grey levels as float64.

The definitions follow the reference MATLAB toolboxes closely enough to reproduce their numbers
(QMI, QG, QP, Qabf to ~1e-12, QE to ~1e-14 on most images and 3e-5 at worst, see
``tests/test_metrics.py``), including their quirks:
``filter2(..., 'same')`` is a zero-padded correlation, ``conv2`` a zero-padded convolution, and
tiny constants that guard divisions are added in the same places and the same order.
"""
from __future__ import annotations

import hashlib
from collections import OrderedDict
from functools import lru_cache

import numpy as np
import torch
from pytorch_msssim import ms_ssim as _pt_ms_ssim
from scipy import fft as sfft
from scipy import ndimage
from skimage.metrics import structural_similarity

__all__ = [
    "to_gray_uint8",
    "stretch_levels",
    "mutual_information",
    "qmi",
    "qg",
    "qg_maps",
    "qabf",
    "qp",
    "qe",
    "ms_ssim_fusion",
    "psnr",
    "ssim",
    "band_scores",
    "spurious_gradient_fraction",
    "SPURIOUS_SIGMA",
    "SPURIOUS_MARGIN",
    "evaluate",
    "clear_cache",
]

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


# --------------------------------------------------------------------------------------------
# QMI (Hossny et al. 2008), as metricMI.m, sw = 1
# --------------------------------------------------------------------------------------------

def _stretch255(x: np.ndarray) -> np.ndarray:
    """Map to integer levels round(255 (x - min) / (max - min)) (normalize1.m)."""
    lo, hi = x.min(), x.max()
    if hi == lo:
        # MATLAB divides by zero here (NaN); a constant image carries no information: one level.
        return np.zeros(x.shape, dtype=np.int64)
    return _round_half_away((x - lo) / (hi - lo) * 255).astype(np.int64)


def _entropy(p: np.ndarray) -> float:
    p = p[p > 0]
    return float(-(p * np.log2(p)).sum())


def _mi_terms(s: np.ndarray, f: np.ndarray):
    """MI(S,F), H(S), H(F) from the 256x256 joint histogram of two 0..255 integer images."""
    joint = np.bincount((s * 256 + f).ravel(), minlength=65536).astype(np.float64)
    joint /= joint.sum()
    joint = joint.reshape(256, 256)
    hs, hf = _entropy(joint.sum(axis=1)), _entropy(joint.sum(axis=0))
    return hs + hf - _entropy(joint.ravel()), hs, hf


def stretch_levels(x: np.ndarray) -> np.ndarray:
    """QMI's first step: grey levels ``[H, W]`` stretched to the integers round(255 (x − min)/(max − min))
    (MATLAB ``round``), int64 ``[H, W]``; a constant image becomes all 0."""
    return _stretch255(np.asarray(x, dtype=np.float64))


def mutual_information(s: np.ndarray, f: np.ndarray) -> float:
    """MI(S, F) = H(S) + H(F) − H(S, F) in bits, from the 256×256 joint histogram of two integer images
    with levels 0..255 (``[H, W]`` each; e.g. :func:`stretch_levels` output). MI(S, S) = H(S)."""
    s, f = np.asarray(s), np.asarray(f)
    if s.shape != f.shape:
        raise ValueError(f"s and f must have the same shape, got {s.shape} and {f.shape}")
    if not (np.issubdtype(s.dtype, np.integer) and np.issubdtype(f.dtype, np.integer)):
        raise ValueError("s and f must hold integer levels 0..255 (stretch_levels gives them)")
    if min(s.min(), f.min()) < 0 or max(s.max(), f.max()) > 255:
        raise ValueError("levels must lie in 0..255")
    return _mi_terms(s.astype(np.int64), f.astype(np.int64))[0]


def _qmi(ga, gb, gf) -> float:
    sa, sb, sf = _stretch255(ga), _stretch255(gb), _stretch255(gf)
    total = 0.0
    for s in (sa, sb):
        mi, hs, hf = _mi_terms(s, sf)
        # both images constant: no information to preserve, count the term as 0
        total += mi / (hs + hf) if hs + hf > 0 else 0.0
    return 2.0 * total


def qmi(a, b, f) -> float:
    """Normalised mutual information QMI (Hossny et al. 2008), range [0, 2].

    Each image is stretched to round(255 (x-min)/(max-min)); 256x256 joint histograms;
    QMI = 2 [MI(A,F)/(H(A)+H(F)) + MI(B,F)/(H(B)+H(F))].
    """
    return _qmi(*_prepare(a, b, f, min_side=1))


# --------------------------------------------------------------------------------------------
# QG (Xydeas & Petrovic) and its variants
# --------------------------------------------------------------------------------------------

def _sobel_filter2(x: np.ndarray):
    """Gradient magnitude and the toolbox's angle (filter2, gx = 0 nudged to 1e-5)."""
    gx = _corr3_same(x, _SOBEL_X)
    gy = _corr3_same(x, _SOBEL_Y)
    g = np.sqrt(gx * gx + gy * gy)
    gx = gx + (gx == 0) * 1e-5
    return g, np.arctan(gy / gx)


def _qg_terms(ga, gb, gf, variant: str = "2019") -> dict[str, np.ndarray]:
    """The per-pixel pieces of QG: guarded gradient strengths, strength ratios G, orientation agreements
    A and edge-preservation values Q of each source."""
    if variant not in ("2019", "2003"):
        raise ValueError(f"variant must be '2019' or '2003', got {variant!r}")
    gF, aF = _sobel_filter2(gf)
    gA, aA = _sobel_filter2(ga)
    gB, aB = _sobel_filter2(gb)

    # Relative strength, following metricXydeas.m step by step: the zero guards are added to
    # the gradient maps in place, and the guard on g_F added while handling A is still there
    # when B is handled. The guarded g_A, g_B are also the final weights.
    def strength(gS, gF):
        bimap = gS > gF
        gS = gS + (gS == 0) * 1e-5
        r1 = gF / gS
        gF = gF + (gF == 0) * 1e-5
        r2 = gS / gF
        return np.where(bimap, r1, r2), gS, gF

    G_A, gA, gF = strength(gA, gF)
    G_B, gB, gF = strength(gB, gF)

    if variant == "2019":
        # Yu Liu's 2019 correction: A = 1 - 2|a_S - a_F|/pi and the published constants.
        A_A = 1 - np.abs(aA - aF) * 2 / np.pi
        A_B = 1 - np.abs(aB - aF) * 2 / np.pi
        Tg, kg, Dg, Ta, ka, Da = 0.9994, -15.0, 0.5, 0.9879, -22.0, 0.8
    elif variant == "2003":
        # Zheng Liu's original (2003): folded angle term ||a_S - a_F| - pi/2| * 2/pi.
        A_A = np.abs(np.abs(aA - aF) - np.pi / 2) * 2 / np.pi
        A_B = np.abs(np.abs(aB - aF) - np.pi / 2) * 2 / np.pi
        Tg, kg, Dg, Ta, ka, Da = 1.0, -10.0, 0.5, 1.0, -20.0, 0.75

    Q_A = Tg / (1 + np.exp(kg * (G_A - Dg))) * (Ta / (1 + np.exp(ka * (A_A - Da))))
    Q_B = Tg / (1 + np.exp(kg * (G_B - Dg))) * (Ta / (1 + np.exp(ka * (A_B - Da))))
    return {"g_A": gA, "g_B": gB, "g_F": gF, "alpha_A": aA, "alpha_B": aB, "alpha_F": aF,
            "G_A": G_A, "G_B": G_B, "A_A": A_A, "A_B": A_B, "Q_A": Q_A, "Q_B": Q_B}


def _qg(ga, gb, gf, variant: str = "2019") -> float:
    t = _qg_terms(ga, gb, gf, variant)
    gA, gB, Q_A, Q_B = t["g_A"], t["g_B"], t["Q_A"], t["Q_B"]
    if variant == "2019":
        return float((Q_A * gA + Q_B * gB).sum() / (gA + gB).sum())
    # 2003: mean over pixels of the per-pixel normalised score
    return float(((Q_A * gA + Q_B * gB) / (gA + gB)).mean())


def qg_maps(a, b, f, variant: str = "2019") -> dict[str, np.ndarray]:
    """QG's per-pixel pieces, each ``[H, W]`` float64 (for looking inside the number, e.g. notebook 04):
    ``g_A``, ``g_B``, ``g_F`` Sobel strengths (zeros of g_A, g_B guarded to 1e-5, as the weights are),
    ``alpha_*`` orientations, ``G_A``, ``G_B`` strength ratios (≤ 1), ``A_A``, ``A_B`` orientation
    agreements, ``Q_A``, ``Q_B`` edge preservation of each source in F. QG is
    Σ(Q_A g_A + Q_B g_B)/Σ(g_A + g_B) of these maps."""
    return _qg_terms(*_prepare(a, b, f, min_side=1), variant=variant)


def qg(a, b, f, variant: str = "2019") -> float:
    """Gradient-based edge preservation QG (Xydeas & Petrovic 2000).

    ``variant="2019"`` (default): Yu Liu's corrected form used by the Liu 2020 benchmark
    (Sobel by correlation, Γg=0.9994, κg=-15, σg=0.5, Γa=0.9879, κa=-22, σa=0.8,
    A = 1 - 2|α_S-α_F|/π, QG = Σ(Q_AF g_A + Q_BF g_B)/Σ(g_A+g_B)); maximum 0.97479.
    ``variant="2003"``: Zheng Liu's original metricXydeas.m (Γ=1, κg=-10, σg=0.5, κa=-20,
    σa=0.75, folded angle term, mean of the per-pixel normalised score); reads lower.
    """
    return _qg(*_prepare(a, b, f, min_side=1), variant=variant)


def _qabf(ga, gb, gf) -> float:
    # VIFB metricsQabf.m: conv2 (true convolution) with these kernels.
    h1 = ((1, 2, 1), (0, 0, 0), (-1, -2, -1))
    h3 = ((-1, 0, 1), (-2, 0, 2), (-1, 0, 1))

    def grad(x):
        sx = _conv3_same(x, h3)
        sy = _conv3_same(x, h1)
        g = np.sqrt(sx ** 2 + sy ** 2)
        with np.errstate(divide="ignore", invalid="ignore"):
            ang = np.where(sx == 0, np.pi / 2, np.arctan(sy / sx))
        return g, ang

    # VIFB runs ``255*im2double(double(img))``: im2double leaves a double image as it is, so the
    # grey levels are multiplied by 255. Only the G = g_F quirk is not scale invariant (it
    # matters where g_S == g_F == 1), so the scaling is kept to reproduce VIFB's numbers.
    gA, aA = grad(255.0 * ga)
    gB, aB = grad(255.0 * gb)
    gF, aF = grad(255.0 * gf)
    Tg, kg, Dg, Ta, ka, Da = 0.9994, -15.0, 0.5, 0.9879, -22.0, 0.8

    def q(gS, aS):
        with np.errstate(divide="ignore", invalid="ignore"):
            G = np.where(gS > gF, gF / gS, np.where(gS == gF, gF, gS / gF))
        A = 1 - np.abs(aS - aF) / (np.pi / 2)
        return Tg / (1 + np.exp(kg * (G - Dg))) * (Ta / (1 + np.exp(ka * (A - Da))))

    den = (gA + gB).sum()
    if den == 0:  # no gradient in either source: undefined
        return float("nan")
    return float((q(gA, aA) * gA + q(gB, aB) * gB).sum() / den)


def qabf(a, b, f) -> float:
    """Q^{AB/F} as in the VIFB toolbox (metricsQabf.m), the form common in fusion papers.

    Same constants as QG 2019 but Sobel by true convolution, α = π/2 where g_x = 0 and, quirks
    kept for comparability, G = g_F where g_S == g_F, on grey levels scaled by 255 as VIFB's
    ``255*im2double`` of a double image does. Stays within ~0.0015 of QG. NaN when neither
    source has any gradient.
    """
    return _qabf(*_prepare(a, b, f, min_side=1))


# --------------------------------------------------------------------------------------------
# QP (Zhao et al. 2007) on Kovesi phase congruency (myphasecong3.m of the toolbox)
# --------------------------------------------------------------------------------------------

_PC_NSCALE, _PC_NORIENT = 4, 6
_PC_MINWAVE, _PC_MULT, _PC_SIGMAONF, _PC_DTHETA = 3.0, 2.1, 0.55, 1.2
_PC_K, _PC_CUTOFF, _PC_G, _PC_EPS = 2.0, 0.5, 10.0, 1e-4


def _freq_range(n: int) -> np.ndarray:
    # frequencies normalised to +-0.5, as Kovesi's code does for odd and even sizes
    if n % 2:
        return np.arange(-(n - 1) / 2, (n - 1) / 2 + 1) / (n - 1)
    return np.arange(-n / 2, n / 2) / n


@lru_cache(maxsize=4)
def _pc_bank(rows: int, cols: int):
    """Log-Gabor filter bank and noise constants for one image size (image independent)."""
    x, y = np.meshgrid(_freq_range(cols), _freq_range(rows))
    radius = np.sqrt(x ** 2 + y ** 2)
    radius[rows // 2, cols // 2] = 1.0  # avoid log(0); reset to 0 below
    theta = np.arctan2(-y, x)
    radius = np.fft.ifftshift(radius)
    theta = np.fft.ifftshift(theta)
    sintheta, costheta = np.sin(theta), np.cos(theta)

    # Butterworth low-pass (radius .45, order 15); the toolbox builds its grid around
    # fix(n/2)+1 with /n and uses fftshift, reproduced here for odd sizes too.
    lx = (np.arange(cols) - cols // 2) / cols
    ly = (np.arange(rows) - rows // 2) / rows
    lr = np.sqrt(lx[None, :] ** 2 + ly[:, None] ** 2)
    lp = np.fft.fftshift(1.0 / (1.0 + (lr / 0.45) ** 30))

    log_gabor = []
    for s in range(_PC_NSCALE):
        fo = 1.0 / (_PC_MINWAVE * _PC_MULT ** s)
        lg = np.exp(-(np.log(radius / fo)) ** 2 / (2 * np.log(_PC_SIGMAONF) ** 2)) * lp
        lg[0, 0] = 0.0
        log_gabor.append(lg)

    theta_sigma = np.pi / _PC_NORIENT / _PC_DTHETA
    filters = np.empty((_PC_NORIENT, _PC_NSCALE, rows, cols))
    noise = []  # per orientation: (EM_n, sum of ifft-filter^2, sum of cross products)
    for o in range(_PC_NORIENT):
        angl = o * np.pi / _PC_NORIENT
        ds = sintheta * np.cos(angl) - costheta * np.sin(angl)
        dc = costheta * np.cos(angl) + sintheta * np.sin(angl)
        spread = np.exp(-np.abs(np.arctan2(ds, dc)) ** 2 / (2 * theta_sigma ** 2))
        for s in range(_PC_NSCALE):
            filters[o, s] = log_gabor[s] * spread
        spatial = sfft.ifft2(filters[o]).real * np.sqrt(rows * cols)
        sum_an2 = (spatial ** 2).sum()
        sum_aiaj = sum(
            (spatial[i] * spatial[j]).sum()
            for i in range(_PC_NSCALE - 1) for j in range(i + 1, _PC_NSCALE)
        )
        noise.append(((filters[o, 0] ** 2).sum(), sum_an2, sum_aiaj))
    filters.setflags(write=False)
    return filters, tuple(noise)


def _phase_congruency(im: np.ndarray):
    """Overall PC and the maximum / minimum moments M, m of the PC covariance.

    Kovesi's phasecong2 with nscale 4, norient 6, minWaveLength 3, mult 2.1, sigmaOnf 0.55,
    dThetaOnSigma 1.2, k 2, cutOff 0.5, g 10, as modified in the toolbox: PC is
    Σ_o weighted energy / (Σ_o Σ_s A + ε), and the covariance cross term is divided by norient
    (Kovesi divides by norient/4; the published QP values need the toolbox's form).
    """
    rows, cols = im.shape
    filters, noise = _pc_bank(rows, cols)
    spectrum = sfft.fft2(im)
    eps = _PC_EPS
    total_energy = np.zeros((rows, cols))
    total_sum_an = np.zeros((rows, cols))
    covx2 = np.zeros((rows, cols))
    covy2 = np.zeros((rows, cols))
    covxy = np.zeros((rows, cols))
    for o in range(_PC_NORIENT):
        angl = o * np.pi / _PC_NORIENT
        eo = sfft.ifft2(spectrum[None] * filters[o], axes=(-2, -1), overwrite_x=True)
        an = np.abs(eo)
        sum_an = an.sum(axis=0)
        max_an = an.max(axis=0)
        sum_eo = eo.sum(axis=0)
        sum_e, sum_o = sum_eo.real, sum_eo.imag
        xenergy = np.sqrt(sum_e ** 2 + sum_o ** 2) + eps
        mean_e, mean_o = sum_e / xenergy, sum_o / xenergy
        # Σ_s [E·mE + O·mO − |E·mO − O·mE|]; the first part sums before the product (linear).
        dev = eo.real * mean_o
        dev -= eo.imag * mean_e
        np.abs(dev, out=dev)
        energy = sum_e * mean_e + sum_o * mean_o - dev.sum(axis=0)

        # Noise threshold from the median squared response at the finest scale (Rayleigh model).
        em_n, sum_an2, sum_aiaj = noise[o]
        mean_e2n = -np.median(an[0] ** 2) / np.log(0.5)
        noise_power = mean_e2n / em_n
        est_noise_energy2 = 2 * noise_power * sum_an2 + 4 * noise_power * sum_aiaj
        tau = np.sqrt(est_noise_energy2 / 2)
        T = (tau * np.sqrt(np.pi / 2) + _PC_K * np.sqrt((2 - np.pi / 2) * tau ** 2)) / 1.7
        energy = np.maximum(energy - T, 0.0)

        width = sum_an / (max_an + eps) / _PC_NSCALE
        weight = 1.0 / (1 + np.exp((_PC_CUTOFF - width) * _PC_G))
        w_energy = weight * energy
        total_sum_an += sum_an
        total_energy += w_energy

        # toolbox divides without epsilon; 0/0 only happens on a constant image
        with np.errstate(divide="ignore", invalid="ignore"):
            pc_o = np.where(sum_an > 0, w_energy / sum_an, 0.0)
        covx = pc_o * np.cos(angl)
        covy = pc_o * np.sin(angl)
        covx2 += covx ** 2
        covy2 += covy ** 2
        covxy += covx * covy

    pc = total_energy / (total_sum_an + eps)
    covx2 /= _PC_NORIENT / 2
    covy2 /= _PC_NORIENT / 2
    covxy /= _PC_NORIENT
    denom = np.sqrt(covxy ** 2 + (covx2 - covy2) ** 2) + eps
    M = (covy2 + covx2 + denom) / 2
    m = (covy2 + covx2 - denom) / 2
    return pc, M, m


# Phase congruency dominates QP's cost, and leaderboard-style scoring evaluates many fused
# images against the same two sources, so the last few results are memoised by content.
_PC_MEMO: "OrderedDict[tuple, tuple]" = OrderedDict()
_PC_MEMO_SIZE = 6


def _phase_congruency_memo(im: np.ndarray):
    key = (im.shape, hashlib.blake2b(np.ascontiguousarray(im).tobytes(), digest_size=20).digest())
    hit = _PC_MEMO.get(key)
    if hit is not None:
        _PC_MEMO.move_to_end(key)
        return hit
    out = _phase_congruency(im)
    for arr in out:
        arr.setflags(write=False)  # shared between callers
    _PC_MEMO[key] = out
    while len(_PC_MEMO) > _PC_MEMO_SIZE:
        _PC_MEMO.popitem(last=False)
    return out


def clear_cache() -> None:
    """Forget memoised phase-congruency maps (for timing or to free ~6 MB per 520x520 image)."""
    _PC_MEMO.clear()


def _gauss_window_1d(size: int = 11, sigma: float = 1.5) -> np.ndarray:
    x = np.arange(size) - (size - 1) / 2
    g = np.exp(-(x ** 2) / (2 * sigma ** 2))
    return g / g.sum()


_GAUSS11 = _gauss_window_1d()


def _gauss_same(x: np.ndarray) -> np.ndarray:
    """``filter2(fspecial('gaussian', 11, 1.5), x, 'same')`` (separable, zero padding)."""
    y = ndimage.correlate1d(x, _GAUSS11, axis=0, mode="constant")
    return ndimage.correlate1d(y, _GAUSS11, axis=1, mode="constant")


def _zhao_corr(x1, x2, xmax, xf, mask1, mask2, mask3) -> float:
    """Mean over mask3 of the per-pixel max of the three local correlations with the fused map."""
    c = 1e-4
    x1, x2, xmax = x1 * mask1, x2 * mask2, xmax * mask3
    mu_f = _gauss_same(xf)
    var_f = _gauss_same(xf * xf) - mu_f * mu_f
    maps = []
    for x, mask in ((x1, mask1), (x2, mask2), (xmax, mask3)):
        mu = _gauss_same(x)
        var = _gauss_same(x * x) - mu * mu
        cov = _gauss_same(x * xf) - mu * mu_f
        r = (cov + c) / (np.sqrt(np.abs(var * var_f)) + c)
        # outside its mask a correlation counts as 0, so the max never drops below 0 there
        maps.append(np.where(mask, r, 0.0))
    best = np.maximum(np.maximum(maps[0], maps[1]), maps[2])
    n = mask3.sum()
    return float(best.sum() / n) if n else 0.0


def _qp(ga, gb, gf) -> float:
    pc1, M1, m1 = _phase_congruency_memo(ga)
    pc2, M2, m2 = _phase_congruency_memo(gb)
    pcf, Mf, mf = _phase_congruency_memo(gf)
    pick1 = pc1 > pc2  # source with the larger PC (ties go to B), used for M and m too
    pc_max = np.where(pick1, pc1, pc2)
    M_max = np.where(pick1, M1, M2)
    m_max = np.where(pick1, m1, m2)
    mask1, mask2, mask3 = pc1 > 0.1, pc2 > 0.1, pc_max > 0.1
    p_pc = _zhao_corr(pc1, pc2, pc_max, pcf, mask1, mask2, mask3)
    p_M = _zhao_corr(M1, M2, M_max, Mf, mask1, mask2, mask3)
    p_m = _zhao_corr(m1, m2, m_max, mf, mask1, mask2, mask3)
    return p_pc * p_M * p_m


def qp(a, b, f) -> float:
    """Phase-congruency metric QP (Zhao et al. 2007), as the Liu 2020 benchmark computes it.

    Kovesi phase congruency (see ``_phase_congruency``) of the raw 0-255 grey images gives PC
    and the max/min moments M, m. Per pixel the source with the larger PC supplies PC, M and m;
    features count where PC > 0.1. For each feature map the local correlation with the fused map
    (11x11 Gaussian σ=1.5, r = (σ_XF + 1e-4)/(sqrt|σ_X² σ_F²| + 1e-4)) is maximised over
    {A, B, chosen} and averaged over the chosen source's mask; QP = P_PC · P_M · P_m.
    The phase-congruency maps of the last few images are memoised (see :func:`clear_cache`).
    """
    return _qp(*_prepare(a, b, f, min_side=8))


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


def _prepare_pair(x, gt):
    gx, gg = _gray64(x, "x"), _gray64(gt, "gt")
    if gx.shape != gg.shape:
        raise ValueError(f"x and gt must have the same height and width, got {gx.shape}, {gg.shape}")
    return gx, gg


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


#: Smoothing (Gaussian σ, pixels) and margin (grey levels per pixel) of the spurious gradient fraction.
SPURIOUS_SIGMA = 2.0
SPURIOUS_MARGIN = 4.0


def _smoothed_gradient(g: np.ndarray, sigma: float) -> np.ndarray:
    """|∇(G_σ * g)| in grey levels per pixel: central differences of the Gaussian-smoothed image
    (scipy, reflected borders), one-sided at the border."""
    s = ndimage.gaussian_filter(g, sigma, mode="reflect")
    gy, gx = np.gradient(s)
    return np.hypot(gx, gy)


def spurious_gradient_fraction(sources, f, sigma: float = SPURIOUS_SIGMA, margin: float = SPURIOUS_MARGIN) -> float:
    """Share of pixels (0–1) where the fused image has an edge that no source has:
    ``|∇F| > max_i |∇S_i| + margin`` on the grey images (rgb2gray) smoothed by a Gaussian of σ =
    ``sigma`` px. ``sources``: two or more images the size of ``f`` (uint8, grey or colour).

    Blotches and specks in regions where nothing says which source is sharp (a fusion that switches
    between sources of different brightness inside a flat area) show up here and barely in the six
    fusion metrics. Plain averaging scores 0 too: read it beside fidelity, never alone. The smoothing
    makes it blind to single-pixel noise and JPEG blocks; the margin to gradients that only add up
    the sources' own."""
    if isinstance(sources, np.ndarray) or len(sources) < 2:
        raise ValueError("spurious_gradient_fraction needs a sequence of two or more source images")
    gf = _gray64(f, "f")
    if min(gf.shape) < 8:
        raise ValueError(f"images must be at least 8x8 pixels, got {gf.shape}")
    greys = []
    for i, src in enumerate(sources):
        greys.append(_gray64(src, f"source {i + 1}"))
        if greys[-1].shape != gf.shape:
            raise ValueError(f"source {i + 1} is {greys[-1].shape}, the fused image {gf.shape}: they must have one size")
    return _spurious(greys, gf, sigma, margin)


def _spurious(greys, gf: np.ndarray, sigma: float = SPURIOUS_SIGMA, margin: float = SPURIOUS_MARGIN) -> float:
    most = np.zeros_like(gf)
    for g in greys:
        np.maximum(most, _smoothed_gradient(g, sigma), out=most)
    return float(np.mean(_smoothed_gradient(gf, sigma) > most + margin))


def evaluate(a, b, f, gt=None) -> dict:
    """All fusion metrics of one triple: keys QMI, QG, Qabf, QP, QE, MS-SSIM, SGF (the spurious
    gradient fraction in percent, :func:`spurious_gradient_fraction`) (+ PSNR, SSIM of ``f`` against
    ``gt`` when given). The grey conversion is done once. MS-SSIM is NaN when the shorter side is
    160 pixels or less (too small for 5 scales)."""
    ga, gb, gf = _prepare(a, b, f, min_side=8)
    out = {
        "QMI": _qmi(ga, gb, gf),
        "QG": _qg(ga, gb, gf),
        "Qabf": _qabf(ga, gb, gf),
        "QP": _qp(ga, gb, gf),
        "QE": _qe(ga, gb, gf),
        "MS-SSIM": _ms_ssim_fusion(ga, gb, gf) if min(ga.shape) > 160 else float("nan"),
        "SGF": 100.0 * _spurious([ga, gb], gf),
    }
    if gt is not None:
        out["PSNR"] = psnr(f, gt)
        out["SSIM"] = ssim(f, gt)
    return out
