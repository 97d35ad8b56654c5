"""Figures for notebooks 05 and 06: the quality/cost curve of few-step sampling, grouped bar charts
of degradation and ablation tables."""
from __future__ import annotations

from typing import Sequence

import matplotlib.pyplot as plt
import numpy as np

from ..fewstep import CURVE_METRICS


def plot_quality_cost(tables: dict[str, Sequence[dict]], metrics: Sequence[str] = CURVE_METRICS,
                      tolerance: float = 0.01):
    """Left: each metric's relative deviation from the reference setting against network evaluations
    (log-log; the tolerance as a dashed line). Right: seconds per pair. ``tables``: model name ->
    :func:`rediffuse.fewstep.curve_table` output (its first row is the reference)."""
    fig, (ax, ax2) = plt.subplots(1, 2, figsize=(10, 3.6))
    styles = ["-", "--", ":", "-."]
    for i, (model, table) in enumerate(tables.items()):
        ref, rows = table[0], [r for r in table[1:]]
        rows = sorted(rows, key=lambda r: r["evaluations"])
        ks = [r["evaluations"] for r in rows]
        for j, m in enumerate(metrics):
            dev = [max(abs(r[m] - ref[m]) / abs(ref[m]), 1e-6) for r in rows]
            ax.plot(ks, dev, styles[i % len(styles)], marker="o", ms=3, color=f"C{j}",
                    label=m if i == 0 else None)
        ax2.plot(ks + [ref["evaluations"]], [r["seconds"] for r in rows] + [ref["seconds"]],
                 styles[i % len(styles)], marker="o", color="k", label=model)
    ax.axhline(tolerance, color="grey", ls="--", lw=1)
    ax.set(xscale="log", yscale="log", xlabel="network evaluations per pair",
           ylabel="|metric − reference| / reference", title="quality vs steps (line style = model)")
    ax.legend(fontsize=7, ncol=2)
    ax2.set(xscale="log", yscale="log", xlabel="network evaluations per pair", ylabel="seconds per pair",
            title="cost")
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
