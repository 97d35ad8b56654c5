"""Synthetic focus stacks with known ground truth, for the alignment and stack-fusion tests.

``misaligned_stack`` renders N frames of one photo, frame k sharp in its own depth layer and blurred
elsewhere (a mask blend: enough for registration and fusion checks), then moves every frame but
the first by a known similarity (shift, rotation, scale), as a handheld camera with focus
breathing would. Frames are cut from a larger canvas, so moved frames have real content at their
borders rather than padding.

With ``supersample=s`` the scene is rendered on an ``s`` times finer grid and every frame, moved
or not, is that scene averaged over its own pixels (area sampling, as a sensor captures it).
Otherwise (``s = 1``) a moved frame is the unmoved canvas resampled once more (Lanczos), so it is
a little softer than the aligned frames it is compared with: registering it resamples it a second
time, and the comparison charges that first, artificial resampling to the registration.
"""
from __future__ import annotations

import cv2
import numpy as np
from scipy.ndimage import gaussian_filter

from rediffuse.align import similarity_matrix
from rediffuse.data import blur, skimage_photo


def layers(shape: tuple[int, int], n: int, rng: np.random.Generator, softness: float = 2.0) -> np.ndarray:
    """``[n, H, W]`` soft masks summing to 1: the quantiles of a smooth random field."""
    field = gaussian_filter(rng.standard_normal(shape), min(shape) / 6)
    edges = np.quantile(field, np.linspace(0, 1, n + 1)[1:-1])
    labels = np.digitize(field, edges)
    masks = np.stack([gaussian_filter((labels == k).astype(np.float64), softness) for k in range(n)])
    return masks / masks.sum(0)


def misaligned_stack(n: int, size: tuple[int, int] = (192, 256), seed: int = 0, *, shift: float = 20.0,
                     angle: float = 1.0, scale: float = 0.02, sigma: float = 3.0, photo: str = "astronaut", optics: float = 0.7,
                     supersample: int = 1, bits: int = 8, truth_bits: int | None = None):
    """``(frames, aligned, gt, matrices)``: N uint8 colour frames ``[H, W, 3]`` moved by ``matrices``
    (3×3, reference → frame pixel coordinates; frame 0 the identity), the same frames unmoved, and
    the all-in-focus ground truth. Motions drawn uniformly within ±shift px, ±angle °, ±scale.
    ``bits=16`` (supersampled stacks): every image ``uint16`` (the 0–255 scale × 257), as a raw
    converter writes them, so that 8-bit rounding does not cover the registration's own error.
    ``truth_bits=16`` (supersampled stacks): the truth alone in 16 bits, e.g. to score 8-bit frames
    against the scene rather than against its own 8-bit rounding."""
    rng = np.random.default_rng(seed)
    h, w = size
    img = skimage_photo(photo).astype(np.float32)
    margin = int(shift + 0.05 * max(h, w)) + 8
    canvas_shape = (h + 2 * margin, w + 2 * margin)
    # the photo resized to the canvas: every frame cut from it has real content at its borders
    canvas = cv2.resize(img, canvas_shape[::-1], interpolation=cv2.INTER_AREA)
    if optics:  # a lens and a demosaicing filter leave no detail at the pixel pitch itself
        canvas = cv2.GaussianBlur(canvas, (0, 0), optics)
    soft = layers(canvas_shape, n, rng)
    if supersample > 1:
        return _supersampled(img, soft, n, size, margin, rng, shift, angle, scale, sigma, optics, supersample, bits,
                             truth_bits or bits)
    if bits != 8 or truth_bits not in (None, 8):
        raise ValueError("16 bits need supersample > 1")
    blurred = blur(canvas, "gaussian", sigma).astype(np.float32)
    to_canvas = np.eye(3)
    to_canvas[:2, 2] = margin
    frames, aligned, mats = [], [], []
    for k in range(n):
        big = soft[k][..., None] * canvas + (1 - soft[k][..., None]) * blurred
        m = np.eye(3) if k == 0 else similarity_matrix(1 + rng.uniform(-scale, scale), rng.uniform(-angle, angle),
                                                       tuple(rng.uniform(-shift, shift, 2)), ((w - 1) / 2, (h - 1) / 2))
        # frame(p) = aligned(M⁻¹ p): warpAffine with WARP_INVERSE_MAP samples the canvas at (to_canvas · M⁻¹) p
        src = (to_canvas @ np.linalg.inv(m))[:2]
        moved = cv2.warpAffine(big, src, (w, h), flags=cv2.INTER_LANCZOS4 | cv2.WARP_INVERSE_MAP)
        frames.append(np.clip(np.rint(moved), 0, 255).astype(np.uint8))
        aligned.append(np.clip(np.rint(big[margin:margin + h, margin:margin + w]), 0, 255).astype(np.uint8))
        mats.append(m)
    gt = np.clip(np.rint(canvas[margin:margin + h, margin:margin + w]), 0, 255).astype(np.uint8)
    return frames, aligned, gt, mats


