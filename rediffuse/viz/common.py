"""Shared figure helpers."""
from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np


def save_figure(fig, output_dir: str | Path | None, name: str, dpi: int = 110) -> Path | None:
    """Save ``fig`` as ``<output_dir>/<name>.png`` (no-op when output_dir is empty)."""
    if not output_dir:
        return None
    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"{name}.png"
    fig.savefig(path, dpi=dpi, bbox_inches="tight")
    return path


def live_figure(controls, draw):
    """An ipywidgets ``Output`` showing ``draw()`` (a function returning a figure), redrawn whenever one
    of ``controls`` (widgets) changes value.

    The output's figures are replaced directly: capturing with ``with out:`` plus
    ``clear_output(wait=True)`` can stall unattended runs (papermill/nbclient).
    """
    import ipywidgets as widgets  # optional: the notebooks extra

    out = widgets.Output()

    def redraw(*_):
        fig = draw()
        if isinstance(fig, tuple):  # draw functions that also return a value
            fig = fig[0]
        out.outputs = ()
        out.append_display_data(fig)
        plt.close(fig)

    for w in controls:
        w.observe(redraw, names="value")
    redraw()
    return out


def _as_numpy(img) -> np.ndarray:
    if hasattr(img, "detach"):
        img = img.detach().cpu().float().numpy()
    img = np.asarray(img)
    if img.ndim == 3 and img.shape[0] in (1, 3) and img.shape[-1] not in (1, 3):
        img = np.moveaxis(img, 0, -1)
    return img.squeeze()


def show_images(images, titles=None, ncols: int | None = None, size: float = 2.4, cmap: str = "gray",
                symmetric: bool = False):
    """Grid of images (numpy or torch, HxW, HxWx3 or CxHxW); returns the figure."""
    images = [_as_numpy(im) for im in images]
    n = len(images)
    ncols = ncols or n
    nrows = (n + ncols - 1) // ncols
    fig, axes = plt.subplots(nrows, ncols, figsize=(size * ncols, size * nrows), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for i, (ax, im) in enumerate(zip(axes.flat, images)):
        kw = {}
        if im.ndim == 2:
            kw["cmap"] = "RdBu_r" if symmetric else cmap
            if symmetric:
                v = float(np.abs(im).max()) or 1.0
                kw.update(vmin=-v, vmax=v)
        ax.imshow(im, **kw)
        if titles is not None:
            ax.set_title(titles[i], fontsize=9)
    fig.tight_layout()
    return fig
