"""Measuring equivariance: one checker shared by the tests and the notebooks.

``equivariance_error(module, x, k)`` compares ``module(g·x)`` with ``g·module(x)`` and returns
``‖module(g·x) − g·module(x)‖ / ‖g·module(x)‖``. Quarter turns (``k``) are exact permutations, so a
correctly built C4 network gives float round-off (~1e-7 in float32, ~1e-16 in float64). Rotations by
other elements of C_m (``steps=``) are interpolated; the error is then measured inside the centred
disc that never leaves the grid, away from a margin where zero padding differs.

``randomize_constant_parameters`` prepares a freshly built network for the check: parameters that
start constant (norm scales, biases) would hide a defect behind a symmetric initialisation.

Every check runs with TF32 off (``runtime.exact_precision``): on Ampere and later GPUs TF32
convolutions alone produce errors of ~1e-3, which would hide whether the network is equivariant.

The paper's theorems measured on continuous fields, whole networks, design mistakes and error maps
live in ``rediffuse.theory``; this module depends on nothing in the package but ``groups`` and
``runtime``.
"""
from __future__ import annotations

from typing import Any, Callable

import torch
import torch.nn as nn

from .groups import FieldType, disc_mask
from .runtime import exact_precision

__all__ = ["field_types", "equivariance_error", "equivariance_errors", "relative_error",
           "randomize_constant_parameters"]


def _typed_children(module: nn.Module) -> list[nn.Module]:
    return [mod for mod in module.modules() if hasattr(mod, "in_type") and hasattr(mod, "out_type")]


def field_types(module: nn.Module) -> tuple[FieldType, FieldType]:
    """(input type, output type) of a module or of a stack (first/last typed submodule)."""
    if hasattr(module, "in_type") and hasattr(module, "out_type"):
        return module.in_type, module.out_type
    typed = _typed_children(module)
    if not typed:
        raise ValueError("cannot tell how this module's input and output rotate: pass in_type= and out_type=")
    return typed[0].in_type, typed[-1].out_type


def relative_error(a: torch.Tensor, b: torch.Tensor, mask: torch.Tensor | None = None) -> float:
    """``‖a − b‖ / ‖b‖`` (optionally over a spatial ``[H, W]`` mask)."""
    if mask is not None:
        a, b = a * mask, b * mask
    denom = b.norm().item()
    return (a - b).norm().item() / (denom if denom > 0 else 1.0)


@torch.no_grad()
def equivariance_error(module: nn.Module | Callable, x: torch.Tensor, k: int = 1, *,
                       steps: int | None = None, in_type: FieldType | None = None,
                       out_type: FieldType | None = None, margin: float = 4.0,
                       forward_kwargs: dict[str, Any] | None = None) -> float:
    """Relative equivariance error of ``module`` at input ``x``.

    Args:
        module: a layer, a stack (``nn.Sequential``) or any callable; input/output types are read
            from the layers (``in_type``/``out_type``) unless given.
        x: input ``[B, C, H, W]`` (an image or regular fields, as ``in_type`` says).
        k: quarter turns (exact rotation), used when ``steps`` is None.
        steps: rotate instead by ``steps`` elements of C_m (angle 2π·steps/m, interpolated); the
            error is then measured inside the centred disc, ``margin`` pixels from its edge.
        forward_kwargs: extra keyword arguments for the forward call (e.g. a diffusion timestep).
    """
    if in_type is None or out_type is None:
        ti, to = field_types(module)
        in_type, out_type = in_type or ti, out_type or to
    kw = forward_kwargs or {}
    if steps is None:
        with exact_precision():
            y_of_gx = module(in_type.rotate(x, k), **kw)
            g_y = out_type.rotate(module(x, **kw), k)
        return relative_error(y_of_gx, g_y)
    with exact_precision():
        y_of_gx = module(in_type.rotate_steps(x, steps), **kw)
        g_y = out_type.rotate_steps(module(x, **kw), steps)
    H, W = g_y.shape[-2:]
    mask = disc_mask(H, W, margin, device=g_y.device, dtype=g_y.dtype)
    return relative_error(y_of_gx, g_y, mask)


def equivariance_errors(module: nn.Module | Callable, x: torch.Tensor, ks=(1, 2, 3), **kwargs) -> dict[int, float]:
    """``{k: equivariance_error(module, x, k)}`` for several quarter turns."""
    return {k: equivariance_error(module, x, k, **kwargs) for k in ks}


def randomize_constant_parameters(module: nn.Module, seed: int | torch.Generator = 0,
                                  scale: float = 0.1) -> nn.Module:
    """Add ``scale·N(0, 1)`` to every parameter whose entries are all equal (norm scales of 1, zero
    biases, zero-initialised output convs), in place, as training would move them; returns ``module``.

    A symmetric initialisation can hide a defect: a per-channel affine of ones treats every
    orientation alike until it is trained. Random values keep an equivariant network equivariant,
    since its equivariance comes from how parameters are tied, not from their values.
    ``seed`` may be a ``torch.Generator`` to draw from a stream shared with other random inputs.
    """
    gen = seed if isinstance(seed, torch.Generator) else torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            if p.numel() and bool((p == p.reshape(-1)[0]).all()):
                p.add_(scale * torch.randn(p.shape, generator=gen).to(p))
    return module
