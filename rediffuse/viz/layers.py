"""Figures for notebook 01: bases, rotated filters, regular fields, and the rotation explorer."""
from __future__ import annotations

import math

import matplotlib.pyplot as plt
import numpy as np
import torch

from ..bases import FilterBasis, grid_offset, rotated_coords
from ..groups import disc_mask, rotate_image, rotate_image_angle
from .common import explorer, live_figure, save_figure


def plot_basis(basis: FilterBasis, fine: int = 49, max_functions: int = 25):
    """Each basis function drawn continuously (top of each pair) and sampled on the p×p grid."""
    g = torch.linspace(-1, 1, fine, dtype=torch.float64)
    rr, cc = torch.meshgrid(g, g, indexing="ij")
    cont = basis.functions(rr, cc).numpy()  # [fine, fine, R]
    samp = basis.sample(1)[0].numpy()  # [p, p, R]
    n = min(basis.dim, max_functions)
    ncols = int(math.ceil(math.sqrt(n)))
    nrows = int(math.ceil(n / ncols))
    fig, axes = plt.subplots(2 * nrows, ncols, figsize=(1.3 * ncols + 0.6, 2.6 * nrows), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for j in range(n):
        r, c = divmod(j, ncols)
        v = float(np.abs(cont[..., j]).max()) or 1.0
        axes[2 * r, c].imshow(cont[..., j], cmap="RdBu_r", vmin=-v, vmax=v)
        axes[2 * r + 1, c].imshow(samp[..., j], cmap="RdBu_r", vmin=-v, vmax=v)
        axes[2 * r, c].set_title(f"φ{j}", fontsize=7)
    for r in range(nrows):  # which row of each pair is which
        for k, what in enumerate(("continuous", f"on the {basis.size}×{basis.size} grid")):
            axes[2 * r + k, 0].text(-0.12, 0.5, what, rotation=90, fontsize=7, ha="right", va="center",
                                    transform=axes[2 * r + k, 0].transAxes)
    shown = f"{n} of its {basis.dim} functions" if n < basis.dim else f"its {basis.dim} functions"
    fig.suptitle(f"{basis.name} on a {basis.size}×{basis.size} filter: {shown}", fontsize=9)
    fig.tight_layout()
    return fig


def plot_sample_points(size: int, m: int):
    """Where orientation t samples the base filter: the p×p grid turned by −2πt/m, over the grid itself
    (grey lines through the taps). Orientations are drawn from large to small markers, so points that
    coincide show as nested rings instead of hiding each other."""
    fig, ax = plt.subplots(figsize=(5.8, 3.8))
    taps = (torch.arange(size, dtype=torch.float64) - (size - 1) / 2) / ((size - 1) / 2 or 1)
    for v in taps.tolist():
        ax.axhline(v, color="0.85", lw=0.8, zorder=0)
        ax.axvline(v, color="0.85", lw=0.8, zorder=0)
    for t in range(m):
        r, c = rotated_coords(size, 2 * math.pi * t / m)
        on = grid_offset(size, 2 * math.pi * t / m) < 1e-9
        ax.scatter(c.flatten(), -r.flatten(), s=14 + 90 * (m - 1 - t) / max(m - 1, 1), facecolors="none",
                   edgecolors=f"C{t % 10}", linewidths=1.2,
                   label=f"t={t} ({360 * t / m:g}°): " + ("on the taps" if on else "off the taps"))
    offset = max(grid_offset(size, 2 * math.pi * t / m) for t in range(m))
    ax.set_aspect("equal")
    ax.set_title(f"sample points, m={m}, p={size}: " + ("every one on a tap" if offset < 1e-9 else
                                                        f"up to {offset:.2f} px off the taps"), fontsize=9)
    ax.legend(fontsize=6, loc="center left", bbox_to_anchor=(1.02, 0.5))
    fig.tight_layout()
    return fig


def plot_rotated_filters(layer, out_field: int = 0, in_index: int = 0):
    """Orientations of one output field of a lifting layer (rows: fields, columns: t)."""
    with torch.no_grad():
        filt = layer.expanded_filter().detach().cpu().double()
    m, p = layer.m, layer.kernel_size
    f = filt.reshape(-1, m, filt.shape[1], p, p)[out_field, :, in_index]  # [m, p, p]
    v = float(f.abs().max()) or 1.0
    fig, axes = plt.subplots(1, m, figsize=(1.4 * m, 1.6), squeeze=False)
    for t in range(m):
        axes[0, t].imshow(f[t].numpy(), cmap="RdBu_r", vmin=-v, vmax=v)
        axes[0, t].set_title(f"{360 * t / m:.1f}°", fontsize=8)
        axes[0, t].axis("off")
    fig.suptitle(f"one learned filter, {m} orientations ({type(layer).__name__}, {layer.basis.name})", fontsize=9)
    fig.tight_layout()
    return fig


def plot_fields(h: torch.Tensor, m: int, fields: int = 3, title: str = ""):
    """Regular fields ``[1, C*m, H, W]``: rows are fields, columns orientations."""
    h = h.detach().cpu().float()[0]
    C = h.shape[0] // m
    fields = min(fields, C)
    hv = h.reshape(C, m, *h.shape[-2:])
    fig, axes = plt.subplots(fields, m, figsize=(1.5 * m, 1.5 * fields), squeeze=False)
    for i in range(fields):
        v = float(hv[i].abs().max()) or 1.0
        for t in range(m):
            axes[i, t].imshow(hv[i, t].numpy(), cmap="RdBu_r", vmin=-v, vmax=v)
            axes[i, t].set_xticks([]), axes[i, t].set_yticks([])
            if i == 0:
                axes[i, t].set_title(f"t={t}", fontsize=8)
        axes[i, 0].set_ylabel(f"field {i}", fontsize=8)
    if title:
        fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    return fig


def draw_rotation(lift, image: torch.Tensor, step: int = 0, field: int = 0):
    """One rotation of the input by ``step`` elements of C_m: the lifted field of the turned input
    (top), each orientation turned back (middle), and the field of the upright input (bottom). For
    the group's elements the middle row is the bottom row with its panels shifted cyclically by
    ``step``: panel t shows orientation (t − step) mod m of the upright field."""
    m = lift.m
    with torch.no_grad():
        if (4 * step) % m == 0:
            xr = rotate_image(image, 4 * step // m)
        else:
            xr = rotate_image_angle(image, 2 * math.pi * step / m)
        h = lift(xr)[0].reshape(-1, m, *xr.shape[-2:])[field]
        h0 = lift(image)[0].reshape(-1, m, *image.shape[-2:])[field]
    fig, axes = plt.subplots(3, m + 1, figsize=(1.6 * (m + 1), 5.0), squeeze=False)
    axes[0, 0].imshow(xr[0].permute(1, 2, 0).squeeze().clamp(0, 1).numpy(), cmap="gray")
    axes[0, 0].set_title(f"input, {360 * step / m:.1f}°", fontsize=8)
    axes[2, 0].imshow(image[0].permute(1, 2, 0).squeeze().clamp(0, 1).numpy(), cmap="gray")
    axes[2, 0].set_title("input, upright", fontsize=8)
    axes[1, 0].axis("off")
    axes[1, 0].text(0.0, 0.5, f"turned back:\npanel t is the\nupright field's\norientation t − {step}", fontsize=8,
                    transform=axes[1, 0].transAxes, va="center")
    v = float(max(h.abs().max(), h0.abs().max())) or 1.0
    for t in range(m):
        axes[0, t + 1].imshow(h[t].numpy(), cmap="RdBu_r", vmin=-v, vmax=v)
        axes[0, t + 1].set_title(f"orientation {t}", fontsize=8)
        back = h[t][None, None]
        back = rotate_image(back, -4 * step // m) if (4 * step) % m == 0 else \
            rotate_image_angle(back, -2 * math.pi * step / m)
        axes[1, t + 1].imshow(back[0, 0].numpy(), cmap="RdBu_r", vmin=-v, vmax=v)
        axes[1, t + 1].set_title(f"o{t} turned back = o{(t - step) % m} below", fontsize=7)
        axes[2, t + 1].imshow(h0[t].numpy(), cmap="RdBu_r", vmin=-v, vmax=v)
        axes[2, t + 1].set_title(f"upright, orientation {t}", fontsize=7)
    for ax in axes.flat:
        ax.set_xticks([]), ax.set_yticks([])
    fig.suptitle(f"field {field}: space rotates, orientation channels shift by {step}", fontsize=9)
    fig.tight_layout()
    return fig


def rotation_explorer(lift, image: torch.Tensor, field: int = 0, step: int = 0):
    """Slider over rotations of the input by the elements of C_m (:func:`draw_rotation`), starting at
    ``step``.

    Returns ``(widget, draw)``; ``draw(step)`` makes the figure for one rotation so notebooks can also
    call it statically (needs ipywidgets, the notebooks extra, for the widget).
    """
    import ipywidgets as widgets

    def draw(step: int = 0):
        return draw_rotation(lift, image, step, field)

    slider = widgets.IntSlider(value=step, min=0, max=lift.m - 1, description=f"step (2π/{lift.m})")
    return widgets.VBox([slider, live_figure([slider], lambda: draw(slider.value))]), draw


def rotation_output(lift, image: torch.Tensor, step: int = 1, field: int = 0, show_widgets: bool = True,
                    output_dir=None, name: str = "rotation_explorer"):
    """Notebook 01's rotation explorer as one output (:func:`~rediffuse.viz.common.explorer`): the
    figure for ``step`` saved as ``<output_dir>/<name>_step<step>.png``, shown live (the slider starts
    there) when ``show_widgets``, else static."""
    fig = draw_rotation(lift, image, step, field)
    save_figure(fig, output_dir, f"{name}_step{step}")
    return explorer(fig, lambda: rotation_explorer(lift, image, field, step)[0], show_widgets, "rotation explorer")


def angle_output(lift, image: torch.Tensor, degrees: float = 30.0, field: int = 0, show_widgets: bool = True,
                 output_dir=None, name: str = "angle_explorer"):
    """Notebook 01's any-angle explorer as one output: the figure at ``degrees`` saved as
    ``<output_dir>/<name>_<degrees>deg.png``, shown live (starting there) or static."""
    fig = draw_angle(lift, image, degrees, field)
    save_figure(fig, output_dir, f"{name}_{degrees:g}deg")
    return explorer(fig, lambda: angle_explorer(lift, image, field, degrees=degrees)[0], show_widgets,
                    "angle explorer")


def _turn(x: torch.Tensor, degrees: float) -> torch.Tensor:
    """Exact ``rot90`` at multiples of 90°, bicubic interpolation elsewhere."""
    if abs(degrees / 90 - round(degrees / 90)) < 1e-9:
        return rotate_image(x, int(round(degrees / 90)) % 4)
    return rotate_image_angle(x, math.radians(degrees))


def _cycle(h: torch.Tensor, k: int, m: int) -> torch.Tensor:
    """Shift the orientation axis of regular fields ``[B, C*m, H, W]`` by ``k`` (no spatial turn)."""
    B, Cm, H, W = h.shape
    return h.reshape(B, Cm // m, m, H, W).roll(k, dims=2).reshape(B, Cm, H, W)


def angle_error(lift, image: torch.Tensor, degrees: float, field: int | None = None) -> float:
    """Relative error of ``lift(turn_θ x)`` against ``turn_θ lift(x)`` with the orientations shifted by
    the nearest element of C_m, inside the disc that stays on the grid (``field=None``: all fields)."""
    m = lift.m
    k = round(degrees / (360 / m)) % m
    with torch.no_grad():
        got = lift(_turn(image, degrees))
        want = _cycle(_turn(lift(image), degrees), k, m)
    if field is not None:
        got, want = got[:, field * m:(field + 1) * m], want[:, field * m:(field + 1) * m]
    mask = disc_mask(*got.shape[-2:], margin=3.0)
    return float(((got - want) * mask).norm() / ((want * mask).norm() + 1e-12))


def draw_angle(lift, image: torch.Tensor, degrees: float = 0.0, field: int = 0):
    """The lifted field for the input turned by ``degrees`` (top) against the unturned field turned and
    cycled by the nearest group element (bottom), with their error (:func:`angle_error`)."""
    m = lift.m
    k = round(degrees / (360 / m)) % m
    with torch.no_grad():
        xr = _turn(image, degrees)
        top = lift(xr)[0].reshape(-1, m, *xr.shape[-2:])[field]
        pred = _cycle(_turn(lift(image), degrees), k, m)
        bottom = pred[0].reshape(-1, m, *xr.shape[-2:])[field]
    err = angle_error(lift, image, degrees, field)
    fig, axes = plt.subplots(2, m + 1, figsize=(1.6 * (m + 1), 3.5), squeeze=False)
    axes[0, 0].imshow(xr[0].permute(1, 2, 0).squeeze().clamp(0, 1).numpy(), cmap="gray")
    axes[0, 0].set_title(f"input turned {degrees:.0f}°", fontsize=8)
    axes[1, 0].axis("off")
    axes[1, 0].text(0.0, 0.5, f"nearest group\nelement: {k}·{360 / m:.0f}°\nerror {err:.1e}", fontsize=8,
                    transform=axes[1, 0].transAxes, va="center")
    v = float(top.abs().max()) or 1.0
    for t in range(m):
        axes[0, t + 1].imshow(top[t].numpy(), cmap="RdBu_r", vmin=-v, vmax=v)
        axes[0, t + 1].set_title(f"lift(turned x), o{t}", fontsize=7)
        axes[1, t + 1].imshow(bottom[t].numpy(), cmap="RdBu_r", vmin=-v, vmax=v)
        axes[1, t + 1].set_title(f"turned lift(x), o{t}", fontsize=7)
    for ax in axes.flat:
        ax.set_xticks([]), ax.set_yticks([])
    exact = abs(degrees / (360 / m) - round(degrees / (360 / m))) < 1e-9
    fig.suptitle(f"field {field}, m = {m}: exact at multiples of {360 / m:.0f}° only; at {degrees:g}° "
                 + ("round-off" if exact else f"{min(abs(degrees - j * 360 / m) for j in range(m + 1)):g}° from the "
                    f"nearest one, error {err:.2f}"), fontsize=9)
    fig.tight_layout()
    return fig


def angle_explorer(lift, image: torch.Tensor, field: int = 0, step: float = 5.0, degrees: float = 0.0):
    """Slider over *any* angle (degrees), drawing :func:`draw_angle`.

    Exact (round-off) at the elements of C_m; in between, the regular representation has no exact
    action and the error shows how far from a group element the angle is. Returns ``(widget, draw)``;
    ``draw(degrees)`` makes the figure statically (for papermill runs). The slider starts at ``degrees``.
    """
    import ipywidgets as widgets

    def draw(degrees: float = 0.0):
        return draw_angle(lift, image, degrees, field)

    slider = widgets.FloatSlider(value=degrees, min=0.0, max=360.0, step=step, description="angle (°)")
    return widgets.VBox([slider, live_figure([slider], lambda: draw(slider.value))]), draw


def plot_angle_errors(angles, errors, m: int = 4, title: str = ""):
    """Relative error against the input angle on a log axis; angles where the error is exactly zero
    (no log value) are marked on the axis floor with their own legend entry, not at an invented value."""
    angles, errors = np.asarray(angles, float), np.asarray(errors, float)
    fig, ax = plt.subplots(figsize=(5.4, 3.2))
    pos = errors > 0
    ax.semilogy(angles[pos], errors[pos], "o-", ms=3, label="measured")
    ax.set_xticks(range(0, 361, 45))
    ax.set_xlabel("input angle (°)")
    ax.set_ylabel("relative error")
    for j in range(m + 1):
        ax.axvline(j * 360 / m, color="0.85", lw=0.8, zorder=0)
    if (~pos).any():
        floor = ax.get_ylim()[0]
        ax.plot(angles[~pos], np.full((~pos).sum(), floor), "v", color="C3", ms=6, clip_on=False,
                label="exactly 0 (no log value; marked on the axis)")
    ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.28), ncol=2, frameon=False)
    ax.set_title(title or f"lift, m = {m}: exact at the group elements (grey lines) only", fontsize=9)
    fig.tight_layout()
    return fig
