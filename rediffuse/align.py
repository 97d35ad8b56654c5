"""Registering the frames of a focus stack to one reference frame.

Handheld stacks move between frames, and most lenses change magnification as they refocus (focus
breathing: up to 1–2 % across a stack), so a pixel of one frame is not the same point of the scene
in the next. Fusing such frames as they are doubles edges and smears detail. This module finds, for
every frame, the transform that maps the reference frame's pixel grid onto it, and resamples the
frame onto that grid.

- **Method.** OpenCV's ECC (``cv2.findTransformECC``, Evangelidis & Psarakis 2008: maximises the
  correlation coefficient of the two images, so it tolerates brightness and contrast changes and the
  different blur of differently focused frames), run coarse to fine on a luminance pyramid
  (``cv2.pyrDown``): each level starts from the estimate of the one below, the coarsest from
  scikit-image's phase correlation (``skimage.registration.phase_cross_correlation``, which finds
  translations of any size). Levels above ``max_side`` pixels are skipped — a 24-MP frame is
  registered on its 1500-px level, which is ~16× cheaper than full size and still accurate to a
  fraction of a full-size pixel.
- **Motions.** ``"translation"`` (2 parameters), ``"similarity"`` (translation, rotation and one
  scale: what handheld shooting and focus breathing do; estimated as ECC's affine motion and
  projected onto the nearest similarity at every level), ``"homography"`` (8 parameters: tilted
  planes, strong perspective changes).
- **Matrices.** A :class:`Registration` holds a 3×3 matrix ``M`` in full-size pixel coordinates
  (x to the right, y down, pixel centres at integers) that maps a point of the *reference* frame to
  the same point of the scene in the *frame*: ``frame(M·p) ≈ reference(p)``.
- **Borders.** :func:`warp` resamples a frame onto the reference grid (Lanczos, 8×8 taps). Reference pixels
  that the frame does not see are filled by repeating the frame's edge pixels, and :func:`warp`
  returns them as a mask, so a fusion can give that frame no weight there.
- **Failures.** A frame that cannot be registered (ECC does not converge, the correlation stays low,
  or the transform is implausible for a focus stack: scale beyond ±20 %, rotation beyond 10°, a shift
  over a third of the frame) raises :class:`RegistrationError`, a one-line ``ValueError``.
"""
from __future__ import annotations

import math
import warnings
from dataclasses import dataclass

import cv2
import numpy as np

from .data.colour import luma  # noqa: F401 (registration works on it; importable from here too)

__all__ = [
    "MOTIONS", "ALIGN_MODES", "MAX_SIDE", "CHECK_SIDE", "AUTO_THRESHOLD_PX", "MIN_CORRELATION",
    "Registration", "RegistrationError", "Pyramid", "register", "luma", "warp", "displacement", "grid_points",
    "grid_rms", "similarity_matrix", "AUTO_RESIDUAL", "phase_agreement", "warp_residual",
]

#: Registration models, fewest parameters first.
MOTIONS = ("translation", "similarity", "homography")
#: What ``fuse(align=...)`` and ``rediffuse fuse --align`` accept.
ALIGN_MODES = ("auto", "none", *MOTIONS)

#: Registration stops at the finest pyramid level whose longer side is at most this many pixels.
MAX_SIDE = 2048
#: The cheap check of ``align="auto"`` registers on levels up to this size only.
CHECK_SIDE = 640
#: ``align="auto"`` registers a stack when a frame's points move by more than this (full-size px).
AUTO_THRESHOLD_PX = 1.0
#: ``align="auto"`` trusts a registration only when its warp leaves at most this share of the phase
#: disagreement the frame has with the reference as it is (:func:`warp_residual`). Differently focused
#: frames of one geometry pull ECC off by pixels on small frames (up to 16 px on 64-px frames blurred
#: by σ 6): such warps left 56 % or more (128 frames, 64 to 512 px, σ 1.5–6). Of 439 moved frames
#: that ECC registered right, 386 left at most 50 %; the others moved 1–6 px in stacks blurred by
#: σ 3–6 and are fused as they are (``--align similarity`` registers them).
AUTO_RESIDUAL = 0.5
#: A registration whose final correlation coefficient (ECC) stays below this is refused.
MIN_CORRELATION = 0.5
# The coarsest level: its longer side is at most this (phase correlation starts there).
_COARSEST_SIDE = 160
# ECC stops after this many iterations per level, or when the correlation gains less than _ECC_EPS.
_ECC_ITERATIONS = 100
_ECC_EPS = 1e-6
#: ECC's Gaussian smoothing (gaussFiltSize, pixels) on levels whose shorter side is ≥ 96 px (3 below).
#: Differently focused frames bias the estimate by 0.03–0.1 px; more smoothing makes that worse
#: (``benchmarks/bench_peers.py --part ecc``).
ECC_SMOOTHING = 5
# Plausible motion between two frames of one focus stack.
_MAX_SCALE_CHANGE = 0.2
_MAX_ROTATION_DEG = 10.0
_MAX_SHIFT_FRACTION = 1 / 3

