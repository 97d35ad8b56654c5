"""Samplers: one reverse step (posterior mean, DDIM), the sampling loop and the named samplers, the
timesteps they visit, a trajectory recorder, and the DDNM observation-consistency correction."""
from __future__ import annotations

import math
import numbers
from typing import Callable, NamedTuple, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor
from tqdm.auto import tqdm

from .process import Model, _clamp_pair, _converter, _randn, predict_x0_eps, q_sample
from .schedules import NoiseSchedule

__all__ = ["sampling_timesteps", "check_timesteps", "posterior_coefficients", "ddim_coefficients",
           "posterior_mean_step", "ddim_step", "posterior_mean_sampler", "ddim_sampler", "x0_regression_sampler",
           "SAMPLERS", "get_sampler", "ddnm_lambda", "make_ddnm_correction", "SamplerStep", "Trajectory",
           "x0_prediction_error", "CorrectFn", "StepFn"]


CorrectFn = Callable[[Tensor, int], Tensor]


class SamplerStep(NamedTuple):
    """What a sampler saw at one visited timestep (tensors ``[B, C, H, W]``, not copied).

    ``x_t``: the state entering the step; ``x0_unclipped``: x̂0 as the network's output implies it;
    ``x0_hat``: the x̂0 the update used (after the clamp and any correction); ``x_prev``: the state
    the update produced (at ``t_prev = −1`` it equals ``x0_hat``).
    """

    t: int
    t_prev: int
    x_t: Tensor
    x0_unclipped: Tensor
    x0_hat: Tensor
    x_prev: Tensor


StepFn = Callable[[SamplerStep], None]


# --------------------------------------------------------------------------------------------------
# One reverse step (t → t_prev, any jump; t_prev = −1 means "the clean image")
# --------------------------------------------------------------------------------------------------


def sampling_timesteps(T: int, steps: int | None = None) -> list[int]:
    """Decreasing timesteps the samplers visit: ``steps`` values evenly spaced from T−1 down to 0
    (rounded; steps=1 gives [T−1], steps=T gives every step). The step after the last is −1.

    The one place a number of steps is validated and converted (``FusionModel.settings`` stores the
    result; the samplers take it as ``timesteps``)."""
    if steps is None:
        steps = T
    if isinstance(steps, bool) or not isinstance(steps, numbers.Integral) or not 1 <= steps <= T:
        raise ValueError(f"steps must be a whole number from 1 to {T} (the model's T), got {steps!r}")
    steps = int(steps)
    if steps == 1:
        return [T - 1]
    # spacing (T−1)/(steps−1) ≥ 1, so rounding keeps the values distinct
    return [int(round((T - 1) * (1 - k / (steps - 1)))) for k in range(steps)]


def check_timesteps(schedule: "NoiseSchedule", timesteps: Sequence[int]) -> list[int]:
    """``timesteps`` as a list of ints, checked: strictly decreasing, within ``[0, schedule.T)``."""
    ts = [int(t) for t in timesteps]
    if not ts or any(a <= b for a, b in zip(ts, ts[1:])) or ts[-1] < 0 or ts[0] >= schedule.T:
        raise ValueError(f"timesteps must decrease within [0, {schedule.T}), got {list(timesteps)}")
    return ts


def _visit(schedule: "NoiseSchedule", steps: int | None, timesteps: Sequence[int] | None) -> list[int]:
    """What a sampler visits: ``timesteps`` when given (computed once by the caller, as diffusers'
    ``set_timesteps`` does), else ``steps`` spread by :func:`sampling_timesteps`."""
    return sampling_timesteps(schedule.T, steps) if timesteps is None else check_timesteps(schedule, timesteps)


