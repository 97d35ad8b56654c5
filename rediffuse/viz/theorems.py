"""Figures and the interactive explorer for notebook 02 (the equivariance theorems).

Measurements come from ``rediffuse.theory``; this module only draws them:

- ``plot_field``            the continuous test field and its gradient norm (where ``G`` comes from)
- ``plot_bound_checks``     Theorems 3.1 / 3.2: max error against δ, the bound, the fitted slope
- ``plot_groupnorm``        Theorem 3.3: three normalisations, float round-off against O(1)
- ``plot_network_checks``   Theorem 3.4 / Corollary 3.6: whole networks against δ, with envelopes
- ``plot_angle_sweep``      the U-Net's error from 0° to 360°, group angles marked
- ``plot_unet_deltas``      the U-Net's error against δ with envelopes, and the constant each δ needs
- ``plot_fit_vs_envelope``  a log–log fit (runs under points) next to the envelope (covers them all)
- ``plot_quarter_turns``    Corollary 3.5: quarter turns, Rot-E against plain
- ``plot_design_mistakes``  each construction that breaks equivariance next to its fix
- ``plot_error_maps``       per-pixel error maps in the style of the paper's Figure 8 (``turned_input``)
- ``draw_explorer`` / ``theorem_explorer``  angle, δ, m and operator under the reader's control
- ``draw_unet_map`` / ``unet_map_explorer``  the U-Net's error map at an angle of the reader's choice
- ``fmt`` / ``markdown_table``  numbers and tables for ``IPython.display.Markdown``

Every bound drawn over measurements is an *envelope* (``rediffuse.theory.envelopes``): on or above
every point it is drawn over, never a fit through them.
"""
from __future__ import annotations

import math
from typing import Callable, Sequence

import matplotlib.pyplot as plt
import numpy as np
import torch
from matplotlib.ticker import NullFormatter

from ..groups import rotate_image, rotate_image_angle
from ..theory import (
    BOUND_CONSTANTS,
    SHARP_CONSTANTS,
    AngleSweep,
    BoundCheck,
    NetworkCheck,
    check_bound,
    corollary_bound,
    network_error_map,
    pointwise_error_map,
    render_fields,
    unet_error_map,
)
from .common import explorer, fmt, live_figure, markdown_table

__all__ = ["plot_field", "plot_bound_checks", "plot_groupnorm", "plot_network_checks", "plot_angle_sweep",
           "plot_unet_deltas", "plot_fit_vs_envelope", "plot_quarter_turns", "plot_design_mistakes",
           "plot_error_maps", "turned_input", "draw_explorer", "theorem_explorer", "draw_unet_map", "unet_map_explorer", "explorer", "fmt",
           "markdown_table", "OPERATOR_LABELS", "delta_axis"]

OPERATOR_LABELS = {
    "maxpool": "max pooling (Thm 3.1)",
    "bilinear": "bilinear interpolation (Thm 3.2)",
    "rote": "Rot-E network (Thm 3.4 / Cor 3.6)",
    "plain": "plain CNN (no guarantee)",
}
FLOAT32_EPS = float(np.finfo(np.float32).eps)


def delta_axis(ax, deltas) -> None:
    """Label a log δ axis at the measured mesh sizes as 1/8, 1/16, … (matplotlib's default puts
    2×10⁻², 3×10⁻², 4×10⁻² minor labels on top of each other); no minor labels."""
    ds = sorted({float(d) for d in np.ravel(deltas) if np.isfinite(d) and d > 0})
    ax.set_xticks(ds, [f"1/{1 / d:.0f}" if abs(1 / d - round(1 / d)) < 1e-6 else f"{d:.2g}" for d in ds])
    ax.xaxis.set_minor_formatter(NullFormatter())


def _plt():
    return plt


