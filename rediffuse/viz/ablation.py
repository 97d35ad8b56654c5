"""Figures and tables for notebook 06 (ablations, and why equivariance helps).

- ``metric_dots``            a results table as dots on each metric's own axis (differences visible)
- ``scores_markdown``        a mean table of ``rediffuse.evaluate`` as a Markdown table
- ``study_markdown``         the sample-efficiency study as a Markdown table
- ``plot_sample_efficiency`` PSNR against the number of training pairs, upright and turned
- ``plot_angle_curve``       PSNR and consistency error against the input angle, 0–360°
- ``draw_turned`` / ``turned_explorer``  one held-out pair at an angle of the reader's choice
"""
from __future__ import annotations

from typing import Any, Sequence

import matplotlib.pyplot as plt
import numpy as np
import torch

from ..sample_efficiency import ANGLES_TABLE, Views, fuse_turned, study_rows, turn
from .common import live_figure
from .theorems import fmt

__all__ = ["METRIC_LABELS", "metric_dots", "scores_markdown", "study_markdown", "plot_sample_efficiency", "plot_angle_curve", "draw_turned",
           "turned_explorer"]

_MARKERS = "osD^vP*X"
METRIC_LABELS = {
    "QMI": "QMI: mutual information with the sources (↑, max 2)",
    "QG": "QG: edge strength and orientation kept (↑, max 0.975)",
    "Qabf": "Qabf: edges kept, the common form (↑)",
    "QP": "QP: phase-congruency features kept (↑, max 1)",
    "QE": "QE: edge-weighted structural similarity (↑, max 1)",
    "MS-SSIM": "MS-SSIM with the sources (↑, max 1)",
    "PSNR": "PSNR vs ground truth (dB, ↑)",
    "SSIM": "SSIM vs ground truth (↑, max 1)",
}
_MODEL_COLOURS = {"bconv": "C0", "plain": "C3", "plain-b8": "C1"}


def metric_dots(table: dict[str, dict[str, float]], metrics: Sequence[str], title: str = "",
                labels: dict[str, str] | None = None):
    """One panel per metric: each method's value as a dot on a horizontal axis that spans only the
    values shown (plus a margin), so that differences in the third decimal stay visible; the value is
    written next to its dot. ``table``: ``{method: {metric: value}}`` (e.g. ``evaluate.mean_table``);
    ``labels``: axis titles per metric (default: ``METRIC_LABELS``, else the metric's name)."""
    methods = list(table)
    fig, axes = plt.subplots(1, len(metrics), figsize=(3.3 * len(metrics) + 1.6, 0.45 * len(methods) + 1.3),
                             sharey=True, squeeze=False)
    y = np.arange(len(methods))[::-1]
    for ax, metric in zip(axes[0], metrics):
        vals = np.array([table[m].get(metric, np.nan) for m in methods], dtype=float)
        lo, hi = np.nanmin(vals), np.nanmax(vals)
        pad = max(hi - lo, 1e-3 * max(abs(hi), 1.0)) * 0.35
        ax.hlines(y, lo - pad, vals, color="0.85", lw=1, zorder=1)
        for i, (v, yy) in enumerate(zip(vals, y)):
            ax.plot(v, yy, _MARKERS[i % len(_MARKERS)], color=f"C{i}", ms=7, zorder=2)
            ax.annotate(f"{v:.4f}", (v, yy), xytext=(0, 7), textcoords="offset points", ha="center", fontsize=7)
        ax.set_xlim(lo - pad, hi + pad)
        ax.set_xlabel((labels or METRIC_LABELS).get(metric, metric), fontsize=8)
        ax.grid(axis="x", color="0.92")
        ax.tick_params(axis="x", labelsize=7)
    axes[0, 0].set_yticks(y, methods, fontsize=8)
    axes[0, 0].set_ylim(-0.6, len(methods) - 0.3)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return fig