def posterior_coefficients(schedule: NoiseSchedule, t: int, t_prev: int | None = None):
    """Mean and variance of q(x_{t_prev} | x_t, x0) = N(c_x0·x0 + c_xt·x_t, var), as floats.

    With β = 1 − ᾱ_t/ᾱ_prev (the respaced β of a jump; β_t itself when t_prev = t − 1):
    c_x0 = √ᾱ_prev β/(1−ᾱ_t), c_xt = √(1−β)(1−ᾱ_prev)/(1−ᾱ_t), var = β(1−ᾱ_prev)/(1−ᾱ_t).
    """
    t_prev = t - 1 if t_prev is None else t_prev
    ab, ab_p = schedule.alpha_bar(t), schedule.alpha_bar(t_prev)
    if t_prev == t - 1 and t >= 0:
        beta = float(schedule.betas[t])  # exact β_t for single steps
    else:
        beta = 1.0 - ab / ab_p
    c_x0 = math.sqrt(ab_p) * beta / (1.0 - ab)
    c_xt = math.sqrt(1.0 - beta) * (1.0 - ab_p) / (1.0 - ab)
    var = beta * (1.0 - ab_p) / (1.0 - ab)
    return c_x0, c_xt, var


def ddim_coefficients(schedule: NoiseSchedule, t: int, t_prev: int, eta: float = 0.0):
    """Generalised DDIM: x_prev = c_x0·x̂0 + c_eps·ε̂ + σ·z (floats), with
    σ = η √((1−ᾱ_prev)/(1−ᾱ_t)) √(1 − ᾱ_t/ᾱ_prev), c_x0 = √ᾱ_prev, c_eps = √(1−ᾱ_prev−σ²).
    η = 0: deterministic DDIM; η = 1 with every step: the DDPM posterior (ancestral sampling)."""
    ab, ab_p = schedule.alpha_bar(t), schedule.alpha_bar(t_prev)
    sigma = eta * math.sqrt((1.0 - ab_p) / (1.0 - ab)) * math.sqrt(max(1.0 - ab / ab_p, 0.0))
    c_eps = math.sqrt(max(1.0 - ab_p - sigma**2, 0.0))
    return math.sqrt(ab_p), c_eps, sigma


def posterior_mean_step(x_t: Tensor, x0_hat: Tensor, schedule: NoiseSchedule, t: int, t_prev: int) -> Tensor:
    """Mean of q(x_{t_prev} | x_t, x̂0) — the paper's Eq. 6 update (no noise added)."""
    if t_prev < 0:
        return x0_hat
    c_x0, c_xt, _ = posterior_coefficients(schedule, t, t_prev)
    return c_x0 * x0_hat + c_xt * x_t


def ddim_step(
    x0_hat: Tensor,
    eps_hat: Tensor,
    schedule: NoiseSchedule,
    t: int,
    t_prev: int,
    eta: float = 0.0,
    noise: Tensor | None = None,
) -> Tensor:
    """x_prev = √ᾱ_prev x̂0 + √(1−ᾱ_prev−σ²) ε̂ + σ z. ``noise`` (z) is needed only when σ > 0."""
    if t_prev < 0:
        return x0_hat
    c_x0, c_eps, sigma = ddim_coefficients(schedule, t, t_prev, eta)
    x = c_x0 * x0_hat + c_eps * eps_hat
    if sigma > 0:
        if noise is None:
            raise ValueError("ddim_step with eta > 0 needs noise")
        x = x + sigma * noise
    return x


# --------------------------------------------------------------------------------------------------
# Samplers
# --------------------------------------------------------------------------------------------------


# update(x_t, x̂0, ε̂, t, t_prev, generator) -> x_{t_prev}
_Update = Callable[[Tensor, Tensor, Tensor, int, int, "torch.Generator | None"], Tensor]


