"""Noise schedules, the training loss and samplers for conditional diffusion.

This module knows nothing about networks. A *model* is any callable

    model(x_t: [B, C, H, W], t: LongTensor [B], cond: [B, Cc, H, W]) -> Tensor [B, C, H, W]

and its output is read according to a ``prediction`` setting: ``"eps"`` (the noise, as in
ReDiffuse/FusionDiff) or ``"x0"`` (the clean image, as in DRFusion). Further settings (e.g. a
per-pixel weight map over the sources, turned into x0 by another module) are added with
:func:`register_prediction`; :func:`predict_x0_eps` is the only place that interprets model output.

Conventions
-----------
- Timesteps are 0-based indices ``t = 0 .. T-1``; ``x_t = sqrt(abar_t) x0 + sqrt(1 - abar_t) eps``
  with ``abar_t = alphas_cumprod[t]`` (t = 0 is already slightly noisy, as in improved-DDPM).
  ``t_prev = -1`` denotes the clean image, with ``abar_{-1} = 1``.
- The model receives ``schedule.timesteps[t]`` as a LongTensor [B] on the device of x_t. For the
  schedules built here that is ``t`` itself; a schedule made by :meth:`NoiseSchedule.respace` maps its
  indices back to the timesteps of the schedule the model was trained with.
- Schedule arithmetic is float64; coefficients are cast to the sample's dtype where they are used.
- All randomness comes from the ``generator`` passed in (drawn on the generator's device and moved),
  so training draws and samples are reproducible.
- ``clip`` (every sampler, default ``True``): x̂0 is clamped to [−1, 1] at each step, as the official
  ReDiffuse and FusionDiff code does; the paper's Eq. 6 is written without the clamp (``clip=False``).
  Where the clamp changes x̂0, ε̂ is recomputed so that (x̂0, ε̂) still reproduce x_t.
- ``on_step`` (every sampler): called with a :class:`SamplerStep` at each visited timestep, e.g. a
  :class:`Trajectory` that keeps the states for a figure.
"""
from __future__ import annotations

import math
import numbers
from typing import Callable, NamedTuple, Protocol, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor
from tqdm.auto import tqdm

__all__ = [
    "NoiseSchedule",
    "cosine_schedule",
    "linear_schedule",
    "get_schedule",
    "SCHEDULES",
    "q_sample",
    "training_loss",
    "predict_x0_eps",
    "register_prediction",
    "PREDICTIONS",
    "weight_map",
    "sampling_timesteps",
    "check_timesteps",
    "posterior_coefficients",
    "ddim_coefficients",
    "posterior_mean_step",
    "ddim_step",
    "posterior_mean_sampler",
    "ddim_sampler",
    "x0_regression_sampler",
    "SAMPLERS",
    "get_sampler",
    "ddnm_lambda",
    "make_ddnm_correction",
    "SamplerStep",
    "Trajectory",
    "x0_prediction_error",
]


class Model(Protocol):
    def __call__(self, x_t: Tensor, t: Tensor, cond: Tensor) -> Tensor: ...


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


# --------------------------------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------------------------------


def _per_sample(values: Tensor, t: Tensor | int, x: Tensor) -> Tensor:
    """values[t] (float64 → x.dtype), shaped to broadcast against x: [B, 1, 1, ...] or scalar."""
    if isinstance(t, int):
        return values[t].to(device=x.device, dtype=x.dtype)
    t = t.to(values.device, torch.long)
    v = values[t].to(device=x.device, dtype=x.dtype)
    return v.view(-1, *([1] * (x.ndim - 1)))


def _randn(shape: Sequence[int], generator: torch.Generator | None, device, dtype) -> Tensor:
    """Standard normal drawn on the generator's own device (so a CPU generator works for CUDA
    samples and gives the same numbers everywhere), then moved."""
    gdev = generator.device if generator is not None else device
    return torch.randn(tuple(shape), generator=generator, device=gdev, dtype=dtype).to(device)


def _randint(high: int, n: int, generator: torch.Generator | None, device) -> Tensor:
    gdev = generator.device if generator is not None else device
    return torch.randint(0, high, (n,), generator=generator, device=gdev).to(device)


# --------------------------------------------------------------------------------------------------
# Forward process and the interpretation of model output
# --------------------------------------------------------------------------------------------------


def q_sample(x0: Tensor, t: Tensor | int, noise: Tensor, schedule: NoiseSchedule) -> Tensor:
    """x_t = √ᾱ_t x0 + √(1−ᾱ_t) ε.  x0, noise: [B, C, H, W]; t: LongTensor [B] or int (index)."""
    a = _per_sample(schedule.alphas_cumprod.sqrt(), t, x0)
    s = _per_sample((1.0 - schedule.alphas_cumprod).sqrt(), t, x0)
    return a * x0 + s * noise


