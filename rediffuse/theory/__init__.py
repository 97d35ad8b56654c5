"""The ReDiffuse paper's equivariance theorems (its §3.3), measured; notebook 02 and its tests use them.

- ``fields``      continuous test fields with a certified gradient bound, exact sampling on turned
                  grids, and Theorems 3.1-3.2 (max pooling, bilinear interpolation) against ``C·G·δ``
- ``networks``    Theorem 3.4 and Corollaries 3.5-3.6 for whole networks; the package's U-Net at
                  quarter turns and at any angle
- ``envelopes``   the smallest constants that keep a bound's form above every measured point
- ``mistakes``    Theorem 3.3 (group normalisation) and the constructions that break exact C4
                  equivariance, each next to its fix
- ``error_maps``  per-pixel error maps (the paper's Figure 8)

The plain checker (``equivariance_error``) is ``rediffuse.equivariance``, which imports none of this.
"""
from .envelopes import (corollary_bound, corollary_envelope, envelope_constant, envelope_ratios, loglog_fit,
                        needed_constants)
from .error_maps import detail_contrast, error_map
from .fields import (BOUND_CONSTANTS, POINT_OPERATORS, SHARP_CONSTANTS, BoundCheck, GaborField, bilinear_at,
                     cell_corners, check_bound, loglog_slope, maxpool_at, operator_bound, pointwise_error_map,
                     pointwise_errors, random_points, rotate_grid_cubic, sample_field)
from .mistakes import (DESIGN_VARIANTS, ChannelBiasConv, EquivariantConvTranspose, Pool, ResizeConv, SkipBlock,
                       TimeBiasBlock, design_mistakes, groupnorm_errors)
from .networks import (AngleSweep, NetworkCheck, build_unet, network_error_map, network_errors,
                       network_pointwise_errors, plain_stack, receptive_radius, render_fields, rote_stack,
                       unet_angle_errors, unet_error_map, unet_quarter_turn_errors, unet_test_fields)

__all__ = [
    # fields: Theorems 3.1-3.2
    "GaborField", "sample_field", "rotate_grid_cubic", "random_points", "cell_corners", "maxpool_at", "bilinear_at",
    "POINT_OPERATORS", "BOUND_CONSTANTS", "SHARP_CONSTANTS", "operator_bound", "pointwise_errors",
    "pointwise_error_map", "BoundCheck", "check_bound", "loglog_slope",
    # networks: Theorem 3.4, Corollaries 3.5-3.6
    "rote_stack", "plain_stack", "receptive_radius", "network_pointwise_errors", "NetworkCheck",
    "network_errors", "network_error_map", "build_unet", "unet_quarter_turn_errors", "unet_test_fields",
    "render_fields", "AngleSweep", "unet_angle_errors", "unet_error_map",
    # envelopes: bounds drawn over measurements
    "envelope_constant", "needed_constants", "envelope_ratios", "corollary_envelope", "corollary_bound", "loglog_fit",
    # mistakes: Theorem 3.3 and the design mistakes
    "groupnorm_errors", "EquivariantConvTranspose", "ResizeConv", "TimeBiasBlock", "ChannelBiasConv", "Pool",
    "SkipBlock", "DESIGN_VARIANTS", "design_mistakes",
    # error maps
    "error_map", "detail_contrast",
]
