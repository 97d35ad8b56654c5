"""Notebook 05 (few-step sampling): one deterministic DDIM step, and the timesteps a k-step sampler visits."""
from __future__ import annotations

import math
from typing import Callable, Sequence

import torch

from ..diffusion import NoiseSchedule, cosine_schedule, ddim_step, posterior_mean_step, predict_x0_eps
from ._core import ExerciseError, grader, reference

__all__ = ["ddim_update", "few_step_timesteps", "check_ddim_update", "check_few_step_timesteps",
           "sample_with"]

# (t, t_prev) jumps the DDIM check tries: long and short ones, and the last step to the clean image
_JUMPS = ((1999, 1499), (1200, 400), (300, 0), (150, -1), (1, 0))


@reference
def ddim_update(x_t: torch.Tensor, x0_hat: torch.Tensor, schedule: NoiseSchedule, t: int, t_prev: int
                ) -> torch.Tensor:
    """One deterministic DDIM step (η = 0) from t to any earlier t_prev (−1: the clean image), given the
    sample ``x_t`` and the network's ``x0_hat`` (both ``[B, C, H, W]``): recover the noise the pair implies,
    ε̂ = (x_t − √ᾱ_t·x̂0)/√(1−ᾱ_t), and re-noise x̂0 with it to level t_prev:
    x_{t_prev} = √ᾱ_{t_prev}·x̂0 + √(1−ᾱ_{t_prev})·ε̂ (ᾱ_{−1} = 1)."""
    ab, ab_prev = schedule.alpha_bar(t), schedule.alpha_bar(t_prev)
    eps = (x_t - math.sqrt(ab) * x0_hat) / math.sqrt(1 - ab)
    return math.sqrt(ab_prev) * x0_hat + math.sqrt(1 - ab_prev) * eps


@reference
def few_step_timesteps(T: int, steps: int) -> list[int]:
    """The ``steps`` timesteps a few-step sampler visits, decreasing and evenly spaced from T−1 (where
    x_T ~ N(0, I) is the right start) down to 0 (the least noisy step, whose x̂0 is the answer);
    ``steps = 1`` visits T−1 only."""
    if steps == 1:
        return [T - 1]
    return [round((T - 1) * (1 - k / (steps - 1))) for k in range(steps)]


def _tensors(seed: int, shape=(2, 1, 6, 7)) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(shape, generator=g, dtype=torch.float64), torch.rand(shape, generator=g, dtype=torch.float64) * 2 - 1


def _close(a: torch.Tensor, b: torch.Tensor) -> bool:
    return torch.allclose(a, b, rtol=1e-5, atol=1e-6)


@grader()
def check_ddim_update(fn: Callable, schedule: NoiseSchedule | None = None) -> str:
    """Compare ``fn(x_t, x0_hat, schedule, t, t_prev)`` with the library's ``ddim_step`` (η = 0) on long
    jumps, short ones and the final step to t_prev = −1; the message names the slip it recognises."""
    sch = schedule or cosine_schedule(2000)
    for i, (t, tp) in enumerate(_JUMPS):
        x_t, x0 = _tensors(i)
        ab, abp = sch.alpha_bar(t), sch.alpha_bar(tp)
        _, eps = predict_x0_eps(x0, x_t, t, sch, "x0", clip=False)
        want = ddim_step(x0, eps, sch, t, tp)
        got = fn(x_t.clone(), x0.clone(), sch, t, tp)
        where = f"step {t} → {tp} (ᾱ_t = {ab:.4g}, ᾱ_t_prev = {abp:.4g})"
        if not isinstance(got, torch.Tensor) or tuple(got.shape) != tuple(want.shape):
            shape = tuple(got.shape) if isinstance(got, torch.Tensor) else type(got).__name__
            raise ExerciseError(f"{where}: return x_t_prev shaped like x_t {tuple(want.shape)}, got {shape}")
        got = got.to(want.dtype)
        if _close(got, want):
            continue
        last = float(sch.alphas_cumprod[-1])
        e_last = (x_t - math.sqrt(ab) * x0) / math.sqrt(1 - ab)
        slips = [
            x_t, "your step returns x_t unchanged: both halves use the same ᾱ. ε̂ is read off x_t, so it needs "
            "ᾱ_t; the re-noising goes to the level you jump *to*, so it needs ᾱ_t_prev",
            math.sqrt(ab) * x0 + math.sqrt(1 - ab) * (x_t - math.sqrt(abp) * x0) / math.sqrt(1 - abp),
            "ᾱ_t and ᾱ_t_prev are swapped: ε̂ = (x_t − √ᾱ_t·x̂0)/√(1−ᾱ_t) uses the level of x_t, the re-noising "
            "√ᾱ_t_prev·x̂0 + √(1−ᾱ_t_prev)·ε̂ the level you jump to",
            abp * x0 + (1 - abp) * eps, "square roots are missing: √ᾱ_t_prev·x̂0 + √(1−ᾱ_t_prev)·ε̂",
            math.sqrt(abp) * x0 + math.sqrt(1 - abp) * (x_t - ab * x0) / (1 - ab),
            "square roots are missing in ε̂ = (x_t − √ᾱ_t·x̂0)/√(1−ᾱ_t)",
            math.sqrt(abp) * x0 + math.sqrt(1 - abp) * (x_t - math.sqrt(ab) * x0),
            "ε̂ must be divided by √(1−ᾱ_t)",
            math.sqrt(abp) * x0 - math.sqrt(1 - abp) * eps, "the sign of the noise term",
            posterior_mean_step(x_t, x0, sch, t, tp) if tp >= 0 else None,
            "this is the posterior mean of the paper's Eq. 6 (notebook 03), not DDIM: DDIM puts *all* of ε̂ back, "
            "with weight √(1−ᾱ_t_prev)",
            math.sqrt(last) * x0 + math.sqrt(1 - last) * e_last if tp == -1 else None,
            "at t_prev = −1 you read alphas_cumprod[-1], which Python takes as the *last* entry "
            f"(ᾱ_T−1 = {last:.2g}); the clean image has ᾱ_−1 = 1: use schedule.alpha_bar(t_prev)",
        ]
        for cand, hint in zip(slips[::2], slips[1::2]):
            if cand is not None and _close(got, cand):
                raise ExerciseError(f"{where}: {hint}")
        err = float((got - want).abs().max())
        raise ExerciseError(f"{where}: your x_t_prev differs from the library's by up to {err:.3g}; "
                            "first ε̂ = (x_t − √ᾱ_t·x̂0)/√(1−ᾱ_t), then √ᾱ_t_prev·x̂0 + √(1−ᾱ_t_prev)·ε̂")
    return "correct: your step equals the library's DDIM step on long and short jumps and on the last step to x0"