def plot_field(field: Callable, radius: float = 1.0, resolution: int = 201, G: float | None = None,
               title: str = ""):
    """The field ``e`` and its gradient norm ``‖∇e‖`` on ``[−radius, radius]²`` (rows down, cols right)."""
    plt = _plt()
    g = np.linspace(-radius, radius, resolution)
    pts = np.stack(np.meshgrid(g, g, indexing="ij"), axis=-1)
    vals = field(pts)
    grad = np.linalg.norm(field.gradient(pts), axis=-1) if hasattr(field, "gradient") else None
    fig, axes = plt.subplots(1, 2 if grad is not None else 1, figsize=(8.4, 3.8), squeeze=False)
    ext = [-radius, radius, radius, -radius]
    v = float(np.abs(vals).max()) or 1.0
    im = axes[0, 0].imshow(vals, cmap="RdBu_r", vmin=-v, vmax=v, extent=ext)
    axes[0, 0].set_title(title or f"e(x): {field!r}", fontsize=9)
    fig.colorbar(im, ax=axes[0, 0], shrink=0.85)
    if grad is not None:
        im = axes[0, 1].imshow(grad, cmap="magma", extent=ext)
        t = "‖∇e(x)‖"
        if G is not None:
            t += f"\ncertified G = {G:.3g}; largest on this raster {grad.max():.3g}"
        axes[0, 1].set_title(t, fontsize=9)
        fig.colorbar(im, ax=axes[0, 1], shrink=0.85)
    for ax in axes.flat:
        ax.set_xlabel("col")
        ax.set_ylabel("row")
    fig.tight_layout()
    return fig


def plot_bound_checks(checks: Sequence[BoundCheck], sharp: bool = True, titles: Sequence[str] | None = None):
    """One log–log panel per check: measured max (and mean) error against δ, the theorem's bound
    ``C·G·δ`` (solid), the sharper constant when it differs (dashed), and the fitted slope."""
    plt = _plt()
    fig, axes = plt.subplots(1, len(checks), figsize=(4.6 * len(checks), 3.8), squeeze=False)
    for i, (ax, chk) in enumerate(zip(axes.flat, checks)):
        d = chk.deltas
        ax.loglog(d, chk.bounds, "-", color="k", lw=1.5, label=f"bound {chk.constant:.3g}·G·δ (paper)")
        sc = SHARP_CONSTANTS.get(chk.operator)
        if sharp and sc is not None and not math.isclose(sc, chk.constant):
            ax.loglog(d, sc * chk.G * d, "--", color="0.4", lw=1, label=f"sharper {sc:.3g}·G·δ")
        ax.loglog(d, chk.max_errors, "o-", color="C3", label=f"max error (slope {chk.slope:.2f})")
        ax.loglog(d, chk.mean_errors, "s:", color="C0", ms=4, alpha=0.8,
                  label=f"mean error (slope {np.polyfit(np.log(d), np.log(chk.mean_errors), 1)[0]:.2f})")
        ax.set_xlabel("mesh size δ")
        delta_axis(ax, d)
        ax.set_ylabel("|Ψ[π_θ e](x) − Ψ[e](R⁻¹x)|")
        title = titles[i] if titles else OPERATOR_LABELS.get(chk.operator, chk.operator)
        ax.set_title(f"{title}\nlargest error/bound = {chk.max_ratio:.2f}", fontsize=9)
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    return fig


def plot_groupnorm(errors: dict[str, float], labels: dict[str, str] | None = None):
    """Bar chart (log scale) of quarter-turn errors of group normalisations, float32 ε marked."""
    plt = _plt()
    labels = labels or {"field": "FieldGroupNorm\n(whole fields, affine per field)",
                        "plain_affine": "nn.GroupNorm\n(per-channel affine)",
                        "plain_split": "nn.GroupNorm\n(groups split fields)"}
    names = list(errors)
    vals = [max(errors[n], 1e-12) for n in names]
    fig, ax = plt.subplots(figsize=(6.4, 3.2))
    colors = ["C2" if errors[n] < 1e-5 else "C3" for n in names]
    ax.bar(range(len(names)), vals, color=colors)
    ax.set_yscale("log")
    ax.axhline(FLOAT32_EPS, color="k", lw=0.8, ls=":", label="float32 ε")
    ax.set_xticks(range(len(names)), [labels.get(n, n) for n in names], fontsize=8)
    for i, v in enumerate(vals):
        ax.text(i, v * 1.5, f"{errors[names[i]]:.1e}", ha="center", fontsize=8)
    ax.set_ylabel("relative error (max over k = 1, 2, 3)")
    ax.set_ylim(1e-9, 10)
    ax.set_title("Theorem 3.3: GroupNorm under quarter turns", fontsize=9)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def plot_network_checks(checks: dict[str, NetworkCheck], bounds: dict[str, tuple[np.ndarray, str]] | None = None,
                        title: str = "", ax=None):
    """Relative max error of whole networks against δ (log–log). ``bounds = {name: (values at that
    check's δ, label)}`` draws each network's bound dashed in its colour (envelopes: on or above the
    points)."""
    plt = _plt()
    fig, ax = (ax.figure, ax) if ax is not None else plt.subplots(figsize=(5.6, 4.0))
    for i, (name, chk) in enumerate(checks.items()):
        color = f"C{i}"
        ax.loglog(chk.deltas, chk.max_errors, "o-", color=color, label=f"{name} (slope {chk.slope:.2f})")
        if bounds and name in bounds:
            values, label = bounds[name]
            ax.loglog(chk.deltas, values, "--", color=color, lw=1.1, label=label)
    ax.set_xlabel("mesh size δ")
    delta_axis(ax, np.concatenate([chk.deltas for chk in checks.values()]))
    ax.set_ylabel("max |Φ[π_θ e](x) − Φ[e](R⁻¹x)| / max |Φ|")
    ax.set_title(title or "whole networks, random angles", fontsize=9)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    return fig


