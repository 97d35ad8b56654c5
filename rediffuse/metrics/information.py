"""Information-based fusion metrics: the normalised mutual information QMI (Hossny et al. 2008)."""
from __future__ import annotations

import numpy as np

from .grey import _prepare, _round_half_away

__all__ = ["stretch_levels", "mutual_information", "qmi"]


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