def _sample_loop(
    model: Model,
    cond: Tensor,
    shape: Sequence[int],
    schedule: NoiseSchedule,
    timesteps: list[int],
    update: _Update,
    *,
    generator: torch.Generator | None,
    clip: bool,
    progress: bool,
    prediction: str,
    correct: CorrectFn | None,
    x_T: Tensor | None,
    grad: bool,
    on_step: StepFn | None = None,
) -> Tensor:
    _converter(prediction)  # fail early on a bad name
    device = cond.device
    dtype = cond.dtype if cond.is_floating_point() else torch.get_default_dtype()
    shape = tuple(shape)
    if shape[0] != cond.shape[0]:
        raise ValueError(f"batch size of shape {shape} does not match cond {tuple(cond.shape)}")
    x = _randn(shape, generator, device, dtype) if x_T is None else x_T.to(device, dtype)
    model_t = schedule.timesteps.to(device)
    pairs = list(zip(timesteps, timesteps[1:] + [-1]))
    if progress:
        pairs = tqdm(pairs, desc="sampling", leave=False)
    with torch.set_grad_enabled(grad):
        for t, t_prev in pairs:
            tt = model_t[t].repeat(shape[0])
            out = model(x, tt, cond)
            x0_raw, eps_raw = predict_x0_eps(out, x, t, schedule, prediction, clip=False, cond=cond)
            x0_hat, eps_hat = _clamp_pair(x0_raw, eps_raw, x, t, schedule) if clip else (x0_raw, eps_raw)
            if correct is not None:
                # the hook changes x̂0 only; ε̂ stays the network's (as in DDNM)
                x0_hat = correct(x0_hat, t)
            x_prev = update(x, x0_hat, eps_hat, t, t_prev, generator)
            if on_step is not None:
                on_step(SamplerStep(int(t), int(t_prev), x, x0_raw, x0_hat, x_prev))
            x = x_prev
    return x


def posterior_mean_sampler(
    model: Model,
    cond: Tensor,
    shape: Sequence[int],
    schedule: NoiseSchedule,
    steps: int | None = None,
    generator: torch.Generator | None = None,
    clip: bool = True,
    progress: bool = False,
    *,
    prediction: str = "eps",
    correct: CorrectFn | None = None,
    x_T: Tensor | None = None,
    grad: bool = False,
    on_step: StepFn | None = None,
    timesteps: Sequence[int] | None = None,
) -> Tensor:
    """ReDiffuse/FusionDiff sampling (paper Eq. 6): from x_T ~ N(0, I), at each t predict x̂0, clamp it
    to [−1, 1] (``clip``, the official code's default; ``clip=False`` is Eq. 6 as printed), optionally
    ``correct(x̂0, t)``, and move to the posterior mean of q(x_{t_prev} | x_t, x̂0) with no noise.
    ``steps=None`` visits all T steps; fewer steps use the strided timesteps of
    :func:`sampling_timesteps` with respaced β's; ``timesteps`` (decreasing) gives them directly and
    then ``steps`` is not used. Returns x̂0 of the last step, [B, C, H, W].
    The generator is used only for x_T; ``on_step`` sees every step (:class:`SamplerStep`)."""

    def update(x, x0_hat, eps_hat, t, t_prev, gen):
        return posterior_mean_step(x, x0_hat, schedule, t, t_prev)

    return _sample_loop(
        model, cond, shape, schedule, _visit(schedule, steps, timesteps), update,
        generator=generator, clip=clip, progress=progress, prediction=prediction,
        correct=correct, x_T=x_T, grad=grad, on_step=on_step,
    )


