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
from torch.utils.checkpoint import checkpoint

from .groups import FieldType
from .layers import (
    ConvFamily,
    FieldAttention,
    Resample,
    conv_family,
    sinusoidal_embedding,
)

__all__ = ["ReDiffuseUNet", "ResBlock", "count_parameters", "set_grad_checkpoint"]


def count_parameters(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters() if p.requires_grad)


def set_grad_checkpoint(module: nn.Module, enabled: bool = True) -> int:
    """Turn gradient checkpointing on (or off) in every :class:`ResBlock` of ``module``; returns how
    many blocks it reached (0: the network has none, so nothing changes)."""
    blocks = [m for m in module.modules() if isinstance(m, ResBlock)]
    for b in blocks:
        b.grad_checkpoint = bool(enabled)
    return len(blocks)


class ResBlock(nn.Module):
    """GN → SiLU → conv → (+time) → GN → SiLU → Dropout → conv, plus a 1×1 shortcut when widths differ.

    Widths in fields (``m`` orientations each; the plain twin uses ``fields*m`` channels). Dropout
    zeroes whole fields (all orientations together), which keeps the block equivariant.

    ``grad_checkpoint = True`` (see :func:`set_grad_checkpoint`) keeps only the block's inputs during
    a training forward and recomputes its inside in the backward pass: activation memory drops to
    about the block inputs at the cost of one more forward. The recomputation replays the same
    dropout mask (the RNG state is restored), so gradients agree with the plain pass.
    """

    grad_checkpoint: bool = False

    def __init__(self, in_fields: int, out_fields: int, emb_dim: int, family: ConvFamily, groups: int,
                 dropout: float = 0.1, time_bias: str = "field"):
        super().__init__()
        self.group = family.dropout_group
        self.norm1 = family.norm(in_fields, groups)
        self.conv1 = family.conv(in_fields, out_fields)
        # a per-channel bias on a Rot-E layer (time_bias="channel", as the official code) gives the
        # orientations of a field different offsets and breaks equivariance; it is here to reproduce
        # the paper's parameter count
        self.time = family.time_bias(emb_dim, out_fields, per_channel=time_bias == "channel")
        self.norm2 = family.norm(out_fields, groups)
        self.dropout = dropout
        self.conv2 = family.conv(out_fields, out_fields)
        self.skip = family.conv1x1(in_fields, out_fields) if in_fields != out_fields else nn.Identity()
        self.act = nn.SiLU()

    def _field_dropout(self, h: torch.Tensor) -> torch.Tensor:
        if not self.training or self.dropout == 0:
            return h
        B, C, H, W = h.shape
        group = self.group
        keep = torch.rand(B, C // group, 1, 1, device=h.device, dtype=h.dtype) >= self.dropout
        keep = keep.repeat_interleave(group, dim=1)
        return h * keep / (1 - self.dropout)

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        """``x`` ``[B, in_fields·m, H, W]``, ``emb`` ``[B, emb_dim]`` → ``[B, out_fields·m, H, W]``."""
        if self.grad_checkpoint and self.training and torch.is_grad_enabled():
            # non-reentrant: works with inputs that need no grad and keeps autograd hooks intact
            return checkpoint(self._forward, x, emb, use_reentrant=False)
        return self._forward(x, emb)

    def _forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
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
            official code: 3 times, the default here). ``layout="unet"`` only.
        layout: ``"unet"`` (default; concatenated skips from every encoder ResBlock, widths change in
            the resampling convs) or ``"fusiondiff"`` (the official FusionDiff/ReDiffuse noise
            predictor: ResBlocks change the width, one additive skip per level taken after its
            downsampling, decoder widths halve per level; see ``_build_fusiondiff``).
        time_bias: ``"field"`` (one time bias per field: equivariant) or ``"channel"`` (per channel,
            as the official code: breaks equivariance; for parameter-count comparisons only).
        attention: heads of a global self-attention layer between the two middle ResBlocks
            (``layers.FieldAttention``, exactly equivariant); 0 = none (the paper).
    """

    def __init__(self, in_channels: int = 3, out_channels: int = 1, base: int = 64,
                 mults: tuple[int, ...] = (1, 2, 4, 8), num_res_blocks: int = 2, conv: str = "bconv",
                 m: int = 4, groups: int = 16, dropout: float = 0.1, emb_dim: int = 64,
                 downsample_last: bool = False, layout: str = "unet", time_bias: str = "field",
                 attention: int = 0):
        super().__init__()
        family = conv_family(conv, m)
        if base % m:
            raise ValueError(f"base width {base} must be a multiple of m={m} (fields × orientations)")
        if layout not in ("unet", "fusiondiff"):
            raise ValueError(f"unknown layout {layout!r}; choose 'unet' or 'fusiondiff'")
        if time_bias not in ("field", "channel"):
            raise ValueError(f"time_bias must be 'field' or 'channel', got {time_bias!r}")
        if layout == "fusiondiff" and downsample_last:
            raise ValueError("downsample_last applies to layout='unet' only")
        self.config = dict(in_channels=in_channels, out_channels=out_channels, base=base, mults=tuple(mults),
                           num_res_blocks=num_res_blocks, conv=conv, m=m, groups=groups, dropout=dropout,
                           emb_dim=emb_dim, downsample_last=downsample_last)
        if layout != "unet" or time_bias != "field":  # keep older checkpoints' configs unchanged
            self.config.update(layout=layout, time_bias=time_bias)
        if attention:
            self.config.update(attention=attention)
        self.layout = layout
        self.m = m
        fields = [base // m] + [base * k // m for k in mults]
        for f in fields:
            if f % groups:
                raise ValueError(f"{groups} GroupNorm groups do not divide a level of {f} fields; "
                                 f"choose groups dividing {sorted(set(fields))}")
        t_dim = 4 * emb_dim
        self.emb_dim = emb_dim
        self.time_mlp = nn.Sequential(nn.Linear(emb_dim, t_dim), nn.SiLU(), nn.Linear(t_dim, t_dim))
        self.family = family
        self.inp = family.lift(in_channels, fields[0])
        block = lambda f_in, f_out: ResBlock(f_in, f_out, t_dim, family, groups, dropout, time_bias)  # noqa: E731
        if layout == "fusiondiff":
            self._build_fusiondiff(fields, num_res_blocks, family, block)
        else:
            self._build_unet(fields, mults, num_res_blocks, family, block, downsample_last)
        # created last: a seed gives the same initial weights as in earlier versions
        self.mid_attn = FieldAttention(fields[-1], family, groups, attention) if attention else None
        self.out_norm = family.norm(fields[0], groups)
        self.out = family.project(fields[0], out_channels)
        self.act = nn.SiLU()

    def _build_unet(self, fields: list[int], mults, num_res_blocks: int, family: ConvFamily, block,
                    downsample_last: bool) -> None:
        self.down_blocks = nn.ModuleList()
        self.downs = nn.ModuleList()
        L = len(mults)
        for i in range(L):
            f_in, f_out = fields[i], fields[i + 1]
            self.down_blocks.append(nn.ModuleList([block(f_in, f_in) for _ in range(num_res_blocks)]))
            self.downs.append(Resample(f_in, f_out, family, "down" if i < L - 1 or downsample_last else "none"))
        self.mid = nn.ModuleList([block(fields[-1], fields[-1]) for _ in range(2)])
        self.mid_up = Resample(fields[-1], fields[-1], family, "up") if downsample_last else None
        self.up_blocks = nn.ModuleList()
        self.ups = nn.ModuleList()
        for i in reversed(range(L)):
            f_in, f_out = fields[i], fields[i + 1]
            self.up_blocks.append(nn.ModuleList([block(f_out + f_in, f_out) for _ in range(num_res_blocks)]))
            self.ups.append(Resample(f_out, f_in, family, "up" if i > 0 else "none"))

    def _build_fusiondiff(self, fields: list[int], num_res_blocks: int, family: ConvFamily, block) -> None:
        """The official layout, with widths d_i = fields[i + 1] (d_{-1} = base)::

            lift conv (in → base)
            level i:   ResBlock(d_{i-1} → d_i), ResBlock(d_i → d_i), Down(d_i) except the last
                       level; its output is the level's skip s_i (the last level's at the same grid)
            middle:    ResBlock(d_L) ×2, then + s_L
            level j:   ResBlock ×2 to width e_j = d_{L-2-j} (base at the last), Up(e_j) except at
                       j = 0, then + s_{L-2-j} (sizes match exactly; the last Up reaches the input)
            GroupNorm → SiLU → project conv (base → out)

        Resampling is the same size-exact resize + Rot-E conv as in the default layout.
        """
        widths = fields[1:]
        L = len(widths)
        self.down_blocks, self.downs = nn.ModuleList(), nn.ModuleList()
        prev = fields[0]
        for i, d in enumerate(widths):
            self.down_blocks.append(nn.ModuleList([block(prev if k == 0 else d, d) for k in range(num_res_blocks)]))
            prev = d
            self.downs.append(Resample(d, d, family, "down") if i < L - 1 else nn.Identity())
        self.mid = nn.ModuleList([block(widths[-1], widths[-1]) for _ in range(num_res_blocks)])
        self.mid_up = None
        self.up_blocks, self.ups = nn.ModuleList(), nn.ModuleList()
        prev = widths[-1]
        for j in range(L):
            e = widths[L - 2 - j] if j < L - 1 else fields[0]
            self.up_blocks.append(nn.ModuleList([block(prev if k == 0 else e, e) for k in range(num_res_blocks)]))
            prev = e
            self.ups.append(Resample(e, e, family, "up") if j > 0 else nn.Identity())

    @property
    def min_size(self) -> int:
        """Smallest side length: every grid that gets halved must keep ≥ 3 pixels per side
        (torch's anti-aliased resize is not mirror-symmetric from 2 pixels down to 1)."""
        n_down = sum(getattr(d, "direction", "none") == "down" for d in self.downs)
        return 2 ** n_down + 1 if n_down else 1

    @property
    def in_type(self):
        return FieldType("trivial", self.m, self.config["in_channels"])

    @property
    def out_type(self):
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
        if self.layout == "fusiondiff":
            return self._forward_fusiondiff(h, emb, tuple(x.shape[-2:]))
        skips = []
        for blocks, down in zip(self.down_blocks, self.downs):
            for block in blocks:
                h = block(h, emb)
                skips.append(h)
            h = down(h)
        h = self._middle(h, emb)
        if self.mid_up is not None:
            h = self.mid_up(h, skips[-1].shape[-2:])
        for blocks, up in zip(self.up_blocks, self.ups):
            for block in blocks:
                h = block(torch.cat([h, skips.pop()], dim=1), emb)
            # back to exactly the size of the next encoder level: no cropping, any input size works
            h = up(h, skips[-1].shape[-2:] if skips else None)
        return self.out(self.act(self.out_norm(h)))

    def _middle(self, h: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        for i, block in enumerate(self.mid):
            h = block(h, emb)
            if i == 0 and self.mid_attn is not None:
                h = self.mid_attn(h)
        return h

    def _forward_fusiondiff(self, h: torch.Tensor, emb: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        skips = []
        for blocks, down in zip(self.down_blocks, self.downs):
            for block in blocks:
                h = block(h, emb)
            h = down(h)
            skips.append(h)
        h = self._middle(h, emb)
        h = h + skips.pop()
        for blocks, up in zip(self.up_blocks, self.ups):
            for block in blocks:
                h = block(h, emb)
            if isinstance(up, Resample):
                h = up(h, skips[-1].shape[-2:] if skips else size)
            if skips:
                h = h + skips.pop()
        return self.out(self.act(self.out_norm(h)))
