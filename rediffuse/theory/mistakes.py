"""Theorem 3.3 (group normalisation) and the design mistakes that break exact C4 equivariance.

Each mistake is a small module next to its fix; ``design_mistakes`` measures the quarter-turn error
of both, ``groupnorm_errors`` does the same for three normalisations. Parameters that start constant
are randomised first, as after training (ones and zeros would hide a per-channel defect).
"""
from __future__ import annotations

from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..bconv import GroupConv2d
from ..equivariance import equivariance_errors, randomize_constant_parameters
from ..groups import FieldType
from ..layers import FieldGroupNorm, FieldTimeBias, resize, sinusoidal_embedding

__all__ = ["groupnorm_errors", "EquivariantConvTranspose", "ResizeConv", "TimeBiasBlock", "ChannelBiasConv",
           "Pool", "SkipBlock", "DESIGN_VARIANTS", "design_mistakes"]

#: Spread of the random values given to constant parameters (norm affines, biases) before measuring.
_PARAM_SCALE = 0.5


def _random_fields(shape: tuple[int, ...], gen: torch.Generator, dtype: torch.dtype) -> torch.Tensor:
    """Random feature maps whose channels differ in mean and spread, as real features do (an edge
    seen at one orientation and not at another); identical statistics would hide some defects."""
    C = shape[1]
    scale = 0.5 + torch.rand(1, C, 1, 1, generator=gen) * 2
    shift = torch.randn(1, C, 1, 1, generator=gen)
    return (torch.randn(*shape, generator=gen) * scale + shift).to(dtype)


def groupnorm_errors(fields: int = 8, m: int = 4, groups: int = 4, size: tuple[int, int] = (24, 30),
                     seed: int = 0, dtype: torch.dtype = torch.float32, ks=(1, 2, 3)) -> dict[str, float]:
    """Quarter-turn equivariance error (max over ``ks``) of three group normalisations.

    - ``"field"``: ``layers.FieldGroupNorm`` — statistics over whole fields, one affine per field
      (Theorem 3.3: exact);
    - ``"plain_affine"``: ``nn.GroupNorm(groups, C·m)`` — the same statistics, per-channel affine;
    - ``"plain_split"``: ``nn.GroupNorm(2·fields, C·m)`` — groups that cut fields in half, so the
      orientations of a field are normalised with different statistics.

    Affine parameters are random (as after training); at initialisation (ones, zeros) the per-channel
    affine would hide its own defect.
    """
    gen = torch.Generator().manual_seed(seed)
    x = _random_fields((2, fields * m, *size), gen, dtype)
    t = FieldType("regular", m, fields * m)
    field_gn = FieldGroupNorm(groups, fields, m)
    plain_affine = nn.GroupNorm(groups, fields * m)
    plain_split = nn.GroupNorm(2 * fields, fields * m)
    for mod in (field_gn, plain_affine):
        randomize_constant_parameters(mod, gen, _PARAM_SCALE)
    out = {}
    for name, mod in (("field", field_gn), ("plain_affine", plain_affine), ("plain_split", plain_split)):
        mod = mod.to(dtype).eval()
        out[name] = max(equivariance_errors(mod, x, ks, in_type=t, out_type=t).values())
    return out


class EquivariantConvTranspose(nn.Module):
    """Transposed convolution whose filter is the adjoint of a Rot-E conv.

    At stride 1 the adjoint of an equivariant map is equivariant (the group acts by permutations),
    so any defect at stride 2 comes from the geometry of the upsampling, not from the filter.
    """

    def __init__(self, in_fields: int, out_fields: int, m: int = 4, kernel_size: int = 3, stride: int = 2,
                 padding: int = 1, output_padding: int = 1):
        super().__init__()
        self.m, self.stride, self.padding, self.output_padding = m, stride, padding, output_padding
        self.adjoint_of = GroupConv2d(out_fields, in_fields, kernel_size, m=m, bias=False)
        self.bias = nn.Parameter(0.1 * torch.randn(out_fields))
        self.in_type = FieldType("regular", m, in_fields * m)
        self.out_type = FieldType("regular", m, out_fields * m)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w = self.adjoint_of.expanded_filter()  # [in·m, out·m, p, p]: conv_transpose2d's layout
        return F.conv_transpose2d(x, w, self.bias.repeat_interleave(self.m), self.stride, self.padding,
                                  self.output_padding)


