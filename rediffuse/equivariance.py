"""Measuring equivariance: one checker shared by the tests and the notebooks.

``equivariance_error(module, x, k)`` compares ``module(g·x)`` with ``g·module(x)`` and returns
``‖module(g·x) − g·module(x)‖ / ‖g·module(x)‖``. Quarter turns (``k``) are exact permutations, so a
correctly built C4 network gives float round-off (~1e-7 in float32, ~1e-16 in float64). Rotations by
other elements of C_m (``steps=``) are interpolated; the error is then measured inside the centred
disc that never leaves the grid, away from a margin where zero padding differs.
"""
from __future__ import annotations

from typing import Any, Callable

import torch
import torch.nn as nn

from .groups import FieldType, disc_mask

__all__ = ["field_types", "equivariance_error", "equivariance_errors", "relative_error"]


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
        y_of_gx = module(in_type.rotate(x, k), **kw)
        g_y = out_type.rotate(module(x, **kw), k)
        return relative_error(y_of_gx, g_y)
    y_of_gx = module(in_type.rotate_steps(x, steps), **kw)
    g_y = out_type.rotate_steps(module(x, **kw), steps)
    H, W = g_y.shape[-2:]
    mask = disc_mask(H, W, margin, device=g_y.device, dtype=g_y.dtype)
    return relative_error(y_of_gx, g_y, mask)


def equivariance_errors(module: nn.Module | Callable, x: torch.Tensor, ks=(1, 2, 3), **kwargs) -> dict[int, float]:
    """``{k: equivariance_error(module, x, k)}`` for several quarter turns."""
    return {k: equivariance_error(module, x, k, **kwargs) for k in ks}
