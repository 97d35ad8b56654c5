"""Notebook 04 (evaluating fusion): mutual information of two images, and QG of a toy triple by hand.

Both are graded against :mod:`rediffuse.metrics`, the implementation that reproduces the published
leaderboard; the checks recognise the usual slips (natural log, empty-bin NaNs, reflect padding,
``arctan2``, the 2003 constants, an unweighted mean, …) and name them.
"""
from __future__ import annotations

import math
from typing import Callable

import numpy as np
from scipy import ndimage

from ..metrics import mutual_information as _mutual_information
from ..metrics import qabf as _qabf
from ..metrics import qg as _qg
from ._core import ExerciseError, grader, reference

__all__ = ["mutual_information", "qg_by_hand", "toy_pair", "toy_triple", "check_mutual_information",
           "check_qg_by_hand", "QG_MAX"]

_SOBEL_X = np.array([[-1.0, 0.0, 1.0], [-2.0, 0.0, 2.0], [-1.0, 0.0, 1.0]])
# (Γg, κg, σg, Γa, κa, σa) of the 2019 correction (the benchmark's QG) and of the 2003 form
_QG_2019 = (0.9994, -15.0, 0.5, 0.9879, -22.0, 0.8)
_QG_2003 = (1.0, -10.0, 0.5, 1.0, -20.0, 0.75)
# QG's ceiling: both sigmoids at G = 1, A = 1
QG_MAX = _QG_2019[0] / (1 + math.exp(_QG_2019[1] * (1 - _QG_2019[2]))) \
    * _QG_2019[3] / (1 + math.exp(_QG_2019[4] * (1 - _QG_2019[5])))


def toy_pair() -> tuple[np.ndarray, np.ndarray]:
    """Two 4×4 integer images for mutual information by hand: ``s`` has three levels, ``f`` is ``s``
    with its two brightest levels merged (F keeps part of S's information)."""
    s = np.array([[0, 0, 128, 255],
                  [0, 0, 128, 255],
                  [0, 128, 128, 255],
                  [0, 128, 255, 255]])
    return s, np.where(s > 0, 200, 0)


def toy_triple() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A 6×6 grey triple (float64 grey levels): A has a vertical edge, B a horizontal one, and F is their
    rounded average, so F keeps half of each edge's contrast and turns its orientation by 45°."""
    a = np.tile(np.array([40.0, 40, 40, 200, 200, 200]), (6, 1))
    b = a.T.copy()
    return a, b, np.floor((a + b) / 2 + 0.5)


# ------------------------------------------------------------------------------- mutual information

@reference
def mutual_information(s: np.ndarray, f: np.ndarray) -> float:
    """MI(S, F) in bits of two integer images ``[H, W]`` with levels 0..255: from the joint histogram
    p(s, f) (256×256, normalised to sum 1), H(S) + H(F) − H(S, F) with H(p) = −Σ p log₂ p over p > 0."""
    joint = np.zeros((256, 256))
    np.add.at(joint, (np.ravel(s), np.ravel(f)), 1.0)
    p = joint / joint.sum()

    def entropy(q: np.ndarray) -> float:
        q = q[q > 0]
        return float(-(q * np.log2(q)).sum())

    return entropy(p.sum(axis=1)) + entropy(p.sum(axis=0)) - entropy(p)