def ddim_sampler(
    model: Model,
    cond: Tensor,
    shape: Sequence[int],
    schedule: NoiseSchedule,
    steps: int = 50,
    generator: torch.Generator | None = None,
    clip: bool = True,
    progress: bool = False,
    *,
    eta: float = 0.0,
    prediction: str = "eps",
    correct: CorrectFn | None = None,
    x_T: Tensor | None = None,
    grad: bool = False,
    on_step: StepFn | None = None,
    timesteps: Sequence[int] | None = None,
) -> Tensor:
    """Generalised DDIM over ``steps`` evenly spaced timesteps T−1 … 0 (any 1 ≤ steps ≤ T).
    η = 0 is deterministic given x_T; η > 0 draws z each step from ``generator``. ``clip`` and
    ``on_step`` as in :func:`posterior_mean_sampler`."""
    def update(x, x0_hat, eps_hat, t, t_prev, gen):
        z = None
        if t_prev >= 0 and ddim_coefficients(schedule, t, t_prev, eta)[2] > 0:
            z = _randn(x.shape, gen, x.device, x.dtype)
        return ddim_step(x0_hat, eps_hat, schedule, t, t_prev, eta, z)

    return _sample_loop(
        model, cond, shape, schedule, _visit(schedule, steps, timesteps), update,
        generator=generator, clip=clip, progress=progress, prediction=prediction,
        correct=correct, x_T=x_T, grad=grad, on_step=on_step,
    )


def x0_regression_sampler(
    model: Model,
    cond: Tensor,
    shape: Sequence[int],
    schedule: NoiseSchedule,
    steps: int = 3,
    generator: torch.Generator | None = None,
    clip: bool = True,
    progress: bool = False,
    *,
    prediction: str = "x0",
    correct: CorrectFn | None = None,
    x_T: Tensor | None = None,
    grad: bool = False,
    on_step: StepFn | None = None,
    timesteps: Sequence[int] | None = None,
) -> Tensor:
    """DRFusion-style few-step sampling: the model regresses x̂0 directly, ``correct`` (e.g. a
    range–null-space projection and the fusion constraint) is applied to x̂0, and the state is
    re-noised deterministically, z_{t−1} = √ᾱ_{t−1} x̂0 + √(1−ᾱ_{t−1}) ε̂ (DDIM, η = 0)."""
    return ddim_sampler(
        model, cond, shape, schedule, steps, generator, clip, progress,
        eta=0.0, prediction=prediction, correct=correct, x_T=x_T, grad=grad, on_step=on_step, timesteps=timesteps,
    )


SAMPLERS: dict[str, Callable[..., Tensor]] = {
    "posterior_mean": posterior_mean_sampler,
    "ddim": ddim_sampler,
    "x0_regression": x0_regression_sampler,
}


def get_sampler(name: str) -> Callable[..., Tensor]:
    """Sampler by name: ``"posterior_mean"``, ``"ddim"``, ``"x0_regression"``."""
    try:
        return SAMPLERS[name]
    except KeyError:
        raise ValueError(f"unknown sampler {name!r}; available: {sorted(SAMPLERS)}") from None


class Trajectory:
    """An ``on_step`` hook that records a sampling run: per visited step the timestep, the fraction
    of x̂0 values the clamp would move (outside [−1, 1]) and the largest |x̂0| before the clamp; and,
    at the steps chosen by ``keep``, CPU copies of x_t and x̂0 (as used) for figures.

    ``keep``: ``None`` keeps every step's tensors; an int k keeps k steps evenly spread over the run
    (the first and the last included), which needs the run's length ``steps`` up front.
    """

    def __init__(self, keep: int | None = None, steps: int | None = None):
        if keep is not None and (steps is None or keep < 1):
            raise ValueError("keep=k needs k ≥ 1 and the run's number of steps")
        self._keep = None if keep is None else {round(i * (steps - 1) / max(keep - 1, 1)) for i in range(keep)}
        self.timesteps: list[int] = []
        self.out_of_range: list[float] = []
        self.x0_abs_max: list[float] = []  # largest |x̂0| before the clamp
        self.kept: list[int] = []  # timesteps whose tensors are stored
        self.x_t: list[Tensor] = []
        self.x0_hat: list[Tensor] = []
        self.final: Tensor | None = None

    def __call__(self, step: SamplerStep) -> None:
        i = len(self.timesteps)
        self.timesteps.append(step.t)
        self.out_of_range.append(float((step.x0_unclipped.abs() > 1).float().mean()))
        self.x0_abs_max.append(float(step.x0_unclipped.abs().max()))
        if self._keep is None or i in self._keep:
            self.kept.append(step.t)
            self.x_t.append(step.x_t.detach().float().cpu())
            self.x0_hat.append(step.x0_hat.detach().float().cpu())
        self.final = step.x_prev.detach().float().cpu()


