"""Where no frame has structure, weights that follow their surroundings.

Where a region is flat in every frame (clear sky, white paper, the inside of a white cup), nothing
says which frame is sharp. A network's weights wander there, and when the frames differ in
exposure or colour the wandering shows as blotches that no frame has. This module finds the
regions where every frame is flat, and there replaces each weight logit by what its neighbours
with structure decide (normalised convolution), smoothly:

- **Structure** (:class:`Evidence`): each frame's local gradient energy
  ``E_i = box₉(|∇G_σ=1 * Y_i|²) / (box₉(Y_i) + 16)²``, relative to the local brightness (so exposure
  and vignetting do not count), measured on the frame scaled to a longer side of at most
  ``2 · FILL_SIDE`` and brought to a small grid (longer side ≤ ``FILL_SIDE``); over the frames, the
  running maximum ``E``. Gradients rather than a Laplacian, so that the smooth ramp a defocused
  edge spreads over its flat surroundings counts as structure: there the frames differ, and the
  network knows how to read it.
- **Keep** ``α = clip(log(E / E_flat) / log(E_structure / E_flat), 0, 1)``: 0 where every frame is
  flat (gradients below ``FLAT_GRADIENT`` grey levels per pixel at mid-grey), 1 where some frame has
  structure (above ``STRUCTURE_GRADIENT``). Textured regions keep the network's decision whole, also
  where the frames are almost equally sharp (the network sees blur differences this measure does not).
- **Fill** (:class:`WeakEvidenceFill`): on the small grid, the logit averaged with weights α over
  Gaussians of several widths (``FILL_WIDTHS``, fractions of the longer side; a finer one wins
  where it has enough structured pixels, the α-weighted mean of the whole image where none has),
  brought back to full size; the result is ``α · l + (1 − α) · fill``. A flat region so takes the
  decision of the structure nearest to it, however large it is. Linear in the logit for a fixed
  stack, so every frame of a stack is filled with the same operator and the softmax over frames
  stays order-independent.

**The best of the rest** (:func:`sharpness`, :func:`best_of_rest`): the reference a frame of a stack
can be weighed against instead of the plain mean of the other frames: their mean weighted by each
frame's sharpness ``E^β``, so that where one other frame is sharp the reference is that frame, and
frame i wins only where it is sharper than the sharpest of the rest (what a softmax over frames
needs), not merely sharper than their mean. For two frames it is the other frame.

Every filter here is symmetric (boxes, Gaussians, anti-aliased bilinear resizing), so the whole
step commutes with quarter turns up to float round-off.
"""
from __future__ import annotations

import math

import numpy as np
import torch
from scipy import ndimage

from .layers import resize

__all__ = ["Evidence", "WeakEvidenceFill", "focus_energy", "small_size", "sharpness", "best_of_rest", "FILL_SIDE",
           "FILL_WIDTHS", "FLAT_GRADIENT", "STRUCTURE_GRADIENT", "WINDOW", "REFERENCES", "SHARPNESS_POWER"]

#: Box window (pixels) of the focus energy.
WINDOW = 9
#: The evidence and the fill work on a grid whose longer side is at most this many pixels.
FILL_SIDE = 512
#: Widths (Gaussian σ as a fraction of the grid's longer side) of the normalised convolutions.
FILL_WIDTHS = (1 / 128, 1 / 32, 1 / 8, 1 / 2)
#: Structured pixels (α under the Gaussian, as a fraction) at which a width counts half.
SUPPORT = 0.05
#: Local gradients (grey levels per pixel at mid-grey, RMS over the window) below which a region is flat
#: in a frame (sensor noise and JPEG stay below it) and above which it has structure; in between the
#: network's logit and the fill are blended.
FLAT_GRADIENT = 1.0
STRUCTURE_GRADIENT = 2.0
#: What a frame of a stack is weighed against: "mean", the plain mean of the other frames, or "best",
#: their mean weighted by sharpness (:func:`best_of_rest`). A model trained with one is used with it.
REFERENCES = ("mean", "best")
#: β of the best of the rest: each other frame weighs ``E^β`` (E: its focus energy after a Gaussian
#: of ``_SHARPNESS_SIGMA`` px). 6 makes a frame twice as sharp (E × 4) weigh 4096 times as much.
SHARPNESS_POWER = 6.0
_SHARPNESS_SIGMA = 2.0
# the plain mean's share in the best of the rest: defines it where every other frame has E ≈ 0
_MEAN_SHARE = 1e-3
# Brightness offset (grey levels) of the relative energy: keeps near-black regions from dividing by ~0.
_DARK = 16.0
_MID = 128.0 + _DARK


