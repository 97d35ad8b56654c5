"""Bounds drawn over measurements: the smallest constant that keeps a bound's form above every point.

Theorem 3.4 and Corollary 3.6 of the ReDiffuse paper say the error is at most ``C₁·δ`` (group angles)
or ``C₁·δ + C₂·δ/m`` (any angle) for constants that depend on the network, not on δ. They give no
numbers for the constants, so a measurement can only ask which constants the data *need*:

- ``envelope_constant``: the smallest ``C`` with ``C·g(δᵢ) ≥ eᵢ`` for every measured point
  (``g(δ) = δ`` unless told otherwise). A bound drawn with it touches the highest point and lies on or
  above all the others — it can be read as a bound.
- ``corollary_envelope``: ``C₁`` from the group-angle points (Theorem 3.4), then the smallest ``C₂ ≥ 0``
  that makes ``C₁δ + C₂δ/m`` cover every any-angle point (Corollary 3.6).
- ``loglog_fit``: a least-squares line through ``log e`` against ``log δ``. It runs through the middle of
  the points, so some lie above it; drawn as a "bound" it looks violated. Notebook 02 shows both.

What an envelope cannot do is *test* the theorem: any finite set of points has one. The test is whether
the constant each mesh needs (``needed_constants``) stays bounded as δ shrinks.
"""
from __future__ import annotations

from typing import Callable

import numpy as np

__all__ = ["envelope_constant", "needed_constants", "envelope_ratios", "corollary_envelope", "corollary_bound",
           "loglog_fit"]


def _shape_values(deltas: np.ndarray, shape: Callable | None) -> np.ndarray:
    g = deltas if shape is None else np.asarray(shape(deltas), dtype=np.float64)
    if np.any(g <= 0):
        raise ValueError("the bound's form must be positive at every measured δ")
    return g


def _points(deltas, errors) -> tuple[np.ndarray, np.ndarray]:
    d = np.asarray(deltas, dtype=np.float64).reshape(-1)
    e = np.asarray(errors, dtype=np.float64).reshape(-1)
    if d.shape != e.shape:
        raise ValueError(f"{d.size} mesh sizes but {e.size} errors")
    if np.any(~np.isfinite(e)) or np.any(e < 0):
        raise ValueError("errors must be finite and non-negative")
    return d, e


def _raise_until_covered(c: float, g: np.ndarray, e: np.ndarray) -> float:
    """``c·g ≥ e`` must hold in floating point too (``max(e/g)·g`` can round 1 ulp below ``e``)."""
    while np.any(c * g < e):
        c = float(np.nextafter(c, np.inf))
    return c


def needed_constants(deltas, errors, shape: Callable | None = None) -> np.ndarray:
    """``eᵢ / g(δᵢ)``: the constant each measured point needs on its own."""
    d, e = _points(deltas, errors)
    return e / _shape_values(d, shape)


def envelope_constant(deltas, errors, shape: Callable | None = None) -> float:
    """The smallest ``C`` with ``C·g(δᵢ) ≥ eᵢ`` at every point (``g(δ) = δ`` by default); 0 for no points."""
    d, e = _points(deltas, errors)
    if d.size == 0:
        return 0.0
    g = _shape_values(d, shape)
    return _raise_until_covered(float(np.max(e / g)), g, e)


def envelope_ratios(deltas, errors, constant: float, shape: Callable | None = None) -> np.ndarray:
    """``eᵢ / (C·g(δᵢ))``: how close each point comes to the bound (≤ 1 everywhere for an envelope)."""
    d, e = _points(deltas, errors)
    bound = constant * _shape_values(d, shape)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(bound > 0, e / np.where(bound > 0, bound, 1.0), np.where(e > 0, np.inf, 0.0))


def corollary_bound(deltas, ms, c1: float, c2: float) -> np.ndarray:
    """``C₁δ + C₂δ/m`` at each (δ, m)."""
    d = np.asarray(deltas, dtype=np.float64)
    return c1 * d + c2 * d / np.asarray(ms, dtype=np.float64)


def corollary_envelope(group_deltas, group_errors, deltas, ms, errors) -> tuple[float, float]:
    """``(C₁, C₂)`` for the two statements, each the smallest its own points allow.

    ``C₁ = envelope_constant(group_deltas, group_errors)``: Theorem 3.4 at angles of the group. Then
    ``C₂ ≥ 0`` is the smallest value with ``C₁δ + C₂δ/m ≥ e`` at every any-angle point ``(δ, m, e)``
    (Corollary 3.6): ``C₂ = max(0, maxᵢ mᵢ·(eᵢ/δᵢ − C₁))``. Both bounds then lie on or above every point
    they are drawn over.
    """
    c1 = envelope_constant(group_deltas, group_errors)
    d, e = _points(deltas, errors)
    m = np.asarray(ms, dtype=np.float64).reshape(-1)
    if m.shape != d.shape:
        raise ValueError(f"{d.size} mesh sizes but {m.size} group orders")
    if d.size == 0:
        return c1, 0.0
    if np.any(d <= 0) or np.any(m <= 0):
        raise ValueError("mesh sizes and group orders must be positive")
    c2 = max(0.0, float(np.max(m * (e / d - c1))))
    step = 4 * np.finfo(np.float64).eps * max(float(np.max(e * m / d)), 1e-300)
    while np.any(corollary_bound(d, m, c1, c2) < e):  # round-off: C₁δ + C₂δ/m may land 1 ulp short
        c2 = c2 + max(c2 * 4 * np.finfo(np.float64).eps, step)
    return c1, c2


def loglog_fit(deltas, errors) -> tuple[float, float]:
    """``(a, b)`` of the least-squares line ``log e ≈ log a + b·log δ`` (positive points only).

    This is a *fit*, not a bound: about half the points lie above ``a·δ^b``.
    """
    d, e = _points(deltas, errors)
    ok = (d > 0) & (e > 0)
    if ok.sum() < 2:
        raise ValueError("a log–log fit needs at least two positive points")
    b, log_a = np.polyfit(np.log(d[ok]), np.log(e[ok]), 1)
    return float(np.exp(log_a)), float(b)
