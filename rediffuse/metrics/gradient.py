"""Gradient-based fusion metrics: edge preservation QG (Xydeas & Petrovic) and its VIFB form Qabf, and
the spurious gradient fraction (edges in the fused image that no source has)."""
from __future__ import annotations

import numpy as np
from scipy import ndimage

from .grey import _SOBEL_X, _SOBEL_Y, _conv3_same, _corr3_same, _gray64, _prepare

__all__ = ["qg", "qg_maps", "qabf", "spurious_gradient_fraction", "SPURIOUS_SIGMA", "SPURIOUS_MARGIN"]


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
    ``255*im2double`` of a double image does. Stays close to QG (``benchmarks/bench_metrics.py``
    measures by how much). NaN when neither source has any gradient.
    """
    return _qabf(*_prepare(a, b, f, min_side=1))


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
