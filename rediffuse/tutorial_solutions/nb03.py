"""Notebook 03 (the diffusion model): x̂0 from a noise prediction, and one step of the DDPM posterior."""
from __future__ import annotations

import math
from typing import Callable

import torch

from ..diffusion import NoiseSchedule, cosine_schedule, posterior_coefficients, posterior_mean_step, predict_x0_eps
from ._core import ExerciseError, grader, reference

__all__ = ["x0_from_eps", "posterior_step", "check_x0_from_eps", "check_posterior_step"]

# timesteps of the T = 2000 cosine schedule at which the checks compare; far enough apart that every
# typical slip (ᾱ_t for ᾱ_{t−1}, a lost square root, β_t for the posterior variance) changes the numbers
_CHECK_T = (1, 40, 500, 1200, 1800)


@reference
def x0_from_eps(x_t: torch.Tensor, eps: torch.Tensor, alpha_bar: float) -> torch.Tensor:
    """The clean image implied by ``x_t`` and a noise estimate ``eps`` (both ``[B, C, H, W]``) at a step
    with signal fraction ᾱ_t = ``alpha_bar``: x̂0 = (x_t − √(1−ᾱ_t)·ε̂)/√ᾱ_t (the forward process solved
    for x0). No clamp: the sampler decides that."""
    return (x_t - math.sqrt(1.0 - alpha_bar) * eps) / math.sqrt(alpha_bar)


@reference
def posterior_step(x_t: torch.Tensor, x0_hat: torch.Tensor, schedule: NoiseSchedule, t: int
                   ) -> tuple[torch.Tensor, float]:
    """Mean ``[B, C, H, W]`` and variance (a float) of q(x_{t−1} | x_t, x0 = x̂0), for 1 ≤ t ≤ T−1:
    μ = √ᾱ_{t−1}·β_t/(1−ᾱ_t)·x̂0 + √α_t·(1−ᾱ_{t−1})/(1−ᾱ_t)·x_t,  σ̃² = β_t·(1−ᾱ_{t−1})/(1−ᾱ_t)."""
    beta = float(schedule.betas[t])
    ab, ab_prev = schedule.alpha_bar(t), schedule.alpha_bar(t - 1)
    mean = (math.sqrt(ab_prev) * beta / (1 - ab)) * x0_hat + (math.sqrt(1 - beta) * (1 - ab_prev) / (1 - ab)) * x_t
    return mean, beta * (1 - ab_prev) / (1 - ab)


def _tensors(seed: int, shape=(2, 1, 6, 7)) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(shape, generator=g, dtype=torch.float64), torch.randn(shape, generator=g, dtype=torch.float64)


def _as_tensor(got, want: torch.Tensor, what: str) -> torch.Tensor:
    if not isinstance(got, torch.Tensor):
        raise ExerciseError(f"{what}: return a tensor shaped like x_t {tuple(want.shape)}, got {type(got).__name__}")
    if tuple(got.shape) != tuple(want.shape):
        raise ExerciseError(f"{what}: expected shape {tuple(want.shape)} (like x_t), got {tuple(got.shape)}")
    return got.to(want.dtype)


def _close(a: torch.Tensor, b: torch.Tensor) -> bool:
    return torch.allclose(a, b, rtol=1e-5, atol=1e-6)


@grader()
def check_x0_from_eps(fn: Callable, schedule: NoiseSchedule | None = None) -> str:
    """Compare ``fn(x_t, eps, alpha_bar)`` with the library's ``predict_x0_eps`` (ε-prediction, no clamp)
    at several timesteps of the cosine schedule; the message names the slip it recognises."""
    sch = schedule or cosine_schedule(2000)
    for i, t in enumerate(_CHECK_T):
        x_t, eps = _tensors(i)
        ab = sch.alpha_bar(t)
        want, _ = predict_x0_eps(eps, x_t, t, sch, "eps", clip=False)
        got = _as_tensor(fn(x_t.clone(), eps.clone(), ab), want, f"t = {t}")
        if _close(got, want):
            continue
        a, s = math.sqrt(ab), math.sqrt(1 - ab)
        slips = [
            ((x_t - s * eps) / a).clamp(-1, 1), "you clamp x̂0 to [−1, 1]: leave that to the sampler (it is the "
            "option this notebook and notebook 05 study); here return the estimate as it is",
            (x_t - a * eps) / s, "√ᾱ_t and √(1−ᾱ_t) have swapped places: x_t = √ᾱ_t·x0 + √(1−ᾱ_t)·ε, so the "
            "noise is scaled by √(1−ᾱ_t) and the result divided by √ᾱ_t",
            (x_t - (1 - ab) * eps) / ab, "a square root is missing: the coefficients are √ᾱ_t and √(1−ᾱ_t), "
            "not ᾱ_t and 1−ᾱ_t (ᾱ_t is a fraction of the *variance*)",
            (x_t - s * eps) / ab, "divide by √ᾱ_t, not by ᾱ_t",
            (x_t - (1 - ab) * eps) / a, "scale the noise by √(1−ᾱ_t), not by 1−ᾱ_t",
            (x_t + s * eps) / a, "the sign of the noise term: x0 = (x_t − √(1−ᾱ_t)·ε)/√ᾱ_t",
            x_t - s * eps, "you forgot to divide by √ᾱ_t (the signal was scaled down by √ᾱ_t in the forward process)",
            a * (x_t - s * eps), "multiply → divide: the forward process scaled x0 *down* by √ᾱ_t",
        ]
        for cand, hint in zip(slips[::2], slips[1::2]):
            if _close(got, cand):
                raise ExerciseError(f"t = {t} (ᾱ_t = {ab:.4g}): {hint}")
        err = float((got - want).abs().max())
        raise ExerciseError(f"t = {t} (ᾱ_t = {ab:.4g}): your x̂0 differs from the library's by up to {err:.3g}; "
                            "solve x_t = √ᾱ_t·x0 + √(1−ᾱ_t)·ε for x0")
    return f"correct: your x̂0 equals the library's at t = {', '.join(map(str, _CHECK_T))}"


