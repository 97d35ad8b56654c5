"""Exercises of the tutorial notebooks: reference solutions and the checks that grade them.

A notebook exercise is a function the student writes, marked with :func:`exercise`::

    @exercise("group_conv_filter")
    def group_conv_filter(weight, basis_t):
        ...                                  # the student's code
        raise NotImplementedError            # left in place until it is written

    check_group_conv_filter(group_conv_filter)

While the body still raises ``NotImplementedError`` the decorated function says so and answers with
the reference solution here, so the notebook runs end to end (papermill, CI) before the exercise is
done. Once the student writes it, their code runs and the ``check_*`` function compares it with the
library, failing with a message that says what is wrong. ``use_reference(False)`` turns the fallback
off (then an unwritten exercise raises).
"""
from __future__ import annotations

import functools
import math
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F

from .bconv import GroupConv2d, LiftConv2d
from .groups import rotate_fields, rotate_image
from .theory import ChannelBiasConv, envelope_constant as _envelope_constant, loglog_fit

__all__ = ["exercise", "use_reference", "ExerciseError", "REFERENCE",
           "group_conv_filter", "lift_conv", "check_group_conv_filter", "check_lift_conv",
           "bias_offset", "envelope_constant", "check_bias_offset", "check_envelope_constant"]

_STATE = {"reference": True}


class ExerciseError(AssertionError):
    """A check found the student's answer wrong; the message says how."""


def use_reference(on: bool = True) -> None:
    """Whether an unwritten exercise (body raising ``NotImplementedError``) falls back to the reference."""
    _STATE["reference"] = bool(on)


def exercise(name: str) -> Callable[[Callable], Callable]:
    """Decorator for a student's function: runs it, or the reference ``REFERENCE[name]`` while it is
    not written yet (and the fallback is on)."""
    if name not in REFERENCE:
        raise ValueError(f"unknown exercise {name!r}; known: {', '.join(REFERENCE)}")

    def wrap(fn: Callable) -> Callable:
        @functools.wraps(fn)
        def run(*args, **kwargs):
            try:
                return fn(*args, **kwargs)
            except NotImplementedError:
                if not _STATE["reference"]:
                    raise
                if not run.warned:
                    print(f"exercise {name!r} is not written yet: using the reference solution "
                          "(write the function body, then run the check again)")
                    run.warned = True
                return REFERENCE[name](*args, **kwargs)

        run.warned = False
        return run

    return wrap


# ------------------------------------------------------------------------- notebook 01 solutions

def group_conv_filter(weight: torch.Tensor, basis_t: torch.Tensor) -> torch.Tensor:
    """The ordinary conv filter of a group conv: ``weight`` ``[O, I, m, R]`` and the basis sampled at
    the m rotations ``basis_t`` ``[m, p, p, R]`` → ``[O·m, I·m, p, p]`` with
    ``W[(o,t),(i,a)] = Σ_r basis_t[t, :, :, r] · weight[o, i, (a − t) mod m, r]``."""
    O, I, m, R = weight.shape
    t = torch.arange(m)
    rel = (t[None, :] - t[:, None]) % m  # rel[t, a] = (a − t) mod m
    tied = weight[:, :, rel]  # [O, I, t, a, R]
    filt = torch.einsum("tyxr,oitar->otiayx", basis_t.to(weight), tied)
    return filt.reshape(O * m, I * m, basis_t.shape[1], basis_t.shape[2])