def scores_markdown(table: dict[str, dict[str, float]], columns: Sequence[str], title: str = "") -> str:
    """``{method: {metric: mean}}`` (``evaluate.mean_table``) as a Markdown table: metrics to four
    decimals, PSNR to two, seconds per pair to two; a metric a method lacks is a dash."""
    head = ["method"] + [c if c != "seconds" else "s per pair" for c in columns]
    lines = ([f"**{title}**", ""] if title else []) + ["| " + " | ".join(head) + " |",
                                                       "|:---|" + "---:|" * len(columns)]
    for method, row in table.items():
        cells = [method]
        for c in columns:
            v = row.get(c)
            if v is None or not np.isfinite(v):
                cells.append("–")
            else:
                cells.append(f"{v:.2f}" if c in ("PSNR", "seconds") else f"{v:.4f}")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def study_markdown(study: dict[str, Any], total_pairs: int | None = None, title: str = "") -> str:
    """The study (``sample_efficiency.run_study``) as a Markdown table: one row per (training pairs,
    model); PSNR in dB to two decimals; the consistency error in grey levels to three significant
    figures (a float32 round-off of 1e-6 stays 1e-6, it is never printed as 0)."""
    rows = study_rows(study, total_pairs)
    turned = [a for a in ANGLES_TABLE if a % 360]
    head = (["training pairs", "model", "parameters"] + [f"PSNR {_angle_name(a)} (dB)" for a in ANGLES_TABLE]
            + [f"consistency error {a:g}° (grey levels)" for a in turned])
    lines = ([f"**{title}**", ""] if title else []) + ["| " + " | ".join(head) + " |",
                                                       "|:---|:---|" + "---:|" * (len(head) - 2)]
    for r in rows:
        cells = [r["pairs"], r["model"], f"{r['parameters']:,}"]
        cells += [f"{r[f'PSNR {a:g}°']:.2f}" for a in ANGLES_TABLE]
        cells += [fmt(r[f"error {a:g}°"]) for a in turned]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def _angle_name(a: float) -> str:
    return "upright" if a % 360 == 0 else f"{a:g}°"


def plot_sample_efficiency(study: dict[str, Any], title: str = ""):
    """PSNR of the fused luminance on the held-out pairs against the number of training pairs (log
    axis), one colour per model; solid: upright test pairs, dashed: turned 90°, dotted: turned 45°."""
    sizes = study["sizes"]
    # line style and marker per angle; the 90° markers are hollow so that a line lying exactly on the
    # upright one (Rot-E) still shows
    styles = {0.0: ("-", "o", None), 90.0: ("--", "s", "none"), 45.0: (":", "^", None)}
    fig, ax = plt.subplots(figsize=(6.2, 3.8))
    for key, label in study["labels"].items():
        for j, a in enumerate(ANGLES_TABLE):
            vals = [study["table"][n][key]["psnr"][j] for n in sizes]
            ls, marker, face = styles.get(a, ("-.", "x", None))
            ax.plot(sizes, vals, ls, marker=marker, ms=6 if face else 4, mfc=face, color=_MODEL_COLOURS.get(key),
                    label=f"{label}, {_angle_name(a)}")
    ax.set_xscale("log")
    ax.set_xticks(sizes, [str(n) for n in sizes])
    ax.minorticks_off()
    ax.set(xlabel="training pairs (no rotation augmentation)", ylabel="PSNR of fused Y vs ground truth (dB)",
           title=title or "fusion quality on held-out pairs")
    ax.grid(color="0.92")
    ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.01, 0.5))
    fig.tight_layout()
    return fig


def plot_angle_curve(study: dict[str, Any], floor: float = 1e-7, title: str = ""):
    """Left: PSNR against the ground truth turned the same way, for the input turned 0–360°.
    Right: the consistency error |Φ(turned) − turned Φ| (log axis; exact zeros drawn at ``floor``).
    Quarter turns are marked; the curve is for the models trained on the most pairs."""
    curve = study["curve"]
    fig, (ax, ax2) = plt.subplots(1, 2, figsize=(10.5, 3.6))
    for key, s in curve.items():
        colour, label = _MODEL_COLOURS.get(key), study["labels"][key]
        ax.plot(s["angles"], s["psnr"], marker="o", ms=3, color=colour, label=label)
        ax2.plot(s["angles"], np.maximum(s["consistency"], floor), marker="o", ms=3, color=colour, label=label)
    for a in (ax, ax2):
        for q in (90, 180, 270):
            a.axvline(q, color="0.8", lw=0.8, ls="--", zorder=0)
        a.set_xticks(range(0, 361, 45))
        a.set_xlabel("input angle (degrees)")
        a.grid(color="0.94")
    ax.set(ylabel="PSNR vs turned ground truth (dB)", title="quality at every angle")
    ax2.set(yscale="log", ylabel="mean |Φ(turned) − turned Φ| (grey levels)",
            title="consistency with the upright result")
    ax2.axhline(floor, color="0.6", lw=0.6)
    ax2.annotate("exactly 0", (2, floor), xytext=(0, 3), textcoords="offset points", fontsize=7, color="0.4")
    ax.legend(fontsize=8)
    n = max(study["sizes"])
    fig.suptitle(title or f"models trained on {n} upright pairs", fontsize=10)
    fig.tight_layout()
    return fig