def plot_angle_sweep(sweeps: dict[str, AngleSweep], delta: float, title: str = ""):
    """Error against angle (0°–360°) at one mesh size for each network, log scale; the angles of each
    network's group C_m are marked (filled), quarter turns sit at float round-off (Corollary 3.5), and
    the grey line is the identity's error: what the output rotation itself adds."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(9.6, 4.2))
    floor = None
    for i, (name, sw) in enumerate(sweeps.items()):
        row = int(np.flatnonzero(np.isclose(sw.deltas, delta))[0])
        ok = np.isfinite(sw.errors[row])
        a, e = sw.angles[ok], np.maximum(sw.errors[row][ok], 1e-9)
        ax.semilogy(a, e, "-", color=f"C{i}", lw=1.2, label=f"{name}")
        g = sw.in_group()[ok]
        ax.semilogy(a[g], e[g], "o", color=f"C{i}", ms=6, label=f"{name}: angles of C_{sw.m}")
        ax.semilogy(a[~g], e[~g], ".", color=f"C{i}", ms=4)
        floor = (a, np.maximum(sw.floor[row][ok], 1e-9))
    if floor is not None:
        ax.semilogy(*floor, ":", color="0.5", lw=1, label="identity (the output rotation's own error)")
    ax.axhline(FLOAT32_EPS, color="k", lw=0.6, ls=":")
    ax.text(2, FLOAT32_EPS * 1.6, "float32 ε", fontsize=7)
    ax.set_xticks(np.arange(0, 361, 45))
    ax.set_xlabel("rotation angle θ (degrees)")
    ax.set_ylabel("max |Φ(π_θ e) − π_θ Φ(e)| / range Φ")
    ax.set_title(title or f"the U-Net at every angle, δ = 1/{1 / delta:.0f}", fontsize=9)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7, ncol=3, loc="upper center", bbox_to_anchor=(0.5, -0.18), frameon=False)
    fig.tight_layout()
    return fig


def plot_unet_deltas(sweeps: dict[str, AngleSweep], bounds: dict[str, tuple[float, str]], title: str = ""):
    """Left: each network's largest error over the measured angles against δ, with its envelope
    ``K·δ`` (``bounds = {name: (K, label)}``). Right: ``error/δ``, the constant each δ needs on its own;
    the theorem's form asks for one constant that works for every δ."""
    plt = _plt()
    fig, (ax, ax2) = plt.subplots(1, 2, figsize=(10.4, 3.9))
    for i, (name, sw) in enumerate(sweeps.items()):
        d, e = sw.deltas, sw.max_errors("other")
        ok = np.isfinite(e)
        ax.loglog(d[ok], e[ok], "o-", color=f"C{i}", label=f"{name}: largest error over angles")
        if name in bounds:
            k, label = bounds[name]
            ax.loglog(d[ok], k * d[ok], "--", color=f"C{i}", lw=1.1, label=label)
            ax2.loglog(d[ok], e[ok] / d[ok], "o-", color=f"C{i}", label=name)
            ax2.axhline(k, color=f"C{i}", ls="--", lw=0.9)
    first = next(iter(sweeps.values()))
    ax.loglog(first.deltas, np.nanmax(first.floor, axis=1), ":", color="0.5",
              label="identity (the output rotation's own error)")
    for a in (ax, ax2):
        a.set_xlabel("mesh size δ")
        delta_axis(a, first.deltas)
        a.grid(True, which="both", alpha=0.3)
    ax.set_ylabel("relative error")
    ax2.set_ylabel("error / δ  (the constant this δ needs)")
    ax.set_title(title or "the U-Net against δ (angles outside the group)", fontsize=9)
    ax2.set_title("dashed: the envelope's constant (the largest of these)", fontsize=9)
    ax.legend(fontsize=7)
    ax2.legend(fontsize=7)
    fig.tight_layout()
    return fig