def small_size(height: int, width: int, side: int = FILL_SIDE) -> tuple[int, int]:
    """The grid ``(h, w)`` of the evidence: the image scaled so its longer side is ≤ ``side``
    (never enlarged); rounded per side, so a quarter-turned image gets the turned size."""
    f = min(1.0, side / max(height, width))
    return max(1, round(height * f)), max(1, round(width * f))


def focus_energy(y: np.ndarray) -> np.ndarray:
    """Relative local gradient energy ``[H, W]`` float32 of a luminance ``[H, W]`` (0–255 scale)."""
    y = np.asarray(y, np.float32)
    g = ndimage.gaussian_gradient_magnitude(y, 1.0, mode="reflect")
    energy = ndimage.uniform_filter(g * g, WINDOW, mode="reflect")
    bright = ndimage.uniform_filter(y, WINDOW, mode="reflect") + np.float32(_DARK)
    return energy / (bright * bright)


def sharpness(y: np.ndarray) -> np.ndarray:
    """``β · log(G₂ * E)`` ``[H, W]`` float32 of a frame ``[C, H, W]`` in [-1, 1] (its channels
    averaged): the log-weight of the frame in :func:`best_of_rest`. Measured on the frame scaled to
    a longer side of at most ``2 · FILL_SIDE`` and brought back, so it costs little at 24 MP."""
    grey = (np.asarray(y, np.float32).mean(0) + 1) * np.float32(127.5)
    size = grey.shape
    mid = small_size(*size, 2 * FILL_SIDE)
    small = grey if mid == size else _shrink(grey, mid)
    e = ndimage.gaussian_filter(focus_energy(small), _SHARPNESS_SIGMA, mode="reflect", truncate=3.0)
    z = np.float32(SHARPNESS_POWER) * np.log(np.maximum(e, np.float32(1e-30)))
    return (z if mid == size else _shrink(z, size)).astype(np.float32)


def best_of_rest(num: np.ndarray, den: np.ndarray, w: np.ndarray, y: np.ndarray, total: np.ndarray,
                 n: int) -> np.ndarray:
    """Frame i's reference ``[C, H, W]`` float32: the other frames weighted by sharpness. ``num`` =
    Σ_j w_j y_j and ``den`` = Σ_j w_j over all ``n`` frames (w_j = exp(z_j − m), z_j =
    :func:`sharpness`, m any per-pixel shift, e.g. the largest z); ``w``, ``y``: frame i's; ``total``
    = Σ_j y_j. A share of the plain mean keeps it defined where every other frame weighs ~0.
    Order-independent: it depends on the other frames only through sums."""
    share = np.float32(_MEAN_SHARE)
    rest = (num - w * y + share * (total - y)) / (den - w + share * (n - 1))
    return rest.astype(np.float32)