def lift_conv(x: torch.Tensor, weight: torch.Tensor, basis_t: torch.Tensor, bias: torch.Tensor | None = None
              ) -> torch.Tensor:
    """A lifting convolution from scratch: image ``x`` ``[B, C, H, W]``, ``weight`` ``[O, C, R]``,
    ``basis_t`` ``[m, p, p, R]``, ``bias`` ``[O]`` (one per field) → fields ``[B, O·m, H, W]``
    (channel ``o·m + t`` = field o seen by the filter turned by θ_t), zero padding."""
    O, C, R = weight.shape
    m, p = basis_t.shape[0], basis_t.shape[1]
    filt = torch.einsum("tyxr,ocr->otcyx", basis_t.to(weight), weight).reshape(O * m, C, p, p)
    b = bias.repeat_interleave(m) if bias is not None else None
    return F.conv2d(x, filt, b, padding=p // 2)


# ------------------------------------------------------------------------- notebook 02 solutions

def bias_offset(bias: torch.Tensor, m: int, k: int) -> torch.Tensor:
    """The equivariance defect of ``Φ(x) = A(x) + b`` (``A`` exactly equivariant, ``b`` one value per
    channel, ``[F·m]``, channel ``f·m + t``) under ``k`` quarter turns: ``Φ(g·x) − g·Φ(x) = b − g·b``, the
    same at every pixel, where ``g·b`` cycles each field's m orientations by ``k·m/4`` steps (as
    ``groups.rotate_fields`` does). Returns ``[F·m]``."""
    fields = bias.numel() // m
    return bias - bias.reshape(fields, m).roll(k * m // 4, dims=1).reshape(-1)


def envelope_constant(deltas, errors) -> float:
    """The smallest ``C`` with ``C·δ ≥ error`` at every measured point: ``max(error/δ)``."""
    return _envelope_constant(deltas, errors)


REFERENCE: dict[str, Callable] = {"group_conv_filter": group_conv_filter, "lift_conv": lift_conv,
                                  "bias_offset": bias_offset, "envelope_constant": envelope_constant}


# ------------------------------------------------------------------------- checks

def _layer(cls, *args, seed: int = 0, **kwargs):
    torch.manual_seed(seed)
    layer = cls(*args, **kwargs).eval()
    with torch.no_grad():
        if layer.bias is not None:
            layer.bias.normal_()  # a zero bias would hide a wrongly shared one
    return layer


def check_group_conv_filter(fn: Callable) -> str:
    """Compare ``fn(weight, basis_t)`` with ``GroupConv2d``'s own expansion (m = 4 and 8); raise
    :class:`ExerciseError` naming the first wrong (t, a) block, else return a short report."""
    for m in (4, 8):
        layer = _layer(GroupConv2d, 3, 2, 5, m=m)
        want = layer.expanded_filter().detach()
        got = fn(layer.weight.detach(), layer.basis_t)
        if tuple(got.shape) != tuple(want.shape):
            raise ExerciseError(f"m = {m}: your filter has shape {tuple(got.shape)}, expected {tuple(want.shape)} "
                                "= [O·m, I·m, p, p]")
        bad = ~torch.isclose(got, want, atol=1e-5, rtol=1e-4)
        if bad.any():
            o_t, i_a = (int(v) for v in bad.nonzero()[0][:2])
            t, a = o_t % m, i_a % m
            raise ExerciseError(f"m = {m}: block (output orientation t = {t}, input orientation a = {a}) differs; "
                                f"it should use the weights of relative orientation (a − t) mod m = {(a - t) % m} "
                                f"and the basis turned by θ_t")
    return "correct: your expansion equals GroupConv2d's for m = 4 and m = 8"


def check_lift_conv(fn: Callable) -> str:
    """Compare ``fn(x, weight, basis_t, bias)`` with ``LiftConv2d`` and test its equivariance."""
    layer = _layer(LiftConv2d, 2, 3, 5, m=4)
    x = torch.randn(1, 2, 21, 23, generator=torch.Generator().manual_seed(1))
    want = layer(x).detach()
    got = fn(x, layer.weight.detach(), layer.basis_t, layer.bias.detach())
    if tuple(got.shape) != tuple(want.shape):
        raise ExerciseError(f"your output has shape {tuple(got.shape)}, expected {tuple(want.shape)} = [B, O·m, H, W] "
                            "(zero padding keeps the size)")
    if not torch.allclose(got, want, atol=1e-5, rtol=1e-4):
        if torch.allclose(got - got.mean((-2, -1), keepdim=True), want - want.mean((-2, -1), keepdim=True), atol=1e-4):
            raise ExerciseError("right up to a constant per channel: check the bias (one value per field, "
                                "repeated over its m orientations)")
        raise ExerciseError("your output differs from LiftConv2d's: check the order of the channels "
                            "(field-major: channel o·m + t) and that orientation t uses the basis turned by θ_t")
    turned = fn(rotate_image(x, 1), layer.weight.detach(), layer.basis_t, layer.bias.detach())
    err = float((turned - rotate_fields(got, 1, 4)).abs().max())
    if err > 1e-4:
        raise ExerciseError(f"equal to LiftConv2d here but not equivariant (error {err:.1e})")
    return f"correct: equals LiftConv2d, and turning the input turns the fields and cycles them (error {err:.1e})"


def _cycled_offset(bias: torch.Tensor, m: int, shift: int) -> torch.Tensor:
    return bias - bias.reshape(-1, m).roll(shift, dims=1).reshape(-1)


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
