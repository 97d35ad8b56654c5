"""Building blocks that keep a U-Net exactly C4-equivariant (``rediffuse.theory.design_mistakes`` measures
what breaks it: stride-2 convs and transposed convs on even grids, per-channel GroupNorm affines and
time biases).

- ``FieldGroupNorm``: groups made of whole fields (all m orientations), one affine per field.
- ``FieldTimeBias``: the time embedding adds one value per field, repeated over its orientations.
- ``resize``: bilinear resampling to an explicit size with ``align_corners=False``. Its sample
  positions ``(i + ½)·N/M − ½`` are mirror-symmetric for every N and M, and each axis is resampled
  by its own length only, so it commutes with ``rot90`` at any size (odd, even, mixed). That removes
  the need to pad the input to a "valid" size.

Every block is made by a *convolution family* (escnn passes field types; here one object carries
the group order and basis and makes every layer of a network consistently):

- ``RotE(m, basis)``: Rot-E layers with ``basis`` ``"bconv"``, ``"fconv"`` or ``"gconv"`` — lift,
  group conv, 1×1, projection, whole-field GroupNorm, one time bias per field, whole-field dropout;
- ``Plain(m)``: ``nn.Conv2d``/``nn.GroupNorm`` over the same total channel counts (``fields·m``): the
  non-equivariant twin.

``conv_family("bconv", m=4)`` turns the kind strings of configurations into a family. Widths are
counted in *fields* throughout; a family knows how many channels a field has.
"""
from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from .bconv import GroupConv1x1, GroupConv2d, LiftConv2d, ProjectConv2d
from .groups import FieldType

__all__ = ["CONV_KINDS", "ConvFamily", "RotE", "Plain", "conv_family", "FieldGroupNorm", "FieldTimeBias",
           "FieldAttention", "resize", "Resample", "sinusoidal_embedding"]

CONV_KINDS = ("bconv", "fconv", "gconv", "plain")


class FieldGroupNorm(nn.Module):
    """GroupNorm over ``[B, C*m, H, W]`` whose groups hold whole fields; affine shared per field.

    With ``m = 1`` this is ordinary GroupNorm (used by the plain twin).
    """

    def __init__(self, num_groups: int, fields: int, m: int = 4, eps: float = 1e-5):
        super().__init__()
        if fields % num_groups:
            raise ValueError(f"{fields} fields cannot be split into {num_groups} groups of whole fields")
        self.num_groups, self.fields, self.m, self.eps = num_groups, fields, m, eps
        self.weight = nn.Parameter(torch.ones(fields))
        self.bias = nn.Parameter(torch.zeros(fields))
        t = FieldType("regular" if m > 1 else "trivial", max(m, 1), fields * m)
        self.in_type = self.out_type = t

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # contiguous channel blocks of size (fields/groups)*m contain whole fields, so the
        # statistics are shared across orientations automatically; the per-field affine is expanded
        # to channels and handed to group_norm, which applies it in the same pass
        return F.group_norm(x, self.num_groups, self.weight.repeat_interleave(self.m),
                            self.bias.repeat_interleave(self.m), self.eps)


class FieldTimeBias(nn.Module):
    """Time embedding ``[B, D]`` → a bias ``[B, C*m, 1, 1]`` with one value per field."""

    def __init__(self, emb_dim: int, fields: int, m: int = 4):
        super().__init__()
        self.m = m
        self.proj = nn.Linear(emb_dim, fields)

    def forward(self, emb: torch.Tensor) -> torch.Tensor:
        return self.proj(emb).repeat_interleave(self.m, dim=1)[:, :, None, None]


