"""Rotation-equivariant convolutions (B-Conv / F-Conv / G-Conv) on regular fields of C_m.

Every layer stores a small weight tensor, expands it once into an ordinary ``conv2d`` filter through a
sampled basis (``rediffuse.bases``), and caches the expansion in eval mode.

=================  =======================  ===========================  ====================
layer              input                    output                       weights
=================  =======================  ===========================  ====================
``LiftConv2d``     image ``[B, C, H, W]``   fields ``[B, O*m, H, W]``    ``[O, C, R]``
``GroupConv2d``    fields ``[B, I*m, ..]``  fields ``[B, O*m, H, W]``    ``[O, I, m, R]``
``ProjectConv2d``  fields ``[B, I*m, ..]``  image ``[B, O, H, W]``       ``[O, I, R]``
``GroupConv1x1``   fields ``[B, I*m, ..]``  fields ``[B, O*m, H, W]``    ``[O, I, m]``
=================  =======================  ===========================  ====================

The hidden filter is ``W[(o,t),(i,a)] = Σ_r φ_r(R_{-θ_t}·) w[o, i, (a−t) mod m, r]``: turning the
input by one step rotates space and shifts the input orientation, which the (a − t) index absorbs.
A bias is one value per field, shared by its m orientations (anything else breaks equivariance).
"""
from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from .bases import FilterBasis, make_basis
from .groups import FieldType

__all__ = ["LiftConv2d", "GroupConv2d", "ProjectConv2d", "GroupConv1x1", "EquivariantConv"]


class EquivariantConv(nn.Module):
    """Shared machinery: basis buffer, weight init, cached filter expansion, per-field bias."""

    in_type: FieldType
    out_type: FieldType

    def __init__(self, m: int, kernel_size: int, basis: str | FilterBasis | None, inP: int | None,
                 stride: int, padding: int | None, bias: bool, out_bias: int):
        super().__init__()
        if m < 1:
            raise ValueError(f"group order m must be ≥ 1, got {m}")
        self.m = m
        self.kernel_size = kernel_size
        self.stride = stride
        self.padding = kernel_size // 2 if padding is None else padding
        if basis is not None:
            self.basis = make_basis(basis, kernel_size, inP)
            # derived from the constructor arguments, so not saved in checkpoints
            self.register_buffer("basis_t", self.basis.sample(m).float(), persistent=False)
        self.bias = nn.Parameter(torch.zeros(out_bias)) if bias else None
        self._cache: tuple | None = None

    # -- filter expansion ---------------------------------------------------------------
    def _expand(self) -> torch.Tensor:
        raise NotImplementedError

    def expanded_filter(self) -> torch.Tensor:
        """The ordinary conv2d filter ``[C_out, C_in, p, p]``; cached while in eval mode."""
        w = self.weight
        if self.training or (torch.is_grad_enabled() and w.requires_grad):
            self._cache = None
            return self._expand()
        key = (w._version, w.data_ptr(), w.dtype, w.device, self.basis_t.data_ptr() if hasattr(self, "basis_t") else 0)
        if self._cache is None or self._cache[0] != key:
            self._cache = (key, self._expand())
        return self._cache[1]

    def expanded_bias(self) -> torch.Tensor | None:
        if self.bias is None:
            return None
        return self.bias.repeat_interleave(self.m) if self.out_type.kind == "regular" else self.bias

    def reset_parameters(self, gain: float = math.sqrt(2.0)) -> None:
        """He-style init measured on the *expanded* filter, so every basis starts at the same scale."""
        with torch.no_grad():
            nn.init.normal_(self.weight)
            fan_in = self.in_type.channels * self.kernel_size ** 2
            std = self._expand().std()
            self.weight.mul_(gain / math.sqrt(fan_in) / std.clamp(min=1e-12))
            if self.bias is not None:
                self.bias.zero_()
        self._cache = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[1] != self.in_type.channels:
            raise ValueError(f"{type(self).__name__} expects {self.in_type.channels} input channels, got {x.shape[1]}")
        return F.conv2d(x, self.expanded_filter(), self.expanded_bias(), self.stride, self.padding)

    def extra_repr(self) -> str:
        b = f", basis={self.basis.name}(R={self.basis.dim})" if hasattr(self, "basis") else ""
        return (f"{self.in_type.kind}:{self.in_type.channels} -> {self.out_type.kind}:{self.out_type.channels}, "
                f"m={self.m}, kernel_size={self.kernel_size}{b}, stride={self.stride}, padding={self.padding}")


