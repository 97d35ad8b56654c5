"""Figures and widget builders used by the notebooks (kept here so notebooks only explain and call).

- ``viz.common``  saving figures, image display helpers, numbers and Markdown tables (``fmt``)
- ``viz.layers``      bases, rotated filters, feature fields, the rotation explorer widget (notebook 01)
- ``viz.theorems``    bound checks, design mistakes, error maps, the theorem explorer (notebook 02)
- ``viz.diffusion``   schedules, the forward process, loss curves, U-Net shapes (notebook 03)
- ``viz.evaluation``  zoomed comparisons, difference images, equivariance maps, scatter, QG's per-pixel
                      pieces, the fused-image explorer (notebook 04)
- ``viz.beyond``      the few-step quality/cost curve, grouped bars of result tables (notebooks 05, 06)
- ``viz.ablation``    metric dot plots, the sample-efficiency study and the turned-input explorer (notebook 06)
"""
from .common import save_figure, show_images

__all__ = ["save_figure", "show_images"]