def _mi_cases() -> list[tuple[str, np.ndarray, np.ndarray]]:
    rng = np.random.default_rng(4)
    s, f = toy_pair()
    photo = rng.integers(0, 256, (24, 24))
    smooth = np.round(ndimage.uniform_filter(photo.astype(float), 5)).astype(np.int64)
    return [
        ("the toy pair", s, f),
        ("an image with itself (MI = H(S))", smooth, smooth.copy()),
        ("an image and its negative 255 − S (a relabelling: MI = H(S))", smooth, 255 - smooth),
        ("a constant F (MI = 0)", smooth, np.full_like(smooth, 77)),
        ("two independent noise images", photo, rng.integers(0, 256, (24, 24))),
        ("a 4-level image and a noisy copy of it", photo // 64, np.clip(photo // 64 + rng.integers(-1, 2, photo.shape), 0, 255)),
    ]


def _entropies(s: np.ndarray, f: np.ndarray) -> tuple[float, float, float]:
    """H(S), H(F), H(S, F) in bits (for the hints)."""
    return _mutual_information(s, s), _mutual_information(f, f), \
        _mutual_information(s, s) + _mutual_information(f, f) - _mutual_information(s, f)


def _mi_of_counts(s: np.ndarray, f: np.ndarray) -> float:
    """The MI formula applied to raw counts instead of probabilities (a usual slip)."""
    joint = np.zeros((256, 256))
    np.add.at(joint, (np.ravel(s), np.ravel(f)), 1.0)
    h = lambda q: float(-(q[q > 0] * np.log2(q[q > 0])).sum())  # noqa: E731
    return h(joint.sum(axis=1)) + h(joint.sum(axis=0)) - h(joint)


def _mi_hint(got: float, want: float, s: np.ndarray, f: np.ndarray) -> str:
    hs, hf, hsf = _entropies(s, f)
    close = lambda x, y: abs(x - y) <= 1e-9 + 1e-6 * abs(y)  # noqa: E731
    if not math.isfinite(got):
        return ("your MI is not a finite number: empty histogram cells give 0·log 0 = NaN; "
                "sum −p log₂ p over the cells with p > 0 only")
    if want > 0 and close(got, want * math.log(2)):
        return "your value is MI × ln 2: that is nats; MI is measured in bits here (log base 2, np.log2)"
    if want > 0 and close(got, want * math.log10(2)):
        return "use log base 2 (bits), not log base 10"
    if close(got, -want) and want > 0:
        return "the sign is reversed: MI = H(S) + H(F) − H(S, F)"
    if close(got, hs + hf + hsf) or close(got, hsf - hs - hf):
        return "combine the entropies as MI = H(S) + H(F) − H(S, F)"
    if close(got, hsf):
        return "that is the joint entropy H(S, F); MI subtracts it from H(S) + H(F)"
    if hs + hf > 0 and (close(got, want / (hs + hf)) or close(got, 2 * want / (hs + hf))):
        return "return the plain MI in bits; QMI's normalisation by H(S) + H(F) comes afterwards"
    if close(got, _mi_of_counts(s, f)) or got > 8 + 1e-9 or got < 0:
        return ("normalise the histogram counts to probabilities (divide by the number of pixels) before taking "
                "entropies; MI of two 8-bit images lies between 0 and 8 bits")
    return (f"you get {got:.6g} bits, the library {want:.6g} (H(S) = {hs:.4g}, H(F) = {hf:.4g}, "
            f"H(S, F) = {hsf:.4g}); build the joint histogram from the pairs (s[i], f[i]) of the same pixel")


@grader()
def check_mutual_information(fn: Callable) -> str:
    """``fn(s, f)`` must return MI(S, F) in bits, as ``rediffuse.metrics.mutual_information`` computes it,
    on six pairs (the toy pair, an image with itself and with its negative, a constant, independent noise,
    a noisy copy)."""
    for i, (name, s, f) in enumerate(_mi_cases(), start=1):
        got = fn(s.copy(), f.copy())
        try:
            got = float(got)
        except (TypeError, ValueError):
            raise ExerciseError(f"case {i} ({name}): return one number (bits), got {type(got).__name__}") from None
        want = _mutual_information(s, f)
        if abs(got - want) <= 1e-9 + 1e-9 * abs(want):
            continue
        raise ExerciseError(f"case {i} ({name}): " + _mi_hint(got, want, s, f))
    return "correct: your mutual information matches rediffuse.metrics on all six pairs"


# ------------------------------------------------------------------------------- QG by hand

@reference
def qg_by_hand(a: np.ndarray, b: np.ndarray, f: np.ndarray) -> float:
    """QG (Xydeas–Petrović, the 2019 correction the benchmark uses) of grey images ``[H, W]`` (float64).

    Sobel by zero-padded correlation (``filter2(…, 'same')``); g = √(gx² + gy²), α = arctan(gy/gx) with
    gx = 0 taken as 1e-5; per source S: G = g_F/g_S where g_S > g_F else g_S/g_F (zero denominators
    → 1e-5), A = 1 − 2|α_S − α_F|/π, Q = Γg/(1 + e^{κg(G − σg)}) · Γa/(1 + e^{κa(A − σa)});
    QG = Σ(Q_A g_A + Q_B g_B) / Σ(g_A + g_B), zero strengths of A and B counted as 1e-5.
    """
    tg, kg, sg, ta, ka, sa = _QG_2019
    guard = lambda g: np.where(g == 0, 1e-5, g)  # noqa: E731  the toolbox's way around 0/0

    def sobel(x):
        gx = ndimage.correlate(x, _SOBEL_X, mode="constant")
        gy = ndimage.correlate(x, _SOBEL_X.T, mode="constant")
        return np.sqrt(gx * gx + gy * gy), np.arctan(gy / guard(gx))

    g_a, al_a = sobel(np.asarray(a, dtype=np.float64))
    g_b, al_b = sobel(np.asarray(b, dtype=np.float64))
    g_f, al_f = sobel(np.asarray(f, dtype=np.float64))

    def preserved(g_s, al_s):
        strength = np.where(g_s > g_f, g_f / guard(g_s), g_s / guard(g_f))
        agreement = 1 - 2 * np.abs(al_s - al_f) / np.pi
        return tg / (1 + np.exp(kg * (strength - sg))) * ta / (1 + np.exp(ka * (agreement - sa)))

    w_a, w_b = guard(g_a), guard(g_b)
    return float((preserved(g_a, al_a) * w_a + preserved(g_b, al_b) * w_b).sum() / (w_a + w_b).sum())


def _qg_variant(a, b, f, *, pad: str = "constant", angle: str = "arctan", ratio: str = "min/max",
                pooling: str = "weighted", constants: tuple = _QG_2019) -> float:
    """QG with one of the usual slips, for naming a wrong answer (the defaults give the reference)."""
    tg, kg, sg, ta, ka, sa = constants
    guard = lambda g: np.where(g == 0, 1e-5, g)  # noqa: E731

    def sobel(x):
        gx = ndimage.correlate(x, _SOBEL_X, mode=pad)
        gy = ndimage.correlate(x, _SOBEL_X.T, mode=pad)
        if angle == "arctan2":
            al = np.arctan2(gy, gx)
        elif angle == "pi/2":  # the Qabf form
            with np.errstate(divide="ignore", invalid="ignore"):
                al = np.where(gx == 0, np.pi / 2, np.arctan(gy / guard(gx)))
        else:
            al = np.arctan(gy / guard(gx))
        return np.sqrt(gx * gx + gy * gy), al

    g_a, al_a = sobel(a)
    g_b, al_b = sobel(b)
    g_f, al_f = sobel(f)

    def preserved(g_s, al_s):
        if ratio == "F/S":
            strength = g_f / guard(g_s)
        else:
            strength = np.where(g_s > g_f, g_f / guard(g_s), g_s / guard(g_f))
        if constants == _QG_2003:
            agreement = np.abs(np.abs(al_s - al_f) - np.pi / 2) * 2 / np.pi
        else:
            agreement = 1 - 2 * np.abs(al_s - al_f) / np.pi
        return tg / (1 + np.exp(kg * (strength - sg))) * ta / (1 + np.exp(ka * (agreement - sa)))

    w_a, w_b = guard(g_a), guard(g_b)
    q_a, q_b = preserved(g_a, al_a), preserved(g_b, al_b)
    if pooling == "per-pixel mean":
        return float(((q_a * w_a + q_b * w_b) / (w_a + w_b)).mean())
    if pooling == "plain mean":
        return float(((q_a + q_b) / 2).mean())
    return float((q_a * w_a + q_b * w_b).sum() / (w_a + w_b).sum())


_QG_SLIPS = [
    ({"pad": "reflect"}, "the borders differ: filter2(…, 'same') pads with zeros, and scipy.ndimage's "
                         "correlate/convolve default to mode='reflect' (pass mode='constant')"),
    ({"pad": "nearest"}, "the borders differ: pad with zeros (mode='constant'), not by repeating the edge pixels"),
    ({"angle": "arctan2"}, "the orientation uses arctan2: QG's α = arctan(gy/gx) lies in (−π/2, π/2), so an edge "
                           "and the same edge with reversed contrast have the same orientation"),
    ({"angle": "pi/2"}, "where gx = 0 you set α = π/2: that is the Qabf form; QG replaces gx = 0 by 1e-5, so α "
                        "keeps the sign of gy (±π/2)"),
    ({"ratio": "F/S"}, "G must be the smaller strength over the larger (≤ 1): g_F/g_S where g_S > g_F, else g_S/g_F"),
    ({"pooling": "per-pixel mean"}, "you average the per-pixel normalised score (the 2003 pooling); QG divides "
                                    "Σ(Q_A g_A + Q_B g_B) by Σ(g_A + g_B) over the whole image"),
    ({"pooling": "plain mean"}, "you average Q over pixels without weights: every pixel's Q is weighted by the "
                                "sources' edge strengths g_A, g_B (flat pixels barely count)"),
    ({"constants": _QG_2003}, "those are the 2003 constants and angle term (Γ = 1, κg = −10, κa = −20, σa = 0.75); "
                              "the benchmark's QG uses Γg = 0.9994, κg = −15, σg = 0.5, Γa = 0.9879, κa = −22, σa = 0.8"),
    ({"constants": _QG_2003, "pooling": "per-pixel mean"}, "that is the whole 2003 form (constants, folded angle "
                                                          "term, per-pixel mean); the exercise asks for the 2019 QG"),
]


def _qg_cases() -> list[tuple[str, np.ndarray, np.ndarray, np.ndarray]]:
    rng = np.random.default_rng(15)
    noise = rng.integers(0, 256, (3, 9, 11)).astype(np.float64)
    # horizontal stripes: gx = 0 with gy of both signs, where the 1e-5 rule matters
    stripes = np.repeat(rng.integers(0, 256, (10, 1)), 12, axis=1).astype(np.float64)
    base = ndimage.uniform_filter(rng.integers(0, 256, (20, 20)).astype(np.float64), 3)
    sharp = np.round(base)
    blurred = np.round(ndimage.gaussian_filter(base, 2.0))
    mask = np.zeros_like(base, dtype=bool)
    mask[:, :10] = True
    return [
        ("the toy triple", *toy_triple()),
        ("random 9×11 images", noise[0], noise[1], noise[2]),
        ("horizontal stripes", stripes, stripes[::-1].copy(), np.round(0.5 * stripes + 0.5 * stripes[::-1])),
        ("a 20×20 focus pair, F = select", np.where(mask, sharp, blurred), np.where(mask, blurred, sharp), sharp),
    ]


@grader()
def check_qg_by_hand(fn: Callable) -> str:
    """``fn(a, b, f)`` (float64 grey levels ``[H, W]``) must return ``rediffuse.metrics.qg`` of the same
    images, to 1e-6, on four triples (the toy triple, random images, stripes, a focus pair)."""
    for i, (name, a, b, f) in enumerate(_qg_cases(), start=1):
        got = fn(a.copy(), b.copy(), f.copy())
        if np.ndim(got) != 0:
            raise ExerciseError(f"case {i} ({name}): return one number, not an array of shape {np.shape(got)} "
                                "(sum the weighted map and divide)")
        got = float(got)
        u8 = [x.astype(np.uint8) for x in (a, b, f)]
        want = _qg(*u8)
        if abs(got - want) <= 1e-6:
            continue
        if not math.isfinite(got):
            raise ExerciseError(f"case {i} ({name}): QG is {got}: where gx = 0 (or g_S = g_F = 0) a division gives "
                                "inf or NaN; the toolbox replaces those zeros by 1e-5 before dividing")
        for slip, hint in _QG_SLIPS:
            variant = _qg_variant(a, b, f, **slip)
            if abs(variant - want) > 1e-6 and abs(got - variant) <= 1e-6:
                raise ExerciseError(f"case {i} ({name}): {hint}")
        if abs(got - _qabf(*u8)) <= 1e-6:
            raise ExerciseError(f"case {i} ({name}): that is Qabf (true convolution, α = π/2 where gx = 0, G = g_F "
                                "where g_S = g_F); QG correlates and replaces gx = 0 by 1e-5")
        if got > QG_MAX + 1e-9:
            raise ExerciseError(f"case {i} ({name}): QG = {got:.4f} exceeds its ceiling {QG_MAX:.5f} (both sigmoids "
                                "at G = A = 1); check the strength ratio G (≤ 1) and the constants Γg, Γa")
        raise ExerciseError(f"case {i} ({name}): you get {got:.6f}, rediffuse.metrics.qg gives {want:.6f}. Compare "
                            "your per-pixel maps with rediffuse.metrics.qg_maps(a, b, f) (uint8 images): g, G, A "
                            "and Q of each source")
    return f"correct: your QG matches rediffuse.metrics.qg on all four triples (the toy triple: {_qg(*(x.astype(np.uint8) for x in toy_triple())):.4f})"