def _area(x: np.ndarray, s: int) -> np.ndarray:
    """Mean over ``s × s`` blocks of ``[H·s, W·s, C]``."""
    h, w = x.shape[0] // s, x.shape[1] // s
    return x.reshape(h, s, w, s, -1).mean((1, 3))


def _quantised(x: np.ndarray, bits: int) -> np.ndarray:
    if bits == 16:
        return np.clip(np.rint(x * 257.0), 0, 65535).astype(np.uint16)
    return np.clip(np.rint(x), 0, 255).astype(np.uint8)


def _supersampled(img, soft, n, size, margin, rng, shift, angle, scale, sigma, optics, s, bits=8, truth_bits=8):
    """``misaligned_stack`` rendered ``s`` times finer and area-sampled: every frame, moved or not,
    sampled once from the same scene (the same layers, motions and blur, in frame pixels)."""
    h, w = size
    ch, cw = soft.shape[1:]
    canvas = cv2.resize(img, (cw * s, ch * s), interpolation=cv2.INTER_CUBIC)
    if optics:
        canvas = cv2.GaussianBlur(canvas, (0, 0), optics * s)
    blurred = blur(canvas, "gaussian", sigma * s).astype(np.float32)
    # frame pixel x (centre) is the centre of fine pixels s·x … s·x + s − 1, i.e. fine coordinate s·x + (s − 1)/2
    fine = np.diag([s, s, 1.0])
    fine[:2, 2] = (s - 1) / 2
    to_canvas = np.diag([s, s, 1.0])
    to_canvas[:2, 2] = s * margin + (s - 1) / 2
    frames, aligned, mats = [], [], []
    for k in range(n):
        m_k = cv2.resize(soft[k].astype(np.float32), (cw * s, ch * s), interpolation=cv2.INTER_LINEAR)[..., None]
        big = m_k * canvas + (1 - m_k) * blurred
        m = np.eye(3) if k == 0 else similarity_matrix(1 + rng.uniform(-scale, scale), rng.uniform(-angle, angle),
                                                       tuple(rng.uniform(-shift, shift, 2)), ((w - 1) / 2, (h - 1) / 2))
        src = (to_canvas @ np.linalg.inv(m) @ np.linalg.inv(fine))[:2]
        moved = cv2.warpAffine(big, src, (w * s, h * s), flags=cv2.INTER_LANCZOS4 | cv2.WARP_INVERSE_MAP)
        frames.append(_quantised(_area(moved, s), bits))
        crop = big[s * margin:s * (margin + h), s * margin:s * (margin + w)]
        aligned.append(_quantised(_area(crop, s), bits))
        mats.append(m)
    gt = _quantised(_area(canvas[s * margin:s * (margin + h), s * margin:s * (margin + w)], s), truth_bits)
    return frames, aligned, gt, mats
