"""Per-pixel equivariance error maps of a network on an image (the paper's Figure 8)."""
from __future__ import annotations

import math
from typing import Callable

import numpy as np
import torch
import torch.nn as nn

from ..equivariance import field_types
from ..groups import FieldType, disc_mask, rotate_image_angle
from ..runtime import exact_precision

__all__ = ["error_map", "detail_contrast"]


@torch.no_grad()
def error_map(module: nn.Module | Callable, image: torch.Tensor, k: int = 1, theta: float | None = None,
              in_type: FieldType | None = None, out_type: FieldType | None = None, margin: float = 4.0,
              relative: bool = True) -> np.ndarray:
    """Per-pixel ``|Φ(g·I) − g·Φ(I)|`` (max over output channels) → ``[H, W]`` numpy.

    ``k`` quarter turns (exact permutations), or ``theta`` radians: then input and output are turned
    with ``rotate_image_angle`` (bicubic) and pixels outside the centred disc (``margin`` pixels in
    from its edge) are NaN; only image → image modules then. ``relative`` divides by the range
    (max − min) of ``g·Φ(I)`` over the valid pixels, so networks with different output scales compare.
    """
    if theta is None:
        if in_type is None or out_type is None:
            ti, to = field_types(module)
            in_type, out_type = in_type or ti, out_type or to
        with exact_precision():  # TF32 convolutions alone would show up in the maps on Ampere+ GPUs
            g_y = out_type.rotate(module(image), k)
            diff = (module(in_type.rotate(image, k)) - g_y)[0].abs().amax(0).detach().cpu().double().numpy()
        valid = np.ones(diff.shape, dtype=bool)
    else:
        with exact_precision():
            g_y = rotate_image_angle(module(image), theta)
            diff = (module(rotate_image_angle(image, theta)) - g_y)[0].abs().amax(0).detach().cpu().double().numpy()
        valid = disc_mask(*diff.shape, margin, dtype=torch.bool).numpy()
        diff[~valid] = np.nan
    if relative:
        vals = g_y[0].detach().cpu().double().numpy()[:, valid]
        span = float(vals.max() - vals.min()) if vals.size else 0.0
        diff = diff / (span if span > 0 else 1.0)
    return diff


def detail_contrast(err: np.ndarray, image: torch.Tensor, theta: float | None = None, fraction: float = 0.1) -> float:
    """How much of an error map sits on fine detail: the mean error over the ``fraction`` of valid
    (finite) pixels where the input, turned as the map was (``theta`` radians; ``None``: not turned),
    changes fastest, divided by the mean error over the other valid pixels. ``image`` ``[1, 1, H, W]``."""
    turned = image if theta is None else rotate_image_angle(image, theta)
    gy, gx = np.gradient(turned[0, 0].detach().cpu().double().numpy())
    strength = np.hypot(gx, gy)
    values, strengths = err[np.isfinite(err)], strength[np.isfinite(err)]
    order = np.argsort(strengths, kind="stable")[::-1]  # strongest first; ties in pixel order
    k = max(1, min(len(order) - 1, int(math.ceil(fraction * len(order)))))
    return float(values[order[:k]].mean() / max(float(values[order[k:]].mean()), 1e-300))