@grader()
def check_posterior_step(fn: Callable, schedule: NoiseSchedule | None = None) -> str:
    """Compare ``fn(x_t, x0_hat, schedule, t)`` → ``(mean, variance)`` with the library's
    ``posterior_coefficients`` / ``posterior_mean_step`` (the update of the paper's Eq. 6)."""
    sch = schedule or cosine_schedule(2000)
    for i, t in enumerate(_CHECK_T):
        x_t, x0 = _tensors(10 + i)
        _, _, var = posterior_coefficients(sch, t, t - 1)
        want = posterior_mean_step(x_t, x0, sch, t, t - 1)
        got = fn(x_t.clone(), x0.clone(), sch, t)
        if not (isinstance(got, tuple) and len(got) == 2):
            raise ExerciseError("return two things: (mean, variance)")
        mean = _as_tensor(got[0], want, f"t = {t}, the mean")
        try:
            v = float(got[1])
        except (TypeError, ValueError):
            raise ExerciseError(f"t = {t}: the variance should be one number (the same for every pixel), "
                                f"got {type(got[1]).__name__}") from None
        beta, ab, abp = float(sch.betas[t]), sch.alpha_bar(t), sch.alpha_bar(t - 1)
        where = f"t = {t} (ᾱ_t = {ab:.4g}, ᾱ_{{t−1}} = {abp:.4g}, β_t = {beta:.3g})"
        if not _close(mean, want):
            def mu(c0, ct):
                return c0 * x0 + ct * x_t

            c0, ct = math.sqrt(abp) * beta / (1 - ab), math.sqrt(1 - beta) * (1 - abp) / (1 - ab)
            eps = (x_t - math.sqrt(ab) * x0) / math.sqrt(1 - ab)
            slips = [
                mu(math.sqrt(ab) * beta / (1 - abp), math.sqrt(1 - beta) * (1 - ab) / (1 - abp)),
                "ᾱ_t and ᾱ_{t−1} are swapped: the step goes from t to t−1, so the x̂0 weight has √ᾱ_{t−1} on top "
                "and every denominator is 1−ᾱ_t (the noisier of the two)",
                mu(abp * beta / (1 - ab), ct), "a square root is missing in the x̂0 weight: √ᾱ_{t−1}, not ᾱ_{t−1}",
                mu(c0, (1 - beta) * (1 - abp) / (1 - ab)), "a square root is missing in the x_t weight: √α_t = "
                "√(1−β_t), not α_t",
                mu(abp * beta / (1 - ab), (1 - beta) * (1 - abp) / (1 - ab)), "both square roots are missing: "
                "√ᾱ_{t−1} on x̂0 and √α_t on x_t",
                mu(ct, c0), "the two weights are swapped: x̂0 gets √ᾱ_{t−1}·β_t/(1−ᾱ_t), x_t gets "
                "√α_t·(1−ᾱ_{t−1})/(1−ᾱ_t)",
                mu(c0, 0.0), "the x_t term is missing: the posterior mean blends x̂0 *and* the current sample",
                math.sqrt(abp) * x0 + math.sqrt(1 - abp) * eps,
                "this is the deterministic DDIM step √ᾱ_{t−1}·x̂0 + √(1−ᾱ_{t−1})·ε̂ (notebook 05), not the "
                "posterior mean: DDIM keeps all of the current noise estimate, the posterior mean less",
            ]
            for cand, hint in zip(slips[::2], slips[1::2]):
                if _close(mean, cand):
                    raise ExerciseError(f"{where}: the mean is wrong — {hint}")
            err = float((mean - want).abs().max())
            raise ExerciseError(f"{where}: your mean differs from the library's by up to {err:.3g}; it is "
                                "√ᾱ_{t−1}·β_t/(1−ᾱ_t)·x̂0 + √α_t·(1−ᾱ_{t−1})/(1−ᾱ_t)·x_t")
        if not math.isclose(v, var, rel_tol=1e-6, abs_tol=1e-12):
            slips = [
                (beta, "β_t is the variance of the forward step q(x_t | x_{t−1}) (and DDPM's upper choice σ_t² = "
                       "β_t); the posterior's is smaller: β̃_t = β_t·(1−ᾱ_{t−1})/(1−ᾱ_t)"),
                (beta * (1 - ab) / (1 - abp), "the fraction is upside down: β̃_t = β_t·(1−ᾱ_{t−1})/(1−ᾱ_t)"),
                (math.sqrt(var), "that is the standard deviation: return the variance β̃_t (no square root)"),
                ((1 - abp) / (1 - ab), "β_t is missing from the variance: β̃_t = β_t·(1−ᾱ_{t−1})/(1−ᾱ_t)"),
            ]
            for cand, hint in slips:
                if math.isclose(v, cand, rel_tol=1e-6):
                    raise ExerciseError(f"{where}: the mean is right, the variance is not — {hint}")
            raise ExerciseError(f"{where}: the mean is right; your variance {v:.6g} should be {var:.6g} "
                                "= β_t·(1−ᾱ_{t−1})/(1−ᾱ_t)")
    return (f"correct: mean and variance equal the library's posterior at t = {', '.join(map(str, _CHECK_T))} "
            "(the paper's Eq. 6 takes the mean and drops the noise)")