class _Typed(nn.Module):
    """Regular fields in, regular fields out (so ``equivariance_error`` knows how to rotate them)."""

    def __init__(self, fields: int, m: int):
        super().__init__()
        self.fields, self.m = fields, m
        self.in_type = self.out_type = FieldType("regular", m, fields * m)

    def conv(self, **kw) -> nn.Module:
        return _group_conv(self.fields, self.m, **kw)


def _group_conv(fields: int, m: int, **kw) -> nn.Module:
    """A 3×3 Rot-E conv, fields → the same number of fields."""
    return GroupConv2d(fields, fields, 3, m=m, **kw)


def _half(x: torch.Tensor) -> tuple[int, int]:
    return (x.shape[-2] + 1) // 2, (x.shape[-1] + 1) // 2


class ResizeConv(_Typed):
    """Resample (``"half"``: ``layers.resize`` to half; ``"resize2x"``: ``layers.resize`` ×2;
    ``"nearest2x"``: nearest ×2), then a stride-1 Rot-E conv."""

    def __init__(self, fields: int, m: int, how: str):
        super().__init__(fields, m)
        self.how, self.body = how, self.conv()

    def forward(self, x):
        if self.how == "half":
            x = resize(x, _half(x))
        elif self.how == "resize2x":
            x = resize(x, (2 * x.shape[-2], 2 * x.shape[-1]))
        else:
            x = F.interpolate(x, scale_factor=2, mode="nearest")
        return self.body(x)


class TimeBiasBlock(_Typed):
    """conv → + time bias → SiLU → conv, with the bias one value per channel (the mistake) or per
    field (``layers.FieldTimeBias``, the fix). The timestep is fixed; only the feature map turns."""

    def __init__(self, fields: int, m: int, per_field: bool, emb_dim: int = 32, timestep: float = 250.0):
        super().__init__(fields, m)
        self.conv1, self.conv2 = self.conv(), self.conv()
        self.time = FieldTimeBias(emb_dim, fields, m) if per_field else FieldTimeBias(emb_dim, fields * m, 1)
        self.register_buffer("emb", sinusoidal_embedding(torch.tensor([timestep]), emb_dim))

    def forward(self, x):
        return self.conv2(F.silu(self.conv1(x) + self.time(self.emb).to(x)))


class ChannelBiasConv(_Typed):
    """A Rot-E conv whose bias has one value per *channel*: the m orientations get different offsets."""

    def __init__(self, fields: int, m: int, gen: torch.Generator):
        super().__init__(fields, m)
        self.body = self.conv(bias=False)
        self.bias = nn.Parameter(0.5 * torch.randn(fields * m, generator=gen))

    def forward(self, x):
        return self.body(x) + self.bias[None, :, None, None]


class Pool(_Typed):
    """2×2 max pooling, stride 2 (``"maxpool"``) or ``layers.resize`` to half (``"resize"``)."""

    def __init__(self, fields: int, m: int, how: str = "maxpool"):
        super().__init__(fields, m)
        self.how = how

    def forward(self, x):
        return F.max_pool2d(x, 2) if self.how == "maxpool" else resize(x, _half(x))


class SkipBlock(_Typed):
    """x + up(down(x)): the coarse path is brought back to the skip's size by upsampling ×2 and
    cropping the top-left corner (``crop=True``, as we read the official code) or by resizing straight
    to the skip's size (``layers.resize``)."""

    def __init__(self, fields: int, m: int, crop: bool):
        super().__init__(fields, m)
        self.crop, self.down, self.up = crop, self.conv(), self.conv()

    def forward(self, x):
        h = self.down(resize(x, _half(x)))
        if self.crop:
            h = F.interpolate(h, scale_factor=2, mode="nearest")[..., : x.shape[-2], : x.shape[-1]]
        else:
            h = resize(h, tuple(x.shape[-2:]))
        return x + self.up(h)