_ECC_MOTION = {"translation": cv2.MOTION_TRANSLATION, "similarity": cv2.MOTION_AFFINE,
               "homography": cv2.MOTION_HOMOGRAPHY}


class RegistrationError(ValueError):
    """A frame that cannot be registered to the reference (one-line message)."""


@dataclass(frozen=True)
class Registration:
    """Where a frame sits relative to the reference: ``matrix`` (3×3, float64) maps reference pixel
    coordinates to the frame's (``frame(M·p) ≈ reference(p)``), found with ``motion``;
    ``correlation`` is ECC's final correlation coefficient on the finest level used (1: identical)."""

    matrix: np.ndarray
    motion: str
    correlation: float

    @property
    def is_identity(self) -> bool:
        return bool(np.array_equal(self.matrix, np.eye(3)))


class Pyramid:
    """A luminance pyramid for registration: ``levels[0]`` the coarsest, ``levels[-1]`` the finest
    used (longer side ≤ ``max_side``); ``factors[k]`` = full-size pixels per pixel of ``levels[k]``.

    ``cv2.pyrDown`` centres output pixel i on input pixel 2i, so a point x of a level is the point
    ``factor·x`` of the full-size image, exactly."""

    def __init__(self, y: np.ndarray, max_side: int = MAX_SIDE, coarsest_side: int = _COARSEST_SIDE):
        if y.ndim != 2:
            raise ValueError(f"Pyramid expects a luminance image [H, W], got shape {y.shape}")
        self.shape = y.shape
        level, factor = np.ascontiguousarray(y, dtype=np.float32), 1
        levels, factors = [], []
        while True:
            if max(level.shape) <= max_side:
                levels.append(level)
                factors.append(factor)
            if max(level.shape) <= coarsest_side or min(level.shape) < 32:
                break
            level, factor = cv2.pyrDown(level), factor * 2
        if not levels:  # a very long strip: its finest useful level is the last one made
            levels, factors = [level], [factor]
        self.levels = levels[::-1]
        self.factors = factors[::-1]


def _scale(factor: float) -> np.ndarray:
    return np.diag([float(factor), float(factor), 1.0])


def _to_level(m: np.ndarray, factor: int) -> np.ndarray:
    """A full-size matrix in the coordinates of a level ``factor`` times smaller (and back with 1/f)."""
    return np.linalg.inv(_scale(factor)) @ m @ _scale(factor)


def similarity_matrix(scale: float = 1.0, angle_deg: float = 0.0, shift: tuple[float, float] = (0.0, 0.0),
                      centre: tuple[float, float] = (0.0, 0.0)) -> np.ndarray:
    """3×3 similarity: scale by ``scale`` and turn by ``angle_deg`` (counter-clockwise on screen)
    about ``centre`` (x, y), then move by ``shift`` (dx, dy)."""
    a = math.radians(angle_deg)
    c, s = scale * math.cos(a), scale * math.sin(a)
    r = np.array([[c, s, 0.0], [-s, c, 0.0], [0.0, 0.0, 1.0]])  # y points down: "counter-clockwise" flips s
    to, back = np.eye(3), np.eye(3)
    to[:2, 2] = [-centre[0], -centre[1]]
    back[:2, 2] = [centre[0] + shift[0], centre[1] + shift[1]]
    return back @ r @ to


def _nearest_similarity(m: np.ndarray, centre: tuple[float, float]) -> np.ndarray:
    """The similarity closest (Frobenius) to the linear part of an affine ``m``, mapping ``centre``
    where ``m`` maps it: ECC has no similarity model, so its affine estimate is projected."""
    a = m[:2, :2]
    p, q = (a[0, 0] + a[1, 1]) / 2, (a[1, 0] - a[0, 1]) / 2
    out = np.eye(3)
    out[:2, :2] = [[p, -q], [q, p]]
    c = np.array([centre[0], centre[1], 1.0])
    out[:2, 2] = (m @ c)[:2] - out[:2, :2] @ c[:2]
    return out


