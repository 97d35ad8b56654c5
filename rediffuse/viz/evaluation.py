"""Figures for notebook 04: visual comparison with zoomed crops, difference images, scatter plots."""
from __future__ import annotations

from typing import Sequence

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.colors import LogNorm
from matplotlib.patches import Rectangle

from ..metrics import to_gray_uint8


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
