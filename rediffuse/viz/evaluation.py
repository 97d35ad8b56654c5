"""Figures for notebook 04: visual comparison with zoomed crops, difference images, errors against a
ground truth, scatter plots, QG's per-pixel pieces, and the fused-image explorer (pair, methods, zoom)."""
from __future__ import annotations

from pathlib import Path
from typing import Callable, Sequence

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.colors import LogNorm
from matplotlib.patches import Rectangle
from scipy import ndimage

from ..baselines import focus_select
from ..data import FusionFolder
from ..evaluate import fused_path
from ..imageio import read_image
from ..metrics import to_gray_uint8
from .common import fmt, live_figure


def _grey(img: np.ndarray) -> np.ndarray:
    return to_gray_uint8(img).astype(np.float64) if img.ndim == 3 else img.astype(np.float64)


def compare_with_zoom(images: dict[str, np.ndarray], box: tuple[int, int, int] | None = None, size: float = 2.6):
    """Each image (top) and a zoomed crop ``box = (top, left, side)`` (bottom); the box is drawn."""
    names = list(images)
    h, w = next(iter(images.values())).shape[:2]
    if box is None:
        side = min(h, w) // 4
        box = (h // 2 - side // 2, w // 2 - side // 2, side)
    top, left, side = box
    fig, axes = plt.subplots(2, len(names), figsize=(size * len(names), 2 * size), squeeze=False)
    for j, n in enumerate(names):
        img = images[n]
        kw = {"cmap": "gray", "vmin": 0, "vmax": 255} if img.ndim == 2 else {}
        axes[0, j].imshow(img, **kw)
        axes[0, j].add_patch(Rectangle((left, top), side, side, fill=False, color="yellow", lw=1.2))
        axes[0, j].set_title(n, fontsize=9)
        axes[1, j].imshow(img[top:top + side, left:left + side], interpolation="nearest", **kw)
        for ax in axes[:, j]:
            ax.axis("off")
    fig.tight_layout()
    return fig


def difference_images(fused: dict[str, np.ndarray], source: np.ndarray, title: str = "fused − source A"):
    """Signed grey-level difference of each fused image to one source: zero where it copied it."""
    s = _grey(source)
    fig, axes = plt.subplots(1, len(fused), figsize=(2.6 * len(fused), 2.9), squeeze=False)
    for ax, (n, f) in zip(axes[0], fused.items()):
        d = _grey(f) - s
        ax.imshow(d, cmap="RdBu_r", vmin=-40, vmax=40)
        ax.set_title(f"{n}\nmean |d| {np.abs(d).mean():.1f}", fontsize=8)
        ax.axis("off")
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    return fig


def error_maps(maps: dict[str, np.ndarray], title: str = "|Φ(rot I) − rot Φ(I)|"):
    """Equivariance error maps side by side on one log colour scale."""
    vals = np.concatenate([m.ravel() for m in maps.values()])
    vmax = max(float(vals.max()), 1e-6)
    fig, axes = plt.subplots(1, len(maps), figsize=(2.6 * len(maps), 2.9), squeeze=False)
    for ax, (n, m) in zip(axes[0], maps.items()):
        im = ax.imshow(np.maximum(m, 1e-8), cmap="magma", norm=LogNorm(vmin=1e-8, vmax=vmax))
        ax.set_title(f"{n}\nmax {m.max():.1e}", fontsize=8)
        ax.axis("off")
    fig.colorbar(im, ax=axes[0].tolist(), shrink=0.8)
    fig.suptitle(title, fontsize=9)
    return fig


def truth_error_view(images: dict[str, np.ndarray], gt: np.ndarray, band: np.ndarray | None = None,
                     scores: dict[str, dict[str, float]] | None = None, vmax: float = 20.0, size: float = 2.5):
    """Each image (top) and its grey-level error against the ground truth ``gt`` (bottom, |x − gt| on one
    scale up to ``vmax``): sources show where they are defocused, fused images where they miss. The
    focus-boundary ``band`` (``[H, W]`` bool or 0/255) is outlined on the error maps; ``scores``: name →
    numbers written under the name (e.g. PSNR)."""
    g = _grey(gt)
    im = None
    fig, axes = plt.subplots(2, len(images), figsize=(size * len(images), 2 * size + 0.6), squeeze=False,
                             layout="constrained")
    for j, (name, img) in enumerate(images.items()):
        kw = {"cmap": "gray", "vmin": 0, "vmax": 255} if img.ndim == 2 else {}
        axes[0, j].imshow(img, **kw)
        row = (scores or {}).get(name, {})
        axes[0, j].set_title(name + "".join(f"\n{k} {v:.2f}" for k, v in row.items()), fontsize=8)
        if band is not None and np.array_equal(img, gt):  # no error to show: show the band itself
            axes[1, j].imshow(np.asarray(band) > 0, cmap="gray")
            axes[1, j].set_title("focus-boundary band", fontsize=8)
        else:
            im = axes[1, j].imshow(np.abs(_grey(img) - g), cmap="inferno", vmin=0, vmax=vmax)
            if band is not None:
                axes[1, j].contour(np.asarray(band) > 0, levels=[0.5], colors="cyan", linewidths=0.5)
        for ax in axes[:, j]:
            ax.axis("off")
    if im is not None:
        fig.colorbar(im, ax=axes[1].tolist(), shrink=0.9, label="|x − truth| (grey levels)")
    return fig


def per_image_scatter(rows: Sequence[dict], x_method: str, y_method: str, metrics=("QMI", "QG", "QP", "QE")):
    """Per-image metric of one method against another (points above the diagonal: y wins)."""
    by = {(r["image"], r["method"]): r for r in rows}
    images = sorted({r["image"] for r in rows})
    fig, axes = plt.subplots(1, len(metrics), figsize=(2.8 * len(metrics), 2.9), squeeze=False)
    for ax, k in zip(axes[0], metrics):
        xs = [by[(i, x_method)][k] for i in images if (i, x_method) in by and (i, y_method) in by]
        ys = [by[(i, y_method)][k] for i in images if (i, x_method) in by and (i, y_method) in by]
        ax.scatter(xs, ys, s=14)
        lo, hi = min(xs + ys), max(xs + ys)
        ax.plot([lo, hi], [lo, hi], "k--", lw=0.7)
        ax.set_xlabel(x_method, fontsize=8), ax.set_ylabel(y_method, fontsize=8)
        ax.set_title(k, fontsize=9)
    fig.tight_layout()
    return fig


def zoom_box(shape: tuple[int, ...], centre: tuple[float, float] = (0.5, 0.5), zoom: float = 4.0) -> tuple[int, int, int]:
    """The square crop ``(top, left, side)`` of an image of ``shape`` that ``zoom`` enlarges: side =
    shorter side / zoom, centred at ``centre`` = (row, column) as fractions, moved inside the image."""
    h, w = shape[:2]
    side = max(4, int(round(min(h, w) / max(float(zoom), 1.0))))
    top = int(round(centre[0] * h - side / 2))
    left = int(round(centre[1] * w - side / 2))
    return min(max(top, 0), h - side), min(max(left, 0), w - side), side


def fusion_view(images: dict[str, np.ndarray], centre: tuple[float, float] = (0.5, 0.5), zoom: float = 4.0,
                scores: dict[str, dict[str, float]] | None = None, title: str = "",
                metrics: Sequence[str] = ("QMI", "QG", "QE"), box: tuple[int, int, int] | None = None):
    """Images side by side (top, the crop box drawn) and the crop enlarged ``zoom`` times (bottom).

    ``images``: name → ``[H, W]`` or ``[H, W, 3]`` uint8 (sources and fused results of one pair);
    ``scores``: name → metric values, written under the name (a few ``metrics``); ``box`` = (top, left,
    side) in pixels replaces ``centre`` and ``zoom``."""
    first = next(iter(images.values()))
    box = box or zoom_box(first.shape, centre, zoom)
    fig = compare_with_zoom(images, box=box, size=2.5)
    for ax, name in zip(fig.axes[:len(images)], images):
        row = (scores or {}).get(name)
        if row:
            ax.set_title(name + "\n" + "  ".join(f"{k} {fmt(row[k], 4)}" for k in metrics if k in row), fontsize=8)
    if title:
        fig.suptitle(title, fontsize=9)
        fig.tight_layout()
    return fig


def fusion_explorer(folder: str | Path, fused_dir: str | Path, stems: Sequence[str], methods: Sequence[str],
                    rows: Sequence[dict] = (), shown: Sequence[str] | None = None,
                    centre: tuple[float, float] = (0.5, 0.5)):
    """ipywidgets: pick a pair, the methods to show and the zoom (factor and centre, starting at
    ``centre`` = (row, column) fractions); redraws ``fusion_view`` with source A, source B and the chosen
    fused images (read from ``fused_dir``, as ``evaluate_folder`` wrote them) and their scores from ``rows``."""
    import ipywidgets as W

    loader = fused_images_loader(folder, fused_dir, methods)
    scores = {(r["image"], r["method"]): r for r in rows}
    pair = W.Dropdown(options=list(stems), value=stems[0], description="pair")
    chosen = W.SelectMultiple(options=list(methods), value=tuple(shown or methods[:3]), rows=min(6, len(methods)),
                              description="methods")
    zoom = W.FloatSlider(value=4.0, min=1.0, max=12.0, step=0.5, description="zoom ×", continuous_update=False)
    cy = W.FloatSlider(value=round(centre[0], 2), min=0.0, max=1.0, step=0.02, description="crop row", continuous_update=False)
    cx = W.FloatSlider(value=round(centre[1], 2), min=0.0, max=1.0, step=0.02, description="crop col", continuous_update=False)

    def draw():
        images = loader(pair.value, ["source A", "source B", *chosen.value])
        return fusion_view(images, (cy.value, cx.value), zoom.value,
                           {m: scores[(pair.value, m)] for m in chosen.value if (pair.value, m) in scores})

    out = live_figure((pair, chosen, zoom, cy, cx), draw)
    return W.VBox([W.HBox([pair, chosen]), W.HBox([zoom, cy, cx]), out])


def fused_images_loader(folder: str | Path, fused_dir: str | Path,
                        methods: Sequence[str]) -> Callable[[str, Sequence[str]], dict[str, np.ndarray]]:
    """``load(stem, names)`` → name → image for ``"source A"``, ``"source B"`` and the fused results of
    ``methods``; each pair is read once."""
    ds, cache = FusionFolder(folder), {}

    def load(stem: str, names: Sequence[str]) -> dict[str, np.ndarray]:
        if stem not in cache:
            src = ds.load(stem)
            cache[stem] = {"source A": src["A"], "source B": src["B"],
                           **{m: read_image(fused_path(fused_dir, m, stem)) for m in methods}}
        return {n: cache[stem][n] for n in names}

    return load


def focus_boundary_box(a: np.ndarray, b: np.ndarray, side: int) -> tuple[int, int]:
    """``(top, left)`` of the ``side``×``side`` window of a source pair (uint8 ``[H, W(, 3)]``) that straddles
    the focus boundary best: the focus-select decision there is closest to half A, half B."""
    ga, gb = to_gray_uint8(a), to_gray_uint8(b)
    from_a = (focus_select([ga, gb]) == ga).astype(np.float64)  # [H, W], 1 where A looks sharper (or equal)
    share = ndimage.uniform_filter(from_a, side, mode="nearest")
    h, w = share.shape
    r = side // 2
    inner = np.abs(share[r:h - side + r + 1, r:w - side + r + 1] - 0.5)
    top, left = np.unravel_index(int(np.argmin(inner)), inner.shape)
    return int(top), int(left)


def qg_terms_figure(maps: dict[str, np.ndarray], sources: dict[str, np.ndarray] | None = None, title: str = ""):
    """QG's per-pixel pieces (``metrics.qg_maps``), one row per source: its edge strength g, the strength
    kept G, the orientation agreement A and the edge preservation Q (G, Q in [0, 1], A in [−1, 1]).
    ``sources``: ``{"A": image, "B": image}`` shown first in each row."""
    fig, axes = plt.subplots(2, 5, figsize=(12.5, 5.2), squeeze=False)
    for r, s in enumerate(("A", "B")):
        if sources is not None:
            axes[r, 0].imshow(sources[s], cmap="gray", vmin=0, vmax=255)
            axes[r, 0].set_title(f"source {s}", fontsize=8)
        else:
            axes[r, 0].set_visible(False)
        panels = [(f"g_{s}", f"g_{s}: edge strength of {s}", "magma", None),
                  (f"G_{s}", f"G_{s}: strength kept in F (≤ 1)", "viridis", (0, 1)),
                  (f"A_{s}", f"A_{s}: orientation agreement", "viridis", (-1, 1)),
                  (f"Q_{s}", f"Q_{s}F: edge preserved", "viridis", (0, 1))]
        for c, (key, label, cmap, lim) in enumerate(panels, start=1):
            kw = {"vmin": lim[0], "vmax": lim[1]} if lim else {}
            im = axes[r, c].imshow(maps[key], cmap=cmap, **kw)
            axes[r, c].set_title(label, fontsize=8)
            fig.colorbar(im, ax=axes[r, c], shrink=0.75)
    for ax in axes.flat:
        ax.set_xticks([]), ax.set_yticks([])
    if title:
        fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    return fig