def _check_plausible(m: np.ndarray, shape: tuple[int, int]) -> str | None:
    """Why ``m`` cannot relate two frames of one focus stack, or None when it can."""
    h, w = shape
    a = m[:2, :2]
    scales = np.linalg.svd(a, compute_uv=False)
    if not np.isfinite(m).all() or scales.min() < 1 - _MAX_SCALE_CHANGE or scales.max() > 1 + _MAX_SCALE_CHANGE:
        return f"scale {scales.min():.3f}–{scales.max():.3f}"
    angle = math.degrees(math.atan2(a[1, 0] - a[0, 1], a[0, 0] + a[1, 1]))
    if abs(angle) > _MAX_ROTATION_DEG:
        return f"rotation {angle:.1f}°"
    move = displacement(m, shape)
    if move > _MAX_SHIFT_FRACTION * max(h, w):
        return f"points moved by up to {move:.0f} px"
    if m.shape == (3, 3) and (abs(m[2, 0]) * w + abs(m[2, 1]) * h > 0.2):
        return "strong perspective"
    return None


def grid_points(shape: tuple[int, int], n: int = 9) -> np.ndarray:
    """``n × n`` points ``[n², 2]`` (x, y) evenly spread over a frame of ``shape`` (H, W), corners included."""
    h, w = shape
    xs, ys = np.meshgrid(np.linspace(0, w - 1, n), np.linspace(0, h - 1, n))
    return np.stack([xs.ravel(), ys.ravel()], 1)


def _apply(m: np.ndarray, pts: np.ndarray) -> np.ndarray:
    p = np.concatenate([pts, np.ones((len(pts), 1))], 1) @ m.T
    return p[:, :2] / p[:, 2:3]


def displacement(m: np.ndarray, shape: tuple[int, int]) -> float:
    """How far (px) ``m`` moves the points of a frame of ``shape`` at most (grid with corners)."""
    pts = grid_points(shape)
    return float(np.abs(_apply(m, pts) - pts).max())


def grid_rms(m_est: np.ndarray, m_true: np.ndarray, shape: tuple[int, int], n: int = 9) -> float:
    """RMS distance (px) between where two transforms send an ``n × n`` grid over a frame of ``shape``."""
    pts = grid_points(shape, n)
    d = _apply(m_est, pts) - _apply(m_true, pts)
    return float(np.sqrt((d ** 2).sum(1).mean()))


def phase_agreement(a: np.ndarray, b: np.ndarray) -> float:
    """How well the phases of two images ``[H, W]`` agree: ``Σ Re(A·B̄) / Σ |A·B̄|`` over the spectra
    of the zero-mean, Hann-windowed images (1: every frequency in phase). A symmetric blur scales
    magnitudes and keeps phases, so differently focused views of one geometry agree closely, while
    a motion turns the phases of every frequency apart."""
    h, w = a.shape
    win = np.outer(np.hanning(h), np.hanning(w)).astype(np.float32)
    fa = np.fft.rfft2((a - a.mean()) * win)
    fb = np.fft.rfft2((b - b.mean()) * win)
    cross = fa * np.conj(fb)
    total = float(np.abs(cross).sum())
    return float(cross.real.sum()) / total if total > 0 else 1.0


def warp_residual(reference: Pyramid, frame: Pyramid, matrix: np.ndarray) -> float:
    """The share of the frame's phase disagreement with the reference (``1 − phase_agreement``, on
    the finest level of the pyramids) that remains after warping it with ``matrix``: near 0 when
    the warp undoes a real motion, near 1 or above when it only trades one blur for another."""
    ref, mov, f = reference.levels[-1], frame.levels[-1], reference.factors[-1]
    before = 1.0 - phase_agreement(ref, mov)
    after = 1.0 - phase_agreement(ref, warp(mov, _to_level(np.asarray(matrix, np.float64), f))[0])
    return after / max(before, 1e-12)


def _phase_shift(ref: np.ndarray, mov: np.ndarray) -> np.ndarray:
    """Translation matrix (level coordinates) from phase correlation: ``mov(p + d) ≈ ref(p)``."""
    from skimage.registration import phase_cross_correlation  # here: a fusion that registers nothing never imports it

    with warnings.catch_warnings():
        # its RMS error is not used here, and on a flat (all-black) frame scikit-image warns that it has none
        warnings.filterwarnings("ignore", message="Could not determine RMS error", category=UserWarning)
        shift, _, _ = phase_cross_correlation(ref, mov, upsample_factor=10, normalization=None)
    m = np.eye(3)
    m[0, 2], m[1, 2] = -shift[1], -shift[0]  # skimage returns the (row, col) shift that moves mov onto ref
    return m


