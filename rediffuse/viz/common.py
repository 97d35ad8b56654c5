"""Shared figure helpers, and numbers and tables for ``IPython.display.Markdown``."""
from __future__ import annotations

import base64
import io
import math
from pathlib import Path
from typing import Sequence

import matplotlib.pyplot as plt
import numpy as np

from ..atomic import write_bytes
from ..evaluate import render_table


def fmt(x, digits: int = 3) -> str:
    """A number for a table: scientific notation when small (< 0.01) or large (≥ 1e4), else ``digits``
    significant figures; exact zero as ``0``, NaN/None as ``–``."""
    if x is None:
        return "–"
    x = float(x)
    if not math.isfinite(x):
        return "–" if math.isnan(x) else ("∞" if x > 0 else "−∞")
    if x == 0:
        return "0"
    if abs(x) < 1e-2 or abs(x) >= 1e4:
        return f"{x:.{max(digits - 1, 0)}e}"
    return f"{x:.{digits}g}"


def markdown_table(headers: Sequence[str], rows: Sequence[Sequence], align: str | None = None,
                   digits: int = 3) -> str:
    """A Markdown table (``IPython.display.Markdown(markdown_table(...))``); numbers go through ``fmt``
    with ``digits`` significant figures. ``align``: one of ``l``/``r``/``c`` per column (default: first
    left, the rest right). Rendered by :func:`rediffuse.evaluate.render_table`."""
    align = align or ("l" + "r" * (len(headers) - 1))
    cell = lambda v: fmt(v, digits) if isinstance(v, (int, float, np.floating, np.integer)) and not isinstance(v, bool) \
        else str(v)  # noqa: E731
    return render_table(headers, [[cell(v) for v in row] for row in rows], align)


def grey_panel(ax, img, title: str) -> None:
    """Show an image ``[1, H, W]`` or ``[H, W]`` (a tensor) in [-1, 1] on ``ax`` in grey, titled, without
    ticks (values outside [-1, 1] clipped for display)."""
    ax.imshow(img.detach().float().cpu().reshape(img.shape[-2:]).clamp(-1, 1).numpy(), cmap="gray", vmin=-1, vmax=1)
    ax.set_title(title, fontsize=8)
    ax.set_xticks([]), ax.set_yticks([])


def save_figure(fig, output_dir: str | Path | None, name: str, dpi: int = 110) -> Path | None:
    """Save ``fig`` as ``<output_dir>/<name>.png`` (no-op when output_dir is empty)."""
    if not output_dir:
        return None
    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi, bbox_inches="tight")
    # the one atomic path every image takes: a full disk never leaves half a figure
    return write_bytes(out / f"{name}.png", buf.getbuffer())


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


class Explorer:
    """One notebook output for an interactive explorer (``display(explorer(...))``).

    Its MIME bundle holds the widget's view (when there is a widget) *and* the explorer's first
    drawing as a PNG: a live front end (JupyterLab, Notebook, VS Code with ipywidgets) draws the
    widget, whose own first drawing is that figure; a viewer without widgets (a rendered ``.ipynb``,
    nbconvert, a kernel without ipywidgets) shows the PNG. So each explorer appears once, live or
    static, never as a live copy beside static ones.
    """

    def __init__(self, png: bytes, widget=None, text: str = "explorer"):
        self.png, self.widget, self.text = png, widget, text

    def _repr_mimebundle_(self, include=None, exclude=None):
        data = {"image/png": base64.b64encode(self.png).decode("ascii"), "text/plain": f"<{self.text}>"}
        if self.widget is not None:
            view = self.widget._repr_mimebundle_()
            view = view[0] if isinstance(view, tuple) else view  # (data, metadata) in some versions
            data.update({k: v for k, v in view.items() if k != "text/plain"})
        return data


def figure_png(fig, dpi: int = 100) -> bytes:
    """The figure as PNG bytes (as the notebook's inline backend would show it)."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi, bbox_inches="tight")
    return buf.getvalue()


def explorer(figure, make_widget=None, show_widgets: bool = True, text: str = "explorer") -> Explorer:
    """The output of one explorer: ``make_widget()`` (an ipywidgets widget whose first drawing is
    ``figure``) when ``show_widgets``, else ``figure`` alone, static. ``figure`` is closed, so the
    inline backend does not draw it a second time. Display the result with ``display(...)``; without
    ``show_widgets`` ipywidgets is never imported."""
    png = figure_png(figure)
    plt.close(figure)
    return Explorer(png, make_widget() if show_widgets and make_widget is not None else None, text)


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