@torch.no_grad()
def x0_prediction_error(
    model: Model,
    x0: Tensor,
    cond: Tensor,
    schedule: NoiseSchedule,
    timesteps: Sequence[int],
    noise: Tensor,
    prediction: str = "eps",
    clip: bool = True,
) -> list[float]:
    """MSE of the one-step estimate x̂0 against ``x0`` at each t of ``timesteps`` (the [−1, 1] scale).

    x0, noise: ``[B, C, H, W]``; cond: ``[B, Cc, H, W]``. The same ``noise`` is used at every t, so the
    curve shows how the estimate degrades as the signal fraction √ᾱ_t falls, not sampling luck.
    """
    errors = []
    model_t = schedule.timesteps.to(x0.device)
    for t in timesteps:
        t = int(t)
        x_t = q_sample(x0, t, noise, schedule)
        out = model(x_t, model_t[t].repeat(x0.shape[0]), cond)
        x0_hat, _ = predict_x0_eps(out, x_t, t, schedule, prediction, clip=clip, cond=cond)
        errors.append(float(F.mse_loss(x0_hat.to(x0.dtype), x0)))
    return errors


# --------------------------------------------------------------------------------------------------
# Observation consistency (DDNM / DDNM+)
# --------------------------------------------------------------------------------------------------


def ddnm_lambda(schedule: NoiseSchedule, t: int, t_prev: int, sigma_y: float) -> float:
    """DDNM+ step size for the range–null-space correction x̂0 ← x̂0 − λ_t A⁺(A x̂0 − y).

    λ_t = 1 if σ_t ≥ a_t σ_y else σ_t/(a_t σ_y), with a_t = √ᾱ_{t−1} β_t/(1−ᾱ_t) (the coefficient of
    x̂0 in the posterior mean) and σ_t the standard deviation of q(x_{t−1} | x_t, x0), i.e.
    σ_t² = β_t (1−ᾱ_{t−1})/(1−ᾱ_t), as defined in the DDNM paper (Wang et al., ICLR 2023, §3.3).
    For a jump t → t_prev, β_t is the respaced 1 − ᾱ_t/ᾱ_prev. σ_y = 0 gives λ = 1.
    At the final step (t_prev = −1) σ_t = 0, so with σ_y > 0 the last correction is switched off.
    """
    if sigma_y <= 0:
        return 1.0
    a_t, _, var = posterior_coefficients(schedule, t, t_prev)
    sigma_t = math.sqrt(max(var, 0.0))
    if sigma_t >= a_t * sigma_y:
        return 1.0
    return sigma_t / (a_t * sigma_y)


def make_ddnm_correction(
    project: Callable[[Tensor, float], Tensor],
    schedule: NoiseSchedule,
    timesteps: Sequence[int],
    sigma_y: float = 0.0,
) -> CorrectFn:
    """A ``correct(x̂0, t)`` hook that calls ``project(x̂0, λ_t)`` with the DDNM+ λ_t of each step.

    ``timesteps`` is the sampler's sequence (``sampling_timesteps(schedule.T, steps)``), needed to
    know each step's t_prev. ``project`` is e.g.
    ``lambda x, lam: range_null_correction(x, y, op, lam)`` from :mod:`rediffuse.degradations`.
    """
    seq = [int(v) for v in timesteps]
    prev = dict(zip(seq, seq[1:] + [-1]))

    def correct(x0_hat: Tensor, t: int) -> Tensor:
        return project(x0_hat, ddnm_lambda(schedule, t, prev[int(t)], sigma_y))

    return correct
