"""The ReDiffuse U-Net: an exactly C4-equivariant conditional denoiser, or its plain twin.

``ReDiffuseUNet(conv="bconv")`` maps ``[B, in_channels, H, W]`` (the two sources and the noisy fused
image, concatenated) and timesteps ``[B]`` to ``[B, out_channels, H, W]``. It is exactly equivariant to
quarter turns at *any* input size:

- every conv is a Rot-E conv (lift at the input, project at the output, group convs inside);
- GroupNorm groups hold whole fields, the time embedding adds one bias per field;
- down/up-sampling is mirror-symmetric bilinear resizing to explicit sizes (``layers.resize``)
  followed by a Rot-E conv, and skips are concatenated at exactly matching sizes — no stride-2 conv,
  no transposed conv, no top-left crop (the three places where the official code breaks equivariance).

``conv="plain"`` builds the same topology with ``nn.Conv2d`` over the same total channel counts.

Topology (widths ``base·mults``; ``d_i`` the width of level i, ``d_{-1} = base``)::

    lift conv (in → base)
    level i:  ResBlock(d_{i-1}, d_{i-1}) ×2 → Down(d_{i-1} → d_i)   (last level: conv, no resize)
    middle:   ResBlock(d_L, d_L) ×2
    level i:  ResBlock(d_i + d_{i-1}, d_i) ×2 → Up(d_i → d_{i-1})   (each takes the matching encoder
                                                                    ResBlock's output; level 0: no resize)
    GroupNorm → SiLU → project conv (base → out)
"""
from __future__ import annotations

import torch
import torch.nn as nn

from .layers import (CONV_KINDS, FieldTimeBias, Resample, conv1x1, conv3x3, lift_conv, norm, project_conv,
                     sinusoidal_embedding)

__all__ = ["ReDiffuseUNet", "ResBlock", "count_parameters"]


def count_parameters(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters() if p.requires_grad)


