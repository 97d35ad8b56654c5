"""Noise schedules: β_t, α_t and ᾱ_t (float64), the cosine and linear families, and respacing."""
from __future__ import annotations

import math
from typing import Callable, Sequence

import torch
from torch import Tensor

__all__ = ["NoiseSchedule", "cosine_schedule", "linear_schedule", "get_schedule", "SCHEDULES"]


# --------------------------------------------------------------------------------------------------
# Schedules
# --------------------------------------------------------------------------------------------------


class NoiseSchedule:
    """β_t, α_t = 1 − β_t and ᾱ_t = ∏_{s≤t} α_s as float64 tensors of length T.

    ``timesteps[i]`` is the timestep handed to the model at index i (identity unless respaced).
    """

    def __init__(self, betas: Tensor, timesteps: Tensor | None = None, name: str = "custom"):
        betas = torch.as_tensor(betas, dtype=torch.float64)
        if betas.ndim != 1 or betas.numel() == 0:
            raise ValueError("betas must be a non-empty 1-D tensor")
        if not bool(((betas > 0) & (betas <= 1)).all()):
            raise ValueError("betas must lie in (0, 1]")
        self.betas = betas
        self.alphas = 1.0 - betas
        self.alphas_cumprod = torch.cumprod(self.alphas, dim=0)
        if timesteps is None:
            timesteps = torch.arange(betas.numel(), device=betas.device)
        self.timesteps = torch.as_tensor(timesteps, dtype=torch.long, device=betas.device)
        if self.timesteps.shape != betas.shape:
            raise ValueError("timesteps must have one entry per beta")
        self.name = name

    @property
    def T(self) -> int:
        """Number of timesteps (indices 0 .. T−1)."""
        return int(self.betas.numel())

    def __len__(self) -> int:
        return self.T

    def __repr__(self) -> str:
        return f"NoiseSchedule(name={self.name!r}, T={self.T}, device={self.betas.device})"

    def to(self, device: torch.device | str) -> "NoiseSchedule":
        """A copy on ``device`` (still float64)."""
        return NoiseSchedule(self.betas.to(device), self.timesteps.to(device), self.name)

    def alpha_bar(self, t: int) -> float:
        """ᾱ_t as a Python float (float64); ᾱ_{−1} = 1 (the clean image)."""
        t = int(t)
        if t < 0:
            return 1.0
        return float(self.alphas_cumprod[t])

    def respace(self, use_timesteps: Sequence[int]) -> "NoiseSchedule":
        """Schedule over an increasing subset S of timesteps (improved-DDPM respacing).

        β'_i = 1 − ᾱ_{S_i}/ᾱ_{S_{i−1}} (ᾱ_{S_{−1}} = 1), so ᾱ'_i = ᾱ_{S_i} and the marginals q(x_{S_i}|x0)
        are unchanged; ``timesteps`` maps index i back to the model's timestep S_i.
        The samplers here do not need it (they step between arbitrary t → t_prev directly).
        """
        s = sorted({int(v) for v in use_timesteps})
        if not s or s[0] < 0 or s[-1] >= self.T:
            raise ValueError(f"timesteps must lie in [0, {self.T})")
        idx = torch.tensor(s, dtype=torch.long, device=self.betas.device)
        ab = self.alphas_cumprod[idx]
        ab_prev = torch.cat([ab.new_ones(1), ab[:-1]])
        betas = 1.0 - ab / ab_prev
        return NoiseSchedule(betas, self.timesteps[idx], name=f"{self.name}-respaced{len(s)}")


def cosine_schedule(T: int = 2000, s: float = 0.008, max_beta: float = 0.999) -> NoiseSchedule:
    """Nichol & Dhariwal cosine schedule: f(u) = cos²((u + s)/(1 + s)·π/2),
    β_t = min(1 − f((t+1)/T)/f(t/T), max_beta), hence ᾱ_t = f((t+1)/T)/f(0) wherever no β is clipped.
    """
    i = torch.arange(T, dtype=torch.float64)

    def f(u: Tensor) -> Tensor:
        return torch.cos((u + s) / (1 + s) * math.pi / 2) ** 2

    betas = (1.0 - f((i + 1) / T) / f(i / T)).clamp(max=max_beta)
    return NoiseSchedule(betas, name="cosine")


def linear_schedule(T: int = 2000, beta_start: float = 1e-4, beta_end: float = 0.02) -> NoiseSchedule:
    """Ho et al. linear β from ``beta_start`` to ``beta_end`` (not rescaled by 1000/T)."""
    return NoiseSchedule(torch.linspace(beta_start, beta_end, T, dtype=torch.float64), name="linear")


SCHEDULES: dict[str, Callable[..., NoiseSchedule]] = {
    "cosine": cosine_schedule,
    "linear": linear_schedule,
}


def get_schedule(name: str, T: int = 2000, **kwargs) -> NoiseSchedule:
    """Schedule by name (``"cosine"``, ``"linear"``); extra keywords go to its constructor."""
    try:
        fn = SCHEDULES[name]
    except KeyError:
        raise ValueError(f"unknown schedule {name!r}; available: {sorted(SCHEDULES)}") from None
    return fn(T, **kwargs)