def _shrink(x: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    return resize(torch.from_numpy(np.ascontiguousarray(x, np.float32))[None, None], size)[0, 0].numpy()


class Evidence:
    """Running maximum of the frames' gradient energies on the small grid of a ``height × width``
    stack; frames arrive one at a time (:meth:`add`), in any order."""

    def __init__(self, height: int, width: int, side: int = FILL_SIDE):
        self.height, self.width, self.side = height, width, side
        self.size = small_size(height, width, side)
        self.most = np.full(self.size, -np.inf, np.float32)
        self.frames = 0

    def add(self, y: np.ndarray, valid: np.ndarray | None = None) -> None:
        """Frame luminance ``[H, W]`` (0–255); where ``valid`` ``[H, W]`` is False (a registered frame
        that does not reach), the frame gives no evidence."""
        if y.shape != (self.height, self.width):
            raise ValueError(f"evidence: frame {y.shape} does not match the stack {(self.height, self.width)}")
        mid = small_size(self.height, self.width, 2 * self.side)  # finer than the fill, cheap at 24 MP
        e = _shrink(focus_energy(_shrink(y, mid)), self.size)
        if valid is not None:
            covered = _shrink(valid.astype(np.float32), self.size) > 0.999
            e = np.where(covered, e, -np.inf)
        np.maximum(self.most, e, out=self.most)
        self.frames += 1

    def confidence(self) -> np.ndarray:
        """``α`` ``[h, w]`` float32 in [0, 1] on the small grid: 1 where some frame has structure, 0
        where every frame is flat (and where no frame covers)."""
        if self.frames < 2:
            raise ValueError("evidence needs at least two frames")
        lo, hi = 2 * math.log(FLAT_GRADIENT / _MID), 2 * math.log(STRUCTURE_GRADIENT / _MID)
        e = np.log(np.maximum(self.most, np.float32(1e-30)))
        return np.clip((e - lo) / (hi - lo), 0, 1).astype(np.float32)

    def fill(self) -> "WeakEvidenceFill":
        """The regularisation these frames call for."""
        return WeakEvidenceFill(self.confidence(), (self.height, self.width))


def _blur(x: np.ndarray, sigma: float) -> np.ndarray:
    """A Gaussian blur of width ``sigma`` px of ``[h, w]`` float64 at a cost that does not grow with
    ``sigma``: wide ones run on a grid shrunk (anti-aliased) to 2 px per σ and are brought back."""
    f = sigma / 2.0
    if f <= 1.0:
        return ndimage.gaussian_filter(x, sigma, mode="reflect", truncate=3.0)
    h, w = x.shape
    size = (max(1, round(h / f)), max(1, round(w / f)))
    t = resize(torch.from_numpy(x)[None, None], size)[0, 0].numpy()
    t = ndimage.gaussian_filter(t, 2.0, mode="reflect", truncate=3.0)
    return resize(torch.from_numpy(np.ascontiguousarray(t))[None, None], (h, w))[0, 0].numpy()


class WeakEvidenceFill:
    """``l ↦ α · l + (1 − α) · fill(l)`` for weight logits of one stack (see the module docstring).

    ``confidence``: ``[h, w]`` on the small grid; ``size``: the full ``(H, W)``."""

    def __init__(self, confidence: np.ndarray, size: tuple[int, int]):
        self.size = tuple(size)
        self.small = confidence.shape
        self.alpha = np.clip(confidence, 0, 1).astype(np.float32)
        self.sigmas = [max(f * max(self.small), 0.5) for f in FILL_WIDTHS]
        self.alpha_full = None if self.small == self.size else \
            resize(torch.from_numpy(self.alpha)[None, None], self.size)[0, 0]

    @property
    def weak_fraction(self) -> float:
        """Share of the small grid where the network's logit is not kept whole (α < 1)."""
        return float(np.mean(self.alpha < 1))

    def fill_small(self, logit_small: np.ndarray) -> np.ndarray:
        """The fill ``[h, w]`` of a logit on the small grid."""
        w = self.alpha.astype(np.float64)
        l = logit_small.astype(np.float64)
        lw = l * w
        # the base: the structured pixels' mean decision (the plain mean where there are none)
        fill = np.full_like(l, lw.sum() / w.sum() if w.sum() > 0 else l.mean())
        for s in reversed(self.sigmas):
            support = _blur(w, s)
            nc = _blur(lw, s) / np.maximum(support, 1e-12)
            beta = support / (support + SUPPORT)
            fill = beta * nc + (1 - beta) * fill
        return fill.astype(np.float32)

    def __call__(self, logit: torch.Tensor) -> torch.Tensor:
        """Logits ``[B, C, H, W]`` (full size) → the regularised logits, same shape, float32, same device."""
        if tuple(logit.shape[-2:]) != self.size:
            raise ValueError(f"logit {tuple(logit.shape)} does not match the stack's size {self.size}")
        if math.isclose(self.weak_fraction, 0.0):
            return logit.float()
        x = logit.detach().float().cpu()
        b, c = x.shape[:2]
        small = resize(x.reshape(b * c, 1, *self.size), self.small).numpy()
        fill = np.stack([self.fill_small(small[k, 0]) for k in range(b * c)])[:, None]
        fill_t = resize(torch.from_numpy(fill), self.size).reshape(b, c, *self.size)
        alpha = torch.from_numpy(self.alpha)[None, None] if self.alpha_full is None else self.alpha_full[None, None]
        out = alpha * x + (1 - alpha) * fill_t
        return out.to(logit.device)
