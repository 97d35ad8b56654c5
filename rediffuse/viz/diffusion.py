"""Figures for notebook 03: the noise schedule, the forward process, loss curves, U-Net shapes, a
sampling trajectory, the one-step estimate x̂0 against the noise level (static and as a widget), and
fused images next to their error maps."""
from __future__ import annotations

import csv
from pathlib import Path
from typing import Callable

import matplotlib.pyplot as plt
import numpy as np
import torch

from ..diffusion import NoiseSchedule, Trajectory, predict_x0_eps, q_sample
from ..layers import Resample
from ..unet import ResBlock
from .common import grey_panel, live_figure


def plot_schedules(schedules: dict[str, NoiseSchedule]):
    """ᾱ_t of each schedule against t/T."""
    fig, ax = plt.subplots(figsize=(4.2, 2.8))
    for name, s in schedules.items():
        ab = s.alphas_cumprod.cpu().numpy()
        ax.plot(np.arange(len(ab)) / len(ab), ab, label=f"{name} (T={len(ab)})")
    ax.set_xlabel("t / T"), ax.set_ylabel("ᾱ_t (signal kept)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def plot_forward_process(x0: torch.Tensor, schedule: NoiseSchedule, fractions=(0.0, 0.1, 0.25, 0.5, 0.75, 1.0),
                         seed: int = 0):
    """``x0`` ``[1, 1, H, W]`` in [-1, 1] noised to several t = fraction·(T−1)."""
    g = torch.Generator().manual_seed(seed)
    noise = torch.randn(x0.shape, generator=g)
    fig, axes = plt.subplots(1, len(fractions), figsize=(2.0 * len(fractions), 2.3))
    for ax, f in zip(axes, fractions):
        t = int(round(f * (schedule.T - 1)))
        xt = q_sample(x0, t, noise, schedule)
        ax.imshow(xt[0, 0].clamp(-1, 1).numpy(), cmap="gray", vmin=-1, vmax=1)
        ax.set_title(f"t={t}  ᾱ={schedule.alpha_bar(t):.2f}", fontsize=8)
        ax.axis("off")
    fig.tight_layout()
    return fig


def read_loss_csv(path: str | Path) -> tuple[np.ndarray, np.ndarray]:
    with open(path) as f:
        rows = list(csv.DictReader(f))
    return np.array([int(r["step"]) for r in rows]), np.array([float(r["loss"]) for r in rows])