class ConvFamily:
    """Makes every layer of a network from widths in fields (``m`` channels each).

    Subclasses: :class:`RotE` (exactly equivariant) and :class:`Plain` (the twin of equal width).
    """

    m: int
    equivariant: bool
    kind: str  # the configuration string: "bconv", "fconv", "gconv" or "plain"

    def lift(self, in_channels: int, out_fields: int, kernel_size: int = 3) -> nn.Module:
        """Image ``[B, in_channels, H, W]`` → fields ``[B, out_fields·m, H, W]``."""
        raise NotImplementedError

    def conv(self, in_fields: int, out_fields: int, kernel_size: int = 3) -> nn.Module:
        """Fields → fields, zero padding, same size."""
        raise NotImplementedError

    def conv1x1(self, in_fields: int, out_fields: int) -> nn.Module:
        raise NotImplementedError

    def project(self, in_fields: int, out_channels: int, kernel_size: int = 3) -> nn.Module:
        """Fields → an image ``[B, out_channels, H, W]`` (invariant channels)."""
        raise NotImplementedError

    def norm(self, fields: int, groups: int) -> nn.Module:
        raise NotImplementedError

    def time_bias(self, emb_dim: int, fields: int, per_channel: bool = False) -> nn.Module:
        """Time embedding ``[B, D]`` → a bias ``[B, fields·m, 1, 1]``; ``per_channel`` gives every channel
        its own value (as the official code; on a Rot-E family that breaks equivariance)."""
        if per_channel or not self.equivariant:
            return FieldTimeBias(emb_dim, fields * self.m, 1)
        return FieldTimeBias(emb_dim, fields, self.m)

    @property
    def dropout_group(self) -> int:
        """Channels dropped together: a whole field for a Rot-E family, one channel for the twin."""
        return self.m if self.equivariant else 1

    def field_type(self, fields: int) -> FieldType:
        return FieldType("regular" if self.equivariant else "trivial", self.m, fields * self.m)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.kind!r}, m={self.m})"


class RotE(ConvFamily):
    """Rot-E layers (B-Conv, F-Conv or G-Conv filters) on the regular representation of C_m."""

    equivariant = True

    def __init__(self, m: int = 4, basis: str = "bconv"):
        if basis not in ("bconv", "fconv", "gconv"):
            raise ValueError(f"unknown basis {basis!r}; choose 'bconv', 'fconv' or 'gconv'")
        self.m, self.basis, self.kind = int(m), basis, basis

    def lift(self, in_channels: int, out_fields: int, kernel_size: int = 3) -> nn.Module:
        return LiftConv2d(in_channels, out_fields, kernel_size, m=self.m, basis=self.basis)

    def conv(self, in_fields: int, out_fields: int, kernel_size: int = 3) -> nn.Module:
        return GroupConv2d(in_fields, out_fields, kernel_size, m=self.m, basis=self.basis)

    def conv1x1(self, in_fields: int, out_fields: int) -> nn.Module:
        return GroupConv1x1(in_fields, out_fields, m=self.m)

    def project(self, in_fields: int, out_channels: int, kernel_size: int = 3) -> nn.Module:
        return ProjectConv2d(in_fields, out_channels, kernel_size, m=self.m, basis=self.basis)

    def norm(self, fields: int, groups: int) -> nn.Module:
        return FieldGroupNorm(groups, fields, self.m)