@grader()
def check_few_step_timesteps(fn: Callable) -> str:
    """Check what a k-step schedule must be, not one rounding convention: ``steps`` whole numbers,
    strictly decreasing, from T−1 to 0, gaps that differ by at most one."""
    for T, steps in ((2000, 10), (2000, 3), (1000, 7), (50, 50), (2000, 1), (2000, 2), (10, 4)):
        got = fn(T, steps)
        where = f"T = {T}, steps = {steps}"
        try:
            seq = [int(v) for v in got]
        except (TypeError, ValueError):
            raise ExerciseError(f"{where}: return a list of whole numbers, got {got!r}") from None
        if any(float(v) != int(v) for v in got):
            raise ExerciseError(f"{where}: {list(got)} holds fractions: a timestep is an index, round it")
        if len(seq) != steps:
            raise ExerciseError(f"{where}: {len(seq)} timesteps instead of {steps} (one network evaluation each)")
        if steps > 1 and seq == sorted(seq):
            raise ExerciseError(f"{where}: {seq[:4]}… increases: sampling runs from noise (t = T−1) down to 0")
        if seq[0] != T - 1:
            hint = ("T itself is not a timestep (they are 0 … T−1)" if seq[0] == T else
                    "start at the noisiest step T−1: only there is x_T ~ N(0, I) what the network expects "
                    "(a stride of T/steps from 0, like range(0, T, T // steps), never reaches it)")
            raise ExerciseError(f"{where}: the first timestep is {seq[0]}; {hint}")
        if steps > 1 and seq[-1] != 0:
            raise ExerciseError(f"{where}: the last timestep is {seq[-1]}: end at t = 0, the least noisy step, "
                                "whose x̂0 is the sampler's answer")
        gaps = [a - b for a, b in zip(seq, seq[1:])]
        if gaps and min(gaps) <= 0:
            raise ExerciseError(f"{where}: {seq} repeats or goes back up: each step must jump to a smaller t")
        if gaps and max(gaps) - min(gaps) > 1:
            raise ExerciseError(f"{where}: the gaps {gaps[:6]}… are uneven: space the steps evenly over 0 … T−1 "
                                "(gaps differ by at most one after rounding)")
    return "correct: evenly spaced from T−1 down to 0, for every T and number of steps tried"


@torch.no_grad()
def sample_with(update: Callable, timesteps: Sequence[int], model: Callable, cond: torch.Tensor,
                x_T: torch.Tensor, schedule: NoiseSchedule, prediction: str = "weights") -> torch.Tensor:
    """A bare sampling loop built from the exercises: at each visited t ask ``model`` for x̂0 (clamped,
    as the library's samplers do by default) and take ``update(x_t, x̂0, schedule, t, t_prev)``.
    ``x_T``, ``cond``: ``[B, C, H, W]``, ``[B, 2C, H, W]``; returns the last x̂0 ``[B, C, H, W]``."""
    x = x_T
    seq = [int(v) for v in timesteps]
    for t, tp in zip(seq, seq[1:] + [-1]):
        out = model(x, schedule.timesteps[t].repeat(x.shape[0]).to(x.device), cond)
        x0_hat, _ = predict_x0_eps(out, x, t, schedule, prediction, clip=True, cond=cond)
        x = update(x, x0_hat, schedule, t, tp)
    return x
