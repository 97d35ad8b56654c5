"""Fusing degraded sources: noisy, blurred or downsampled multi-focus pairs (DRFusion's setting).

Each source is observed as y_i = A(I_i) + σ_y n with a known linear operator A
(:mod:`rediffuse.degradations`). Three ways to get an all-in-focus image at full resolution:

- ``"plain"``: fuse the observations as they are (downsampled ones bicubic-upsampled first);
- ``"restore"``: restore each source with a classical method (:func:`classical_restore`), then fuse;
- ``"correct"``: fuse the restored sources, and at every sampling step replace x̂0 by
  m·x_A + (1 − m)·x_B, where x_i = x̂0 − λ_t A⁺(A x̂0 − y_i) is x̂0 made consistent with observation i
  (range–null-space decomposition, DDNM+ λ_t) and m is the model's weight map (the fusion
  constraint). With σ_y = 0 (λ = 1), A(result) equals y_A where m = 1 and y_B where m = 0.

All tensors are luminance ``[B, 1, H, W]`` on the model's [-1, 1] scale; noise levels are given in
8-bit grey levels (σ = 15 means 15/255 of the range).
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from skimage.restoration import denoise_nl_means
from torch import Tensor
from tqdm.auto import tqdm

from .baselines import get_baseline
from .data import FusionFolder, center_crop, image_to_tensor, luminance, tensor_to_image
from .degradations import (
    AvgPoolDown,
    BicubicDown,
    Degradation,
    GaussianBlur,
    Identity,
    fusion_constraint,
    range_null_correction,
)
from .diffusion import make_ddnm_correction, weight_map
from .metrics import psnr, ssim

__all__ = ["DegradationSetting", "DEGRADATION_SETTINGS", "FUSE_MODES", "naive_upsample", "classical_restore",
           "fuse_degraded", "degradation_rows", "degradation_table"]

FUSE_MODES = ("plain", "restore", "correct")


@dataclass
class DegradationSetting:
    """A named observation model: operator ``op`` and additive noise σ in 8-bit grey levels."""

    name: str
    op: Degradation
    noise: float = 0.0
    seed: int = field(default=0, repr=False)
    nsr: float = 1e-2  # Wiener noise-to-signal ratio for blur (best of 1e-3…1e-1 on NYU pairs 001–003)

    @property
    def sigma_y(self) -> float:
        """Noise standard deviation on the [-1, 1] scale."""
        return 2.0 * self.noise / 255.0

    @property
    def factor(self) -> int:
        return int(getattr(self.op, "factor", 1))

    def observe(self, x: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """y = A x + σ_y n (x: ``[B, 1, H, W]``, sides divisible by ``factor``)."""
        return self.op.degrade(x, self.sigma_y, generator)


def _settings() -> dict[str, DegradationSetting]:
    return {
        "noise15": DegradationSetting("noise15", Identity(), 15.0),
        "blur2": DegradationSetting("blur2", GaussianBlur(2.0), 2.0),
        "avgpool2": DegradationSetting("avgpool2", AvgPoolDown(2)),
        "bicubic4": DegradationSetting("bicubic4", BicubicDown(4)),
    }


# noise σ 15 (identity), Gaussian blur σ = 2 px with σ 2 noise, ×2 average pooling, ×4 bicubic
DEGRADATION_SETTINGS: dict[str, DegradationSetting] = _settings()


def naive_upsample(y: Tensor, setting: DegradationSetting) -> Tensor:
    """The observation on the full-resolution grid without restoring anything: y itself, or its
    bicubic interpolation (clamped to [-1, 1]) for downsampling operators."""
    f = setting.factor
    if f == 1:
        return y
    return F.interpolate(y, scale_factor=f, mode="bicubic", align_corners=False).clamp(-1, 1)


def _nl_means(y: Tensor, sigma: float) -> Tensor:
    out = torch.empty_like(y)
    for i in range(y.shape[0]):
        for c in range(y.shape[1]):
            img = y[i, c].detach().cpu().double().numpy()
            den = denoise_nl_means(img, h=0.8 * sigma, sigma=sigma, patch_size=5, patch_distance=6,
                                   fast_mode=True)
            out[i, c] = torch.from_numpy(np.asarray(den)).to(y)
    return out


def classical_restore(y: Tensor, setting: DegradationSetting) -> Tensor:
    """A classical, model-free restorer per operator (``[B, 1, h, w]`` → ``[B, 1, H, W]``):

    - identity + noise: non-local means (scikit-image, fast mode, h = 0.8 σ);
    - Gaussian blur: Wiener deconvolution with the setting's constant noise-to-signal ratio ``nsr``;
    - downsampling: bicubic interpolation plus one back-projection step x + A⁺(y − A x), which
      makes A x = y exactly (iterative back-projection converges in one step since A A⁺ = I).
    """
    op = setting.op
    if isinstance(op, Identity):
        return _nl_means(y, setting.sigma_y) if setting.sigma_y > 0 else y
    if isinstance(op, GaussianBlur):
        return op.wiener(y, setting.nsr).clamp(-1, 1)
    if setting.factor > 1:
        x = naive_upsample(y, setting)
        return (x + op.A_pinv(y - op.A(x))).clamp(-1, 1)
    raise ValueError(f"no classical restorer for {op!r}")


@torch.no_grad()
def fuse_degraded(fm, y_a: Tensor, y_b: Tensor, setting: DegradationSetting, mode: str = "correct", *,
                  sampler: str | None = None, steps: int | None = None, seed: int = 0) -> Tensor:
    """Fuse two observations ``[B, 1, h, w]`` with the :class:`~rediffuse.fuse.FusionModel` ``fm``;
    returns ``[B, 1, H, W]`` (H = h·factor) in [-1, 1]. ``mode``: one of ``FUSE_MODES``."""
    if mode not in FUSE_MODES:
        raise ValueError(f"unknown mode {mode!r}; use one of {', '.join(FUSE_MODES)}")
    if mode == "plain":
        return fm.fuse_y(naive_upsample(y_a, setting), naive_upsample(y_b, setting), sampler, steps, seed)
    r_a, r_b = classical_restore(y_a, setting), classical_restore(y_b, setting)
    if mode == "restore":
        return fm.fuse_y(r_a, r_b, sampler, steps, seed)
    if fm.prediction != "weights":
        raise ValueError(f"mode 'correct' needs a weight-map model (prediction 'weights'); {fm.path.name} "
                         f"predicts {fm.prediction!r}")
    st = fm.settings(sampler, steps, seed=seed)
    dev = fm.device
    ys = [y_a.to(dev, torch.float32), y_b.to(dev, torch.float32)]
    last: dict[str, Tensor] = {}

    def keep_weights(out: Tensor) -> None:
        last["w"] = weight_map(out)  # the fusion constraint's m for this step

    def project(x0, lam):
        x_a, x_b = (range_null_correction(x0, y, setting.op, lam) for y in ys)
        return fusion_constraint(x_a, x_b, last["w"])

    correct = make_ddnm_correction(project, fm.schedule, st.timesteps, setting.sigma_y)
    return fm.sample(torch.cat([r_a, r_b], 1), st, correct=correct, observe=keep_weights).clamp(-1, 1)


def degradation_rows(fm, folder: str | Path, settings: Sequence[DegradationSetting], *,
                     modes: Sequence[str] = FUSE_MODES, stems: Sequence[str] | None = None, crop: int | None = None,
                     seed: int = 0, baseline: str | None = "gff", progress: bool = True) -> list[dict]:
    """PSNR/SSIM against ground truth (luminance, 8-bit) of each ``mode`` under each degradation,
    for the pairs of ``folder`` (which needs ``GT/``). With ``baseline`` (a classical fusion method
    name) also scores restore-then-fuse with it (``"restore+<baseline>"``). Sides are cropped
    centrally to ``crop`` (when given) and to a multiple of the operator's factor.
    Rows: ``image, degradation, method, PSNR, SSIM, seconds``."""
    ds = FusionFolder(folder, stems=stems, require_gt=True)
    methods = list(modes) + ([f"restore+{baseline}"] if baseline else [])
    rows: list[dict] = []
    bar = tqdm(total=len(ds.stems) * len(settings) * len(methods), desc="degraded", unit="fusion",
               disable=not progress)
    for stem in ds.stems:
        imgs = {k: center_crop(v, crop) for k, v in ds.load(stem).items()}
        for st in settings:
            f = st.factor
            h, w = imgs["GT"].shape[:2]
            h, w = h - h % f, w - w % f
            gt = np.clip(np.rint(luminance(imgs["GT"][:h, :w])), 0, 255).astype(np.uint8)
            src = [image_to_tensor(imgs[k][:h, :w])[None] for k in ds.sources[:2]]
            g = torch.Generator().manual_seed(st.seed + seed)
            ys = [st.observe(s, g) for s in src]
            for m in methods:
                t0 = time.perf_counter()
                if m.startswith("restore+"):
                    r = [tensor_to_image(classical_restore(y, st)[0]) for y in ys]
                    fused = get_baseline(m.split("+", 1)[1])(r)
                else:
                    fused = tensor_to_image(fuse_degraded(fm, ys[0], ys[1], st, m, seed=seed)[0])
                rows.append({"image": stem, "degradation": st.name, "method": m, "PSNR": psnr(fused, gt),
                             "SSIM": ssim(fused, gt), "seconds": time.perf_counter() - t0})
                bar.update(1)
    bar.close()
    return rows


def degradation_table(rows: Sequence[dict], metrics: Sequence[str] = ("PSNR", "SSIM", "seconds")) -> dict:
    """Means of :func:`degradation_rows` output: ``{degradation: {method: {metric: mean, "pairs": n}}}``."""
    table: dict[str, dict[str, dict[str, float]]] = {}
    for r in rows:
        table.setdefault(r["degradation"], {}).setdefault(r["method"], {})
    for deg, per in table.items():
        for m in per:
            sel = [r for r in rows if r["degradation"] == deg and r["method"] == m]
            per[m] = {k: float(np.mean([r[k] for r in sel])) for k in metrics}
            per[m]["pairs"] = len(sel)
    return table