def plot_fit_vs_envelope(deltas, errors, constant: float, fit: tuple[float, float], title: str = ""):
    """The same points with a log–log least-squares fit ``a·δ^b`` (dotted: points lie above it) and the
    envelope ``C·δ`` (dashed: on or above every point); points above the fit are ringed."""
    plt = _plt()
    d, e = np.asarray(deltas, dtype=np.float64), np.asarray(errors, dtype=np.float64)
    a, b = fit
    order = np.argsort(d)
    fig, ax = plt.subplots(figsize=(5.6, 4.0))
    ax.loglog(d, e, "o", color="C3", label="measured")
    above = e > a * d ** b
    ax.loglog(d[above], e[above], "o", ms=12, mfc="none", color="k", label=f"{above.sum()} points above the fit")
    ax.loglog(d[order], a * d[order] ** b, ":", color="C0", lw=1.5, label=f"log–log fit {a:.3g}·δ^{b:.2f}")
    ax.loglog(d[order], constant * d[order], "--", color="k", lw=1.2, label=f"envelope C·δ, C = {constant:.3g}")
    ax.set_xlabel("mesh size δ")
    delta_axis(ax, d)
    ax.set_ylabel("error")
    ax.set_title(title or "a fit runs through the points; a bound must lie above them", fontsize=9)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    return fig


def plot_quarter_turns(errors: dict[str, dict[int, float]], dtype_eps: float = FLOAT32_EPS,
                       title: str = "Corollary 3.5: quarter turns"):
    """Grouped bars: relative error at 90°, 180°, 270° for each network (log scale)."""
    plt = _plt()
    names = list(errors)
    fig, ax = plt.subplots(figsize=(1.8 + 1.5 * len(names), 3.2))
    width = 0.25
    for j, k in enumerate((1, 2, 3)):
        vals = [max(float(errors[n][k]), 1e-17) for n in names]
        ax.bar(np.arange(len(names)) + (j - 1) * width, vals, width, label=f"{90 * k}°", color=f"C{j}")
    ax.set_yscale("log")
    ax.axhline(dtype_eps, color="k", ls=":", lw=0.8, label="float32 ε")
    ax.set_xticks(range(len(names)), names, fontsize=8)
    ax.set_ylabel("relative error")
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    return fig


def plot_design_mistakes(variants: Sequence[dict], mistake_floor: float = 1e-2, fix_ceiling: float = 1e-5):
    """Horizontal bars: each mistake's error (red) next to its fixes (green), log scale."""
    plt = _plt()
    rows = []
    for v in variants:
        rows.append((f"✗ {v['mistake']}", v["mistake_error"], "C3"))
        for desc, e in v["fixes"].items():
            rows.append((f"   ✓ {desc}", e, "C2"))
    fig, ax = plt.subplots(figsize=(9.5, 0.32 * len(rows) + 1.0))
    y = np.arange(len(rows))[::-1]
    ax.barh(y, [max(r[1], 1e-9) for r in rows], color=[r[2] for r in rows])
    ax.set_yticks(y, [r[0] for r in rows], fontsize=7.5)
    ax.set_xscale("log")
    ax.set_xlim(1e-9, 10)
    # the three dotted lines, each named in the legend: what the tests require of a mistake and of a fix,
    # and float32's machine epsilon (where round-off lives)
    ax.axvline(mistake_floor, color="C3", ls=":", lw=0.8, label=f"every mistake ≥ {mistake_floor:g}")
    ax.axvline(fix_ceiling, color="C2", ls=":", lw=0.8, label=f"every fix ≤ {fix_ceiling:g}")
    ax.axvline(FLOAT32_EPS, color="k", ls=":", lw=0.6, label=f"float32 epsilon ({FLOAT32_EPS:.1e})")
    for yi, r in zip(y, rows):
        ax.text(max(r[1], 1e-9) * 1.4, yi, f"{r[1]:.1e}", va="center", fontsize=7)
    ax.legend(fontsize=7, loc="lower right", framealpha=0.9)
    ax.set_xlabel("relative quarter-turn error (float32, max over 90°, 180°, 270°)")
    ax.set_title("Design mistakes that break exact C4 equivariance, each next to its fix", fontsize=9)
    fig.tight_layout()
    return fig