class ResBlock(nn.Module):
    """GN → SiLU → conv → (+time) → GN → SiLU → Dropout → conv, plus a 1×1 shortcut when widths differ.

    Widths in fields (``m`` orientations each; the plain twin uses ``fields*m`` channels). Dropout
    zeroes whole fields (all orientations together), which keeps the block equivariant.
    """

    def __init__(self, in_fields: int, out_fields: int, emb_dim: int, kind: str, m: int, groups: int,
                 dropout: float = 0.1):
        super().__init__()
        self.kind, self.m = kind, m
        self.norm1 = norm(in_fields, kind, m, groups)
        self.conv1 = conv3x3(in_fields, out_fields, kind, m)
        # the plain twin has no fields to share a bias over: one value per channel
        self.time = FieldTimeBias(emb_dim, out_fields, m) if kind != "plain" else FieldTimeBias(emb_dim, out_fields * m, 1)
        self.norm2 = norm(out_fields, kind, m, groups)
        self.dropout = dropout
        self.conv2 = conv3x3(out_fields, out_fields, kind, m)
        self.skip = conv1x1(in_fields, out_fields, kind, m) if in_fields != out_fields else nn.Identity()
        self.act = nn.SiLU()

    def _field_dropout(self, h: torch.Tensor) -> torch.Tensor:
        if not self.training or self.dropout == 0:
            return h
        B, C, H, W = h.shape
        group = self.m if self.kind != "plain" else 1
        keep = torch.rand(B, C // group, 1, 1, device=h.device, dtype=h.dtype) >= self.dropout
        keep = keep.repeat_interleave(group, dim=1)
        return h * keep / (1 - self.dropout)

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        h = self.conv1(self.act(self.norm1(x)))
        h = h + self.time(emb)
        h = self.conv2(self._field_dropout(self.act(self.norm2(h))))
        return h + self.skip(x)


class ReDiffuseUNet(nn.Module):
    """Conditional diffusion U-Net (see module docstring).

    Args:
        in_channels: input image channels (ReDiffuse: 3 = source A, source B, noisy fused Y).
        out_channels: output channels (1: ε, x₀ or a weight map for the Y channel).
        base: base width in *channels* (= fields × m); 64 in the paper.
        mults: width multipliers per level; (1, 2, 4, 8) in the paper.
        num_res_blocks: ResBlocks per level on each side (2).
        conv: ``"bconv"``, ``"fconv"``, ``"gconv"`` (equivariant) or ``"plain"``.
        m: orientations (4: exact equivariance to quarter turns).
        groups: GroupNorm groups (16); must divide the field count of every level.
        dropout: probability of dropping a whole field inside ResBlocks.
        emb_dim: sinusoidal time embedding size; the time MLP maps it to ``4·emb_dim``.
        downsample_last: also halve the grid after the last level (the paper's text: 4 times; the
            official code: 3 times, the default here).
    """

    def __init__(self, in_channels: int = 3, out_channels: int = 1, base: int = 64,
                 mults: tuple[int, ...] = (1, 2, 4, 8), num_res_blocks: int = 2, conv: str = "bconv",
                 m: int = 4, groups: int = 16, dropout: float = 0.1, emb_dim: int = 64,
                 downsample_last: bool = False):
        super().__init__()
        if conv not in CONV_KINDS:
            raise ValueError(f"unknown conv kind {conv!r}; choose one of {CONV_KINDS}")
        if base % m:
            raise ValueError(f"base width {base} must be a multiple of m={m} (fields × orientations)")
        self.config = dict(in_channels=in_channels, out_channels=out_channels, base=base, mults=tuple(mults),
                           num_res_blocks=num_res_blocks, conv=conv, m=m, groups=groups, dropout=dropout,
                           emb_dim=emb_dim, downsample_last=downsample_last)
        self.m = m
        fields = [base // m] + [base * k // m for k in mults]
        for f in fields:
            if f % groups:
                raise ValueError(f"{groups} GroupNorm groups do not divide a level of {f} fields; "
                                 f"choose groups dividing {sorted(set(fields))}")
        t_dim = 4 * emb_dim
        self.emb_dim = emb_dim
        self.time_mlp = nn.Sequential(nn.Linear(emb_dim, t_dim), nn.SiLU(), nn.Linear(t_dim, t_dim))
        self.inp = lift_conv(in_channels, fields[0], conv, m)

        self.down_blocks = nn.ModuleList()
        self.downs = nn.ModuleList()
        L = len(mults)
        for i in range(L):
            f_in, f_out = fields[i], fields[i + 1]
            self.down_blocks.append(nn.ModuleList(
                [ResBlock(f_in, f_in, t_dim, conv, m, groups, dropout) for _ in range(num_res_blocks)]))
            self.downs.append(Resample(f_in, f_out, conv, m, "down" if i < L - 1 or downsample_last else "none"))
        self.mid = nn.ModuleList([ResBlock(fields[-1], fields[-1], t_dim, conv, m, groups, dropout) for _ in range(2)])
        self.mid_up = Resample(fields[-1], fields[-1], conv, m, "up") if downsample_last else None
        self.up_blocks = nn.ModuleList()
        self.ups = nn.ModuleList()
        for i in reversed(range(L)):
            f_in, f_out = fields[i], fields[i + 1]
            self.up_blocks.append(nn.ModuleList(
                [ResBlock(f_out + f_in, f_out, t_dim, conv, m, groups, dropout) for _ in range(num_res_blocks)]))
            self.ups.append(Resample(f_out, f_in, conv, m, "up" if i > 0 else "none"))
        self.out_norm = norm(fields[0], conv, m, groups)
        self.out = project_conv(fields[0], out_channels, conv, m)
        self.act = nn.SiLU()

    @property
    def min_size(self) -> int:
        """Smallest side length: every grid that gets halved must keep ≥ 3 pixels per side
        (torch's anti-aliased resize is not mirror-symmetric from 2 pixels down to 1)."""
        n_down = sum(d.direction == "down" for d in self.downs)
        return 2 ** n_down + 1 if n_down else 1

    @property
    def in_type(self):
        from .groups import FieldType
        return FieldType("trivial", self.m, self.config["in_channels"])

    @property
    def out_type(self):
        from .groups import FieldType
        return FieldType("trivial", self.m, self.config["out_channels"])

    def forward(self, x: torch.Tensor, t: torch.Tensor, cond: torch.Tensor | None = None) -> torch.Tensor:
        """``x``: ``[B, C, H, W]`` (or the noisy image with ``cond`` concatenated in front of it);
        ``t``: ``[B]`` timesteps. Returns ``[B, out_channels, H, W]``."""
        if cond is not None:
            x = torch.cat([cond, x], dim=1)
        if x.shape[1] != self.config["in_channels"]:
            raise ValueError(f"the U-Net expects {self.config['in_channels']} input channels, got {x.shape[1]}")
        if min(x.shape[-2:]) < self.min_size:
            raise ValueError(f"input {tuple(x.shape[-2:])} is smaller than this U-Net's minimum "
                             f"{self.min_size}×{self.min_size}; pad or upscale the images")
        if t.ndim == 0:
            t = t.expand(x.shape[0])
        emb = self.time_mlp(sinusoidal_embedding(t, self.emb_dim))
        h = self.inp(x)
        skips = []
        for blocks, down in zip(self.down_blocks, self.downs):
            for block in blocks:
                h = block(h, emb)
                skips.append(h)
            h = down(h)
        for block in self.mid:
            h = block(h, emb)
        if self.mid_up is not None:
            h = self.mid_up(h, skips[-1].shape[-2:])
        for blocks, up in zip(self.up_blocks, self.ups):
            for block in blocks:
                h = block(torch.cat([h, skips.pop()], dim=1), emb)
            # back to exactly the size of the next encoder level: no cropping, any input size works
            h = up(h, skips[-1].shape[-2:] if skips else None)
        return self.out(self.act(self.out_norm(h)))