# A converter maps (model_out, x_t, √ᾱ_t, √(1−ᾱ_t), cond) to the unclipped pair (x̂0, ε̂);
# √ᾱ_t and √(1−ᾱ_t) are already in x_t's dtype and broadcastable. ``cond`` is there for
# parameterisations that build x̂0 from the sources (a weight map over I_A, I_B).
Converter = Callable[[Tensor, Tensor, Tensor, Tensor, "Tensor | None"], "tuple[Tensor, Tensor]"]


def _from_eps(out: Tensor, x_t: Tensor, a: Tensor, s: Tensor, cond: Tensor | None):
    return (x_t - s * out) / a, out


def _from_x0(out: Tensor, x_t: Tensor, a: Tensor, s: Tensor, cond: Tensor | None):
    return out, (x_t - a * out) / s


def weight_map(out: Tensor) -> Tensor:
    """The per-pixel weight of source A that a ``"weights"`` model's raw output encodes (sigmoid)."""
    return torch.sigmoid(out)


def _from_weights(out: Tensor, x_t: Tensor, a: Tensor, s: Tensor, cond: Tensor | None):
    """Weight-map fusion (DRFusion's fusion constraint): x̂0 = w·I_A + (1 − w)·I_B, w = sigmoid(out).

    ``cond`` holds the two sources ``[B, 2·C, H, W]``. The output stays a per-pixel convex
    combination of the sources, so in-focus source pixels can be copied exactly.
    """
    if cond is None or cond.shape[1] != 2 * out.shape[1]:
        raise ValueError("the 'weights' prediction needs cond = the two sources [B, 2*C, H, W]")
    c = out.shape[1]
    w = weight_map(out)
    x0 = w * cond[:, :c] + (1 - w) * cond[:, c:]
    return x0, (x_t - a * x0) / s


# name -> (converter, space the training loss is taken in by default: "eps" or "x0")
PREDICTIONS: dict[str, tuple[Converter, str]] = {
    "eps": (_from_eps, "eps"),
    "x0": (_from_x0, "x0"),
    "weights": (_from_weights, "x0"),
}


def register_prediction(name: str, converter: Converter, loss_space: str = "x0") -> None:
    """Add a parameterisation, e.g. ``"weights"``: ``converter(out, x_t, sqrt_ab, sqrt_1m_ab, cond)``
    must return the unclipped (x̂0, ε̂) with x_t = sqrt_ab·x̂0 + sqrt_1m_ab·ε̂."""
    if loss_space not in ("eps", "x0"):
        raise ValueError("loss_space must be 'eps' or 'x0'")
    PREDICTIONS[name] = (converter, loss_space)


def _converter(prediction: str) -> tuple[Converter, str]:
    try:
        return PREDICTIONS[prediction]
    except KeyError:
        raise ValueError(f"unknown prediction {prediction!r}; available: {sorted(PREDICTIONS)}") from None


def predict_x0_eps(
    model_out: Tensor,
    x_t: Tensor,
    t: Tensor | int,
    schedule: NoiseSchedule,
    prediction: str = "eps",
    clip: bool = True,
    cond: Tensor | None = None,
) -> tuple[Tensor, Tensor]:
    """Interpret model output as (x̂0, ε̂), both [B, C, H, W] in x_t's dtype.

    t: index into ``schedule`` (int or LongTensor [B]). With ``clip`` x̂0 is clamped to [−1, 1] and,
    only where the clamp changed a value, ε̂ is recomputed from the clamped x̂0 so that the pair stays
    consistent with x_t (as DDIM's reference code does); elsewhere ε̂ is left bit-exact.
    """
    conv, _ = _converter(prediction)
    model_out = model_out.to(x_t.dtype)
    a = _per_sample(schedule.alphas_cumprod.sqrt(), t, x_t)
    s = _per_sample((1.0 - schedule.alphas_cumprod).sqrt(), t, x_t)
    x0, eps = conv(model_out, x_t, a, s, cond)
    return _clamp_pair(x0, eps, x_t, t, schedule) if clip else (x0, eps)


def _clamp_pair(x0: Tensor, eps: Tensor, x_t: Tensor, t: Tensor | int, schedule: NoiseSchedule):
    """x̂0 clamped to [−1, 1]; ε̂ recomputed from it only where the clamp acted (elsewhere bit-exact)."""
    x0c = x0.clamp(-1.0, 1.0)
    if torch.equal(x0c, x0):
        return x0, eps
    a = _per_sample(schedule.alphas_cumprod.sqrt(), t, x_t)
    s = _per_sample((1.0 - schedule.alphas_cumprod).sqrt(), t, x_t)
    return x0c, torch.where(x0c != x0, (x_t - a * x0c) / s, eps)