def _cyclic_index(m: int) -> torch.Tensor:
    """``idx[t, a] = (a − t) mod m``."""
    a = torch.arange(m)
    return (a[None, :] - a[:, None]) % m


class LiftConv2d(EquivariantConv):
    """Image ``[B, C, H, W]`` → regular fields ``[B, O*m, H, W]``: each filter used in m turned copies."""

    def __init__(self, in_channels: int, out_fields: int, kernel_size: int = 3, m: int = 4,
                 basis: str | FilterBasis = "bconv", inP: int | None = None, stride: int = 1,
                 padding: int | None = None, bias: bool = True):
        super().__init__(m, kernel_size, basis, inP, stride, padding, bias, out_fields)
        self.in_type = FieldType("trivial", m, in_channels)
        self.out_type = FieldType("regular", m, out_fields * m)
        self.weight = nn.Parameter(torch.empty(out_fields, in_channels, self.basis.dim))
        self.reset_parameters()

    def _expand(self):
        O, C, _ = self.weight.shape
        filt = torch.einsum("tyxr,ocr->otcyx", self.basis_t.to(self.weight), self.weight)
        return filt.reshape(O * self.m, C, self.kernel_size, self.kernel_size)


class GroupConv2d(EquivariantConv):
    """Regular fields ``[B, I*m, H, W]`` → regular fields ``[B, O*m, H, W]``.

    ``in_fields``/``out_fields`` count fields; tensors have ``fields * m`` channels.
    """

    def __init__(self, in_fields: int, out_fields: int, kernel_size: int = 3, m: int = 4,
                 basis: str | FilterBasis = "bconv", inP: int | None = None, stride: int = 1,
                 padding: int | None = None, bias: bool = True):
        super().__init__(m, kernel_size, basis, inP, stride, padding, bias, out_fields)
        self.in_type = FieldType("regular", m, in_fields * m)
        self.out_type = FieldType("regular", m, out_fields * m)
        self.weight = nn.Parameter(torch.empty(out_fields, in_fields, m, self.basis.dim))
        self.register_buffer("cyclic", _cyclic_index(m), persistent=False)
        self.reset_parameters()

    def _expand(self):
        O, I, m, _ = self.weight.shape
        tied = self.weight[:, :, self.cyclic]  # [O, I, t, a, R]
        filt = torch.einsum("tyxr,oitar->otiayx", self.basis_t.to(self.weight), tied)
        return filt.reshape(O * m, I * m, self.kernel_size, self.kernel_size)


class ProjectConv2d(EquivariantConv):
    """Regular fields ``[B, I*m, H, W]`` → invariant image ``[B, O, H, W]``.

    Orientation a of the input meets the learned filter turned by θ_a; summing over a makes the
    output rotate like an ordinary image.
    """

    def __init__(self, in_fields: int, out_channels: int, kernel_size: int = 3, m: int = 4,
                 basis: str | FilterBasis = "bconv", inP: int | None = None, stride: int = 1,
                 padding: int | None = None, bias: bool = True):
        super().__init__(m, kernel_size, basis, inP, stride, padding, bias, out_channels)
        self.in_type = FieldType("regular", m, in_fields * m)
        self.out_type = FieldType("trivial", m, out_channels)
        self.weight = nn.Parameter(torch.empty(out_channels, in_fields, self.basis.dim))
        self.reset_parameters(gain=1.0)

    def _expand(self):
        O, I, _ = self.weight.shape
        filt = torch.einsum("ayxr,oir->oiayx", self.basis_t.to(self.weight), self.weight)
        return filt.reshape(O, I * self.m, self.kernel_size, self.kernel_size)


class GroupConv1x1(EquivariantConv):
    """Pointwise regular → regular map (shortcuts, channel mixing): ``W[(o,t),(i,a)] = w[o,i,(a−t) mod m]``."""

    def __init__(self, in_fields: int, out_fields: int, m: int = 4, bias: bool = True):
        super().__init__(m, 1, None, None, 1, 0, bias, out_fields)
        self.in_type = FieldType("regular", m, in_fields * m)
        self.out_type = FieldType("regular", m, out_fields * m)
        self.weight = nn.Parameter(torch.empty(out_fields, in_fields, m))
        self.register_buffer("cyclic", _cyclic_index(m), persistent=False)
        self.reset_parameters(gain=1.0)

    def _expand(self):
        O, I, m = self.weight.shape
        tied = self.weight[:, :, self.cyclic]  # [O, I, t, a]
        return tied.permute(0, 2, 1, 3).reshape(O * m, I * m, 1, 1)