def turned_input(image, angle_deg: float):
    """``image`` (``[1, 1, H, W]`` tensor) turned by ``angle_deg`` the way ``theory.error_map`` turns it:
    an exact ``rot90`` for multiples of 90°, bicubic otherwise (corners outside the photo are 0).
    Returns ``[H, W]`` numpy."""
    x = torch.as_tensor(image).detach().cpu().double()
    x = x.reshape(1, 1, *x.shape[-2:])
    if float(angle_deg) % 90 == 0:
        x = rotate_image(x, int(round(float(angle_deg) / 90)) % 4)
    else:
        x = rotate_image_angle(x, math.radians(angle_deg))
    return x[0, 0].numpy()


def plot_error_maps(image, rows: Sequence[tuple[float, dict[str, np.ndarray]]], cmap: str = "inferno"):
    """Figure-8 style: per row the input turned by that row's angle, then the error maps of several
    networks on one colour scale, with its colour bar.

    ``image``: the upright input, ``[1, 1, H, W]`` (or ``[H, W]``). ``rows``: ``[(angle in degrees,
    {network name: error map [H, W]}), ...]``, the maps measured at that angle (``theory.error_map``).
    Each row has its own linear scale, from 0 to its largest error, so colours compare networks within a
    row; the colour bar gives the values and the titles the true maxima.
    """
    plt = _plt()
    ncols = 1 + max(len(maps) for _, maps in rows)
    # one narrow last column holds every row's colour bar, so the rows' panels stay aligned
    fig, grid = plt.subplots(len(rows), ncols + 1, figsize=(2.7 * ncols + 0.9, 2.9 * len(rows)), squeeze=False,
                             layout="constrained", gridspec_kw={"width_ratios": [1] * ncols + [0.06]})
    axes, bars = grid[:, :ncols], grid[:, ncols]
    for r, (angle, maps) in enumerate(rows):
        axes[r, 0].imshow(turned_input(image, angle), cmap="gray")
        axes[r, 0].set_title(f"input turned by {angle:g}°", fontsize=8)
        vmax = max(float(np.nanmax(m)) for m in maps.values()) or 1.0
        for c, (name, emap) in enumerate(maps.items(), start=1):
            im = axes[r, c].imshow(emap, cmap=cmap, vmin=0, vmax=vmax)
            axes[r, c].set_title(f"{name}\nmax {fmt(np.nanmax(emap))}", fontsize=8)
        bar = fig.colorbar(im, cax=bars[r])
        bar.set_label(f"error / output range, {angle:g}°", fontsize=8)
        bar.ax.tick_params(labelsize=7)
        for c in range(len(maps) + 1, ncols):
            axes[r, c].set_visible(False)
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
    fig.suptitle("|Φ(turn(I)) − turn(Φ(I))| per pixel, divided by the range of Φ (one colour scale per row)",
                 fontsize=9)
    return fig


# ---------------------------------------------------------------------------------------------------
# the explorer
# ---------------------------------------------------------------------------------------------------

