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

The metrics by family, one module each: ``grey`` (the input checks and grey conversion they share),
``information`` (QMI), ``gradient`` (QG, Qabf, the spurious gradient fraction), ``phase`` (QP) and
``structural`` (QE, MS-SSIM, PSNR, SSIM). Every public name is importable from here, and
:func:`evaluate` scores a triple with all of them.
"""
from __future__ import annotations

from .gradient import (SPURIOUS_MARGIN, SPURIOUS_SIGMA, _qabf, _qg, _spurious, qabf, qg, qg_maps,
                       spurious_gradient_fraction)
from .grey import _RGB2GRAY, _gray64, _prepare, to_gray_uint8  # noqa: F401 (_RGB2GRAY, _gray64: benchmarks)
from .information import _qmi, mutual_information, qmi, stretch_levels
from .phase import _qp, clear_cache, qp
from .structural import _ms_ssim_fusion, _qe, band_scores, ms_ssim_fusion, psnr, qe, ssim

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
