"""The fusion pipeline: a trained U-Net + a sampler, applied to the luminance of a focus stack.

Colour images are fused in YCbCr: Y by the model, Cb/Cr by the saturation-weighted rule of the
paper (``data.fuse_chroma``). Stacks of more than two images are folded pairwise: ((I₁ ⊕ I₂) ⊕ I₃) ….
"""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from .data import luminance, recombine
from .diffusion import get_sampler, get_schedule
from .paths import REPO_ROOT
from .train import load_model

__all__ = ["FusionModel", "DEFAULT_CHECKPOINT", "fuse"]

DEFAULT_CHECKPOINT = REPO_ROOT / "checkpoints" / "rediffuse-weights-bconv.pt"


class FusionModel:
    """A loaded checkpoint with its diffusion settings; ``fuse_y`` fuses two luminance tensors."""

    def __init__(self, checkpoint: str | Path | None = None, device: str = "cpu", ema: bool = True):
        path = Path(checkpoint) if checkpoint else DEFAULT_CHECKPOINT
        self.model, cfg = load_model(path, ema=ema, map_location=device)
        self.model.to(device)
        self.device = device
        self.path = path
        self.prediction = cfg.get("prediction", "eps")
        self.schedule = get_schedule(cfg.get("schedule", "cosine"), cfg.get("T", 2000)).to(device)

    def default_sampler(self) -> tuple[str, int]:
        """Few-step DDIM for image/weight predictions; the paper's full sampler for ε-prediction."""
        return ("posterior_mean", self.schedule.T) if self.prediction == "eps" else ("x0_regression", 3)

    @torch.no_grad()
    def fuse_y(self, y_a: torch.Tensor, y_b: torch.Tensor, sampler: str | None = None, steps: int | None = None,
               seed: int = 0, progress: bool = False) -> torch.Tensor:
        """Fuse ``[B, 1, H, W]`` luminances in [-1, 1]; returns ``[B, 1, H, W]`` in [-1, 1]."""
        name, k = self.default_sampler()
        sampler, steps = sampler or name, steps or k
        cond = torch.cat([y_a, y_b], 1).to(self.device)
        g = torch.Generator(device="cpu").manual_seed(seed)
        return get_sampler(sampler)(self.model, cond, y_a.shape, self.schedule, steps, generator=g,
                                    progress=progress, prediction=self.prediction)


def _to_y(img: np.ndarray) -> np.ndarray:
    return luminance(img) if img.ndim == 3 else img.astype(np.float64)


def fuse(images: Sequence[np.ndarray], model: FusionModel | str | Path | None = None, *, sampler: str | None = None,
         steps: int | None = None, seed: int = 0, device: str = "cpu") -> np.ndarray:
    """Fuse a focus stack of uint8 images (all grey ``[H, W]`` or all colour ``[H, W, 3]``)."""
    if len(images) < 2:
        raise ValueError(f"need at least two images to fuse, got {len(images)}")
    shapes = {im.shape for im in images}
    if len(shapes) != 1:
        raise ValueError(f"images differ in size {sorted(shapes)}; register or resize them to one size first")
    fm = model if isinstance(model, FusionModel) else FusionModel(model, device=device)

    def to_t(y):
        return torch.from_numpy(y / 127.5 - 1.0).float()[None, None]

    fused = to_t(_to_y(images[0]))
    for img in images[1:]:
        fused = fm.fuse_y(fused, to_t(_to_y(img)), sampler, steps, seed)
    y = (fused[0, 0].double().cpu().numpy() + 1.0) * 127.5
    if images[0].ndim == 2:
        return np.clip(np.rint(y), 0, 255).astype(np.uint8)
    return recombine(y, list(images))