def draw_explorer(field, operator: str = "maxpool", angle_deg: float = 30.0, delta: float = 1 / 32, m: int = 8,
                  nets: dict | None = None, envelope: tuple[float, float] | None = None,
                  measured: dict | None = None, G: float | None = None, radius: float = 0.7,
                  resolution: int | None = None, n_points: int = 10000, seed: int = 0):
    """Error map at one (operator, angle, δ, m) and, beside it, the bound against δ with this δ marked.

    ``operator``: ``"maxpool"`` / ``"bilinear"`` (pointwise operators: ``m`` does not enter — they act
    on every orientation channel alone), ``"rote"`` (``nets[m]``, a Rot-E network) or ``"plain"``
    (``nets["plain"]``). For Rot-E networks the right panel draws the measured largest errors
    (``measured = {m: NetworkCheck, "plain": NetworkCheck}``; the plain one for the plain CNN) and their envelope ``C₁δ + C₂δ/m`` (``envelope = (C₁, C₂)``) over
    the measured mesh sizes; the map's own value is a new measurement, so it may fall outside them.
    Returns ``(figure, max error shown in the map)``.
    """
    plt = _plt()
    theta = math.radians(angle_deg)
    fig, (ax_map, ax_curve) = plt.subplots(1, 2, figsize=(9.6, 4.0))
    ext = [-radius, radius, radius, -radius]
    deltas = np.array([2.0 ** -k for k in range(3, 9)])
    if operator in ("maxpool", "bilinear"):
        G = G if G is not None else field.gradient_bound(radius + 2 * deltas.max())
        emap = pointwise_error_map(field, operator, delta, theta, radius, resolution or 161)
        bound = BOUND_CONSTANTS[operator] * G * delta
        peak = float(np.nanmax(emap))
        # the colour scale fits the map (a scale up to the bound would leave it black); the title compares
        im = ax_map.imshow(emap, cmap="inferno", vmin=0, vmax=peak if peak > 0 else 1.0, extent=ext)
        ax_map.set_title(f"{OPERATOR_LABELS[operator]}, θ = {angle_deg:.0f}°, δ = {delta:.4g}\n"
                         f"largest here {peak:.2e}; the bound {bound:.2e}"
                         + (f" ({bound / peak:.0f}× larger)" if peak > 0 else ""), fontsize=8)
        chk = check_bound(field, operator, deltas, n_points=n_points, radius=radius, seed=seed, G=G)
        ax_curve.loglog(deltas, chk.bounds, "k-", label=f"bound {BOUND_CONSTANTS[operator]:.3g}·G·δ")
        ax_curve.loglog(deltas, chk.max_errors, "o-", color="C3", label="max error, random θ")
        ax_curve.loglog([delta], [np.nanmax(emap)], "*", ms=14, color="C1", label=f"this map (θ = {angle_deg:.0f}°)")
        value = float(np.nanmax(emap))
    else:
        if nets is None:
            raise ValueError("network operators need nets={m: Rot-E net, ..., 'plain': plain net}")
        net = nets[m] if operator == "rote" else nets["plain"]
        emap = network_error_map(net, field, delta, theta, radius, resolution or 40)
        value = float(np.nanmax(emap))
        im = ax_map.imshow(emap, cmap="inferno", vmin=0, extent=ext)
        label = f"Rot-E, m = {m}" if operator == "rote" else "plain CNN"
        ax_map.set_title(f"{label}, θ = {angle_deg:.0f}°, δ = {delta:.4g}\nrelative max error {value:.2e}",
                         fontsize=8)
        if operator == "rote" and measured is not None and m in measured:
            chk = measured[m]
            ax_curve.loglog(chk.deltas, chk.max_errors, "o-", color="C3", label=f"measured, m = {m}, random θ")
            if envelope is not None:
                ax_curve.loglog(chk.deltas, corollary_bound(chk.deltas, m, *envelope), "k--", lw=1.2,
                                label="envelope C₁δ + C₂δ/m")
        ax_curve.loglog([delta], [max(value, 1e-12)], "*", ms=14, color="C1",
                        label=f"this map (θ = {angle_deg:.0f}°)")
        if operator == "plain":
            if measured is not None and "plain" in measured:
                chk = measured["plain"]
                ax_curve.loglog(chk.deltas, chk.max_errors, "o-", color="C3", label="measured, random θ")
            ax_curve.text(0.5, 0.25, "no theorem bounds a plain CNN: no bound to draw",
                          transform=ax_curve.transAxes, ha="center", va="center", fontsize=8, color="0.3")
    fig.colorbar(im, ax=ax_map, shrink=0.85)
    ax_curve.set_xlabel("mesh size δ")
    delta_axis(ax_curve, np.concatenate([np.ravel(line.get_xdata()) for line in ax_curve.lines]) if ax_curve.lines
               else [delta])
    ax_curve.set_ylabel("error")
    ax_curve.grid(True, which="both", alpha=0.3)
    ax_curve.legend(fontsize=7)
    ax_curve.set_title("the measured error against δ (no bound)" if operator == "plain" else "the bound against δ",
                       fontsize=8)
    fig.tight_layout()
    return fig, value


