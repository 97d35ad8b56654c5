"""Figures for notebooks 05 and 06: the quality/cost curve of few-step sampling, the x̂0 clamp with and
without, a widget over the number of sampling steps, grouped bar charts of degradation and ablation
tables."""
from __future__ import annotations

from typing import Sequence

import matplotlib.pyplot as plt
import matplotlib.ticker as mticker
import numpy as np
import torch
from matplotlib.lines import Line2D

from ..data import tensor_to_image
from ..fewstep import CURVE_METRICS, ClampRun
from .common import grey_panel, live_figure


def _integer_log_ticks(ax, values, axis: str = "x") -> None:
    """Log axis ticks at ``values`` themselves, written as plain integers, no minor labels (matplotlib's
    default minor labels such as 3×10⁰ and 4×10⁰ overlap on a short axis)."""
    ticks = sorted({int(v) for v in values})
    target = ax.xaxis if axis == "x" else ax.yaxis
    target.set_major_locator(mticker.FixedLocator(ticks))
    target.set_major_formatter(mticker.FixedFormatter([str(t) for t in ticks]))
    target.set_minor_formatter(mticker.NullFormatter())


def plot_quality_cost(tables: dict[str, Sequence[dict]], metrics: Sequence[str] = CURVE_METRICS,
                      tolerance: float = 0.01, floor: float = 1e-6):
    """Left: each metric's relative deviation from the reference setting against network evaluations
    (log-log; colour = metric, line style = model; the tolerance dashed; deviations below ``floor``,
    e.g. exact zeros, drawn on it). Right: seconds per pair. ``tables``: model name ->
    :func:`rediffuse.fewstep.curve_table` output (its first row is the reference)."""
    fig, (ax, ax2) = plt.subplots(1, 2, figsize=(11, 4.8), gridspec_kw={"width_ratios": [1.35, 1]})
    styles = ["-", "--", ":", "-."]
    all_ks: set[int] = set()
    for i, (model, table) in enumerate(tables.items()):
        ref, rows = table[0], sorted(table[1:], key=lambda r: r["evaluations"])
        ks = [r["evaluations"] for r in rows]
        all_ks.update(ks)
        for j, m in enumerate(metrics):
            dev = [max(abs(r[m] - ref[m]) / abs(ref[m]), floor) for r in rows]
            ax.plot(ks, dev, styles[i % len(styles)], marker="o", ms=3, color=f"C{j}")
        ax2.plot(ks + [ref["evaluations"]], [r["seconds"] for r in rows] + [ref["seconds"]],
                 styles[i % len(styles)], marker="o", color="k", label=model)
        all_ks.add(ref["evaluations"])
    ax.axhline(tolerance, color="grey", ls="--", lw=1)
    ax.annotate(f"{100 * tolerance:g} % of the reference", (min(all_ks), tolerance), textcoords="offset points",
                xytext=(2, 3), fontsize=7, color="grey")
    ax.axhline(floor, color="grey", ls=":", lw=0.8)
    ax.set(xscale="log", yscale="log", xlabel="network evaluations per pair (DDIM steps)",
           ylabel="|metric − reference| / reference", title="how far each step count is from the reference")
    _integer_log_ticks(ax, [k for k in all_ks if any(k in [r["evaluations"] for r in t[1:]] for t in tables.values())])
    metric_handles = [Line2D([], [], color=f"C{j}", marker="o", ms=3, label=m) for j, m in enumerate(metrics)]
    model_handles = [Line2D([], [], color="k", ls=styles[i % len(styles)], label=name)
                     for i, name in enumerate(tables)]
    # legends below the axes: inside they hide the curves they explain
    leg = ax.legend(handles=metric_handles, fontsize=7, ncol=len(metrics), loc="upper center",
                    bbox_to_anchor=(0.5, -0.17), title="colour: metric", title_fontsize=7, frameon=False)
    ax.add_artist(leg)
    ax.legend(handles=model_handles, fontsize=7, ncol=len(model_handles), loc="upper center",
              bbox_to_anchor=(0.5, -0.36), frameon=False,
              title=f"line style: model (deviations below {floor:g}, e.g. none at all, drawn at {floor:g})",
              title_fontsize=7)
    ax2.set(xscale="log", yscale="log", xlabel="network evaluations per pair", ylabel="seconds per pair",
            title="cost (the rightmost point: the reference)")
    _integer_log_ticks(ax2, all_ks)
    ax2.yaxis.set_major_locator(mticker.LogLocator(subs=(1.0, 2.0, 5.0)))
    ax2.yaxis.set_major_formatter(mticker.FuncFormatter(lambda v, _: f"{v:g}"))
    ax2.yaxis.set_minor_formatter(mticker.NullFormatter())
    ax2.legend(fontsize=7)
    fig.tight_layout()
    return fig


def grouped_bars(table: dict[str, dict[str, dict[str, float]]], metric: str, title: str = "",
                 ylim: tuple[float, float] | None = None):
    """Bars of ``table[group][method][metric]``, one cluster per group (e.g. degradation)."""
    groups = list(table)
    methods = list(dict.fromkeys(m for g in groups for m in table[g]))
    width = 0.8 / max(len(methods), 1)
    fig, ax = plt.subplots(figsize=(1.4 + 1.6 * len(groups), 3.2))
    x = np.arange(len(groups))
    for i, m in enumerate(methods):
        vals = [table[g].get(m, {}).get(metric, np.nan) for g in groups]
        ax.bar(x + (i - (len(methods) - 1) / 2) * width, vals, width, label=m)
    ax.set_xticks(x, groups)
    ax.set(ylabel=metric, title=title)
    if ylim:
        ax.set_ylim(*ylim)
    ax.legend(fontsize=7, ncol=min(len(methods), 4))
    fig.tight_layout()
    return fig