class Plain(ConvFamily):
    """Ordinary convolutions over ``fields·m`` channels: the non-equivariant twin of equal width."""

    equivariant = False
    kind = "plain"

    def __init__(self, m: int = 4):
        self.m = int(m)

    def lift(self, in_channels: int, out_fields: int, kernel_size: int = 3) -> nn.Module:
        return nn.Conv2d(in_channels, out_fields * self.m, kernel_size, padding=kernel_size // 2)

    def conv(self, in_fields: int, out_fields: int, kernel_size: int = 3) -> nn.Module:
        return nn.Conv2d(in_fields * self.m, out_fields * self.m, kernel_size, padding=kernel_size // 2)

    def conv1x1(self, in_fields: int, out_fields: int) -> nn.Module:
        return nn.Conv2d(in_fields * self.m, out_fields * self.m, 1)

    def project(self, in_fields: int, out_channels: int, kernel_size: int = 3) -> nn.Module:
        return nn.Conv2d(in_fields * self.m, out_channels, kernel_size, padding=kernel_size // 2)

    def norm(self, fields: int, groups: int) -> nn.Module:
        return nn.GroupNorm(groups, fields * self.m)


def conv_family(kind: "str | ConvFamily", m: int = 4) -> ConvFamily:
    """The family a configuration string names (``CONV_KINDS``); a family is returned as it is."""
    if isinstance(kind, ConvFamily):
        return kind
    if kind == "plain":
        return Plain(m)
    if kind in CONV_KINDS:
        return RotE(m, kind)
    raise ValueError(f"unknown conv kind {kind!r}; choose one of {CONV_KINDS}")


class FieldAttention(nn.Module):
    """Global self-attention over all positions of ``[B, C*m, H, W]``, exactly equivariant.

    Queries, keys and values come from 1×1 Rot-E convs, which act pointwise and commute with the
    group action. A head holds whole fields, so a query–key dot product sums over every orientation
    of its fields and is unchanged by the cyclic orientation shift; turning the input only permutes
    the positions, and attention without positional encodings is permutation-equivariant. Used at
    the bottleneck, where it gives every pixel the context of the whole image (decisions in flat or
    blurred regions need it). Residual: ``x + out(attn(norm(x)))``.
    """

    def __init__(self, fields: int, family: ConvFamily, groups: int, heads: int = 4):
        super().__init__()
        if fields % heads:
            raise ValueError(f"{heads} attention heads do not divide {fields} fields")
        self.heads, self.fields = heads, fields
        self.norm = family.norm(fields, groups)
        self.qkv = family.conv1x1(fields, 3 * fields)
        self.out = family.conv1x1(fields, fields)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, C, H, W = x.shape
        q, k, v = self.qkv(self.norm(x)).chunk(3, dim=1)  # each [B, C, H, W]; channel = field*m + orientation
        # [B, heads, HW, C/heads]: a head's channels are a block of whole fields
        split = lambda t: t.reshape(B, self.heads, C // self.heads, H * W).transpose(-1, -2)  # noqa: E731
        h = F.scaled_dot_product_attention(split(q), split(k), split(v))
        return x + self.out(h.transpose(-1, -2).reshape(B, C, H, W))


def resize(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Bilinear resampling to ``size`` (align_corners=False): rot90-equivariant at any size.

    Shrinking uses torch's anti-aliased bilinear filter so that halving an even grid is exactly a
    2×2 average.
    """
    if tuple(x.shape[-2:]) == tuple(size):
        return x
    shrink = size[0] < x.shape[-2] or size[1] < x.shape[-1]
    if x.dtype in (torch.float16, torch.bfloat16):
        # under mixed-precision training: the CPU's anti-aliased kernel has no 16-bit version, and a
        # float32 filter is more accurate anyway; float32 inputs are resampled as they are
        out = F.interpolate(x.float(), size=size, mode="bilinear", align_corners=False, antialias=shrink)
        return out.to(x.dtype)
    return F.interpolate(x, size=size, mode="bilinear", align_corners=False, antialias=shrink)


class Resample(nn.Module):
    """Resize (``"down"``: halve, rounding up; ``"up"``: to a given size; ``"none"``), then a 3×3 conv.

    Replaces the stride-2 conv / transposed conv of the official code, which break equivariance on
    even grids (``rot90`` maps index i to N−1−i, and a stride-2 sampler maps onto itself only for odd N).
    The conv also changes the width: ``in_fields → out_fields``.
    """

    def __init__(self, in_fields: int, out_fields: int, family: ConvFamily, direction: str):
        super().__init__()
        if direction not in ("down", "up", "none"):
            raise ValueError("direction must be 'down', 'up' or 'none'")
        self.direction = direction
        self.conv = family.conv(in_fields, out_fields)

    def forward(self, x: torch.Tensor, size: tuple[int, int] | None = None) -> torch.Tensor:
        if self.direction == "down":
            x = resize(x, ((x.shape[-2] + 1) // 2, (x.shape[-1] + 1) // 2))
        elif self.direction == "up":
            if size is None:
                raise ValueError("upsampling needs the target size (the matching encoder level's)")
            x = resize(x, tuple(size))
        return self.conv(x)


def sinusoidal_embedding(t: torch.Tensor, dim: int, max_period: float = 10000.0) -> torch.Tensor:
    """Transformer-style embedding of (possibly fractional) timesteps ``[B]`` → ``[B, dim]``."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, device=t.device, dtype=torch.float32) / half)
    args = t.float()[:, None] * freqs[None]
    emb = torch.cat([torch.cos(args), torch.sin(args)], dim=-1)
    return F.pad(emb, (0, 1)) if dim % 2 else emb