def draw_turned(models: dict[str, Any], pair: dict[str, torch.Tensor], degrees: float, views: Views,
                labels: dict[str, str] | None = None):
    """One held-out pair turned by ``degrees``: source A, the ground truth, and for each model
    (``{key: FusionModel}``) its fused result and the map |Φ(turned) − turned Φ(upright)| on one colour
    scale (grey levels). Returns ``(figure, {key: mean consistency error})``."""
    rows = {}
    for key, fm in models.items():
        r = fuse_turned(fm, pair, degrees, views)
        expected = _turn_compare(r["upright"], degrees, views)
        rows[key] = (r["fused"][0, 0], 127.5 * (r["fused"] - expected).abs()[0, 0], r)
    src = _turn_compare(pair["A"], degrees, views)[0, 0]
    vmax = max(float(e.max()) for _, e, _ in rows.values()) or 1.0
    fig, axes = plt.subplots(1, 2 + 2 * len(models), figsize=(2.1 * (2 + 2 * len(models)) + 0.8, 2.7),
                             layout="constrained")
    axes[0].imshow(src.numpy(), cmap="gray", vmin=-1, vmax=1)
    axes[0].set_title(f"source A, {degrees:g}°", fontsize=8)
    gt = next(iter(rows.values()))[2]["gt"][0, 0]
    axes[1].imshow(gt.numpy(), cmap="gray", vmin=-1, vmax=1)
    axes[1].set_title("ground truth", fontsize=8)
    errors = {}
    im = None
    for i, (key, (fused, err, r)) in enumerate(rows.items()):
        name = (labels or {}).get(key, key)
        axes[2 + 2 * i].imshow(fused.numpy(), cmap="gray", vmin=-1, vmax=1)
        axes[2 + 2 * i].set_title(f"{name}\nPSNR {r['psnr']:.2f} dB", fontsize=8)
        im = axes[3 + 2 * i].imshow(err.numpy(), cmap="inferno", vmin=0, vmax=vmax)
        axes[3 + 2 * i].set_title(f"|Φ(turned) − turned Φ|\nmean {fmt(r['consistency'])}", fontsize=8)
        errors[key] = r["consistency"]
    for a in axes:
        a.set_xticks([]), a.set_yticks([])
    if im is not None:
        fig.colorbar(im, ax=list(axes), shrink=0.8, label="|difference| (grey levels)")
    return fig, errors


def _turn_compare(x: torch.Tensor, degrees: float, views: Views) -> torch.Tensor:
    return turn(x, degrees, views.compare)


def turned_explorer(models: dict[str, Any], pairs: Sequence[dict[str, torch.Tensor]], views: Views,
                    labels: dict[str, str] | None = None, step: float = 15.0):
    """Sliders for the angle (0–360°) and the held-out pair: :func:`draw_turned` redrawn live."""
    import ipywidgets as widgets  # optional: the notebooks extra

    angle = widgets.FloatSlider(value=90.0, min=0.0, max=360.0, step=step, description="angle (°)",
                                continuous_update=False)
    which = widgets.IntSlider(value=0, min=0, max=len(pairs) - 1, description="pair", continuous_update=False)
    out = live_figure([angle, which], lambda: draw_turned(models, pairs[which.value], angle.value, views, labels))
    return widgets.VBox([widgets.HBox([angle, which]), out])