def training_loss(
    model: Model,
    x0: Tensor,
    cond: Tensor,
    schedule: NoiseSchedule,
    generator: torch.Generator | None = None,
    prediction: str = "eps",
    loss_scale: float = 1.0,
    loss_space: str | None = None,
    t: Tensor | None = None,
    noise: Tensor | None = None,
    loss: str = "mse",
    weight: Tensor | None = None,
) -> Tensor:
    """Scalar ``loss_scale · MSE`` for one batch; x0: [B, C, H, W] in [−1, 1], cond: [B, Cc, H, W].

    t ~ U{0..T−1} [B] is drawn first, then ε ~ N(0, I) like x0, both from ``generator`` (unless
    given). The MSE is on ε̂ vs ε or on x̂0 vs x0 (``loss_space``; default: "eps" for ε-prediction,
    "x0" otherwise). The official ReDiffuse code uses the ε-MSE with ``loss_scale=128``.

    ``loss="l1_grad"`` (x0 space only) replaces the MSE by ``L1(x̂0, x0) + L1(∇x̂0, ∇x0)`` with
    forward differences along both axes: the MSE barely penalises a soft or misplaced focus
    boundary, which is exactly what the gradient-based fusion metrics (QG, QP) and a viewer notice.

    ``weight`` (``[B, 1, H, W]``, ≥ 0) turns every mean into a weighted mean over the pixels (a
    difference between two pixels gets the larger of their weights), e.g. to stress the pixels near
    focus boundaries, which are few but decide how a fusion looks.
    """
    if loss not in ("mse", "l1_grad"):
        raise ValueError(f"loss must be 'mse' or 'l1_grad', got {loss!r}")
    conv, default_space = _converter(prediction)
    space = loss_space or default_space
    if space not in ("eps", "x0"):
        raise ValueError("loss_space must be 'eps' or 'x0'")
    B = x0.shape[0]
    if t is None:
        t = _randint(schedule.T, B, generator, x0.device)
    if noise is None:
        noise = _randn(x0.shape, generator, x0.device, x0.dtype)
    x_t = q_sample(x0, t, noise, schedule)
    out = model(x_t, schedule.timesteps.to(x0.device)[t.to(x0.device)], cond)
    if prediction == "eps" and space == "eps":
        pred, target = out, noise  # skip the round trip through x̂0: exact, and cheaper
    else:
        x0_hat, eps_hat = predict_x0_eps(out, x_t, t, schedule, prediction, clip=False, cond=cond)
        pred, target = (eps_hat, noise) if space == "eps" else (x0_hat, x0)
    pred = pred.to(target.dtype)
    if weight is not None and (weight.dim() != 4 or weight.shape[1] != 1 or weight.shape[0] != B
                               or weight.shape[2:] != target.shape[2:]):
        raise ValueError(f"weight must be [B, 1, H, W] = [{B}, 1, {target.shape[2]}, {target.shape[3]}], "
                         f"got {list(weight.shape)}")
    if loss == "l1_grad":
        if space != "x0":
            raise ValueError("loss='l1_grad' compares images: use it with an x0-space loss")
        return loss_scale * (_weighted_mean((pred - target).abs(), weight) + image_gradient_l1(pred, target, weight))
    return loss_scale * _weighted_mean((pred - target) ** 2, weight)


def _weighted_mean(x: Tensor, weight: Tensor | None) -> Tensor:
    """Mean of ``x`` [B, C, H, W] with per-pixel ``weight`` [B, 1, H, W] (None: the plain mean)."""
    if weight is None:
        return x.mean()
    w = weight.to(x.dtype).expand_as(x)
    return (x * w).sum() / w.sum().clamp_min(1e-12)


def image_gradient_l1(pred: Tensor, target: Tensor, weight: Tensor | None = None) -> Tensor:
    """Mean absolute difference of the forward differences of ``pred`` and ``target`` (both axes);
    ``weight`` [B, 1, H, W]: a weighted mean, each difference weighted by the larger of its pixels'."""
    d = pred - target
    dy, dx = (d[..., 1:, :] - d[..., :-1, :]).abs(), (d[..., :, 1:] - d[..., :, :-1]).abs()
    if weight is None:
        return 0.5 * (dy.mean() + dx.mean())
    wy = torch.maximum(weight[..., 1:, :], weight[..., :-1, :])
    wx = torch.maximum(weight[..., :, 1:], weight[..., :, :-1])
    return 0.5 * (_weighted_mean(dy, wy) + _weighted_mean(dx, wx))


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
