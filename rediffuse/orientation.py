"""A canonical orientation of a stack, so that what ``fuse`` writes turns exactly with its inputs.

The network is exactly C4-equivariant, but a fusion run has parts that are not: the starting noise
x_T is drawn on the pixel grid as it lies, tiles are planned from the top-left, and floating-point
sums run in the grid's order. Turn the inputs by a quarter and those parts see another problem, so
the output moves by a grey level here and there.

The remedy is to fuse every stack in one orientation chosen from its content: the quarter turn
``k`` that brings the frames' brightness centroid (relative to the image centre) into the quadrant
``x > 0, y ≥ 0``. Turning the inputs by ``j`` turns their centroid by ``j`` quarters, so the turned
stack is brought to the same canonical orientation and fused identically, and the output is turned
back: the result is the turned result, bit for bit. The centroid is summed in exact integer
arithmetic over all frames (so the order of the frames does not matter either). A stack whose
centroid is exactly the centre (a symmetric test pattern, a constant image) keeps its orientation;
there the network's own equivariance holds, up to the starting noise.
"""
from __future__ import annotations

from typing import Iterable

import numpy as np

__all__ = ["centroid_moment", "canonical_turns", "turn"]


def centroid_moment(img: np.ndarray) -> tuple[int, int]:
    """``(m_x, m_y)``: the sums of ``(2x − (W − 1)) · v`` and ``((H − 1) − 2y) · v`` over the pixels of
    ``img`` (``[H, W]`` or ``[H, W, C]``, integer or float; v summed over the channels), with x to
    the right and y up from the centre. Exact integer sums (float images, 0–255 scale, are rounded
    to whole levels first; 16-bit ones are divided by 257 and rounded), so a turned image gives
    exactly the turned moment, and no sum can overflow for images up to 10⁹ pixels."""
    a = np.asarray(img)
    if a.dtype.kind == "f":
        a = np.rint(np.nan_to_num(a.astype(np.float32)))
    elif a.dtype == np.uint16:
        a = (a.astype(np.int32) + 128) // 257
    v = a.sum(axis=2, dtype=np.int64) if a.ndim == 3 else a.astype(np.int64)
    h, w = v.shape
    cols = v.sum(axis=0)
    rows = v.sum(axis=1)
    xs = 2 * np.arange(w, dtype=np.int64) - (w - 1)
    ys = (h - 1) - 2 * np.arange(h, dtype=np.int64)
    return int(cols @ xs), int(rows @ ys)


def _turned_moment(m: tuple[int, int], k: int) -> tuple[int, int]:
    """The moment of the image turned by ``k`` counter-clockwise quarter turns (``np.rot90``)."""
    x, y = m
    for _ in range(k % 4):
        x, y = -y, x
    return x, y


def canonical_turns(images: Iterable[np.ndarray]) -> int:
    """How many counter-clockwise quarter turns (``np.rot90(a, k)``) bring the summed brightness
    centroid of ``images`` (one size) into the quadrant x > 0, y ≥ 0; 0 when it is the centre."""
    mx = my = 0
    for a in images:
        dx, dy = centroid_moment(a)
        mx, my = mx + dx, my + dy
    if mx == 0 and my == 0:
        return 0
    for k in range(4):
        x, y = _turned_moment((mx, my), k)
        if x > 0 and y >= 0:
            return k
    raise AssertionError("unreachable: one quarter turn always lands in the quadrant")


def turn(a: np.ndarray, k: int) -> np.ndarray:
    """``a`` ``[H, W, ...]`` turned by ``k`` counter-clockwise quarter turns, as a contiguous array."""
    return a if k % 4 == 0 else np.ascontiguousarray(np.rot90(a, k, axes=(0, 1)))