def _variants(fields: int, m: int, gen: torch.Generator) -> dict:
    """name → (title, mistake, (module, size), {fix: (module, size)})."""
    C = fields * m
    conv = _group_conv

    def rand(mod: nn.Module) -> nn.Module:
        # one stream for every variant, so the seed of design_mistakes fixes all of them
        return randomize_constant_parameters(mod, gen, _PARAM_SCALE)

    return {
        "stride2_conv": (
            "stride-2 conv", "Rot-E 3×3 conv, stride 2, padding 1, on an even grid (32×32)",
            (rand(conv(fields, m, stride=2, padding=1)), (32, 32)),
            {"the same conv on an odd grid (33×33)": (rand(conv(fields, m, stride=2, padding=1)), (33, 33)),
             "layers.resize to half, then a stride-1 conv": (ResizeConv(fields, m, "half"), (32, 32))}),
        "transposed_conv": (
            "transposed-conv upsampling", "Rot-E transposed conv 3×3, stride 2, padding 1, output_padding 1",
            (EquivariantConvTranspose(fields, fields, m), (16, 16)),
            {"layers.resize ×2, then a conv": (ResizeConv(fields, m, "resize2x"), (16, 16)),
             "nearest ×2, then a conv": (ResizeConv(fields, m, "nearest2x"), (16, 16))}),
        "time_per_channel": (
            "time embedding", "time embedding added per channel (C·m values)",
            (rand(TimeBiasBlock(fields, m, per_field=False)), (20, 20)),
            {"layers.FieldTimeBias: one value per field": (rand(TimeBiasBlock(fields, m, per_field=True)),
                                                           (20, 20))}),
        "groupnorm": (
            "GroupNorm affine", "nn.GroupNorm over C·m channels with a per-channel affine",
            (rand(nn.GroupNorm(2, C)), (20, 20)),
            {"layers.FieldGroupNorm: one affine per field": (rand(FieldGroupNorm(2, fields, m)), (20, 20))}),
        "groupnorm_split": (
            "GroupNorm groups", "nn.GroupNorm with 2·C groups: each group holds half a field's orientations",
            (nn.GroupNorm(2 * fields, C), (20, 20)),
            {"layers.FieldGroupNorm: whole fields in every group": (FieldGroupNorm(fields, fields, m), (20, 20))}),
        "conv_bias_per_channel": (
            "conv bias", "a conv bias with one value per channel",
            (ChannelBiasConv(fields, m, gen), (20, 20)),
            {"one bias per field, shared by its orientations": (rand(conv(fields, m)), (20, 20))}),
        "maxpool_odd": (
            "2×2 max pooling", "2×2 max pool, stride 2, on an odd grid (33×33)",
            (Pool(fields, m), (33, 33)),
            {"the same pool on an even grid (32×32)": (Pool(fields, m), (32, 32)),
             "layers.resize to half (any size)": (Pool(fields, m, "resize"), (33, 33))}),
        "skip_crop": (
            "U-Net skip sizes", "upsample ×2 and crop top-left to the skip's odd size",
            (SkipBlock(fields, m, crop=True), (33, 33)),
            {"layers.resize straight to the skip's size": (SkipBlock(fields, m, crop=False), (33, 33))}),
    }


#: The variants ``design_mistakes`` measures (name → what goes wrong).
DESIGN_VARIANTS = ("stride2_conv", "transposed_conv", "time_per_channel", "groupnorm", "groupnorm_split",
                   "conv_bias_per_channel", "maxpool_odd", "skip_crop")


@torch.no_grad()
def design_mistakes(fields: int = 4, m: int = 4, seed: int = 0, dtype: torch.dtype = torch.float32,
                    ks=(1, 2, 3)) -> list[dict[str, Any]]:
    """Quarter-turn error of each construction that breaks exact C4 equivariance, next to its fixes.

    Returns one dict per variant: ``name``, ``title``, ``mistake`` (description), ``mistake_error``,
    ``fixes`` ({description: error}) and ``fix_error`` (the largest of them). Errors are relative,
    max over ``ks`` quarter turns, on random inputs, with random weights, biases and affines.
    """
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    out = []
    for name, (title, mistake, (module, size), fixes) in _variants(fields, m, gen).items():
        def err(mod, sz):
            mod = mod.to(dtype).eval()
            x = _random_fields((2, fields * m, *sz), gen, dtype)
            t = FieldType("regular", m, fields * m)
            return max(equivariance_errors(mod, x, ks, in_type=t, out_type=t).values())

        fix_errors = {desc: err(mod, sz) for desc, (mod, sz) in fixes.items()}
        out.append({"name": name, "title": title, "mistake": mistake, "mistake_error": err(module, size),
                    "fixes": fix_errors, "fix_error": max(fix_errors.values())})
    return out