def plot_loss(paths: dict[str, str | Path], smooth: int = 25):
    """Loss curves (running mean over ``smooth`` steps) of one or more runs, log scale."""
    fig, ax = plt.subplots(figsize=(4.6, 3.0))
    for name, p in paths.items():
        steps, loss = read_loss_csv(p)
        k = max(1, min(smooth, len(loss) // 5 or 1))
        sm = np.convolve(loss, np.ones(k) / k, mode="valid")
        ax.plot(steps[k - 1:], sm, label=name)
    ax.set_yscale("log"), ax.set_xlabel("step"), ax.set_ylabel("training loss")
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def unet_shapes(model: torch.nn.Module, x: torch.Tensor, t: torch.Tensor) -> list[tuple[str, tuple]]:
    """(submodule name, output shape) of the stem, every ResBlock/Resample and the output layer."""
    rows: list[tuple[str, tuple]] = []
    hooks = []
    for name, mod in model.named_modules():
        if isinstance(mod, (ResBlock, Resample)) or name in ("inp", "out"):
            hooks.append(mod.register_forward_hook(lambda m, i, o, n=name: rows.append((n, tuple(o.shape)))))
    try:
        with torch.no_grad():
            model(x, t)
    finally:
        for h in hooks:
            h.remove()
    return rows


def plot_trajectory(traj: Trajectory, schedule: NoiseSchedule, title: str = ""):
    """The kept steps of a sampling run (:class:`rediffuse.diffusion.Trajectory`): x_t on top, the x̂0
    the update used below, left to right from noise to image; the last column is the result."""
    n = len(traj.kept)
    fig, axes = plt.subplots(2, n + 1, figsize=(1.8 * (n + 1), 4.3), squeeze=False, layout="constrained")
    for j, t in enumerate(traj.kept):
        grey_panel(axes[0, j], traj.x_t[j][0], f"x_t, t = {t}\nᾱ_t = {schedule.alpha_bar(t):.2g}")
        grey_panel(axes[1, j], traj.x0_hat[j][0], f"x̂0 at t = {t}")
    grey_panel(axes[0, n], traj.final[0], "result")
    axes[1, n].axis("off")
    axes[0, 0].set_ylabel("state x_t", fontsize=8)
    axes[1, 0].set_ylabel("estimate x̂0", fontsize=8)
    if title:
        fig.suptitle(title, fontsize=9)
    return fig


def psnr_of_mse(mse, peak_to_peak: float = 2.0) -> np.ndarray:
    """PSNR (dB) of a mean squared error on the [-1, 1] scale (peak-to-peak 2)."""
    return 10 * np.log10(peak_to_peak ** 2 / np.maximum(np.asarray(mse, dtype=float), 1e-20))


def plot_x0_error(timesteps, curves: dict[str, list[float]], schedule: NoiseSchedule, reference: dict | None = None,
                  linestyles: dict[str, str] | None = None):
    """PSNR of the one-step estimate x̂0 against the ground truth at each t, one line per model
    (``curves``: name -> MSEs from :func:`rediffuse.diffusion.x0_prediction_error`); ``reference``:
    name -> PSNR drawn as a dotted horizontal line (e.g. averaging the sources)."""
    fig, ax = plt.subplots(figsize=(5.8, 3.3))
    for i, (name, mse) in enumerate(curves.items()):
        ax.plot(timesteps, psnr_of_mse(mse), (linestyles or {}).get(name, "-"), marker="o", ms=3, color=f"C{i}",
                label=name)
    for name, v in (reference or {}).items():
        ax.axhline(v, color="grey", lw=1, ls=":")
        ax.annotate(name, (timesteps[-1], v), textcoords="offset points", xytext=(-4, 3), ha="right", fontsize=7,
                    color="grey")
    ticks = [timesteps[0], timesteps[len(timesteps) // 2], timesteps[-1]]
    top = ax.secondary_xaxis("top")
    top.set_xticks(ticks, [f"ᾱ = {schedule.alpha_bar(int(t)):.2g}" for t in ticks], fontsize=7)
    ax.set(xlabel="timestep t (more noise →)", ylabel="PSNR of x̂0 against x0 (dB)")
    ax.legend(fontsize=7, loc="lower left")
    fig.tight_layout()
    return fig


def plot_fusion_errors(gt: torch.Tensor, fused: dict[str, torch.Tensor], titles: dict[str, str] | None = None,
                       vmax: float | None = None):
    """Fused images next to the ground truth (top) and their absolute errors in grey levels (bottom),
    all error maps on one colour scale with a colour bar: near-identical thumbnails become comparable.
    ``gt``, ``fused[name]``: ``[1, H, W]`` in [-1, 1]; ``titles``: a caption per name (e.g. the PSNR);
    ``vmax``: top of the colour scale (default: the 99.5th percentile of all errors, so that a few
    extreme pixels do not wash the maps out; each map's title gives its true maximum)."""
    names = list(fused)
    err = {k: (v.float().cpu().clamp(-1, 1) - gt.float().cpu()).abs().reshape(gt.shape[-2:]).numpy() * 127.5
           for k, v in fused.items()}
    vmax = vmax or float(np.percentile(np.stack(list(err.values())), 99.5)) or 1.0
    n = len(names) + 1
    h, w = gt.shape[-2:]
    fig, axes = plt.subplots(2, n, figsize=(2.3 * n + 0.9, 2 * 2.3 * h / w + 0.8), squeeze=False, layout="constrained")
    grey_panel(axes[0, 0], gt, "ground truth")
    axes[1, 0].axis("off")
    im = None
    for j, k in enumerate(names, start=1):
        grey_panel(axes[0, j], fused[k], f"{k}\n{(titles or {}).get(k, '')}".strip())
        im = axes[1, j].imshow(err[k], cmap="magma", vmin=0, vmax=vmax)
        axes[1, j].set_title(f"|error|, max {err[k].max():.0f}", fontsize=8)
        axes[1, j].set_xticks([]), axes[1, j].set_yticks([])
    if im is not None:
        fig.colorbar(im, ax=axes.ravel().tolist(), shrink=0.45, location="right", label="|fused − GT| (grey levels)")
    return fig


def draw_noise_level(models: dict[str, tuple[Callable, str]], x0: torch.Tensor, cond: torch.Tensor,
                     noise: torch.Tensor, schedule: NoiseSchedule, t: int):
    """One noise level t: the noisy image x_t = √ᾱ_t·x0 + √(1−ᾱ_t)·ε, then each model's one-step x̂0
    (clamped, as the sampler uses it) with its PSNR against x0. ``models``: name -> (model, prediction);
    x0, noise ``[1, 1, H, W]``, cond ``[1, 2, H, W]``. Returns ``(figure, {name: PSNR})``."""
    t = int(t)
    x_t = q_sample(x0, t, noise, schedule)
    fig, axes = plt.subplots(1, len(models) + 2, figsize=(2.3 * (len(models) + 2), 2.7), squeeze=False)
    grey_panel(axes[0, 0], x_t[0], f"x_t, t = {t}\n√ᾱ_t = {schedule.alpha_bar(t) ** 0.5:.3f}")
    scores = {}
    with torch.no_grad():
        for j, (name, (model, prediction)) in enumerate(models.items(), start=1):
            out = model(x_t, schedule.timesteps[t].repeat(x0.shape[0]).to(x0.device), cond)
            x0_hat, _ = predict_x0_eps(out, x_t, t, schedule, prediction, clip=True, cond=cond)
            scores[name] = float(psnr_of_mse(float(((x0_hat - x0) ** 2).mean())))
            grey_panel(axes[0, j], x0_hat[0], f"x̂0: {name}\n{scores[name]:.1f} dB")
    grey_panel(axes[0, -1], x0[0], "ground truth x0")
    fig.tight_layout()
    return fig, scores


def noise_level_explorer(models: dict[str, tuple[Callable, str]], x0: torch.Tensor, cond: torch.Tensor,
                         noise: torch.Tensor, schedule: NoiseSchedule, t: int = 1000):
    """ipywidgets: a slider over t redrawing :func:`draw_noise_level`."""
    import ipywidgets as W  # optional: the notebooks extra

    slider = W.IntSlider(value=t, min=0, max=schedule.T - 1, step=max(schedule.T // 100, 1), description="t",
                         continuous_update=False, layout=W.Layout(width="60%"))
    out = live_figure([slider], lambda: draw_noise_level(models, x0, cond, noise, schedule, slider.value))
    return W.VBox([slider, out])
