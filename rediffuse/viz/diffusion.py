"""Figures for notebook 03: the noise schedule, the forward process, loss curves, U-Net shapes."""
from __future__ import annotations

import csv
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import torch

from ..diffusion import NoiseSchedule, q_sample
from ..layers import Resample
from ..unet import ResBlock


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