def theorem_explorer(field, nets: dict, envelope: tuple[float, float] | None = None, measured: dict | None = None,
                     G: float | None = None, radius: float = 0.7, operator: str = "maxpool", angle_deg: float = 30.0,
                     delta: float = 1 / 32, m: int | None = None):
    """ipywidgets controls (operator, m, angle, δ) that redraw ``draw_explorer``, starting at the given
    setting. ``m`` is enabled only for the Rot-E network: the pointwise operators act on each
    orientation channel alone and the plain CNN has no orientations, so for them it is greyed out."""
    import ipywidgets as W

    orders = sorted(k for k in nets if isinstance(k, int))
    angle_w = W.FloatSlider(value=angle_deg, min=0.0, max=360.0, step=1.0, description="angle θ (°)",
                            continuous_update=False)
    delta_w = W.SelectionSlider(options=[(f"1/{2 ** k}", 2.0 ** -k) for k in range(3, 8)], value=delta,
                                description="mesh δ", continuous_update=False)
    m_w = W.Dropdown(options=orders, value=m if m in orders else orders[0], description="m",
                     disabled=operator != "rote", layout=W.Layout(width="120px"))
    widest = max(len(v) for v in OPERATOR_LABELS.values())
    operator_w = W.Dropdown(options=[(v, k) for k, v in OPERATOR_LABELS.items()], value=operator,
                            description="operator", layout=W.Layout(width=f"{widest + 12}ch"),
                            style={"description_width": "initial"})

    def only_for_rote(_=None):  # m is a choice of the Rot-E network only; the others ignore it
        m_w.disabled = operator_w.value != "rote"

    operator_w.observe(only_for_rote, names="value")
    out = live_figure((angle_w, delta_w, m_w, operator_w), lambda: draw_explorer(
        field, operator_w.value, angle_w.value, delta_w.value, m_w.value, nets=nets, envelope=envelope,
        measured=measured, G=G, radius=radius))
    return W.VBox([W.HBox([operator_w, m_w]), W.HBox([angle_w, delta_w]), out])


def draw_unet_map(net, fields, delta: float, angle_deg: float, name: str = "U-Net", radius: float = 0.8):
    """The U-Net's per-pixel error ``|Φ(π_θ e) − π_θ Φ(e)|`` (relative to the output's range) at one
    (δ, θ), beside the first input field turned by θ. Returns ``(figure, largest value in the map)``."""
    plt = _plt()
    emap = unet_error_map(net, fields, delta, math.radians(angle_deg), radius=radius)
    n = (emap.shape[0] - 1) // 2
    ext = [-n * delta, n * delta, n * delta, -n * delta]
    img = render_fields(fields[:1], delta, math.radians(angle_deg), n * delta)[0, 0].numpy()
    fig, (a0, a1) = plt.subplots(1, 2, figsize=(8.4, 3.8))
    v = float(np.abs(img).max()) or 1.0
    a0.imshow(img, cmap="RdBu_r", vmin=-v, vmax=v, extent=ext)
    a0.set_title(f"input channel 1, turned by {angle_deg:g}°", fontsize=8)
    value = float(np.nanmax(emap))
    im = a1.imshow(emap, cmap="inferno", vmin=0, extent=ext)
    a1.set_title(f"{name}: |Φ(π_θ e) − π_θ Φ(e)| / range, δ = 1/{1 / delta:.0f}\nlargest {value:.2e}",
                 fontsize=8)
    fig.colorbar(im, ax=a1, shrink=0.85)
    for ax in (a0, a1):
        ax.set_xlim(-radius * 1.1, radius * 1.1)
        ax.set_ylim(radius * 1.1, -radius * 1.1)
    fig.tight_layout()
    return fig, value


def unet_map_explorer(nets: dict, fields, delta: float, radius: float = 0.8, name: str | None = None,
                      angle_deg: float = 22.5):
    """ipywidgets: pick a U-Net and an angle (starting at ``name``, ``angle_deg``); redraws ``draw_unet_map``."""
    import ipywidgets as W

    angle = W.FloatSlider(value=angle_deg, min=0.0, max=360.0, step=2.5, description="angle θ (°)",
                          continuous_update=False)
    which = W.Dropdown(options=list(nets), value=name if name in nets else next(iter(nets)), description="network")
    out = live_figure((angle, which), lambda: draw_unet_map(nets[which.value], fields, delta, angle.value,
                                                           which.value, radius))
    return W.VBox([W.HBox([which, angle]), out])
