"""Notebook 02 (the equivariance theorems): a per-channel bias's defect and the smallest envelope."""
from __future__ import annotations

import math
from typing import Callable

import numpy as np
import torch

from ..groups import rotate_fields
from ..theory import ChannelBiasConv, envelope_constant as _envelope_constant, loglog_fit
from ._core import ExerciseError, grader, reference

__all__ = ["bias_offset", "envelope_constant", "check_bias_offset", "check_envelope_constant"]


@reference
def bias_offset(bias: torch.Tensor, m: int, k: int) -> torch.Tensor:
    """The equivariance defect of ``Φ(x) = A(x) + b`` (``A`` exactly equivariant, ``b`` one value per
    channel, ``[F·m]``, channel ``f·m + t``) under ``k`` quarter turns: ``Φ(g·x) − g·Φ(x) = b − g·b``, the
    same at every pixel, where ``g·b`` cycles each field's m orientations by ``k·m/4`` steps (as
    ``groups.rotate_fields`` does). Returns ``[F·m]``."""
    fields = bias.numel() // m
    return bias - bias.reshape(fields, m).roll(k * m // 4, dims=1).reshape(-1)


@reference
def envelope_constant(deltas, errors) -> float:
    """The smallest ``C`` with ``C·δ ≥ error`` at every measured point: ``max(error/δ)``."""
    return _envelope_constant(deltas, errors)


def _cycled_offset(bias: torch.Tensor, m: int, shift: int) -> torch.Tensor:
    return bias - bias.reshape(-1, m).roll(shift, dims=1).reshape(-1)


@grader()
@torch.no_grad()
def check_bias_offset(fn: Callable) -> str:
    """Compare ``fn(bias, m, k)`` with what a conv with a per-channel bias (``theory.ChannelBiasConv``)
    actually does under quarter turns (m = 4 and 8, k = 1, 2, 3)."""
    largest = 0.0
    for m in (4, 8):
        gen = torch.Generator().manual_seed(m)
        layer = ChannelBiasConv(3, m, gen).eval()
        x = torch.randn(1, 3 * m, 9, 11, generator=gen)
        b = layer.bias.detach()
        for k in (1, 2, 3):
            measured = layer(rotate_fields(x, k, m)) - rotate_fields(layer(x), k, m)  # [1, C, H, W]
            want = measured.mean((0, 2, 3))
            got = fn(b.clone(), m, k)
            if not isinstance(got, torch.Tensor) or tuple(got.shape) != tuple(want.shape):
                shape = tuple(got.shape) if isinstance(got, torch.Tensor) else type(got).__name__
                raise ExerciseError(f"m = {m}, k = {k}: expected a tensor of shape {tuple(want.shape)} (one offset per "
                                    f"channel), got {shape}")
            if torch.allclose(got, want, atol=1e-5):
                largest = max(largest, float(want.abs().max()))
                continue
            if torch.allclose(got, -want, atol=1e-5):
                hint = "the sign is reversed: the defect is Φ(g·x) − g·Φ(x) = b − g·b"
            elif torch.allclose(got, _cycled_offset(b, m, -k * m // 4), atol=1e-5):
                hint = "the orientations are cycled the wrong way: g moves orientation t to t + k·m/4"
            elif m == 8 and torch.allclose(got, _cycled_offset(b, m, k), atol=1e-5):
                hint = "a quarter turn is m/4 orientation steps (2 for m = 8), not 1"
            elif float(got.abs().max()) < 1e-6:
                hint = "you predict no defect, but the bias differs between the orientations of a field"
            else:
                c = int((got - want).abs().argmax())
                hint = (f"channel {c} (field {c // m}, orientation {c % m}): you predict {float(got[c]):+.4f}, "
                        f"the layer gives {float(want[c]):+.4f}")
            raise ExerciseError(f"m = {m}, k = {k}: {hint}")
    return (f"correct: your prediction matches what the layer does for m = 4 and 8, k = 1, 2, 3 "
            f"(the largest offset is {largest:.3f}, the same at every pixel)")


def _envelope_cases() -> list[tuple[np.ndarray, np.ndarray]]:
    rng = np.random.default_rng(0)
    d = 2.0 ** -np.arange(3, 9)
    return [
        (d, 0.3 * d * np.exp(0.4 * rng.standard_normal(d.size))),  # first order with scatter
        (d, 0.05 * d ** 0.6),                                        # falls slower than δ: the finest δ decides
        (d, 2.0 * d ** 1.5),                                         # faster: the coarsest δ decides
        (np.repeat(d[:3], 4), 0.1 * np.repeat(d[:3], 4) * rng.uniform(0.2, 1.0, 12)),  # several points per δ
        (np.array([0.1]), np.array([0.02])),
    ]


@grader()
def check_envelope_constant(fn: Callable) -> str:
    """``fn(deltas, errors)`` must return the smallest ``C`` with ``C·δ ≥ error`` at every point."""
    for i, (d, e) in enumerate(_envelope_cases(), start=1):
        got = fn(d.copy(), e.copy())
        try:
            got = float(got)
        except (TypeError, ValueError):
            raise ExerciseError(f"case {i}: return one number C, got {type(got).__name__}") from None
        if not math.isfinite(got):
            raise ExerciseError(f"case {i}: C = {got} is not a finite number")
        want = _envelope_constant(d, e)
        ratio = e / (got * d) if got > 0 else np.full(e.shape, np.inf)
        j = int(np.argmax(ratio))
        if ratio[j] > 1 + 1e-9:
            fit_like = np.unique(d).size > 1 and math.isclose(got, loglog_fit(d, e)[0], rel_tol=1e-3)
            raise ExerciseError(
                f"case {i}: at δ = 1/{1 / d[j]:.0f} the error {e[j]:.3g} lies above your bound "
                f"C·δ = {got * d[j]:.3g} (×{ratio[j]:.2f}). A bound must cover every point; "
                + ("a log–log least-squares fit runs through the middle of the points, so about half of them "
                   "end up above it." if fit_like else
                   "an average of error/δ (or a fit) is not a bound: take the largest error/δ."))
        if got > want * (1 + 1e-9):
            raise ExerciseError(f"case {i}: your C = {got:.4g} covers every point but is {got / want:.2f}× larger "
                                f"than needed: the smallest envelope touches the highest point (C = max error/δ)")
    return "correct: your C covers every point and touches the highest one, in all five cases"
