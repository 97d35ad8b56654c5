"""Figures and widget builders used by the notebooks (kept here so notebooks only explain and call).

- ``viz.common``  saving figures, image display helpers
- ``viz.layers``  bases, rotated filters, feature fields, the rotation explorer widget (notebook 01)
"""
from .common import save_figure, show_images

__all__ = ["save_figure", "show_images"]