def register(reference: Pyramid, frame: Pyramid, motion: str = "similarity", *,
             init: np.ndarray | None = None) -> Registration:
    """Register ``frame`` to ``reference`` (pyramids of one size) with ``motion``, coarse to fine.

    ``init``: a 3×3 full-size starting matrix (e.g. the previous frame's); ``None`` starts from phase
    correlation on the coarsest level. Raises :class:`RegistrationError` when ECC does not converge,
    its correlation stays below ``MIN_CORRELATION`` or the result is implausible for a focus stack.
    """
    if motion not in MOTIONS:
        raise ValueError(f"unknown motion {motion!r}; use one of {', '.join(MOTIONS)}")
    if reference.shape != frame.shape or reference.factors != frame.factors:
        raise ValueError(f"register needs pyramids of one size, got {reference.shape} and {frame.shape}")
    if init is None:
        m = _to_level(_phase_shift(reference.levels[0], frame.levels[0]), 1 / reference.factors[0])
    else:
        m = np.asarray(init, np.float64).copy()
    criteria = (cv2.TERM_CRITERIA_EPS | cv2.TERM_CRITERIA_COUNT, _ECC_ITERATIONS, _ECC_EPS)
    cc = 1.0
    for ref, mov, f in zip(reference.levels, frame.levels, reference.factors):
        ml = _to_level(m, f)
        warp_matrix = (ml if motion == "homography" else ml[:2]).astype(np.float32)
        # ECC smooths both images before comparing (gaussFiltSize); on tiny levels a 5-px kernel
        # would wipe out the detail it needs, so it shrinks with the level
        blur = ECC_SMOOTHING if min(ref.shape) >= 96 else min(3, ECC_SMOOTHING)
        try:
            cc, warp_matrix = cv2.findTransformECC(ref, mov, warp_matrix, _ECC_MOTION[motion], criteria, None, blur)
        except cv2.error as e:
            reason = "ECC did not converge (the frames may show different scenes)"
            if "NaN" in str(e) or "singular" in str(e).lower():
                reason = "ECC broke down (a flat or featureless frame?)"
            raise RegistrationError(reason) from None
        ml = np.eye(3)
        ml[:warp_matrix.shape[0]] = warp_matrix
        if motion == "similarity":
            h, w = ref.shape
            ml = _nearest_similarity(ml, ((w - 1) / 2, (h - 1) / 2))
        m = _to_level(ml, 1 / f)
    if not np.isfinite(cc) or cc < MIN_CORRELATION:
        raise RegistrationError(f"the registered frames correlate poorly (ECC correlation {cc:.2f} < "
                                f"{MIN_CORRELATION}; different scenes?)")
    why = _check_plausible(m, reference.shape)
    if why:
        raise RegistrationError(f"the transform found is implausible for a focus stack ({why})")
    return Registration(m, motion, float(cc))


def warp(img: np.ndarray, matrix: np.ndarray, interpolation: int = cv2.INTER_LANCZOS4) -> tuple[np.ndarray, np.ndarray]:
    """Resample ``img`` (``[H, W]`` or ``[H, W, 3]``; uint8, uint16 or float32) onto the reference
    grid: ``out(p) = img(M·p)``. Returns ``(out, valid)``: ``out`` of ``img``'s size and dtype (the
    frame's edge pixels repeated where it does not reach), ``valid`` ``[H, W]`` bool, True where the
    frame covers the reference pixel."""
    h, w = img.shape[:2]
    m = np.asarray(matrix, np.float64)
    flags = interpolation | cv2.WARP_INVERSE_MAP
    src = img if img.dtype != np.float64 else img.astype(np.float32)
    if np.allclose(m[2], [0, 0, 1]):
        out = cv2.warpAffine(src, m[:2], (w, h), flags=flags, borderMode=cv2.BORDER_REPLICATE)
        valid = cv2.warpAffine(np.ones((h, w), np.uint8), m[:2], (w, h), flags=cv2.INTER_NEAREST | cv2.WARP_INVERSE_MAP,
                               borderMode=cv2.BORDER_CONSTANT, borderValue=0)
    else:
        out = cv2.warpPerspective(src, m, (w, h), flags=flags, borderMode=cv2.BORDER_REPLICATE)
        valid = cv2.warpPerspective(np.ones((h, w), np.uint8), m, (w, h),
                                    flags=cv2.INTER_NEAREST | cv2.WARP_INVERSE_MAP,
                                    borderMode=cv2.BORDER_CONSTANT, borderValue=0)
    return out.reshape(img.shape), valid.astype(bool)