def plot_clamp_effect(runs: Sequence[ClampRun], T: int | None = None):
    """:func:`rediffuse.fewstep.clamp_effect` runs of one image. Left: the fraction of x̂0 values outside
    [−1, 1] at each visited timestep (solid: with the clamp, where it acts; dashed: without it, as
    Eq. 6 is printed). Right, for the longest run: both outputs (shown clipped to the displayable
    range; the title gives the actual one) and their difference in grey levels with a colour bar."""
    image = runs[0].image
    runs = [r for r in runs if r.image == image]
    fig = plt.figure(figsize=(11.5, 3.4))
    grid = fig.add_gridspec(1, 4, width_ratios=[1.5, 1, 1, 1.15])
    ax = fig.add_subplot(grid[0])
    steps = sorted({r.steps for r in runs})
    for i, k in enumerate(steps):
        for r in (r for r in runs if r.steps == k):
            ax.plot(r.timesteps, np.maximum(r.out_of_range, 1e-4), "-" if r.clip else "--", color=f"C{i}",
                    marker="o" if k <= 12 else None, ms=3,
                    label=f"{k} steps, {'clamp' if r.clip else 'no clamp'}")
    ax.set(yscale="log", xlabel="timestep t (sampling runs right → left)", ylabel="x̂0 values outside [−1, 1]",
           title=f"{image}: what the clamp acts on")
    ax.set_xlim((T or max(r.timesteps[0] for r in runs) + 1) * 1.02, -20)
    ax.legend(fontsize=7)
    k = steps[-1]
    on = next(r for r in runs if r.steps == k and r.clip)
    off = next(r for r in runs if r.steps == k and not r.clip)
    for j, r in enumerate((on, off), start=1):
        title = (f"{'clamp (official code)' if r.clip else 'no clamp (Eq. 6)'}, {k} steps\n"
                 f"range [{float(r.fused.min()):.3g}, {float(r.fused.max()):.3g}], {r.psnr:.1f} dB")
        grey_panel(fig.add_subplot(grid[j]), r.fused, title)
    diff = np.abs(tensor_to_image(on.fused).astype(float) - tensor_to_image(off.fused))
    axd = fig.add_subplot(grid[3])
    im = axd.imshow(diff, cmap="magma", vmin=0, vmax=max(float(diff.max()), 1.0))
    axd.set_title("|difference| (8-bit outputs)", fontsize=8)
    axd.set_xticks([]), axd.set_yticks([])
    fig.colorbar(im, ax=axd, shrink=0.85, label="grey levels")
    fig.tight_layout()
    return fig


def draw_steps(models: dict, cond: torch.Tensor, k: int, reference_steps: int, *, seed: int = 0,
               cache: dict | None = None):
    """Each model (name -> :class:`~rediffuse.fuse.FusionModel`) fused with k deterministic DDIM steps
    (top) and its difference from the same model at ``reference_steps`` (bottom, grey levels, one
    colour scale with a colour bar). ``cond``: the two sources ``[1, 2, H, W]`` in [-1, 1]; ``cache``:
    a dict that keeps samples between calls (the widget). Returns ``(figure, {name: max difference})``."""
    cache = {} if cache is None else cache

    def fused(name, steps):
        if (name, steps) not in cache:
            fm = models[name]
            cache[name, steps] = fm.sample(cond, fm.settings("ddim", steps, tile=0, seed=seed))[0].float().cpu()
        return cache[name, steps]

    diffs = {name: np.abs(tensor_to_image(fused(name, k)).astype(float) - tensor_to_image(fused(name, reference_steps)))
             for name in models}
    vmax = max(max(float(d.max()) for d in diffs.values()), 1.0)
    fig, axes = plt.subplots(2, len(models), figsize=(2.9 * len(models) + 0.8, 5.4), squeeze=False,
                             layout="constrained")
    im = None
    for j, name in enumerate(models):
        grey_panel(axes[0, j], fused(name, k), f"{name}\n{k} step{'s' if k > 1 else ''}")
        im = axes[1, j].imshow(diffs[name], cmap="magma", vmin=0, vmax=vmax)
        axes[1, j].set_title(f"|{k} − {reference_steps} steps|, max {diffs[name].max():.0f}", fontsize=8)
        axes[1, j].set_xticks([]), axes[1, j].set_yticks([])
    fig.colorbar(im, ax=axes.ravel().tolist(), shrink=0.45, label="|difference| (grey levels)")
    return fig, {name: float(d.max()) for name, d in diffs.items()}


def steps_explorer(models: dict, cond: torch.Tensor, choices: Sequence[int], *, seed: int = 0, value: int = 3):
    """ipywidgets: a slider over the number of sampling steps (``choices``; the largest is the reference)
    redrawing :func:`draw_steps`; samples are cached, so going back is instant."""
    import ipywidgets as W  # optional: the notebooks extra

    choices = sorted(int(c) for c in choices)
    cache: dict = {}
    slider = W.SelectionSlider(options=choices, value=value if value in choices else choices[0],
                               description="steps k", continuous_update=False)
    out = live_figure([slider], lambda: draw_steps(models, cond, slider.value, choices[-1], seed=seed, cache=cache))
    return W.VBox([slider, out])
