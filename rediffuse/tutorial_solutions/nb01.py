"""Notebook 01 (building the B-Conv layer): the filter expansion and a lifting convolution from scratch."""
from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F

from ..bconv import GroupConv2d, LiftConv2d
from ..groups import rotate_fields, rotate_image
from ._core import ExerciseError, grader, reference

__all__ = ["group_conv_filter", "lift_conv", "check_group_conv_filter", "check_lift_conv"]


@reference
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


@reference
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


def _layer(cls, *args, seed: int = 0, **kwargs):
    torch.manual_seed(seed)
    layer = cls(*args, **kwargs).eval()
    with torch.no_grad():
        if layer.bias is not None:
            layer.bias.normal_()  # a zero bias would hide a wrongly shared one
    return layer


def _shape_hint(error: BaseException) -> str | None:
    """Name the usual cause of an exception raised inside a student's filter code."""
    text = str(error)
    if "einsum" in text:
        return ("an einsum's subscripts do not fit the shapes: weight is [O, I, m, R] (group conv) or [O, C, R] "
                "(lift), basis_t is [m, p, p, R]; the letter r must be the last axis of both")
    if "index" in text and "out of bounds" in text:
        return "an index runs past the orientation axis: wrap it with % m"
    return None


def _lift_hint(error: BaseException) -> str | None:
    text = str(error)
    if "bias" in text:
        return ("F.conv2d takes one bias value per output channel (O·m of them), and the layer has one per field "
                "(O): repeat each field's value over its m orientations, bias.repeat_interleave(m)")
    if "weight of size" in text or "channels" in text:
        return ("the filter must be [O·m, C, p, p] (output channels first, then the image's C input channels) "
                "before F.conv2d")
    return _shape_hint(error)


@grader(_shape_hint)
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


@grader(_lift_hint)
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
